//! Helpers for the end-to-end tests: build the real binaries, run daqctl,
//! spawn single processes on ephemeral loopback ports.

pub mod netns;

use anyhow::{Context, Result, anyhow, bail};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Builds the process binaries and daqctl (same profile as this test) once,
/// and returns the directory that holds them.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build().unwrap_or_else(|e| panic!("building the binaries failed: {e:#}")))
}

fn build() -> Result<PathBuf> {
    // The test executable lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test executable path {}", exe.display()))?
        .to_path_buf();
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--bins"]);
    for p in ["boardreader", "eventbuilder", "aggregator", "daqctl"] {
        cmd.args(["-p", p]);
    }
    if profile == "release" {
        cmd.arg("--release");
    } else if profile != "debug" {
        cmd.args(["--profile", &profile]);
    }
    let status = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed: {status}");
    }
    Ok(dir)
}

/// A partition number no other system of this test run uses, so that tests
/// running side by side never share a shared-memory segment.
pub fn unique_partition() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    1000 + (std::process::id() % 100_000) * 100 + n
}

/// Runs `daqctl` with `args`, returning its output (stdout, stderr, status).
/// `demo` and `soak` get a `--partition` of their own unless one is given.
pub fn daqctl(args: &[&str]) -> Result<Output> {
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if matches!(args.first().map(String::as_str), Some("demo" | "soak"))
        && args.get(1).map(String::as_str) != Some("analyse")
        && !args.iter().any(|a| a.starts_with("--partition"))
    {
        args.push(format!("--partition={}", unique_partition()));
    }
    let out = Command::new(bin_dir().join("daqctl"))
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .context("running daqctl")?;
    Ok(out)
}

/// Reads a run's summary.json.
pub fn summary(run_root: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(run_root.join("summary.json"))?;
    Ok(serde_json::from_str(&text)?)
}

/// A process binary started alone on an ephemeral loopback port.
pub struct Spawned {
    pub child: Child,
    pub addr: String,
    /// Its `/metrics` URL, from the readiness line.
    pub metrics_url: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary --rank <rank>` on 127.0.0.1:0 and waits for its readiness line.
pub fn spawn(binary: &str, rank: u16) -> Result<Spawned> {
    spawn_with(binary, rank, &[])
}

/// `spawn` with extra arguments.
pub fn spawn_with(binary: &str, rank: u16, args: &[&str]) -> Result<Spawned> {
    let mut cmd = Command::new(bin_dir().join(binary));
    cmd.args(["--rank", &rank.to_string(), "--listen", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::null());
    spawn_cmd(cmd, binary)
}

/// Starts `cmd` (a process binary, or a wrapper such as `ip netns exec`
/// around one) and waits for its readiness line. Its stderr is the caller's
/// choice; stdin is closed.
pub fn spawn_cmd(mut cmd: Command, what: &str) -> Result<Spawned> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(r) = daq_runtime::net::parse_ready_line(&line) {
                let _ = tx.send((r.addr.to_string(), r.metrics_url.unwrap_or_default()));
            }
        }
    });
    let (addr, metrics_url) = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            let status = child.wait()?;
            bail!("{what} printed no readiness line (exit: {status})");
        }
    };
    Ok(Spawned {
        child,
        addr,
        metrics_url,
    })
}

/// Writes a fresh random token (32 hex digits, mode 0600) to `dir/name`.
pub fn write_token(dir: &Path, name: &str) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(f, "{token}")?;
    Ok(path)
}

/// A test certificate authority and one server certificate it signed,
/// written as PEM files (made with rcgen; nothing leaves the machine).
pub struct TestPki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    /// A CA and a server certificate for `names` (IP addresses become IP
    /// subject alternative names, anything else DNS names), in `dir`.
    pub fn new(dir: &Path, names: &[&str]) -> Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "daq test ca");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "daq test server");
        let cert = params.signed_by(&key, &ca)?;
        let out = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&out.ca, ca.pem())?;
        std::fs::write(&out.cert, cert.pem())?;
        std::fs::write(&out.key, key.serialize_pem())?;
        Ok(out)
    }
}

/// The Python interpreter with h5py for the interop checks: `DAQ_TEST_PYTHON`.
/// In CI (`CI` set) it is required; elsewhere the check is skipped without it.
pub fn h5py_python() -> Option<String> {
    match std::env::var("DAQ_TEST_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but DAQ_TEST_PYTHON (a python with h5py) is not")
        }
        Err(_) => {
            eprintln!("note: DAQ_TEST_PYTHON unset; h5py read-back skipped");
            None
        }
    }
}

/// Path of the h5py dump script shipped with the tests.
pub fn h5dump_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("h5dump_events.py")
}

/// Whether `jeprof` (Debian libjemalloc-dev) is on PATH for the heap-profile
/// checks. In CI (`CI` set) it is required; elsewhere they are skipped without it.
pub fn jeprof_available() -> bool {
    tool_available("jeprof", "libjemalloc-dev")
}

/// The C++ compiler for the artdaq-binary reader check: `CXX`, else `g++`.
/// In CI (`CI` set) it is required; elsewhere the check is skipped without it.
pub fn cxx_compiler() -> Option<String> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    let found = Command::new(&cxx)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(cxx);
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but the C++ compiler {cxx} is not installed");
    }
    eprintln!("note: {cxx} not found; C++ reader check skipped");
    None
}

/// Path of a C++ source shipped with the tests (`tests/cpp/<name>`).
pub fn cpp_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cpp").join(name)
}

/// Whether the Debian package `name`'s program `program` is on PATH. In CI
/// (`CI` set) it is required; elsewhere the check is skipped without it.
pub fn tool_available(program: &str, package: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found && std::env::var_os("CI").is_some() {
        panic!("CI is set but {program} (Debian {package}) is not installed");
    }
    if !found {
        eprintln!("note: {program} (Debian {package}) not found; check skipped");
    }
    found
}

/// GET `url`: the status code and the body (any status, no error for 404).
pub fn http_get(url: &str) -> Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut r = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string()?;
    Ok((status, body))
}

/// The newest run record in `run_dir` (the one with the largest number).
pub fn latest_run(run_dir: &Path) -> PathBuf {
    std::fs::read_dir(run_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", run_dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("summary.json").exists())
        .max()
        .unwrap_or_else(|| panic!("no run record in {}", run_dir.display()))
}

/// A multi-threaded tokio runtime for tests that talk gRPC.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
}

/// A run-control client for a spawned process.
pub async fn control(
    addr: &str,
) -> proto::run_control_client::RunControlClient<daq_runtime::net::Channel> {
    let ch = daq_runtime::net::connect(addr, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{addr}: {e}"));
    proto::run_control_client::RunControlClient::new(ch)
}

/// A user-type data fragment whose payload is `payload` bytes of its id.
pub fn data_fragment(seq: u64, id: u16, payload: usize) -> bytes::Bytes {
    use daq_format::fragment::{Fragment, FragmentSpec, FragmentType};
    Fragment::build(
        FragmentSpec {
            fragment_type: FragmentType::User(1),
            sequence_id: seq,
            fragment_id: id,
            timestamp: seq,
        },
        &[],
        &vec![id as u8; payload],
    )
    .unwrap_or_else(|e| panic!("fragment: {e}"))
    .into_bytes()
}

/// A serialized event (NetMonOutput) of `fragments` user fragments of
/// `payload` bytes each, for run `run` and sequence id `seq`: what an
/// eventbuilder sends an aggregator.
pub fn netmon_event(run: u32, seq: u64, fragments: u16, payload: usize) -> bytes::Bytes {
    use daq_format::fragment::Fragment;
    use daq_format::netmon::{Event, EventAux, History, HistoryEntry};
    let event = Event {
        aux: EventAux {
            run,
            subrun: 1,
            event: seq,
            sequence_id: seq,
            timestamp: seq,
            complete: true,
        },
        history: History {
            entries: vec![HistoryEntry {
                process: "eventbuilder-0".into(),
                release: "test".into(),
                parameter_set_id: "0".repeat(32),
                time_ns: 0,
            }],
        },
        missing: vec![],
        fragments: (0..fragments)
            .map(|id| {
                Fragment::parse(data_fragment(seq, id, payload))
                    .unwrap_or_else(|e| panic!("fragment: {e}"))
            })
            .collect(),
    };
    daq_format::netmon::encode(&event).unwrap_or_else(|e| panic!("encode: {e}"))
}

/// Initializes and starts a spawned process for run `run` with `config`,
/// writing data (aggregators) into `data_dir`.
pub async fn init_and_start(
    c: &mut proto::run_control_client::RunControlClient<daq_runtime::net::Channel>,
    config: &daq_format::config::SystemConfig,
    run: u32,
    data_dir: &Path,
) {
    c.init(proto::InitRequest {
        config_toml: config.to_toml(),
        destinations: vec![],
    })
    .await
    .unwrap_or_else(|e| panic!("init: {e}"));
    c.start(proto::StartRequest {
        run,
        data_dir: data_dir.display().to_string(),
        record_dir: String::new(),
    })
    .await
    .unwrap_or_else(|e| panic!("start: {e}"));
}

/// Polls `Status` until `f` holds, for at most 30 s.
pub async fn wait_for_status(
    c: &mut proto::run_control_client::RunControlClient<daq_runtime::net::Channel>,
    what: &str,
    f: impl Fn(&proto::StatusReply) -> bool,
) -> proto::StatusReply {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        let st = c
            .status(proto::Empty {})
            .await
            .unwrap_or_else(|e| panic!("status: {e}"))
            .into_inner();
        if f(&st) {
            return st;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}: {st:?}");
        }
    }
}

/// A daqctl demo held up after its run (`--hold`); released on drop.
pub struct Held {
    pub child: Child,
    /// (process, metrics URL) of every process.
    pub processes: Vec<(String, String)>,
    /// The run record it wrote (`DAQ-HOLD <dir>`).
    pub root: std::path::PathBuf,
    /// Its `--partition`.
    pub partition: u32,
}

impl Held {
    /// Starts `daqctl demo --hold --run-dir RUN_DIR ARGS` on a partition of
    /// its own and waits for its hold.
    pub fn start(run_dir: &Path, args: &[&str]) -> Self {
        let partition = unique_partition();
        let mut child = Command::new(bin_dir().join("daqctl"))
            .args(["demo", "--hold", "--run-dir"])
            .arg(run_dir)
            .arg(format!("--partition={partition}"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("daqctl starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut processes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let root = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("daqctl reached its hold");
            if let Some(r) = daq_runtime::net::parse_ready_line(&line) {
                processes.push((r.process, r.metrics_url.expect("metrics url")));
            } else if let Some(root) = line.strip_prefix("DAQ-HOLD ") {
                break std::path::PathBuf::from(root);
            }
        };
        Self {
            child,
            processes,
            root,
            partition,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.child.wait();
    }
}
