//! The leak instrumentation finds a real leak and only that: the legacy
//! NetMonInput path (the original artdaq bug, reproduced on purpose) leaks in
//! the aggregators, nothing leaks with the fixed path.

use daq_tests::{Lines, Pipe, daqctl, daqctl_ok, latest_run, output_text, signal, spawn_lines};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Measurements in this file run one at a time: on a 2-core machine, two
/// systems competing for the CPU blur each other's heap trends.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// `daqctl soak` exit codes (README "Exit codes").
const EXIT_STABLE: i32 = 0;
const EXIT_RUN_FAILED: i32 = 1;
const EXIT_LEAK: i32 = 3;

/// A short, fast soak: 5 kHz for 20 s with 4 heap samples a second; `extra`
/// arguments go to daqctl; asserts its exit status.
fn soak_with(
    dir: &Path,
    netmon: &str,
    topology: &str,
    extra: &[&str],
    status: i32,
) -> (PathBuf, Value) {
    let mut args = vec![
        "soak",
        "--duration",
        "20s",
        "--throttle-us",
        "200",
        "--sample-interval",
        "0.25",
        "--netmon-input",
        netmon,
        "--topology",
        topology,
        "--run-dir",
        dir.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let out = daqctl(&args).expect("daqctl runs");
    assert_eq!(
        out.status.code(),
        Some(status),
        "soak exit status\n{}",
        output_text(&out)
    );
    let root = latest_run(dir);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("soak.json")).expect("soak.json"))
            .expect("json");
    let svg = std::fs::read_to_string(root.join("soak.svg")).expect("soak.svg");
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() >= 2 * 4);
    (root, report)
}

fn soak(dir: &Path, netmon: &str, topology: &str, status: i32) -> (PathBuf, Value) {
    soak_with(dir, netmon, topology, &[], status)
}

fn verdicts(report: &Value) -> Vec<(String, String)> {
    report["processes"]
        .as_object()
        .expect("processes")
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t["verdict"].as_str().expect("verdict").to_string(),
            )
        })
        .collect()
}

#[test]
fn legacy_input_leaks_in_the_aggregators_and_nowhere_else() {
    let _one = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, report) = soak_with(
        dir.path(),
        "legacy",
        "2x2x2",
        &["--site-profiles"],
        EXIT_LEAK,
    );
    assert_eq!(report["netmon_input"], "legacy");
    let v = verdicts(&report);
    assert_eq!(v.len(), 6);
    for (name, verdict) in &v {
        let want = if name.starts_with("aggregator") {
            "leak"
        } else {
            "stable"
        };
        assert_eq!(verdict, want, "{name}: {}", report["processes"][&name]);
    }
    for a in ["aggregator-0", "aggregator-1"] {
        let per_event = report["processes"][a]["slope_bytes_per_event"]
            .as_f64()
            .expect("slope");
        // One orphaned history per event: a box (32 B), an entry (80 B) and
        // three strings (16 + 16 + 32 B) in jemalloc size classes: 176 B.
        // Release-build soaks measure 175; a 20 s debug-build soak, 130-180.
        assert!(
            (88.0..352.0).contains(&per_event),
            "{a}: {per_event} B/event"
        );
        // The call site: the legacy deserializer, in the aggregators only.
        let sites = leaking_sites(&report, a);
        assert!(
            !sites.is_empty() && sites.iter().all(|(_, c, _)| c.contains("decode_legacy")),
            "{a}: {sites:?}"
        );
    }
    for (name, _) in v.iter().filter(|(n, _)| !n.starts_with("aggregator")) {
        assert!(leaking_sites(&report, name).is_empty(), "{name}");
    }
}

#[test]
fn fixed_input_is_stable_everywhere_and_so_is_the_2x2_system() {
    let _one = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    for topology in ["2x2x2", "2x2"] {
        let (root, report) = soak(dir.path(), "fixed", topology, EXIT_STABLE);
        // What a run leaves behind in a fixed-mode process stays below the
        // documented bound (one-time connection buffers and caches).
        let summary = daq_tests::summary(&root).expect("summary");
        for (name, p) in summary["processes"].as_object().expect("processes") {
            let at = |b: &str| p["heap"][b]["allocated"].as_i64().expect("allocated");
            let left = at("after_stop") - at("before_start");
            assert!(
                left.abs() < 1 << 20,
                "{topology} {name}: {left} B left after the run"
            );
        }
        // Not only below the verdict's floor: no process grows by as much as
        // one smallest allocation per event (this caught a bounded but
        // per-event growth in the eventbuilder once).
        for (name, t) in report["processes"].as_object().expect("processes") {
            let per_event = t["slope_bytes_per_event"].as_f64().unwrap_or(0.0);
            assert!(per_event < 8.0, "{topology} {name}: {per_event} B/event");
        }
        for (name, verdict) in verdicts(&report) {
            assert_eq!(
                verdict, "stable",
                "{topology} {name}: {}",
                report["processes"][&name]
            );
        }
    }
}

#[test]
fn heap_compare_tells_a_leak_from_stale_allocations() {
    let _one = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().to_str().expect("utf-8");
    let mut roots = Vec::new();
    for events in ["4000", "40000"] {
        daqctl_ok(&[
            "demo",
            "--events",
            events,
            "--throttle-us",
            "0",
            "--netmon-input",
            "legacy",
            "--no-disk-writing",
            "--run-dir",
            run_dir,
        ]);
        roots.push(latest_run(dir.path()));
    }
    let text = daqctl_ok(&["heap", "report", roots[1].to_str().expect("utf-8")]);
    assert!(
        text.contains("before_start") && text.contains("aggregator-1"),
        "{text}"
    );
    let out = daqctl(&[
        "heap",
        "compare",
        roots[0].to_str().expect("utf-8"),
        roots[1].to_str().expect("utf-8"),
    ])
    .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    // A leak found (README "Exit codes").
    assert_eq!(out.status.code(), Some(EXIT_LEAK), "{text}");
    for line in text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_lowercase()) && l.contains('-'))
    {
        let name = line.split_whitespace().next().unwrap_or("");
        let verdict = line.split_whitespace().last().unwrap_or("");
        match name {
            n if n.starts_with("aggregator") => assert_eq!(verdict, "leak", "{text}"),
            n if n.starts_with("boardreader") || n.starts_with("eventbuilder") => {
                assert_ne!(verdict, "leak", "{text}")
            }
            _ => {}
        }
    }
    assert_eq!(text.matches(" leak\n").count(), 2, "{text}");
}

#[test]
fn heap_profile_names_the_legacy_deserializer_as_the_top_growing_site() {
    let _one = exclusive();
    if !daq_tests::jeprof_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let stdout = daqctl_ok(&[
        "demo",
        "--events",
        "20000",
        "--throttle-us",
        "0",
        "--netmon-input",
        "legacy",
        "--no-disk-writing",
        "--heap-profile",
        "--run-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert!(stdout.contains("daqctl heap sites"), "{stdout}");
    let root = latest_run(dir.path());
    for boundary in ["before_start", "before_stop", "after_stop"] {
        assert!(
            root.join("heap")
                .join(format!("aggregator-0.{boundary}.heap"))
                .exists()
        );
    }
    let sites = daqctl_ok(&[
        "heap",
        "sites",
        root.to_str().expect("utf-8"),
        "--process",
        "aggregator-0",
        "--json",
    ]);
    let sites: Value = serde_json::from_str(&sites).expect("json");
    let top = &sites[0];
    assert_eq!(
        top["function"], "daq_format::netmon::decode_legacy",
        "{sites}"
    );
    assert!(top["percent"].as_f64().expect("percent") > 80.0, "{sites}");
}

#[test]
fn an_injected_leak_is_found_at_its_size_in_each_process_kind() {
    let _one = exclusive();
    for kind in ["boardreader", "eventbuilder", "aggregator"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (root, report) = soak_with(
            dir.path(),
            "fixed",
            "2x2x2",
            &["--inject-leak", "64", "--inject-leak-in", kind],
            EXIT_LEAK,
        );
        let summary = daq_tests::summary(&root).expect("summary");
        assert_eq!(summary["injected_leak"]["bytes_per_event"], 64);
        assert_eq!(summary["injected_leak"]["process_kind"], kind);
        assert_eq!(report["injected_leak"]["process_kind"], kind);
        let v = verdicts(&report);
        assert_eq!(v.len(), 6);
        for (name, verdict) in &v {
            let t = &report["processes"][name];
            if name.starts_with(kind) {
                assert_eq!(verdict, "leak", "{kind}: {name}: {t}");
                assert_eq!(t["injected_bytes_per_event"], 64);
                let slope = t["slope_bytes_per_event"].as_f64().expect("slope");
                // 64 B orphaned per event handled, measured within 25%.
                assert!(
                    (48.0..=80.0).contains(&slope),
                    "{kind}: {name}: {slope} B/event"
                );
            } else {
                assert_eq!(verdict, "stable", "{kind}: {name}: {t}");
                assert_eq!(t["injected_bytes_per_event"], 0);
            }
        }
    }
}

/// The leaking call sites soak.json lists for `process`: (function, its
/// chain joined by " <- ", B/event).
fn leaking_sites(report: &Value, process: &str) -> Vec<(String, String, f64)> {
    let t = &report["processes"][process];
    t["leaking_sites"]
        .as_array()
        .unwrap_or_else(|| panic!("{process}: no leaking_sites: {t}"))
        .iter()
        .map(|s| {
            let chain: Vec<&str> = (s["chain"].as_array().expect("chain").iter())
                .filter_map(Value::as_str)
                .collect();
            (
                s["function"].as_str().expect("function").to_string(),
                chain.join(" <- "),
                s["slope_bytes_per_event"].as_f64().expect("slope"),
            )
        })
        .collect()
}

#[test]
fn a_short_soak_names_the_injected_leak_at_its_call_site_and_size() {
    let _one = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, report) = soak_with(
        dir.path(),
        "fixed",
        "2x2x2",
        &[
            "--inject-leak",
            "64",
            "--inject-leak-in",
            "aggregator",
            "--site-profiles",
        ],
        EXIT_LEAK,
    );
    // The profiles the verdict was computed from are in the record.
    let timed = root.join("heap/aggregator-0.timed");
    let dumps = std::fs::read_dir(&timed).expect("timed profiles").count();
    assert!(dumps >= 10, "{dumps} timed profiles in {}", timed.display());
    for (name, t) in report["processes"].as_object().expect("processes") {
        assert!(
            t["profiles"].as_u64().expect("profiles") >= 10,
            "{name}: {t}"
        );
        assert!(
            t["sites_analysed"].as_u64().expect("sites") > 5,
            "{name}: {t}"
        );
        let sites = leaking_sites(&report, name);
        if name.starts_with("aggregator") {
            assert_eq!(t["verdict"], "leak", "{name}: {t}");
            let (_, chain, per_event) = sites
                .iter()
                .find(|(f, _, _)| f == "daq_runtime::leak::inject_leak")
                .unwrap_or_else(|| panic!("{name}: inject_leak not named: {sites:?}"));
            // 64 B orphaned per event, measured at the site within 25%.
            assert!(
                (48.0..=80.0).contains(per_event),
                "{name}: {per_event} B/event at {chain}"
            );
            assert_eq!(sites.len(), 1, "{name}: {sites:?}");
        } else {
            assert_eq!(t["verdict"], "stable", "{name}: {t}");
            assert!(sites.is_empty(), "{name}: {sites:?}");
        }
    }
    // `soak analyse` recomputes the same sites from the record alone.
    let text = daqctl(&["soak", "analyse", root.to_str().expect("utf-8")]).expect("runs");
    assert_eq!(
        text.status.code(),
        Some(EXIT_LEAK),
        "{}",
        output_text(&text)
    );
    let again: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("soak.json")).expect("soak.json"))
            .expect("json");
    for a in ["aggregator-0", "aggregator-1"] {
        assert_eq!(leaking_sites(&again, a), leaking_sites(&report, a));
    }
}

/// A soak running in the background, its stderr read line by line.
struct LiveSoak {
    child: std::process::Child,
    lines: Lines,
    /// Process name -> pid, from daqctl's boot lines.
    pids: Vec<(String, u32)>,
}

impl LiveSoak {
    /// `daqctl soak --duration <duration_s> --throttle-us <throttle_us>
    /// <extra> --run-dir <run_dir>`, once its run is running.
    fn start(run_dir: &str, duration_s: &str, throttle_us: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "soak",
            "--duration",
            duration_s,
            "--throttle-us",
            throttle_us,
        ];
        args.extend_from_slice(extra);
        args.extend(["--run-dir", run_dir]);
        let (child, lines) = spawn_lines(
            daq_tests::daqctl_command(&args).stdout(std::process::Stdio::null()),
            Pipe::Stderr,
        )
        .expect("daqctl starts");
        let mut live = Self {
            child,
            lines,
            pids: Vec::new(),
        };
        live.wait_running();
        live
    }

    /// Reads stderr until the run is running, collecting the processes' pids.
    fn wait_running(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = self
                .lines
                .next_before(deadline)
                .expect("daqctl says the run is running within 60 s");
            let cols: Vec<&str> = line.split_whitespace().collect();
            // `<name> pid <pid> <addr> [<metrics url>]`
            if let [name, "pid", pid, _addr, ..] = cols.as_slice() {
                self.pids
                    .push((name.to_string(), pid.parse().expect("pid")));
            }
            if line.ends_with(": running") {
                return;
            }
        }
    }

    fn pid(&self, name: &str) -> u32 {
        self.pids
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("no pid for {name} in {:?}", self.pids))
    }
}

/// Waits until `path` holds at least `rows` lines (a heap CSV filling up).
fn wait_for_rows(path: &Path, rows: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(path).map_or(0, |t| t.lines().count()) < rows {
        assert!(
            Instant::now() < deadline,
            "{} has fewer than {rows} rows after 120 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until a process that is not our child has exited (SIGKILL after
/// 10 s: a boardreader whose generator is running does not end on SIGTERM).
fn wait_gone(pid: u32) {
    if daq_tests::wait_gone(pid, Duration::from_secs(10)).is_none() {
        signal("-KILL", pid);
    }
}

#[test]
fn soak_analyse_recomputes_the_verdicts_of_a_soak_whose_daqctl_was_killed() {
    let _one = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().to_str().expect("utf-8");
    let mut live = LiveSoak::start(
        run_dir,
        "120",
        "200",
        &[
            "--sample-interval",
            "0.25",
            "--inject-leak",
            "64",
            "--inject-leak-in",
            "eventbuilder",
        ],
    );
    let root = dir.path().join("run_000001");
    // 20 s of samples (4 a second), then daqctl dies without a word.
    wait_for_rows(&root.join("heap").join("eventbuilder-1.csv"), 81);
    live.child.kill().expect("SIGKILL daqctl");
    live.child.wait().expect("reaped");
    // Its processes outlive it; end them as an operator would.
    for (_, pid) in &live.pids {
        signal("-TERM", *pid);
    }
    for (_, pid) in &live.pids {
        wait_gone(*pid);
    }
    assert!(!root.join("summary.json").exists());
    let out = daqctl(&["soak", "analyse", root.to_str().expect("utf-8")]).expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(EXIT_LEAK), "{}", output_text(&out));
    assert!(stdout.contains("unfinished: the samples cover"), "{stdout}");
    assert!(stdout.contains("of the planned 120 s"), "{stdout}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("soak.json")).expect("soak.json"))
            .expect("json");
    assert_eq!(report["finished"], false);
    assert_eq!(report["planned_duration_s"], 120.0);
    let coverage = report["coverage"].as_f64().expect("coverage");
    assert!((0.15..0.6).contains(&coverage), "{coverage}");
    for (name, verdict) in verdicts(&report) {
        let want = if name.starts_with("eventbuilder") {
            "leak"
        } else {
            "stable"
        };
        assert_eq!(verdict, want, "{name}: {}", report["processes"][&name]);
    }
    assert!(
        std::fs::read_to_string(root.join("soak.svg"))
            .expect("soak.svg")
            .starts_with("<svg")
    );
}

#[test]
fn a_soak_whose_run_fails_exits_1_and_bad_arguments_exit_2() {
    let _one = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().to_str().expect("utf-8");
    let mut live = LiveSoak::start(run_dir, "8", "1000", &[]);
    signal("-KILL", live.pid("boardreader-1"));
    let status = live.child.wait().expect("daqctl ends");
    assert_eq!(status.code(), Some(EXIT_RUN_FAILED));
    let summary = daq_tests::summary(&dir.path().join("run_000001")).expect("summary");
    let errors = summary["errors"].to_string();
    assert!(errors.contains("boardreader-1"), "{errors}");
    for bad in [
        vec!["soak"],
        vec!["soak", "--duration", "0"],
        vec![
            "soak",
            "--duration",
            "60",
            "--inject-leak-in",
            "eventbuilder",
        ],
        vec![
            "soak",
            "--duration",
            "60",
            "--inject-leak",
            "8",
            "--inject-leak-in",
            "daqctl",
        ],
        vec!["soak", "analyse", run_dir],
    ] {
        let out = daqctl(&bad).expect("runs");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
