//! End-to-end: `daqctl demo` boots the real 2x2x2 system on loopback and the
//! run record proves nothing was lost; the data files hold exactly what the
//! generators produced.

use daq_datafile::hdf5::read_file;
use daq_format::config::SystemConfig;
use daq_format::generator::ToySimulator;
use daq_tests::{
    assert_nothing_lost_and_no_problems, daqctl_ok, data_files, h5dump, latest_run, summary, u,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Runs a demo and returns the run directory and its summary; asserts success.
fn demo(run_dir: &Path, args: &[&str]) -> (PathBuf, Value) {
    let mut all = vec!["demo", "--run-dir", run_dir.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let stdout = daqctl_ok(&all);
    assert!(stdout.contains("OK: nothing lost"), "{stdout}");
    let root = latest_run(run_dir);
    let s = summary(&root).expect("summary.json");
    (root, s)
}

/// Reads every data file of a run and checks each event against the
/// generator: sequence ids are exactly `expected`, every fragment's metadata
/// and payload are what ToySimulator produces for its board and seed.
fn check_data_files(root: &Path, s: &Value, expected: &BTreeSet<u64>) -> Vec<PathBuf> {
    let config = SystemConfig::from_file(&root.join("config.toml")).expect("config.toml");
    let n_br = config.topology.boardreaders;
    let generators: Vec<ToySimulator> = (0..n_br)
        .map(|b| ToySimulator::new(b, &config.generator))
        .collect();
    let files = data_files(root, s);
    assert_eq!(files.len(), usize::from(config.topology.aggregators));
    let mut seen = BTreeSet::new();
    let run = u(s, "run") as u32;
    for f in &files {
        let file = read_file(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(file.run, run);
        assert_eq!(file.recorded_events, Some(file.events.len() as u64));
        for e in &file.events {
            assert!(
                seen.insert(e.sequence_id),
                "sequence id {} twice",
                e.sequence_id
            );
            assert_eq!((e.run, e.event), (run, e.sequence_id));
            assert!(e.complete);
            assert_eq!(e.fragments.len(), usize::from(n_br));
            for (i, frag) in e.fragments.iter().enumerate() {
                let want = generators[i].fragment(e.sequence_id).expect("generates");
                assert_eq!(frag.fragment_id as usize, i);
                assert_eq!(frag.sequence_id, e.sequence_id);
                assert_eq!(frag.timestamp, want.timestamp());
                assert_eq!(frag.fragment_type, want.header().fragment_type);
                assert_eq!(
                    frag.metadata,
                    want.metadata(),
                    "seq {} frag {i}",
                    e.sequence_id
                );
                assert_eq!(
                    frag.payload,
                    want.payload(),
                    "seq {} frag {i}",
                    e.sequence_id
                );
            }
        }
    }
    assert_eq!(&seen, expected);
    files
}

/// Reads the same files with h5py (through tests/h5dump_events.py) and
/// compares every field with the Rust reader.
fn check_with_h5py(files: &[PathBuf]) {
    let Some(dump) = h5dump(files) else { return };
    let dumped = dump["files"].as_array().expect("files");
    assert_eq!(dumped.len(), files.len());
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for (f, d) in files.iter().zip(dumped) {
        let file = read_file(f).expect("reads");
        let events = d["events"].as_array().expect("events");
        assert_eq!(events.len(), file.events.len(), "{}", f.display());
        assert_eq!(d["attrs"]["run"].as_u64(), Some(u64::from(file.run)));
        for (e, j) in file.events.iter().zip(events) {
            assert_eq!(j["sequence_id"].as_u64(), Some(e.sequence_id));
            assert_eq!(j["complete"].as_bool(), Some(e.complete));
            let frags = j["fragments"].as_array().expect("fragments");
            assert_eq!(frags.len(), e.fragments.len());
            for (fr, jf) in e.fragments.iter().zip(frags) {
                assert_eq!(jf["fragment_id"].as_u64(), Some(u64::from(fr.fragment_id)));
                assert_eq!(jf["payload_hex"].as_str(), Some(hex(&fr.payload).as_str()));
                assert_eq!(
                    jf["metadata_hex"].as_str(),
                    Some(hex(&fr.metadata).as_str())
                );
            }
        }
    }
}

#[test]
fn full_speed_run_of_fixed_length_writes_exactly_what_was_generated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, s) = demo(dir.path(), &["--events", "3000", "--throttle-us", "0"]);
    assert_nothing_lost_and_no_problems(&s);
    assert_eq!(u(&s, "events_built"), 3000);
    assert_eq!(u(&s, "fragments_sent"), 6000);
    let files = check_data_files(&root, &s, &(1..=3000).collect());
    check_with_h5py(&files);
}

#[test]
fn full_speed_timed_run_ends_every_event_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, s) = demo(dir.path(), &["--duration", "3", "--throttle-us", "0"]);
    assert_nothing_lost_and_no_problems(&s);
    // The synchronized end of run: every boardreader ends on the same event,
    // so the sequence ids are exactly 1..=events_built.
    let n = u(&s, "events_built");
    check_data_files(&root, &s, &(1..=n).collect());
}

#[test]
fn default_rate_run_loses_nothing_and_run_numbers_increase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root1, s1) = demo(dir.path(), &["--duration", "1.5"]);
    assert_nothing_lost_and_no_problems(&s1);
    assert_eq!(u(&s1, "throttle_us"), 100_000);
    // 10 Hz for 1.5 s: a handful of events, not thousands.
    assert!(u(&s1, "events_built") <= 30, "{s1}");
    assert_eq!(u(&s1, "run"), 1);
    assert!(root1.ends_with("run_000001"));
    let (root2, s2) = demo(dir.path(), &["--events", "5"]);
    assert_eq!(u(&s2, "run"), 2);
    assert!(root2.ends_with("run_000002"));
    assert_nothing_lost_and_no_problems(&s2);
    assert_eq!(u(&s2, "events_built"), 5);
    for sub in [
        "config.toml",
        "logs/boardreader-0.log",
        "logs/aggregator-1.log",
    ] {
        assert!(root2.join(sub).exists(), "{sub}");
    }
}
