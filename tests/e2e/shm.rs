//! Shared-memory event stores in a running system: backpressure, stale and
//! late fragments, over-size fragments, a boardreader killed mid-run, segment
//! hygiene, and an online monitor in a separate process.

use daq_format::fragment::Fragment;
use daq_shm::segment_path;
use daq_tests::{
    Control, bin_dir, control, daqctl_ok, data_fragment, fragment_batch, latest_run, runtime,
    signal, spawn, spawn_daqctl, start_request, summary, test_config, u, unique_partition,
    wait_for_status,
};
use proto::fragment_sink_client::FragmentSinkClient;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn sum(s: &Value, kind: &str, counter: &str) -> u64 {
    s["processes"]
        .as_object()
        .expect("processes")
        .iter()
        .filter(|(n, _)| n.starts_with(kind))
        .map(|(_, p)| p["counters"][counter].as_u64().unwrap_or(0))
        .sum()
}

/// A temporary directory with a demo's config file of `text`; the file
/// and the run directory in it.
fn demo_dir(text: &str) -> (tempfile::TempDir, String, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("system.toml");
    std::fs::write(&path, text).expect("config");
    let runs = dir.path().join("runs");
    (dir, path.display().to_string(), runs)
}

#[test]
fn slow_disk_writer_backpressures_the_system_and_nothing_is_lost() {
    // Few buffers, 8 KiB fragments and 2 ms per event on disk: the
    // aggregators fall behind, the eventbuilders' stores fill, and the stop
    // must wait for the slow stages instead of giving up on parked fragments.
    let (_dir, cfg, run_dir) = demo_dir(
        "[generator]\nn_adc_counts = 4000\n[eventbuilder]\nbuffer_count = 8\n[aggregator]\nbuffer_count = 8\nwrite_delay_us = 2000\n",
    );
    let run = run_dir.to_str().expect("utf-8");
    daqctl_ok(&[
        "demo",
        "--config",
        &cfg,
        "--duration",
        "3",
        "--throttle-us",
        "0",
        "--run-dir",
        run,
    ]);
    let s = summary(&latest_run(&run_dir)).expect("summary");
    // A timed run at full speed: at stop, much is still in flight.
    let built = u(&s, "events_built");
    assert!(built > 0, "{s}");
    assert_eq!(u(&s, "events_written"), built);
    assert_eq!(u(&s, "fragments_sent"), 2 * built);
    assert_eq!(u(&s, "fragments_received"), 2 * built);
    assert_eq!(u(&s, "events_incomplete"), 0);
    let waited = sum(&s, "aggregator", "backpressure_wait_ms");
    assert!(waited > 0, "the aggregators never waited: {s}");
    assert_eq!(s["errors"], Value::Array(vec![]), "{s}");
}

/// Polls the process's counters until `done` holds (a state, not a sleep).
async fn wait_for(c: &mut Control, what: &str, done: impl Fn(&proto::Counters) -> bool) {
    wait_for_status(c, what, |st| st.counters.as_ref().is_some_and(&done)).await;
}

/// Sends boardreader `source`'s fragment of event `seq` with `payload`
/// bytes on its stream.
async fn feed(tx: &mpsc::Sender<proto::FragmentBatch>, source: u32, seq: u64, payload: usize) {
    let fragment = data_fragment(seq, source as u16, payload);
    tx.send(fragment_batch(source, 1, vec![fragment]))
        .await
        .expect("send");
}

/// An eventbuilder spawned alone, initialized for a 1x0 system on a
/// partition of its own (stale events released after 200 ms, 4 KiB
/// buffers); its client and partition.
async fn eventbuilder_ready(p: &daq_tests::Spawned) -> (Control, u32) {
    let mut config = test_config(1, 0);
    config.eventbuilder.stale_timeout_ms = 200;
    config.eventbuilder.buffer_bytes = 4096;
    let mut c = control(&p.addr).await;
    daq_tests::init(&mut c, &config).await;
    (c, config.partition)
}

#[test]
fn stale_events_are_released_with_missing_ids_late_and_oversize_fragments_counted() {
    let p = spawn("eventbuilder", 0).expect("spawns");
    runtime().block_on(async {
        let (mut c, _) = eventbuilder_ready(&p).await;
        c.start(start_request(1, Path::new("")))
            .await
            .expect("start");
        let ch = daq_tests::connect(&p.addr).await;
        let batch = |source, fragments| fragment_batch(source, 1, fragments);
        let (tx0, rx0) = mpsc::channel(4);
        let (tx1, rx1) = mpsc::channel(4);
        let mut s0 = FragmentSinkClient::new(ch.clone());
        let mut s1 = FragmentSinkClient::new(ch);
        let h0 = tokio::spawn(async move { s0.send(ReceiverStream::new(rx0)).await });
        let h1 = tokio::spawn(async move { s1.send(ReceiverStream::new(rx1)).await });

        // Event 1 gets only boardreader 0's fragment: released incomplete.
        feed(&tx0, 0, 1, 16).await;
        wait_for(&mut c, "stale release", |k| k.events_incomplete == 1).await;
        // Boardreader 1's fragment for event 1 is now late: dropped, counted.
        feed(&tx1, 1, 1, 16).await;
        wait_for(&mut c, "late fragment", |k| k.late_fragments == 1).await;
        // A fragment over buffer_bytes / boardreaders (2048) is rejected.
        feed(&tx0, 0, 2, 3000).await;
        wait_for(&mut c, "over-size fragment", |k| k.oversize_fragments == 1).await;
        // Event 3 is whole: built.
        feed(&tx0, 0, 3, 16).await;
        feed(&tx1, 1, 3, 16).await;
        wait_for(&mut c, "complete event", |k| k.events_built == 1).await;
        let eod = |id: u16, n: u64| Fragment::end_of_data(id, 4, n).expect("eod").into_bytes();
        tx0.send(batch(0, vec![eod(0, 3)])).await.expect("send");
        tx1.send(batch(1, vec![eod(1, 2)])).await.expect("send");
        drop((tx0, tx1));
        let r0 = h0
            .await
            .expect("joins")
            .expect("stream 0 accepted")
            .into_inner();
        let r1 = h1
            .await
            .expect("joins")
            .expect("stream 1 accepted")
            .into_inner();
        assert_eq!((r0.received, r0.announced), (3, Some(3)));
        assert_eq!((r1.received, r1.announced), (2, Some(2)));
        let stop = daq_tests::stop(&mut c).await;
        assert_eq!(stop.problems, Vec::<String>::new());
        let k = stop.counters.expect("counters");
        assert_eq!(
            (
                k.events_built,
                k.events_incomplete,
                k.late_fragments,
                k.oversize_fragments,
                k.streams_rejected
            ),
            (1, 1, 1, 1, 0)
        );
    });
}

fn segment_mode(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

#[test]
fn segment_is_private_and_removed_at_stop_and_on_sigterm() {
    let mut p = spawn("eventbuilder", 0).expect("spawns");
    let path = runtime().block_on(async {
        let (mut c, partition) = eventbuilder_ready(&p).await;
        let path = segment_path(partition, "eventbuilder-0");
        for run in [1, 2] {
            c.start(start_request(run, Path::new("")))
                .await
                .expect("start");
            assert_eq!(segment_mode(&path), Some(0o600), "{}", path.display());
            if run == 1 {
                daq_tests::stop(&mut c).await;
                assert_eq!(segment_mode(&path), None, "removed at stop");
            }
        }
        path
    });
    // Run 2 is still going: SIGTERM removes the segment on the way out.
    signal("-TERM", p.child.id());
    let exit = p.child.wait().expect("exits");
    assert!(exit.success(), "{exit}");
    assert_eq!(segment_mode(&path), None, "removed on SIGTERM");
}

#[test]
fn killed_boardreader_leaves_incomplete_events_and_the_run_still_stops_cleanly() {
    let (_dir, cfg, run_dir) = demo_dir(
        "[generator]\nthrottle_us = 5000\n[eventbuilder]\nstale_timeout_ms = 500\n[transfer]\nend_of_data_timeout_ms = 2000\n",
    );
    let (mut child, mut lines) = spawn_daqctl(&[
        "demo",
        "--config",
        &cfg,
        "--duration",
        "6",
        "--run-dir",
        run_dir.to_str().expect("utf-8"),
    ]);
    // Wait until the run has produced data for a second, then kill.
    lines.wait_for("fragments sent", Duration::from_secs(120));
    signal("-9", lines.pid("boardreader-1"));
    let status = child.wait().expect("daqctl exits");
    let stdout = std::io::read_to_string(child.stdout.take().expect("stdout")).expect("stdout");
    lines.finish();
    // The run had errors (a dead process), so daqctl says so in its status.
    assert_eq!(status.code(), Some(1), "{stdout}\n{}", lines.text());
    let root = latest_run(&run_dir);
    let s = summary(&root).expect("summary");
    let errors = s["errors"].to_string();
    assert!(
        errors.contains("boardreader-1 exited unexpectedly"),
        "{errors}"
    );
    let built = u(&s, "events_built");
    let incomplete = u(&s, "events_incomplete");
    assert!(built > 0 && incomplete > 0, "{s}");
    // Every event reached the disk: the complete ones whole, the incomplete
    // ones with boardreader 0's fragment only.
    assert_eq!(u(&s, "events_written"), built + incomplete, "{s}");
    let mut complete = 0;
    for f in s["data_files"].as_array().expect("files") {
        let file =
            daq_datafile::hdf5::read_file(&root.join(f.as_str().expect("path"))).expect("reads");
        for e in file.events {
            if e.complete {
                complete += 1;
                assert_eq!(e.fragments.len(), 2);
            } else {
                assert_eq!(e.fragments.len(), 1);
                assert_eq!(e.fragments[0].fragment_id, 0);
            }
        }
    }
    assert_eq!(complete, built);
    // The eventbuilders stopped cleanly and named the lost boardreader.
    for eb in ["eventbuilder-0", "eventbuilder-1"] {
        let p = s["processes"][eb]["problems"].to_string();
        assert!(p.contains("boardreader-1"), "{eb}: {p}");
    }
}

#[test]
fn monitor_reads_a_running_aggregator_without_disturbing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let partition = unique_partition().to_string();
    let run_dir = dir.path().join("runs");
    let demo = Command::new(bin_dir().join("daqctl"))
        .args([
            "demo",
            "--duration",
            "4",
            "--throttle-us",
            "10000",
            "--partition",
            &partition,
            "--run-dir",
        ])
        .arg(&run_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("demo starts");
    let monitor = Command::new(bin_dir().join("daqctl"))
        .args([
            "monitor",
            "--process",
            "aggregator-0",
            "--partition",
            &partition,
            "--wait",
            "60",
        ])
        .output()
        .expect("monitor runs");
    let text = String::from_utf8_lossy(&monitor.stdout);
    assert!(
        monitor.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&monitor.stderr)
    );
    assert!(text.contains("store closed by aggregator-0"), "{text}");
    let seen: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split("events seen").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(seen.last().copied().unwrap_or(0) > 0, "{text}");
    let out = demo.wait_with_output().expect("demo ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("OK: nothing lost"), "{stdout}");
}
