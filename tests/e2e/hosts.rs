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

use daq_format::config::SystemConfig;
use daq_tests::netns::{CTL_HOST, PROCESSES, addresses, daqctl_in, start_system, wait_all_exit};
use daq_tests::{assert_generated_payload, assert_nothing_lost, output_text as text, summary, u};
use daq_tests::{token_and_wrong, unique_partition};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// The test subnet's prefix; the bridge itself has no address.
const SUBNET: &str = "10.77.0";
/// How long any one daqctl invocation may take.
const DAQCTL_TIMEOUT_S: &str = "120";

/// daqctl in its namespace.
struct Ctl<'a> {
    net: &'a daq_tests::netns::Net,
    token: Option<&'a Path>,
    run_dir: &'a Path,
}

impl Ctl<'_> {
    fn run(&self, verb: &str, config: Option<&Path>) -> Output {
        let mut cmd = daqctl_in(self.net, DAQCTL_TIMEOUT_S);
        if let Some(t) = self.token {
            cmd.arg("--token-file").arg(t);
        }
        cmd.arg(verb).arg("--run-dir").arg(self.run_dir);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.output().expect("daqctl runs")
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

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn session_across_network_namespaces_with_a_token_never_restarts_a_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (token, wrong) = token_and_wrong(dir.path());
    let logs = dir.path().join("logs");
    // Started by "someone else" (systemd), each in its namespace.
    let Some((net, mut procs)) = start_system("dq", SUBNET, &token, &logs) else {
        return;
    };
    let pids: Vec<u32> = procs.iter().map(|p| p.child.id()).collect();

    let table = addresses(SUBNET);
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
        net: &net,
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
        assert_eq!(s["topology"]["boardreaders"], 2, "{s}");
        assert_nothing_lost(&s);
        // Network namespaces of one machine are one host: `auto` carries
        // the data through shared memory across them, whatever the
        // addresses say.
        let m = daq_tests::local_mechanism();
        assert_eq!(s["transport"]["fragments"], m, "{}", s["transport"]);
        assert_eq!(s["transport"]["events"], m, "{}", s["transport"]);
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
    let new = SystemConfig::from_file(&second).expect("second config");
    assert_generated_payload(&last_root, &new);
    let old = SystemConfig::from_file(&first).expect("first config");
    assert_generated_payload(&last_root.with_file_name("run_000003"), &old);
    assert_ne!(
        new.generator_fragment_bytes(),
        old.generator_fragment_bytes()
    );

    let out = ctl.ok("shutdown", Some(&first));
    assert!(out.contains("shut down 6 processes"), "{out}");
    wait_all_exit(&mut procs);
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
