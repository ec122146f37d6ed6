//! Bad commands and bad input get clear errors, and the processes survive.

use bytes::Bytes;
use daq_format::config::SystemConfig;
use daq_format::fragment::Fragment;
use daq_tests::{
    assert_any_starts_with, assert_status, connect, control, daqctl, data_fragment, fragment_batch,
    init_and_start, runtime, send_fragments, spawn, start_request, status, stop, test_config,
};
use std::path::Path;
use tonic::Code;

#[test]
fn start_before_init_is_refused_naming_the_state_and_legal_commands() {
    let p = spawn("eventbuilder", 0).expect("spawns");
    runtime().block_on(async {
        let mut c = control(&p.addr).await;
        let err = c
            .start(start_request(1, Path::new("")))
            .await
            .expect_err("illegal");
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(
            err.message(),
            "eventbuilder-0: command start is illegal in state booted; legal commands: init, shutdown"
        );
        let st = status(&mut c).await;
        assert_eq!(st.state, "booted");
        assert_eq!(st.legal_commands, vec!["init", "shutdown"]);
        // A config the process cannot accept is refused as invalid.
        let err = c
            .init(proto::InitRequest {
                config_toml: "[generator]\nn_adc_counts = 0\n".into(),
                destinations: vec![],
            })
            .await
            .expect_err("invalid");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("generator.n_adc_counts"), "{}", err.message());
        let r = c.shutdown(proto::Empty {}).await.expect("shutdown");
        assert_eq!(r.into_inner().state, "booted");
    });
}

#[test]
fn config_errors_stop_daqctl_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, needle) in [
        ("[generator]\nthrotle_us = 0\n", "throtle_us"),
        ("[topology]\neventbuilders = 0\n", "topology.eventbuilders"),
        (
            "[aggregator]\ndeflate_level = 12\n",
            "aggregator.deflate_level",
        ),
    ] {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, text).expect("write");
        let out = daqctl(&[
            "demo",
            "--config",
            cfg.to_str().expect("utf-8"),
            "--run-dir",
            dir.path().join("runs").to_str().expect("utf-8"),
        ])
        .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(needle), "{text}: {stderr}");
        assert!(
            !dir.path().join("runs").exists(),
            "no run record for a bad config"
        );
    }
    for bad in ["--duration=-3", "--duration=0", "--duration=nan"] {
        let out = daqctl(&["demo", bad]).expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("--duration must be a positive number"),
            "{bad}: {stderr}"
        );
    }
}

#[test]
fn malformed_fragment_rejects_its_stream_and_nothing_else() {
    let p = spawn("eventbuilder", 0).expect("spawns");
    runtime().block_on(async {
        let mut c = control(&p.addr).await;
        init_and_start(&mut c, &test_config(1, 0), 7, Path::new("")).await;
        let ch = connect(&p.addr).await;

        // Boardreader 1's stream carries a fragment whose word_count lies.
        let mut bad = data_fragment(1, 1, 16).to_vec();
        bad[0] = 99;
        let batch = |source, fragments| fragment_batch(source, 7, fragments);
        let err = send_fragments(
            &ch,
            vec![batch(1, vec![data_fragment(1, 1, 16), Bytes::from(bad)])],
        )
        .await
        .expect_err("rejected");
        assert_status(&err, Code::InvalidArgument, "word_count 99 disagrees");

        // Boardreader 0's stream is unaffected: 3 fragments and end-of-data.
        let eod = Fragment::end_of_data(0, 4, 3).expect("eod").into_bytes();
        let three = (1..=3).map(|s| data_fragment(s, 0, 16)).collect();
        let summary = send_fragments(&ch, vec![batch(0, three), batch(0, vec![eod])])
            .await
            .expect("good stream accepted");
        assert_eq!((summary.received, summary.announced), (3, Some(3)));

        let st = status(&mut c).await;
        assert_eq!(st.state, "running");
        let counters = st.counters.expect("counters");
        assert_eq!(counters.streams_rejected, 1);
        // A batch with a malformed fragment is rejected whole: only stream
        // 0's three fragments were taken; the good fragment beside the bad
        // one is counted as discarded, so every fragment sent is accounted.
        assert_eq!(
            (
                counters.fragments_received,
                counters.fragments_rejected,
                counters.fragments_discarded
            ),
            (3, 1, 1)
        );
        let sent = 5;
        assert_eq!(
            sent,
            counters.fragments_received
                + counters.fragments_rejected
                + counters.fragments_discarded
        );

        // Stop names the rejected source; events 1-3 miss boardreader 1's
        // fragment and are released incomplete.
        let stop = stop(&mut c).await;
        let c2 = stop.counters.expect("counters");
        assert_eq!((c2.events_built, c2.events_incomplete), (0, 3));
        assert_any_starts_with(
            &stop.problems,
            "boardreader-1: stream ended in error after 0 items",
        );
        assert_eq!(stop.state, "ready");
    });
}

#[test]
fn dump_of_a_cut_artdaq_binary_file_names_the_offset_and_the_whole_fragments() {
    use daq_format::generator::ToySimulator;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SystemConfig::default();
    let mut boards: Vec<ToySimulator> = (0..2)
        .map(|b| ToySimulator::new(b, &config.generator))
        .collect();
    // Three events of two 128-byte toy fragments, cut 50 bytes into the 6th.
    let mut bytes = Vec::new();
    for seq in 1..=3 {
        for b in &mut boards {
            bytes.extend_from_slice(b.fragment(seq).expect("generates").bytes());
        }
    }
    assert_eq!(bytes.len(), 768);
    let path = dir.path().join("run000001_aggregator-0_000.artdaq.bin");
    std::fs::write(&path, &bytes[..5 * 128 + 50]).expect("write");
    let out = daqctl(&["dump", path.to_str().expect("utf-8")]).expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "truncated at byte offset 640: 5 whole fragments before it, then a fragment of 128 bytes with only 50 in the file"
        ),
        "{stdout}"
    );
    // The whole fragments before the cut are read: events 1 and 2 whole,
    // event 3 with the one fragment that made it.
    assert!(
        stdout.contains("1 file, 3 events, 5 fragments (TOY1 5), sequence ids 1..=3\n"),
        "{stdout}"
    );
    // The whole file dumps clean.
    std::fs::write(&path, &bytes).expect("write");
    let out = daqctl(&["dump", path.to_str().expect("utf-8"), "--check"]).expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("check OK: 6 toy fragments, all 240 samples fit their ADC width; 3 sequence ids 1..=3, each once"), "{stdout}");
}

#[test]
fn dump_of_a_file_of_another_format_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("system.toml");
    std::fs::write(&path, SystemConfig::default().to_toml()).expect("write");
    let out = daqctl(&["dump", path.to_str().expect("utf-8")]).expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is neither an HDF5 data file nor an artdaq-binary file: its first word"),
        "{stderr}"
    );
    // A file that starts like HDF5 goes to the HDF5 reader, which says it
    // is not one of our data files.
    let fake = dir.path().join("x.artdaq.bin");
    let mut b = daq_datafile::artdaq_binary::HDF5_SIGNATURE.to_vec();
    b.resize(512, 0);
    std::fs::write(&fake, &b).expect("write");
    let out = daqctl(&["dump", fake.to_str().expect("utf-8")]).expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed to open data file"), "{stderr}");
}
