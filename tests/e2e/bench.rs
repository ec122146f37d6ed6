//! `daqctl bench --quick` end to end: the real binaries measured through
//! the real CLI; bench.json holds every measurement of the quick matrix,
//! every pipeline run's equalities held and every figure is positive. No
//! timing is asserted: only that each figure was measured.

use daq_tests::{daqctl, tool_available, u, unique_partition};
use serde_json::Value;

fn num(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

/// A figure's median, min and max are positive.
fn positive(fig: &Value, what: &str) {
    for k in ["median", "min", "max"] {
        let x = num(&fig[k], &format!("{what}.{k}"));
        assert!(x > 0.0, "{what}.{k} = {x}");
    }
    let samples = fig["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 1, "{what}: one measured round in --quick");
}

#[test]
fn quick_bench_measures_every_case_without_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("bench");
    let partition = unique_partition().to_string();
    let out = daqctl(&[
        "bench",
        "--quick",
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--partition",
        &partition,
    ])
    .expect("daqctl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("OK: nothing lost in any of the 6 pipeline runs"),
        "{stdout}"
    );
    // Progress: which measurement of how many.
    assert!(stderr.contains("[  30/30]"), "{stderr}");

    let text = std::fs::read_to_string(out_dir.join("bench.json")).expect("bench.json");
    let r: Value = serde_json::from_str(&text).expect("bench.json parses");
    assert_eq!(r["version"], 1);
    assert_eq!(r["failures"].as_array().expect("failures").len(), 0);

    let machine = r["machine"].as_array().expect("machine");
    let limits: Vec<&str> = machine
        .iter()
        .map(|l| l["limit"].as_str().expect("limit"))
        .collect();
    assert_eq!(
        limits,
        [
            "tcp loopback",
            "disk write",
            "disk write + fdatasync",
            "memcpy"
        ]
    );
    for l in machine {
        positive(&l["mb_s"], &format!("machine {}", l["limit"]));
    }

    let stages = r["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 10 * 2, "10 stages x 2 sizes");
    for s in stages {
        let name = format!("stage {} {}", s["stage"], s["fragment_bytes"]);
        positive(&s["mb_s_per_core"], &name);
        positive(&s["items_per_s_per_core"], &name);
        positive(&s["mb_s_wall"], &name);
    }
    let sizes: Vec<u64> = stages.iter().map(|s| u(s, "fragment_bytes")).collect();
    assert!(
        sizes.iter().all(|&b| b == 128 || b == 64 << 10),
        "{sizes:?}"
    );

    let pipeline = r["pipeline"].as_array().expect("pipeline");
    // 2 sizes x (1x1x1 disk on, 1x1x1 disk off, 2x2).
    assert_eq!(pipeline.len(), 6);
    for p in pipeline {
        let topology = p["topology"].as_str().expect("topology");
        let writing = p["disk_writing"].as_bool().expect("disk_writing");
        let name = format!("{topology} {} disk {writing}", p["fragment_bytes"]);
        positive(&p["payload_mb_s"], &name);
        positive(&p["events_per_s"], &name);
        let kinds: Vec<&String> = p["cpu_s_per_gb"]
            .as_object()
            .expect("cpu_s_per_gb")
            .keys()
            .collect();
        let want: &[&str] = match topology {
            "1x1x1" => &["aggregator", "boardreader", "eventbuilder"],
            "2x2" => &["boardreader", "eventbuilder"],
            other => panic!("unexpected topology {other}"),
        };
        assert_eq!(kinds, want, "{name}");
        for (k, f) in p["cpu_s_per_gb"].as_object().expect("cpu") {
            positive(f, &format!("{name} cpu {k}"));
        }
        assert!(num(&p["ratio_to_tcp"], "ratio_to_tcp") > 0.0, "{name}");
        if writing {
            positive(&p["file_mb_s"], &name);
            assert!(num(&p["ratio_to_disk"], "ratio_to_disk") > 0.0, "{name}");
        } else {
            assert!(p["file_mb_s"].is_null(), "{name}");
            assert!(p["ratio_to_disk"].is_null(), "{name}");
        }
        // Buffers sized to the fragments: one event of the case fits.
        let boardreaders: u64 = topology[..1].parse().expect("boardreaders");
        assert!(u(p, "buffer_bytes") >= boardreaders * u(p, "fragment_bytes"));

        let runs = p["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 1, "{name}: one run, no warm-up in --quick");
        for run in runs {
            assert_eq!(run["ok"], true, "{name}: {run}");
            assert_eq!(run["errors"].as_array().expect("errors").len(), 0);
            let built = u(run, "events_built");
            assert!(built > 0, "{name}: no event built");
            assert_eq!(u(run, "fragments_sent"), u(run, "fragments_received"));
            assert_eq!(u(run, "fragments_sent"), boardreaders * built, "{name}");
            assert_eq!(u(run, "events_incomplete"), 0, "{name}");
            if writing {
                assert_eq!(u(run, "events_written"), built, "{name}");
                assert!(u(run, "file_bytes") > 0, "{name}");
            } else {
                assert_eq!(u(run, "events_written"), 0, "{name}");
            }
            assert_eq!(
                u(run, "payload_bytes"),
                u(run, "fragments_sent") * u(p, "fragment_bytes"),
                "{name}: payload is every fragment's bytes"
            );
            // The record stays, its data files do not.
            let record = std::path::Path::new(run["record"].as_str().expect("record"));
            assert!(
                record.join("summary.json").is_file(),
                "{}",
                record.display()
            );
            assert!(!record.join("data").exists(), "{}", record.display());
        }
    }

    let svg = std::fs::read_to_string(out_dir.join("bench.svg")).expect("bench.svg");
    assert!(svg.starts_with("<svg"), "{svg}");
    // One line per topology x disk case in each of the two panels.
    assert_eq!(svg.matches("<polyline").count(), 2 * 3, "{svg}");
    // The picture renders: librsvg reads it and draws a PNG.
    if tool_available("rsvg-convert", "librsvg2-bin") {
        let png = dir.path().join("bench.png");
        let status = std::process::Command::new("rsvg-convert")
            .arg(out_dir.join("bench.svg"))
            .arg("-o")
            .arg(&png)
            .status()
            .expect("rsvg-convert runs");
        assert!(status.success(), "rsvg-convert: {status}");
        let bytes = std::fs::read(&png).expect("bench.png");
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    }
}
