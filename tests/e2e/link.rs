//! A cut or lossy link, for real, across network namespaces (one per
//! process, one for daqctl, on their own subnet and names so that this runs
//! beside `hosts.rs`): an eventbuilder's link cut mid-run is detected by the
//! connections' keep-alive, named and accounted for, and the run stops in a
//! bounded time with daqctl exiting 1; random packet loss on every link for
//! a whole run loses nothing at all.
//!
//! The kernel here has no `sch_netem` (no `tc ... netem delay/loss`), so
//! loss is made with iptables' `statistic` match (random DROP) and the cut
//! with `ip link set <veth> down`. Needs root (CI runs as root); without
//! namespaces or iptables the test fails when `CI` is set and is skipped,
//! saying so, elsewhere.

use daq_tests::netns::{Net, ip, net_or_skip, run, start_in};
use daq_tests::{Spawned, bin_dir, summary, unique_partition, write_token};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// This test's subnet (hosts.rs uses 10.77.0).
const SUBNET: &str = "10.78.0";
const PORT: u16 = 7000;
/// How long any one daqctl invocation may take.
const DAQCTL_TIMEOUT_S: &str = "180";

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
/// Index of eventbuilder-0 in `PROCESSES` (and in the namespaces).
const EB0: usize = 2;

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("summary field {k} missing: {v}"))
}

/// The system in its namespaces, its token and its config with `[addresses]`.
struct System {
    net: Net,
    procs: Vec<Spawned>,
    token: PathBuf,
    config: PathBuf,
    run_dir: PathBuf,
}

impl System {
    fn start(dir: &Path, stale_timeout_ms: u64) -> Option<Self> {
        let mut hosts: Vec<u8> = PROCESSES.iter().map(|p| p.3).collect();
        hosts.push(CTL_HOST);
        let net = net_or_skip("dl", SUBNET, &hosts)?;
        let token = write_token(dir, "token").expect("token");
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).expect("logs");
        let procs = PROCESSES
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
        let mut text = format!(
            "partition = {}\n[generator]\nthrottle_us = 5000\n[eventbuilder]\nstale_timeout_ms = {stale_timeout_ms}\n[transfer]\nend_of_data_timeout_ms = {eod_ms}\n[addresses]\n",
            unique_partition(),
            eod_ms = stale_timeout_ms.max(2_000),
        );
        for (name, _, _, host) in PROCESSES {
            text.push_str(&format!("{name} = \"{SUBNET}.{host}:{PORT}\"\n"));
        }
        let config = dir.join("system.toml");
        std::fs::write(&config, text).expect("config");
        Some(Self {
            net,
            procs,
            token,
            config,
            run_dir: dir.join("runs"),
        })
    }

    /// `daqctl <verb> ...` in daqctl's namespace, not yet waited for.
    fn daqctl(&self, verb: &str, extra: &[&str]) -> Child {
        Command::new("timeout")
            .args([
                DAQCTL_TIMEOUT_S,
                "ip",
                "netns",
                "exec",
                self.net.ns(PROCESSES.len()),
            ])
            .arg(bin_dir().join("daqctl"))
            .arg("--token-file")
            .arg(&self.token)
            .arg(verb)
            .arg("--config")
            .arg(&self.config)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(extra)
            .env_remove("DAQ_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("daqctl starts")
    }

    /// Shuts every process down through daqctl; each exits 0.
    fn shutdown(mut self) {
        let out = self
            .daqctl("shutdown", &[])
            .wait_with_output()
            .expect("daqctl shutdown");
        assert!(
            out.status.success(),
            "shutdown: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for (p, (name, ..)) in self.procs.iter_mut().zip(PROCESSES) {
            let status = p.child.wait().expect("wait");
            assert!(status.success(), "{name}: {status}");
        }
    }
}

/// Every event in a run's data files: (sequence id, fragments).
fn events_on_disk(root: &Path, s: &Value) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    for f in s["data_files"].as_array().expect("data_files") {
        let file = daq_datafile::hdf5::read_file(&root.join(f.as_str().expect("path")))
            .expect("data file reads");
        out.extend(
            file.events
                .iter()
                .map(|e| (e.sequence_id, e.fragments.len())),
        );
    }
    out
}

fn iptables_or_skip() -> bool {
    let found = Command::new("iptables-legacy")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var_os("CI").is_some() {
        panic!("CI is set but iptables-legacy (Debian iptables) is not installed");
    }
    if !found {
        eprintln!("note: iptables-legacy (Debian iptables) not found; lossy-link test skipped");
    }
    found
}

/// Packets the DROP rules of namespace `ns` dropped (INPUT and OUTPUT).
fn dropped_packets(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "iptables-legacy",
            "-L",
            "-v",
            "-n",
            "-x",
        ])
        .output()
        .expect("iptables -L");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("DROP") && l.contains("statistic"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn eventbuilder_cut_off_mid_run_is_named_and_the_run_stops_in_bounded_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(sys) = System::start(dir.path(), 500) else {
        return;
    };
    let mut child = sys.daqctl("demo", &["--duration", "8"]);
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    let mut seen = Vec::new();
    let mut wait_for = |want: &str| {
        for l in lines.by_ref() {
            let hit = l.contains(want);
            seen.push(l);
            if hit {
                return;
            }
        }
        panic!("daqctl ended before {want:?}: {seen:?}");
    };
    wait_for("fragments sent");
    ip(&["link", "set", sys.net.veth(EB0), "down"]).expect("cut the link");
    wait_for("stopping");
    let began = Instant::now();
    wait_for("stopped in");
    let stop = began.elapsed();
    let out = child.wait_with_output().expect("daqctl exits");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let root = daq_tests::latest_run(&sys.run_dir);
    let s = summary(&root).expect("summary");
    let errors = s["errors"].to_string();
    assert!(
        errors.contains("eventbuilder-0 does not answer: stop got no reply"),
        "{errors}"
    );
    // The boardreaders detected the cut (keep-alive), counted what they
    // could not deliver, and named eventbuilder-0 only.
    for br in ["boardreader-0", "boardreader-1"] {
        let problems = s["processes"][br]["problems"].to_string();
        assert!(problems.contains("eventbuilder-0"), "{br}: {problems}");
        assert!(!problems.contains("eventbuilder-1"), "{br}: {problems}");
        assert!(
            u(&s["processes"][br]["counters"], "dropped") > 0,
            "{br}: {s}"
        );
    }
    // Every event eventbuilder-1 built (odd sequence ids) is on disk, whole.
    let eb1 = &s["processes"]["eventbuilder-1"]["counters"];
    let on_disk = events_on_disk(&root, &s);
    let odd: Vec<&(u64, usize)> = on_disk.iter().filter(|(seq, _)| seq % 2 == 1).collect();
    assert_eq!(odd.len() as u64, u(eb1, "events_built"), "{s}");
    assert!(odd.iter().all(|(_, n)| *n == 2), "{s}");
    assert!(stop < Duration::from_secs(30), "stop took {stop:?}");
    eprintln!(
        "FAULT eventbuilder-0 link cut: stop took {:.1} s; sent {} received {} built {} written {}; errors: {errors}",
        stop.as_secs_f64(),
        u(&s, "fragments_sent"),
        u(&s, "fragments_received"),
        u(&s, "events_built"),
        u(&s, "events_written"),
    );
    // With the link back, the whole system shuts down cleanly.
    ip(&["link", "set", sys.net.veth(EB0), "up"]).expect("restore the link");
    sys.shutdown();
}

#[test]
fn random_packet_loss_on_every_link_loses_nothing() {
    if !iptables_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // TCP retransmissions hold a fragment back for a few RTOs (200 ms
    // and up, doubling): the stale timeout must outlast them, or events
    // would be released incomplete although nothing is lost.
    let Some(sys) = System::start(dir.path(), 5_000) else {
        return;
    };
    // 2 % of TCP packets dropped at random, both ways, in every namespace
    // (every hop crosses two of them).
    for i in 0..=PROCESSES.len() {
        for chain in ["INPUT", "OUTPUT"] {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    sys.net.ns(i),
                    "iptables-legacy",
                    "-A",
                    chain,
                    "-p",
                    "tcp",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    "0.02",
                    "-j",
                    "DROP",
                ],
            )
            .expect("iptables rule");
        }
    }
    let began = Instant::now();
    let out = sys
        .daqctl("demo", &["--duration", "6"])
        .wait_with_output()
        .expect("daqctl demo");
    let took = began.elapsed();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("OK: nothing lost"), "{text}");
    let root = daq_tests::latest_run(&sys.run_dir);
    let s = summary(&root).expect("summary");
    assert_eq!(u(&s, "fragments_sent"), u(&s, "fragments_received"), "{s}");
    assert_eq!(u(&s, "fragments_sent"), 2 * u(&s, "events_built"), "{s}");
    assert_eq!(u(&s, "events_written"), u(&s, "events_built"), "{s}");
    assert_eq!(u(&s, "events_incomplete"), 0, "{s}");
    assert!(u(&s, "events_built") > 0, "{s}");
    assert_eq!(s["errors"], Value::Array(vec![]), "{s}");
    assert_eq!(
        events_on_disk(&root, &s).len() as u64,
        u(&s, "events_built")
    );
    // The loss was real: the rules dropped packets.
    let dropped: u64 = (0..=PROCESSES.len())
        .map(|i| dropped_packets(sys.net.ns(i)))
        .sum();
    assert!(dropped > 0, "no packet dropped");
    let stopped = text
        .lines()
        .find(|l| l.contains("stopped in"))
        .unwrap_or_default()
        .to_string();
    eprintln!(
        "FAULT 2% packet loss on every link: {dropped} packets dropped; {stopped}; whole demo {:.1} s; sent {} built {} written {}; nothing lost",
        took.as_secs_f64(),
        u(&s, "fragments_sent"),
        u(&s, "events_built"),
        u(&s, "events_written"),
    );
    sys.shutdown();
}
