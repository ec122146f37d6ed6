//! Tests of the transport: the outbound side against real in-process
//! `EventSink` servers on 127.0.0.1:0 that run the inbound loop.

use super::inbound::{self, Decoded, Receiver, RunEnded};
use super::outbound::{Batching, Outbound, OutboundConfig, SendCounts};
use super::{Events, Hop};

use crate::sources::RunSlot;
use crate::transport::Intake;
use bytes::Bytes;
use daq_format::config::TransferMode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Request, Response, Status, Streaming};

const RUN: u32 = 3;

/// A receiver that keeps what it is handed, batch by batch.
struct Kept {
    intake: Intake,
    batches: Mutex<Vec<Vec<Bytes>>>,
    received: AtomicU64,
    bytes: AtomicU64,
}

impl Receiver for Kept {
    type Hop = Events;
    type Item = Bytes;

    fn intake(&self) -> &Intake {
        &self.intake
    }

    fn decode(&self, _source: usize, raw: Bytes) -> Result<Decoded<Bytes>, String> {
        if raw.is_empty() {
            return Err("empty event".into());
        }
        Ok(Decoded::Item(raw))
    }

    async fn deliver(&self, _source: usize, items: Vec<Bytes>) -> Result<(), RunEnded> {
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(items);
        Ok(())
    }

    fn received(&self, items: u64, bytes: u64) {
        self.received.fetch_add(items, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

struct Sink(Arc<RunSlot<Kept>>);

#[tonic::async_trait]
impl proto::event_sink_server::EventSink for Sink {
    async fn send(
        &self,
        request: Request<Streaming<proto::EventBatch>>,
    ) -> Result<Response<proto::TransferSummary>, Status> {
        inbound::serve("aggregator-test", &self.0, request).await
    }

    async fn attach(
        &self,
        request: Request<proto::LinkOffer>,
    ) -> Result<Response<proto::LinkAccept>, Status> {
        super::shm::accept("aggregator-test", &self.0, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// A server on its own runtime (so that a test can kill it), with one
/// run of `sources` sources set.
struct Server {
    addr: String,
    receiver: Arc<Kept>,
    slot: Arc<RunSlot<Kept>>,
    rt: tokio::runtime::Runtime,
}

fn server(sources: usize) -> Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = listener.local_addr().expect("addr").to_string();
    let receiver = Arc::new(Kept {
        intake: Intake::new::<Events>(RUN, sources, Arc::default()),
        batches: Mutex::default(),
        received: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let slot = Arc::new(RunSlot::default());
    slot.set(Some(receiver.clone()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let sink = Sink(slot.clone());
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        crate::net::server()
            .expect("server")
            .add_service(proto::event_sink_server::EventSinkServer::new(sink))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    Server {
        addr,
        receiver,
        slot,
        rt,
    }
}

/// Records every batch the outbound side reports.
#[derive(Default)]
struct Recorded {
    batches: Mutex<Vec<(u64, u64)>>,
    dropped: AtomicU64,
}

impl SendCounts for Recorded {
    fn sent(&self, items: u64, bytes: u64) {
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((items, bytes));
    }

    fn dropped(&self, items: u64) {
        self.dropped.fetch_add(items, Ordering::Relaxed);
    }
}

fn config(mode: TransferMode, stride: u64, max_items: usize, max_bytes: usize) -> OutboundConfig {
    OutboundConfig {
        source: 0,
        run: RUN,
        stride,
        batching: Batching {
            max_items,
            max_bytes,
            max_delay: Duration::from_secs(3600),
            queue_batches: 1,
        },
        connect_timeout: Duration::from_secs(10),
        mode,
        link_capacity: 1 << 20,
        partition: 4242,
    }
}

/// Runs the test body `$name(mode)` once per mechanism: over gRPC streams
/// and over shared-memory links (the receiver is in this process; a link
/// is served as a stream is).
macro_rules! both_mechanisms {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn grpc() {
                super::$name(TransferMode::Grpc).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn shm() {
                super::$name(TransferMode::Shm).await;
            }
        }
    };
}

fn event(seq: u64, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    Bytes::from(v)
}

fn sizes(kept: &Kept) -> Vec<usize> {
    let b = kept.batches.lock().unwrap_or_else(|p| p.into_inner());
    b.iter().map(Vec::len).collect()
}

both_mechanisms!(every_item_arrives_routed_by_sequence_id_in_batches_of_the_item_limit);

async fn every_item_arrives_routed_by_sequence_id_in_batches_of_the_item_limit(mode: TransferMode) {
    let servers = [server(1), server(1)];
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let counts = Arc::new(Recorded::default());
    // Stride 2: sequence ids 0,1 -> destination 0; 2,3 -> 1; 4,5 -> 0; ...
    let mut out =
        Outbound::<Events>::connect(&addrs, 2, config(mode, 2, 3, 1 << 20), counts.clone())
            .await
            .expect("connects");
    for seq in 0..16 {
        assert_eq!(out.route(seq), ((seq / 2) % 2) as usize);
        out.push(seq, event(seq, 16)).await;
    }
    let finished = tokio::time::timeout(Duration::from_secs(30), out.finish(0))
        .await
        .expect("finishes");
    assert_eq!(finished.sent, vec![8, 8]);
    assert!(finished.problems.is_empty(), "{:?}", finished.problems);
    // Per destination: 8 items in batches of 3, 3 and the rest at the end.
    for (d, s) in servers.iter().enumerate() {
        assert_eq!(sizes(&s.receiver), vec![3, 3, 2], "destination {d}");
        assert_eq!(s.receiver.received.load(Ordering::Relaxed), 8);
        assert_eq!(s.receiver.bytes.load(Ordering::Relaxed), 8 * 16);
        let seqs: Vec<u64> = s
            .receiver
            .batches
            .lock()
            .expect("lock")
            .concat()
            .iter()
            .map(|b| u64::from_le_bytes(b[..8].try_into().expect("8 bytes")))
            .collect();
        let expected: Vec<u64> = (0..16).filter(|q| (q / 2) % 2 == d as u64).collect();
        assert_eq!(seqs, expected);
        assert!(s.receiver.intake.sources.problems().is_empty());
        assert_eq!(s.receiver.intake.sources.snapshot()[0].announced, Some(8));
    }
    let batches = counts.batches.lock().expect("lock").clone();
    assert_eq!(
        batches,
        vec![(3, 48), (3, 48), (3, 48), (3, 48), (2, 32), (2, 32)]
    );
    assert_eq!(counts.dropped.load(Ordering::Relaxed), 0);
    for s in servers {
        s.rt.shutdown_background();
    }
}

both_mechanisms!(a_plain_thread_sends_a_batch_once_its_bytes_reach_the_limit);

async fn a_plain_thread_sends_a_batch_once_its_bytes_reach_the_limit(mode: TransferMode) {
    let s = server(1);
    let counts = Arc::new(Recorded::default());
    let out = Outbound::<Events>::connect(
        std::slice::from_ref(&s.addr),
        1,
        config(mode, 1, 1000, 100),
        counts.clone(),
    )
    .await
    .expect("connects");
    let mut out = out.into_blocking(tokio::runtime::Handle::current());
    let finished = tokio::task::spawn_blocking(move || {
        for seq in 0..7 {
            out.push(seq, event(seq, 40));
        }
        out.finish(0)
    })
    .await
    .expect("joins");
    assert_eq!(finished.sent, vec![7]);
    assert!(finished.problems.is_empty(), "{:?}", finished.problems);
    // 40-byte items against a 100-byte limit: 3 per batch.
    assert_eq!(sizes(&s.receiver), vec![3, 3, 1]);
    let batches = counts.batches.lock().expect("lock").clone();
    assert_eq!(batches, vec![(3, 120), (3, 120), (1, 40)]);
    s.rt.shutdown_background();
}

both_mechanisms!(a_dead_destination_is_counted_as_dropped_and_does_not_hang_the_end);

async fn a_dead_destination_is_counted_as_dropped_and_does_not_hang_the_end(mode: TransferMode) {
    let live = server(1);
    let dead = server(1);
    let addrs = vec![live.addr.clone(), dead.addr.clone()];
    let counts = Arc::new(Recorded::default());
    let mut out =
        Outbound::<Events>::connect(&addrs, 2, config(mode, 1, 1, 1 << 20), counts.clone())
            .await
            .expect("connects");
    dead.rt.shutdown_background();
    // Odd sequence ids go to the dead destination: push until it is found
    // lost (each push waits while its one-batch queue is full).
    let mut pushed = [0u64; 2];
    let mut seq = 0;
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while counts.dropped.load(Ordering::Relaxed) == 0 {
            out.push(seq, event(seq, 16)).await;
            pushed[(seq % 2) as usize] += 1;
            seq += 1;
        }
    })
    .await;
    assert!(found.is_ok(), "the dead destination was never found lost");
    // Items after the loss are dropped at once, never queued.
    for _ in 0..10 {
        out.push(seq, event(seq, 16)).await;
        pushed[(seq % 2) as usize] += 1;
        seq += 1;
    }
    let finished = tokio::time::timeout(Duration::from_secs(30), out.finish(0))
        .await
        .expect("the end does not wait for the dead destination");
    let dropped = counts.dropped.load(Ordering::Relaxed);
    assert_eq!(finished.sent[0], pushed[0]);
    assert_eq!(finished.sent[1] + dropped, pushed[1]);
    assert!(dropped >= 5, "dropped {dropped}");
    assert_eq!(live.receiver.received.load(Ordering::Relaxed), pushed[0]);
    assert!(live.receiver.intake.sources.problems().is_empty());
    let lost = format!("aggregator-1: stream closed during the run; {dropped} events dropped");
    assert!(finished.problems.contains(&lost), "{:?}", finished.problems);
    assert!(
        finished
            .problems
            .iter()
            .all(|p| p.starts_with("aggregator-1: ")),
        "{:?}",
        finished.problems
    );
    live.rt.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_another_run_or_with_a_bad_item_are_rejected_and_counted() {
    let s = server(2);
    let ch = crate::net::connect(&s.addr, Duration::from_secs(10))
        .await
        .expect("connects");
    let mut client = proto::event_sink_client::EventSinkClient::new(ch);
    let batch = |source, run, events| Events::batch(source, run, events);
    let err = client
        .send(tokio_stream::iter(vec![batch(
            0,
            RUN + 1,
            vec![event(1, 8)],
        )]))
        .await
        .expect_err("another run");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "aggregator-test: batch for run 4 during run 3"
    );
    let err = client
        .send(tokio_stream::iter(vec![batch(
            1,
            RUN,
            vec![event(1, 8), Bytes::new()],
        )]))
        .await
        .expect_err("bad item");
    assert_eq!(err.message(), "aggregator-test: empty event");
    assert_eq!(s.receiver.counters().read(|c| c.streams_rejected), 2);
    // Every item of a rejected batch is counted by reason: the other run's
    // event discarded, the empty one malformed, the good one beside it
    // discarded.
    assert_eq!(
        s.receiver
            .counters()
            .read(|c| (c.events_rejected, c.events_discarded)),
        (1, 2)
    );
    // A rejected batch is not handed on, in part or whole.
    assert_eq!(s.receiver.received.load(Ordering::Relaxed), 0);
    assert_eq!(
        s.receiver.intake.sources.snapshot()[1].error.as_deref(),
        Some("empty event")
    );
    // With no run set, streams are refused before anything is read.
    s.slot.set(None);
    let err = client
        .send(tokio_stream::iter(vec![batch(0, RUN, vec![event(1, 8)])]))
        .await
        .expect_err("not running");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "aggregator-test is not running; events refused"
    );
    s.rt.shutdown_background();
}
