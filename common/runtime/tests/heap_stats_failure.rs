//! A heap-statistics read that fails is an error in the record, never a
//! reading of zeros: run control counts it (`heap_stats_failed`), leaves
//! the snapshot out and names the failure in the stop reply. Alone in its
//! test binary: the fault is injected process-wide.
// The helpers outside #[test] state their expectations too.
#![allow(clippy::expect_used)]

use daq_format::config::SystemConfig;
use daq_runtime::control::{App, AppError, Control, InitArgs, StopArgs};
use proto::run_control_server::RunControl;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Request;

struct Idle;

#[tonic::async_trait]
impl App for Idle {
    async fn init(&self, _: InitArgs) -> Result<(), AppError> {
        Ok(())
    }
    async fn start(&self, _: u32, _: PathBuf) -> Result<(), AppError> {
        Ok(())
    }
    async fn stop(&self, _: StopArgs) -> Result<Vec<String>, AppError> {
        Ok(vec![])
    }
    fn counters(&self) -> proto::Counters {
        proto::Counters::default()
    }
    fn events_handled(&self) -> u64 {
        0
    }
}

async fn run(c: &Control<Idle>, number: u32, sample_interval_ms: u64) {
    let mut config = SystemConfig::default();
    config.heap.sample_interval_ms = sample_interval_ms;
    c.init(Request::new(proto::InitRequest {
        config_toml: config.to_toml(),
        destinations: vec![],
    }))
    .await
    .expect("init");
    c.start(Request::new(proto::StartRequest {
        run: number,
        ..Default::default()
    }))
    .await
    .expect("start");
}

async fn counters(c: &Control<Idle>) -> proto::Counters {
    c.status(Request::new(proto::Empty {}))
        .await
        .expect("status")
        .into_inner()
        .counters
        .expect("counters")
}

#[tokio::test]
async fn failed_heap_statistics_are_counted_and_reported_never_read_as_zero() {
    let (c, _exit) = Control::new("aggregator-0", Arc::new(Idle));
    // Boundaries: before_stop and after_stop cannot be read.
    run(&c, 1, 0).await;
    daq_alloc::fail_stats_reads(true);
    let stop = c
        .stop(Request::new(proto::StopRequest::default()))
        .await
        .expect("stop succeeds")
        .into_inner();
    assert_eq!(stop.counters.expect("counters").heap_stats_failed, 2);
    assert_eq!(
        stop.problems,
        [
            "heap statistics unreadable 2 times; those snapshots are missing from the record, so no heap verdict can be given: before_stop: heap statistics reads fail on purpose (fault injection); after_stop: heap statistics reads fail on purpose (fault injection)"
        ]
    );
    let heap = c
        .heap(Request::new(proto::Empty {}))
        .await
        .expect("heap")
        .into_inner();
    assert_eq!(heap.current, None);
    let labels: Vec<&str> = heap.boundaries.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(
        labels,
        ["after_init", "after_start", "before_init", "before_start"]
    );
    assert!(
        heap.boundaries
            .iter()
            .all(|b| b.snapshot.is_some_and(|s| s.allocated > 0))
    );
    assert_eq!(
        counters(&c).await.heap_stats_failed,
        3,
        "the current reading too"
    );
    daq_alloc::fail_stats_reads(false);

    // Samples: the sampler writes no row while reads fail.
    run(&c, 2, 10).await;
    assert_eq!(
        counters(&c).await.heap_stats_failed,
        0,
        "a new run counts anew"
    );
    daq_alloc::fail_stats_reads(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while counters(&c).await.heap_stats_failed < 3 {
        assert!(Instant::now() < deadline, "the sampler never failed");
        tokio::task::yield_now().await;
    }
    daq_alloc::fail_stats_reads(false);
    let stop = c
        .stop(Request::new(proto::StopRequest::default()))
        .await
        .expect("stop succeeds")
        .into_inner();
    let failed = stop.counters.expect("counters").heap_stats_failed;
    assert!(failed >= 3, "{failed}");
    assert!(
        stop.problems
            .iter()
            .any(|p| p.contains("sample: heap statistics reads fail on purpose")),
        "{:?}",
        stop.problems
    );
    let record = c
        .run_record(Request::new(proto::Empty {}))
        .await
        .expect("record")
        .into_inner();
    assert!(!record.samples.is_empty());
    assert!(
        record
            .samples
            .iter()
            .all(|s| s.allocated > 0 && s.active > 0),
        "no row of zeros"
    );
}
