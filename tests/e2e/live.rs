//! What an operator watches during a run is live: a real Prometheus server
//! scraping a running 2x2x2 demo (the demo's settings, `--throttle-us
//! 1000`) sees the rate of every data-path counter above zero on every
//! process that does that work, every aggregator's
//! `daq_bytes_written_total` grows between two scrapes, and it agrees
//! with the sizes of the aggregator's data files on disk within one batch.

use crate::metrics::{Prometheus, scrape};
use daq_format::config::AggregatorConfig;
use daq_tests::{Pipe, bin_dir, spawn_lines, tool_available, unique_partition};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The data-path counters, by the kind of process that moves them.
const DATA_PATH: [(&str, &[&str]); 3] = [
    ("boardreader", &["fragments_sent", "bytes_sent"]),
    (
        "eventbuilder",
        &[
            "fragments_received",
            "bytes_received",
            "events_built",
            "events_sent",
            "bytes_sent",
        ],
    ),
    (
        "aggregator",
        &[
            "events_received",
            "bytes_received",
            "events_written",
            "bytes_written",
        ],
    ),
];

/// The sum of a metric's samples in an exposition (whatever its labels).
fn total(text: &str, metric: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Sum of the sizes of `process`'s data files in `data` now.
fn file_bytes(data: &Path, process: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(data) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(&format!("_{process}_"))
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn mid_run_every_data_path_counter_moves_and_bytes_written_matches_the_files() {
    if !tool_available("prometheus", "prometheus") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    // The boot table is on stderr: read for the processes' metrics URLs.
    let (mut child, mut lines) = spawn_lines(
        Command::new(bin_dir().join("daqctl"))
            .args([
                "demo",
                "--duration",
                "30",
                "--throttle-us",
                "1000",
                "--run-dir",
            ])
            .arg(&runs)
            .arg(format!("--partition={}", unique_partition()))
            .stdin(Stdio::null())
            .stdout(Stdio::inherit()),
        Pipe::Stderr,
    )
    .expect("daqctl starts");
    let mut processes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while processes.len() < 6 {
        let line = lines.next_before(deadline).expect("six processes booted");
        // The demo's boot table: `  <process> pid <pid>  <address>  <metrics URL>`.
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [process, "pid", _, _, url] = words[..]
            && url.ends_with("/metrics")
        {
            processes.push((process.to_string(), url.to_string()));
        }
    }
    let prom = Prometheus::start(dir.path(), &processes);

    // The rate of every data-path counter is above zero on both processes
    // of the kind that moves it.
    for (kind, counters) in DATA_PATH {
        for counter in counters {
            let q = format!("count(rate(daq_{counter}_total{{process=~\"{kind}-.*\"}}[2s]) > 0)");
            let got = prom.wait_for(&q, 2.0, Duration::from_secs(30));
            assert_eq!(got, Some(2.0), "{q}");
        }
    }

    let data = runs.join("run_000001").join("data");
    let batch_events = AggregatorConfig::default().batch_events as f64;
    for (process, url) in processes
        .iter()
        .filter(|(p, _)| p.starts_with("aggregator"))
    {
        // Above zero, and growing between two scrapes.
        let first = total(&scrape(url), "daq_bytes_written_total").expect("bytes_written");
        assert!(first > 0.0, "{process}: bytes written {first}");
        let until = Instant::now() + Duration::from_secs(20);
        let grew = std::iter::from_fn(|| {
            // Scraped every 100 ms until it grows or the deadline passes.
            (Instant::now() < until).then(|| {
                std::thread::sleep(Duration::from_millis(100));
                total(&scrape(url), "daq_bytes_written_total").unwrap_or(0.0)
            })
        })
        .find(|&now| now > first);
        assert!(grew.is_some(), "{process}: bytes written stayed at {first}");

        // The counter is the files' size, within one batch of events.
        let before = file_bytes(&data, process) as f64;
        let body = scrape(url);
        let after = file_bytes(&data, process) as f64;
        let bytes = total(&body, "daq_bytes_written_total").expect("bytes_written");
        let events = total(&body, "daq_events_written_total").expect("events_written");
        assert!(events > 0.0, "{process}: events written {events}");
        let batch = batch_events * bytes / events;
        eprintln!(
            "{process}: bytes_written {bytes} events_written {events}, files {before}..{after} bytes, batch {batch:.0} bytes"
        );
        assert!(
            bytes <= after + batch && bytes + batch >= before,
            "{process}: bytes_written {bytes} vs files {before}..{after} (batch {batch:.0})"
        );
    }
    drop(prom);
    let status = child.wait().expect("daqctl ends");
    assert!(status.success(), "demo: {status}");
}
