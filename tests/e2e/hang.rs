//! A process hung mid-run (SIGSTOP, artdaq's "hang" fault): `daqctl demo`
//! names it as soon as a command gets no answer, stops the rest of the
//! system in order within a bounded time, writes the record without it and
//! exits 1; after SIGCONT the hung process is shut down cleanly by daqctl's
//! own shutdown (it removes its shared memory, nothing is killed).

use daq_tests::{signal, spawn_daqctl, summary, tally, u, unique_partition};
use serde_json::Value;
use std::path::Path;
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
    _dir: tempfile::TempDir,
}

/// Runs a 2x2x2 demo, SIGSTOPs `target` once data flows, SIGCONTs it once
/// daqctl has stopped the run, and checks what every fault must give:
/// among them, both processes upstream of it (`{upstream}-0` and `-1`)
/// found the hung one (its connection failed its keep-alive), named it and
/// only it, and counted what they could not deliver to it.
fn run_with_hung(target: &str, upstream: &str) -> Hung {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let cfg = dir.join("system.toml");
    std::fs::write(
        &cfg,
        "[generator]\nthrottle_us = 5000\n[eventbuilder]\nstale_timeout_ms = 500\n[transfer]\nend_of_data_timeout_ms = 2000\n",
    )
    .expect("config");
    let run_dir = dir.join("runs");
    let partition = unique_partition();
    let (mut child, mut lines) = spawn_daqctl(&[
        "demo",
        "--config",
        cfg.to_str().expect("utf-8"),
        "--duration",
        "8",
        &format!("--partition={partition}"),
        "--run-dir",
        run_dir.to_str().expect("utf-8"),
    ]);
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
    let kind = target.trim_end_matches("-0");
    for p in [format!("{upstream}-0"), format!("{upstream}-1")] {
        let problems = s["processes"][&p]["problems"].to_string();
        assert!(problems.contains(target), "{p}: {problems}");
        assert!(!problems.contains(&format!("{kind}-1")), "{p}: {problems}");
        assert!(u(counters(&s, &p), "dropped") > 0, "{p}: {s}");
    }
    Hung {
        stop,
        summary: s,
        root,
        _dir: tmp,
    }
}

fn counters<'a>(s: &'a Value, p: &str) -> &'a Value {
    &s["processes"][p]["counters"]
}

#[test]
fn hung_eventbuilder_is_named_the_rest_stops_and_it_shuts_down_after_sigcont() {
    let h = run_with_hung("eventbuilder-0", "boardreader");
    let s = &h.summary;
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
    // Both eventbuilders lost aggregator-0 and counted the events they
    // could not deliver.
    let h = run_with_hung("aggregator-0", "eventbuilder");
    let s = &h.summary;
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
