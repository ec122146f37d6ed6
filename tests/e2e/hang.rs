//! A process hung mid-run (SIGSTOP, artdaq's "hang" fault): `daqctl demo`
//! names it as soon as a command gets no answer, stops the rest of the
//! system in order within a bounded time, writes the record without it and
//! exits 1; after SIGCONT the hung process is shut down cleanly by daqctl's
//! own shutdown (it removes its shared memory, nothing is killed).

use daq_tests::{Pipe, bin_dir, signal, spawn_lines, summary, tally, u, unique_partition};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every event in the data files of `root`, by writing aggregator: (sequence id, complete).
fn events_on_disk(root: &Path, s: &Value) -> Vec<(String, u64, bool)> {
    let mut out = Vec::new();
    for f in s["data_files"].as_array().expect("data_files") {
        let file = daq_datafile::hdf5::read_file(&root.join(f.as_str().expect("path")))
            .expect("data file reads");
        for e in &file.events {
            out.push((file.process.clone(), e.sequence_id, e.complete));
        }
    }
    out
}

/// What happened, for the fault table.
struct Hung {
    stop: Duration,
    summary: Value,
    root: std::path::PathBuf,
}

/// Runs a 2x2x2 demo, SIGSTOPs `target` once data flows, SIGCONTs it once
/// daqctl has stopped the run, and checks what every fault must give.
fn run_with_hung(dir: &Path, target: &str) -> Hung {
    let cfg = dir.join("system.toml");
    std::fs::write(
        &cfg,
        "[generator]\nthrottle_us = 5000\n[eventbuilder]\nstale_timeout_ms = 500\n[transfer]\nend_of_data_timeout_ms = 2000\n",
    )
    .expect("config");
    let run_dir = dir.join("runs");
    let partition = unique_partition();
    let (mut child, mut lines) = spawn_lines(
        Command::new(bin_dir().join("daqctl"))
            .arg("demo")
            .arg("--config")
            .arg(&cfg)
            .args(["--duration", "8", "--partition", &partition.to_string()])
            .arg("--run-dir")
            .arg(&run_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
        Pipe::Stderr,
    )
    .expect("daqctl starts");
    lines.wait_for("fragments sent", Duration::from_secs(60));
    let pid = lines.pid(target);
    signal("-STOP", pid);
    lines.wait_for("stopping", Duration::from_secs(60));
    let began = Instant::now();
    lines.wait_for("stopped in", Duration::from_secs(120));
    let stop = began.elapsed();
    // The stop named the hung process as it happened.
    let said = format!("daqctl: {target} does not answer: stop");
    assert!(lines.text().contains(&said), "{}", lines.text());
    signal("-CONT", pid);
    let status = child.wait().expect("daqctl exits");
    lines.drain();
    let stdout = std::io::read_to_string(child.stdout.take().expect("stdout")).expect("stdout");
    let all = format!("{stdout}\n{}", lines.text());
    assert_eq!(status.code(), Some(1), "{all}");
    let root = daq_tests::latest_run(&run_dir);
    let s = summary(&root).expect("summary");
    let errors = s["errors"].to_string();
    assert!(
        errors.contains(&format!("{target} does not answer: stop got no reply")),
        "{errors}"
    );
    assert!(
        errors.contains(&format!("{target} never answered")),
        "{errors}"
    );
    // After SIGCONT it was shut down on request, like the others.
    assert!(!errors.contains("did not exit"), "{errors}");
    assert!(!errors.contains("shutdown"), "{errors}");
    // The rest of the system stopped and is in the record; the hung one is not.
    let procs = s["processes"].as_object().expect("processes");
    let mut names: Vec<&str> = procs.keys().map(String::as_str).collect();
    names.sort();
    let mut want = vec![
        "aggregator-0",
        "aggregator-1",
        "boardreader-0",
        "boardreader-1",
        "eventbuilder-0",
        "eventbuilder-1",
    ];
    want.retain(|n| *n != target);
    assert_eq!(names, want, "{s}");
    assert!(stop < Duration::from_secs(30), "stop took {stop:?}");
    // Nothing is left in /dev/shm by this partition.
    let prefix = format!("daq-p{partition}-");
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
    eprintln!(
        "FAULT {target} hung: stop took {:.1} s; {}; errors: {errors}",
        stop.as_secs_f64(),
        tally(&s)
    );
    Hung {
        stop,
        summary: s,
        root,
    }
}

fn counters<'a>(s: &'a Value, p: &str) -> &'a Value {
    &s["processes"][p]["counters"]
}

/// Both `{kind}-0` and `{kind}-1` named the hung `{next}-0` (its connection
/// failed its keep-alive), not `{next}-1`, and counted what they could not
/// deliver to it.
fn upstream_lost(s: &Value, kind: &str, next: &str) {
    for p in [format!("{kind}-0"), format!("{kind}-1")] {
        let problems = s["processes"][&p]["problems"].to_string();
        assert!(problems.contains(&format!("{next}-0")), "{p}: {problems}");
        assert!(!problems.contains(&format!("{next}-1")), "{p}: {problems}");
        assert!(u(counters(s, &p), "dropped") > 0, "{p}: {s}");
    }
}

#[test]
fn hung_eventbuilder_is_named_the_rest_stops_and_it_shuts_down_after_sigcont() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = run_with_hung(dir.path(), "eventbuilder-0");
    let s = &h.summary;
    // The boardreaders found the hung eventbuilder (its connection failed
    // its keep-alive) and counted what they could not deliver to it.
    upstream_lost(s, "boardreader", "eventbuilder");
    // Every event the other eventbuilder built (the odd sequence ids) is
    // on disk.
    let eb1 = counters(s, "eventbuilder-1");
    let on_disk = events_on_disk(&h.root, s);
    let from_eb1 = on_disk.iter().filter(|(_, seq, _)| seq % 2 == 1).count() as u64;
    assert_eq!(
        from_eb1,
        u(eb1, "events_built") + u(eb1, "events_incomplete"),
        "{s}"
    );
    assert_eq!(u(eb1, "events_incomplete"), 0, "{s}");
    assert!(h.stop > Duration::ZERO);
}

#[test]
fn hung_aggregator_is_named_the_rest_stops_and_it_shuts_down_after_sigcont() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = run_with_hung(dir.path(), "aggregator-0");
    let s = &h.summary;
    // Both eventbuilders lost aggregator-0 and counted the events they
    // could not deliver.
    upstream_lost(s, "eventbuilder", "aggregator");
    // Nothing lost before the eventbuilders: fragments sent = received.
    assert_eq!(u(s, "fragments_sent"), u(s, "fragments_received"), "{s}");
    // The other aggregator's files hold every event it wrote.
    let on_disk = events_on_disk(&h.root, s);
    let ag1 = on_disk
        .iter()
        .filter(|(p, _, _)| p == "aggregator-1")
        .count() as u64;
    assert_eq!(ag1, u(counters(s, "aggregator-1"), "events_written"), "{s}");
}
