//! Network namespaces for the multi-host tests: a bridge and one namespace
//! per host, each joined to the bridge by a veth pair, on a private test
//! subnet with no address in the root namespace (no traffic can leave this
//! machine); processes started inside them as a systemd unit would.
//! Every test names its own subnet and name prefix, so tests using this
//! run side by side. A 2x2x2 system is started one process a namespace,
//! with daqctl's namespace last.

use crate::{Spawned, bin_dir, spawn_cmd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs `ip args...`; an error names the command and what it printed.
pub fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

/// Runs `program args...`; an error names the command and what it printed.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A bridge and one namespace per host, each with a veth pair to the
/// bridge. Removed on drop, also when the test fails.
pub struct Net {
    /// The subnet's first three bytes (`10.77.0`).
    pub subnet: String,
    bridge: String,
    namespaces: Vec<String>,
    /// The root-namespace end of each host's veth pair.
    veths: Vec<String>,
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the peer.
        for ns in &self.namespaces {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Err(e) = ip(&["link", "del", &self.bridge]) {
            eprintln!("cleanup: {e}");
        }
    }
}

impl Net {
    /// Hosts `subnet.<host>` for each of `hosts`. `prefix` (two letters)
    /// starts every bridge, namespace and interface name; with this test
    /// process's id and a counter the names never collide (interface
    /// names stay within 15 characters).
    pub fn create(prefix: &str, subnet: &str, hosts: &[u8]) -> Result<Self, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:x}{n}", std::process::id());
        let mut net = Net {
            subnet: subnet.to_string(),
            bridge: format!("{prefix}b{tag}"),
            namespaces: Vec::new(),
            veths: Vec::new(),
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        for (i, host) in hosts.iter().enumerate() {
            let ns = format!("{prefix}-{tag}-{host}");
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let outer = format!("{prefix}v{tag}x{i}");
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            net.veths.push(outer.clone());
            ip(&["link", "set", &outer, "master", &net.bridge, "up"])?;
            let addr = format!("{subnet}.{host}/24");
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The namespace of host `i` (in the order given to `create`).
    pub fn ns(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// The root-namespace end of host `i`'s veth pair: setting it down
    /// cuts the host off the bridge.
    pub fn veth(&self, i: usize) -> &str {
        &self.veths[i]
    }
}

/// The namespaces, or why the test cannot run: a failure in CI, a skip
/// (said out loud) elsewhere.
pub fn net_or_skip(prefix: &str, subnet: &str, hosts: &[u8]) -> Option<Net> {
    match Net::create(prefix, subnet, hosts) {
        Ok(n) => Some(n),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!(
                "CI is set but network namespaces cannot be created (needs root and iproute2): {e}"
            )
        }
        Err(e) => {
            eprintln!(
                "note: network namespaces cannot be created here ({e}); multi-host test skipped"
            );
            None
        }
    }
}

/// Starts `binary --rank <rank>` inside namespace `ns` as its systemd unit
/// would: listening on `<addr>`, with the token file, stderr into `log`.
pub fn start_in(
    ns: &str,
    binary: &str,
    rank: u16,
    addr: &str,
    token: &Path,
    log: &Path,
) -> Spawned {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(bin_dir().join(binary))
        .args(["--rank", &rank.to_string()])
        .args(["--listen", addr])
        .arg("--token-file")
        .arg(token)
        .env_remove("DAQ_TOKEN_FILE")
        .stderr(Stdio::from(std::fs::File::create(log).expect("log file")));
    spawn_cmd(cmd, binary).unwrap_or_else(|e| panic!("{binary} {rank} in {ns}: {e:#}"))
}

/// The six processes of a 2x2x2 system across namespaces: (name, binary,
/// rank, host byte).
pub const PROCESSES: [(&str, &str, u16, u8); 6] = [
    ("boardreader-0", "boardreader", 0, 11),
    ("boardreader-1", "boardreader", 1, 12),
    ("eventbuilder-0", "eventbuilder", 0, 21),
    ("eventbuilder-1", "eventbuilder", 1, 22),
    ("aggregator-0", "aggregator", 0, 31),
    ("aggregator-1", "aggregator", 1, 32),
];
/// daqctl's host byte; its namespace comes after the processes'.
pub const CTL_HOST: u8 = 2;
/// The port every process listens on in its namespace.
pub const PORT: u16 = 7000;

/// The namespaces of [`PROCESSES`] and daqctl on `subnet` (see
/// [`net_or_skip`]), and the processes started in them as systemd would,
/// with `token`, each logging into `logs/<name>.log`.
pub fn start_system(
    prefix: &str,
    subnet: &str,
    token: &Path,
    logs: &Path,
) -> Option<(Net, Vec<Spawned>)> {
    let mut hosts: Vec<u8> = PROCESSES.iter().map(|p| p.3).collect();
    hosts.push(CTL_HOST);
    let net = net_or_skip(prefix, subnet, &hosts)?;
    std::fs::create_dir_all(logs).expect("logs dir");
    let procs = PROCESSES
        .iter()
        .enumerate()
        .map(|(i, (name, binary, rank, host))| {
            let addr = format!("{subnet}.{host}:{PORT}");
            start_in(
                net.ns(i),
                binary,
                *rank,
                &addr,
                token,
                &logs.join(format!("{name}.log")),
            )
        })
        .collect();
    Some((net, procs))
}

/// The `[addresses]` table of [`PROCESSES`] on `subnet`.
pub fn addresses(subnet: &str) -> String {
    let mut table = String::from("[addresses]\n");
    for (name, _, _, host) in PROCESSES {
        table.push_str(&format!("{name} = \"{subnet}.{host}:{PORT}\"\n"));
    }
    table
}

/// `daqctl` in daqctl's namespace of `net`, killed after `timeout_s`
/// seconds, stdin closed and no token from the environment: the caller
/// adds the arguments.
pub fn daqctl_in(net: &Net, timeout_s: &str) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args([timeout_s, "ip", "netns", "exec", net.ns(PROCESSES.len())])
        .arg(bin_dir().join("daqctl"))
        .env_remove("DAQ_TOKEN_FILE")
        .stdin(Stdio::null());
    cmd
}

/// Waits for every one of [`PROCESSES`] to exit; each must exit 0.
pub fn wait_all_exit(procs: &mut [Spawned]) {
    for (p, (name, ..)) in procs.iter_mut().zip(PROCESSES) {
        let status = p.child.wait().expect("wait");
        assert!(status.success(), "{name}: {status}");
    }
}
