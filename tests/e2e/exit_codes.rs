//! One exit-code contract (README "Exit codes"; `daqctl/src/verdict.rs`)
//! for every command that gives a verdict: `run`, `soak`, `soak analyse`,
//! `heap compare`, `heap across-runs` exit 0 clean, 1 lost data or
//! unreadable input, 2 bad input, 3 leak. Cheaply: two short sessions of
//! three runs each, whose records the analyses reuse, edited where a
//! verdict or a loss must be forced; bad input runs nothing at all.
//! (`leak.rs` covers real soaks that leak or fail.)

use daq_tests::{daqctl, unique_partition};
use proto::HeapSnapshot;
use serde_json::Value;
use std::path::{Path, PathBuf};

const CLEAN: i32 = 0;
const FAILED: i32 = 1;
const BAD_INPUT: i32 = 2;
const LEAK: i32 = 3;

/// Runs daqctl and asserts its exit code; returns stdout.
fn exits(code: i32, args: &[&str]) -> String {
    let out = daqctl(args).expect("daqctl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "daqctl {args:?}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `daqctl run`: three runs of 6000 events at full speed on 1x1x1 without
/// disk writing (about 2 s): the legacy input leaves about 175 B per event
/// in the aggregator, 2 MiB over the runs after the first. Asserts the
/// exit code; returns the run records, in order.
fn session(run_dir: &Path, netmon: &str, code: i32) -> Vec<PathBuf> {
    let partition = unique_partition().to_string();
    let stdout = exits(
        code,
        &[
            "run",
            "--runs",
            "3",
            "--events",
            "6000",
            "--throttle-us",
            "0",
            "--no-disk-writing",
            "--topology",
            "1x1x1",
            "--netmon-input",
            netmon,
            "--partition",
            &partition,
            "--run-dir",
            s(run_dir),
        ],
    );
    assert!(
        stdout.contains("3 of 3 runs with every equality exact"),
        "{stdout}"
    );
    let session: Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("session_000001/session.json"))
            .expect("session.json"),
    )
    .expect("json");
    let verdict = &session["processes"]["aggregator-0"]["verdict"];
    assert_eq!(verdict == "leak", code == LEAK, "{session}");
    session["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| PathBuf::from(r["record"].as_str().expect("record")))
        .collect()
}

/// A run record at `to` made of `from`'s summary.json, edited by `edit`.
fn edited(from: &Path, to: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let mut v: Value = serde_json::from_str(
        &std::fs::read_to_string(from.join("summary.json")).expect("summary.json"),
    )
    .expect("json");
    edit(&mut v);
    std::fs::create_dir_all(to).expect("mkdir");
    std::fs::write(to.join("summary.json"), v.to_string()).expect("write");
    to.to_path_buf()
}

/// Every process of a record left `growth` bytes after a run of `events` events.
fn left_after(events: u64, growth: u64) -> impl FnOnce(&mut Value) {
    move |v| {
        for (_, p) in v["processes"].as_object_mut().expect("processes") {
            let heap = &mut p["heap"];
            heap["before_start"]["allocated"] = 10_000_000u64.into();
            heap["after_stop"]["allocated"] = (10_000_000 + growth).into();
            heap["after_stop"]["events"] = events.into();
            heap["before_stop"]["events"] = events.into();
        }
    }
}

fn lost_data(v: &mut Value) {
    v["errors"] = serde_json::json!(["aggregator-0 died: 12 events lost with it"]);
}

/// A finished soak's record: `template`'s summary (edited by `edit`) and a
/// minute of heap samples of aggregator-0 growing `bytes_per_event`.
fn soak_record(
    template: &Path,
    to: &Path,
    bytes_per_event: u64,
    edit: impl FnOnce(&mut Value),
) -> PathBuf {
    let root = edited(template, to, edit);
    let rows: Vec<HeapSnapshot> = (0..120u64)
        .map(|i| HeapSnapshot {
            unix_ms: 1_000_000 + i * 500,
            events: i * 500,
            allocated: 8_000_000 + i * 500 * bytes_per_event + (i % 7) * 50_000,
            ..Default::default()
        })
        .collect();
    std::fs::create_dir_all(root.join("heap")).expect("mkdir");
    daq_runtime::sampler::write_csv(&root.join("heap/aggregator-0.csv"), &rows).expect("csv");
    root
}

#[test]
fn every_verdict_command_exits_0_clean_1_lost_data_2_bad_input_3_leak() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let leaky = session(&d.join("legacy"), "legacy", LEAK);
    let clean = session(&d.join("fixed"), "fixed", CLEAN);
    let missing = d.join("no-such-run");

    // heap across-runs: the same verdict as the session's.
    let args = |runs: &[PathBuf]| -> Vec<String> {
        ["heap", "across-runs"]
            .iter()
            .map(|a| a.to_string())
            .chain(runs.iter().map(|r| s(r).to_string()))
            .collect()
    };
    let run_args = |runs: &[PathBuf], code: i32| {
        let a = args(runs);
        exits(code, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert!(run_args(&leaky, LEAK).contains("leak"));
    run_args(&clean, CLEAN);
    // A record that lost data: the leak is printed, not trusted.
    let mut lossy = leaky.clone();
    lossy[2] = edited(&leaky[2], &d.join("lossy/run_000003"), lost_data);
    assert!(run_args(&lossy, FAILED).contains("leak"));
    run_args(&[leaky[0].clone(), missing.clone()], BAD_INPUT);
    run_args(&leaky[..1], BAD_INPUT);

    // heap compare: runs of one length are no leak; a short and a long run
    // whose growth grows with the events are.
    exits(CLEAN, &["heap", "compare", s(&clean[0]), s(&clean[2])]);
    let short = edited(
        &clean[0],
        &d.join("edit/short"),
        left_after(10_000, 1_500_000),
    );
    let long = edited(
        &clean[0],
        &d.join("edit/long"),
        left_after(100_000, 15_000_000),
    );
    let flat = edited(&clean[0], &d.join("edit/flat"), left_after(100_000, 0));
    assert!(exits(LEAK, &["heap", "compare", s(&short), s(&long)]).contains("leak"));
    exits(CLEAN, &["heap", "compare", s(&short), s(&flat)]);
    let long_lossy = edited(&long, &d.join("edit/long-lossy"), lost_data);
    exits(FAILED, &["heap", "compare", s(&short), s(&long_lossy)]);
    exits(BAD_INPUT, &["heap", "compare", s(&short), s(&missing)]);
    exits(BAD_INPUT, &["heap", "compare", s(&short)]);

    // soak analyse of a finished soak's record.
    let t = &clean[0];
    let leaking = soak_record(t, &d.join("soak/leak"), 100, |_| {});
    let stable = soak_record(t, &d.join("soak/stable"), 0, |_| {});
    let failed = soak_record(t, &d.join("soak/failed"), 100, lost_data);
    assert!(exits(LEAK, &["soak", "analyse", s(&leaking)]).contains("leak"));
    exits(CLEAN, &["soak", "analyse", s(&stable)]);
    exits(FAILED, &["soak", "analyse", s(&failed)]);
    exits(BAD_INPUT, &["soak", "analyse", s(&missing)]);

    // A soak too short for a trend is clean (leak.rs: soaks that leak or fail).
    let partition = unique_partition().to_string();
    let soak_dir = d.join("soak-run");
    exits(
        CLEAN,
        &[
            "soak",
            "--duration",
            "2",
            "--topology",
            "1x1x1",
            "--sample-interval",
            "0.5",
            "--partition",
            &partition,
            "--run-dir",
            s(&soak_dir),
        ],
    );
}

#[test]
fn bad_input_exits_2_before_anything_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = s(dir.path());
    for bad in [
        vec!["run", "--runs", "0", "--run-dir", run_dir],
        vec![
            "run",
            "--runs",
            "3",
            "--duration",
            "0",
            "--run-dir",
            run_dir,
        ],
        vec![
            "run",
            "--runs",
            "3",
            "--netmon-input",
            "leaky",
            "--run-dir",
            run_dir,
        ],
        vec!["run", "--duration", "2", "--run-dir", run_dir],
        vec!["soak", "--run-dir", run_dir],
        vec![
            "soak",
            "--duration",
            "2",
            "--sample-interval",
            "0",
            "--run-dir",
            run_dir,
        ],
        vec!["soak", "analyse", run_dir],
        vec!["heap", "compare", run_dir, run_dir],
        vec!["heap", "across-runs", run_dir, run_dir],
    ] {
        exits(BAD_INPUT, &bad);
    }
    // Nothing ran: no record, no session.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}
