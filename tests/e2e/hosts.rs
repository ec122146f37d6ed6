//! End-to-end across hosts: one network namespace per process plus one for
//! daqctl, joined by veth pairs to a bridge on a private test subnet (no
//! address in the root namespace, so no traffic can leave this machine).
//! Each binary runs inside its namespace the way systemd would start it
//! (`--listen <its address>:7000 --token-file F`); daqctl, in its own
//! namespace, attaches through `[addresses]` and drives the 2x2x2 system
//! through boot, init, three runs, a re-init with another fragment size, one
//! more run and shutdown, every RPC carrying the token.
//!
//! Needs root (CI runs as root). If the namespaces cannot be made the test
//! fails when `CI` is set and is skipped, saying so, elsewhere.

use daq_datafile::hdf5::read_file;
use daq_format::config::SystemConfig;
use daq_tests::netns::{net_or_skip, start_in};
use daq_tests::{Spawned, bin_dir, summary, unique_partition, write_token};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The test subnet's prefix; the bridge itself has no address.
const SUBNET: &str = "10.77.0";
const PORT: u16 = 7000;
/// How long any one daqctl invocation may take.
const DAQCTL_TIMEOUT_S: &str = "120";

/// The six processes: (name, binary, rank, host byte).
const PROCESSES: [(&str, &str, u16, u8); 6] = [
    ("boardreader-0", "boardreader", 0, 11),
    ("boardreader-1", "boardreader", 1, 12),
    ("eventbuilder-0", "eventbuilder", 0, 21),
    ("eventbuilder-1", "eventbuilder", 1, 22),
    ("aggregator-0", "aggregator", 0, 31),
    ("aggregator-1", "aggregator", 1, 32),
];
/// daqctl's host.
const CTL_HOST: u8 = 2;

/// daqctl in its namespace.
struct Ctl<'a> {
    ns: &'a str,
    token: Option<&'a Path>,
    run_dir: &'a Path,
}

impl Ctl<'_> {
    fn run(&self, verb: &str, config: Option<&Path>) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args([DAQCTL_TIMEOUT_S, "ip", "netns", "exec", self.ns])
            .arg(bin_dir().join("daqctl"));
        if let Some(t) = self.token {
            cmd.arg("--token-file").arg(t);
        }
        cmd.arg(verb).arg("--run-dir").arg(self.run_dir);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.env_remove("DAQ_TOKEN_FILE")
            .stdin(Stdio::null())
            .output()
            .expect("daqctl runs")
    }

    fn ok(&self, verb: &str, config: Option<&Path>) -> String {
        let out = self.run(verb, config);
        assert!(out.status.success(), "daqctl {verb}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// (pid, state, first counter) of each process from `daqctl status`.
    fn status(&self, config: &Path) -> Vec<(String, u32, String, u64)> {
        let out = self.ok("status", Some(config));
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let known = PROCESSES.iter().any(|p| Some(&p.0) == f.first());
                // name host:port pid state run <counter words> value ...
                (known && f.len() >= 8).then(|| {
                    (
                        f[0].to_string(),
                        f[2].parse().expect("pid"),
                        f[3].to_string(),
                        f[7].parse().expect("counter"),
                    )
                })
            })
            .collect()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("summary field {k} missing: {v}"))
}

fn assert_nothing_lost(s: &Value) {
    assert_eq!(s["topology"]["boardreaders"], 2, "{s}");
    assert_eq!(u(s, "fragments_sent"), u(s, "fragments_received"), "{s}");
    assert_eq!(u(s, "fragments_sent"), 2 * u(s, "events_built"), "{s}");
    assert_eq!(u(s, "events_written"), u(s, "events_built"), "{s}");
    assert_eq!(u(s, "events_incomplete"), 0, "{s}");
    assert!(u(s, "events_built") > 0, "{s}");
    assert_eq!(s["errors"], Value::Array(vec![]), "{s}");
}

/// The distinct payload sizes of every fragment in a run's data files.
fn payload_sizes(root: &Path, s: &Value) -> Vec<usize> {
    let mut sizes = BTreeSet::new();
    for f in s["data_files"].as_array().expect("data_files") {
        let file = read_file(&root.join(f.as_str().expect("path"))).expect("readable");
        for e in &file.events {
            sizes.extend(e.fragments.iter().map(|f| f.payload.len()));
        }
    }
    sizes.into_iter().collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn session_across_network_namespaces_with_a_token_never_restarts_a_process() {
    let mut hosts: Vec<u8> = PROCESSES.iter().map(|p| p.3).collect();
    hosts.push(CTL_HOST);
    let Some(net) = net_or_skip("dq", SUBNET, &hosts) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let token = write_token(dir.path(), "token").expect("token");
    let wrong = write_token(dir.path(), "wrong").expect("token");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs");

    // Started by "someone else" (systemd), each in its namespace.
    let mut procs: Vec<Spawned> = PROCESSES
        .iter()
        .enumerate()
        .map(|(i, (name, binary, rank, host))| {
            start_in(
                net.ns(i),
                binary,
                *rank,
                &format!("{SUBNET}.{host}:{PORT}"),
                &token,
                &logs.join(format!("{name}.log")),
            )
        })
        .collect();
    let pids: Vec<u32> = procs.iter().map(|p| p.child.id()).collect();

    let mut table = String::from("[addresses]\n");
    for (name, _, _, host) in PROCESSES {
        table.push_str(&format!("{name} = \"{SUBNET}.{host}:{PORT}\"\n"));
    }
    let base = format!(
        "partition = {}\n[generator]\nthrottle_us = 2000\n",
        unique_partition()
    );
    let first = write(dir.path(), "first.toml", &format!("{base}{table}"));
    let second = write(
        dir.path(),
        "second.toml",
        &format!("{base}n_adc_counts = 100\n{table}"),
    );
    let run_dir = dir.path().join("runs");
    let ctl = Ctl {
        ns: net.ns(PROCESSES.len()),
        token: Some(&token),
        run_dir: &run_dir,
    };

    ctl.ok("boot", Some(&first));
    let st = ctl.status(&first);
    assert_eq!(st.len(), 6, "{st:?}");
    for ((name, pid, state, _), want) in st.iter().zip(&pids) {
        assert_eq!(state, "booted", "{name}");
        assert_eq!(
            pid, want,
            "{name}: the process daqctl sees is the one started"
        );
    }

    // Without the token, or with a wrong one, daqctl gets nowhere and
    // nothing changes.
    for (bad, reason) in [(None, "no token"), (Some(wrong.as_path()), "wrong token")] {
        let other = Ctl { token: bad, ..ctl };
        let out = other.run("init", Some(&first));
        assert!(
            !out.status.success(),
            "init without the token: {}",
            text(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{reason}: this process requires the shared token")),
            "{err}"
        );
    }
    assert!(ctl.status(&first).iter().all(|s| s.2 == "booted"));

    ctl.ok("init", Some(&first));
    let mut numbers = Vec::new();
    let mut last_root = PathBuf::new();
    for round in 0..4 {
        if round == 3 {
            ctl.ok("init", Some(&second));
        }
        let out = ctl.ok("start", None);
        assert!(out.contains("started"), "{out}");
        // Wait (polling the processes, with a timeout) for data to flow.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = ctl.status(&first);
            let sent: Vec<u64> = st
                .iter()
                .filter(|s| s.0.starts_with("boardreader"))
                .map(|s| s.3)
                .collect();
            if sent.len() == 2 && sent.iter().all(|&n| n >= 20) {
                assert!(st.iter().all(|s| s.2 == "running"), "{st:?}");
                break;
            }
            assert!(Instant::now() < deadline, "boardreaders sent only {sent:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = ctl.ok("stop", None);
        assert!(out.contains("OK: nothing lost"), "{out}");
        let root = daq_tests::latest_run(&run_dir);
        let s = summary(&root).expect("summary.json");
        assert_nothing_lost(&s);
        numbers.push(u(&s, "run"));
        // Data files are on the aggregators' hosts, and listed with them.
        let hosts: BTreeSet<String> = s["data_file_locations"]
            .as_array()
            .expect("locations")
            .iter()
            .map(|l| l["host"].as_str().expect("host").to_string())
            .collect();
        assert_eq!(
            hosts,
            BTreeSet::from([format!("{SUBNET}.31"), format!("{SUBNET}.32")]),
            "{s}"
        );
        // Nothing restarted: the same pids answer, and none of the
        // processes started above has exited.
        let now: Vec<u32> = ctl.status(&first).iter().map(|s| s.1).collect();
        assert_eq!(now, pids);
        for (p, (name, ..)) in procs.iter_mut().zip(PROCESSES) {
            assert!(
                p.child.try_wait().expect("try_wait").is_none(),
                "{name} exited"
            );
        }
        last_root = root;
    }
    assert_eq!(numbers, [1, 2, 3, 4]);
    let s = summary(&last_root).expect("summary");
    let new = SystemConfig::from_file(&second).expect("second config");
    assert_eq!(
        payload_sizes(&last_root, &s),
        [(new.generator_fragment_bytes() - 40) as usize]
    );
    let third = last_root.with_file_name("run_000003");
    let s3 = summary(&third).expect("summary");
    let old = SystemConfig::from_file(&first).expect("first config");
    assert_eq!(
        payload_sizes(&third, &s3),
        [(old.generator_fragment_bytes() - 40) as usize]
    );
    assert_ne!(
        new.generator_fragment_bytes(),
        old.generator_fragment_bytes()
    );

    let out = ctl.ok("shutdown", Some(&first));
    assert!(out.contains("shut down 6 processes"), "{out}");
    for (p, (name, ..)) in procs.iter_mut().zip(PROCESSES) {
        let status = p.child.wait().expect("wait");
        assert!(status.success(), "{name}: {status}");
    }
    // Every process logged the refused attempts of the bad daqctl, with
    // daqctl's address as the peer, and nothing else was refused.
    for (name, ..) in PROCESSES {
        let log = std::fs::read_to_string(logs.join(format!("{name}.log"))).expect("log");
        let refused: Vec<&str> = log.lines().filter(|l| l.contains("rpc refused")).collect();
        assert!(
            refused
                .iter()
                .all(|l| l.contains(&format!("peer={SUBNET}.{CTL_HOST}:"))),
            "{name}: {log}"
        );
    }
    drop(procs);
    drop(net);
}
