//! Every fragment or event sent to a receiver is accounted for: received,
//! or counted under the reason it was dropped (`Counters` fields 19-29),
//! exactly. One test per drop path that ends in a receiver.

use bytes::Bytes;
use daq_format::fragment::Fragment;
use daq_tests::test_config as config;
use daq_tests::{
    assert_any_starts_with, assert_status, connect, control, data_fragment, fragment_batch,
    init_and_start, netmon_event, runtime, send_events, send_fragments, spawn, stop,
    wait_for_status,
};
use std::time::{Duration, Instant};
use tonic::Code;

#[test]
fn aggregator_counts_a_malformed_event_and_the_good_events_rejected_with_it() {
    let p = spawn("aggregator", 0).expect("spawns");
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let mut c = control(&p.addr).await;
        init_and_start(&mut c, &config(2, 1), 3, dir.path()).await;
        let ch = connect(&p.addr).await;
        // Eventbuilder 1: three good events around one cut short.
        let mut bad = netmon_event(3, 2, 2, 64).to_vec();
        bad.truncate(bad.len() - 10);
        let events = vec![
            netmon_event(3, 1, 2, 64),
            Bytes::from(bad),
            netmon_event(3, 3, 2, 64),
            netmon_event(3, 5, 2, 64),
        ];
        let batch = |source, events| proto::EventBatch {
            source,
            run: 3,
            events,
            end_of_data: Some(4),
        };
        let err = send_events(&ch, vec![batch(1, events)])
            .await
            .expect_err("rejected");
        assert_status(&err, Code::InvalidArgument, "malformed event");
        // Eventbuilder 0: four good events and its end-of-data.
        let good = (0..4).map(|k| netmon_event(3, 2 * k + 10, 2, 64)).collect();
        let summary = send_events(&ch, vec![batch(0, good)])
            .await
            .expect("accepted");
        assert_eq!((summary.received, summary.announced), (4, Some(4)));
        let stop = stop(&mut c).await;
        let k = stop.counters.expect("counters");
        assert_eq!(
            (
                k.events_received,
                k.events_rejected,
                k.events_discarded,
                k.streams_rejected
            ),
            (4, 1, 3, 1)
        );
        let sent = 8;
        assert_eq!(
            sent,
            k.events_received + k.events_rejected + k.events_discarded
        );
        assert_eq!((k.events_written, k.events_unwritten), (4, 0));
        assert_any_starts_with(&stop.problems, "eventbuilder-1: stream ended in error");
    });
}

#[test]
fn a_batch_for_another_run_is_discarded_whole_and_counted() {
    let p = spawn("eventbuilder", 0).expect("spawns");
    runtime().block_on(async {
        let mut c = control(&p.addr).await;
        init_and_start(&mut c, &config(1, 0), 7, std::path::Path::new("")).await;
        let ch = connect(&p.addr).await;
        let four = (1..=4).map(|s| data_fragment(s, 0, 16)).collect();
        let err = send_fragments(&ch, vec![fragment_batch(0, 6, four)])
            .await
            .expect_err("rejected");
        assert!(
            err.message().contains("batch for run 6 during run 7"),
            "{}",
            err.message()
        );
        let stop = stop(&mut c).await;
        let k = stop.counters.expect("counters");
        assert_eq!(
            (
                k.fragments_received,
                k.fragments_rejected,
                k.fragments_discarded
            ),
            (0, 0, 4)
        );
    });
}

/// Marks descriptor `idx` of a store Empty behind its writer's back, as
/// another process scribbling on the segment would (descriptors start at
/// byte 128, 64 bytes each, state word first: see `daq_shm::layout`).
fn steal_buffer(path: &std::path::Path, idx: u64) {
    use std::os::unix::fs::FileExt;
    let segment = std::fs::OpenOptions::new().write(true).open(path);
    let empty = 0u32.to_le_bytes();
    segment
        .and_then(|f| f.write_all_at(&empty, 128 + 64 * idx))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[test]
fn eventbuilder_counts_the_fragments_of_an_event_it_could_not_publish() {
    let p = spawn("eventbuilder", 0).expect("spawns");
    let config = config(1, 0);
    let segment = daq_shm::segment_path(config.partition, "eventbuilder-0");
    runtime().block_on(async {
        let mut c = control(&p.addr).await;
        init_and_start(&mut c, &config, 9, std::path::Path::new("")).await;
        let ch = connect(&p.addr).await;
        let eod = |n| Fragment::end_of_data(0, 100, n).expect("eod").into_bytes();
        // Boardreader 1 sends event 1's fragment: the event opens in buffer 0.
        let batch = |source, fragments| fragment_batch(source, 9, fragments);
        let first = send_fragments(
            &ch,
            vec![batch(1, vec![data_fragment(1, 1, 16), data_fragment(2, 1, 16)])],
        )
        .await;
        // (its stream stays short of end-of-data: it is still open below)
        drop(first);
        let monitor = daq_shm::ShmMonitor::open(&segment).expect("segment");
        let deadline = Instant::now() + Duration::from_secs(30);
        while monitor.counts().writing < 2 {
            assert!(Instant::now() < deadline, "{:?}", monitor.counts());
            tokio::task::yield_now().await;
        }
        // Another process takes event 1's buffer; event 2's stays ours.
        steal_buffer(&segment, 0);
        let fragments = vec![data_fragment(1, 0, 16), data_fragment(2, 0, 16), eod(2)];
        let summary = send_fragments(&ch, vec![batch(0, fragments)])
            .await
            .expect("accepted");
        assert_eq!((summary.received, summary.announced), (2, Some(2)));
        let st = wait_for_status(&mut c, "event 1 lost", |s| {
            s.counters
                .as_ref()
                .is_some_and(|k| k.fragments_unpublished == 2 && k.events_built == 1)
        })
        .await;
        let k = st.counters.expect("counters");
        // 4 fragments sent, 4 received: 2 in event 2, 2 lost with event 1.
        assert_eq!(k.fragments_received, 4);
        assert_eq!(
            k.fragments_received,
            2 * k.events_built + k.fragments_unpublished
        );
        let stop = stop(&mut c).await;
        assert_any_starts_with(
            &stop.problems,
            "1 events (2 fragments) lost: their shared-memory buffer could not be published; sequence ids 1 (buffer 0 is",
        );
    });
}

/// A source that sends one fragment twice: the second is dropped under its
/// own reason, `duplicate_fragments` (it was counted under the generic
/// `dropped` before), and the event is built once.
#[test]
fn eventbuilder_counts_a_duplicate_fragment_under_its_own_reason() {
    let p = spawn("eventbuilder", 0).expect("spawns");
    let config = config(1, 0);
    runtime().block_on(async {
        let mut c = control(&p.addr).await;
        init_and_start(&mut c, &config, 3, std::path::Path::new("")).await;
        let ch = connect(&p.addr).await;
        let eod = |n| Fragment::end_of_data(0, 100, n).expect("eod").into_bytes();
        // Boardreader 0 sends its fragment of event 1 twice, boardreader 1 once.
        let fragments = vec![data_fragment(1, 0, 16), data_fragment(1, 0, 16), eod(2)];
        let summary = send_fragments(&ch, vec![fragment_batch(0, 3, fragments)])
            .await
            .expect("accepted");
        assert_eq!((summary.received, summary.announced), (2, Some(2)));
        let fragments = vec![data_fragment(1, 1, 16), eod(1)];
        let summary = send_fragments(&ch, vec![fragment_batch(1, 3, fragments)])
            .await
            .expect("accepted");
        assert_eq!((summary.received, summary.announced), (1, Some(1)));
        let stop = stop(&mut c).await;
        let k = stop.counters.expect("counters");
        assert_eq!(k.fragments_received, 3);
        assert_eq!(
            (k.events_built, k.duplicate_fragments, k.dropped),
            (1, 1, 0),
            "{k:?}"
        );
    });
}
