//! The data path of a monitor run: a reader thread polls the aggregator's
//! shared-memory store through a read-only [`ShmMonitor`] (seqlock copies:
//! a copy torn by a recycled buffer is discarded) and hands every event it
//! read to the monitoring modules.
//!
//! ```text
//! aggregator ingest -> its store (buffers reused once written to disk)
//!                        \--read-only mmap--> ShmMonitor::poll -> modules
//! ```
//!
//! The monitor never stores into the segment and never holds a buffer, so
//! the aggregator never waits for it: an event whose buffer was reused
//! before the monitor copied it is counted as skipped (`events_skipped`),
//! and `events_monitored + events_skipped` is every event the aggregator
//! published in the run.

use crate::modules::{EventView, Modules};
use daq_format::config::SystemConfig;
use daq_format::monitor::MonitorRecord;
use daq_format::process::{Kind, ProcessId};
use daq_runtime::counters::LiveCounters;
use daq_shm::{ShmMonitor, segment_path};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long the reader sleeps when a poll found nothing new.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// What a monitor knows of the current (or last) run.
#[derive(Default)]
pub struct Figures {
    pub record: MonitorRecord,
    pub modules: Option<Modules>,
    started: Option<Instant>,
}

impl Figures {
    /// The record as it is now, with the modules' figures.
    pub fn snapshot(&self) -> (MonitorRecord, BTreeMap<String, serde_json::Value>) {
        let mut r = self.record.clone();
        let mut user = BTreeMap::new();
        if let Some(m) = &self.modules {
            r.adc = m.adc.histograms();
            r.integrity = m.integrity.figures().clone();
            r.series = m.rate.series();
            user = m.user_reports();
        }
        if !r.finished
            && let Some(t) = self.started
        {
            r.elapsed_s = t.elapsed().as_secs_f64();
        }
        (r, user)
    }
}

/// State shared by run control, the reader thread and the HTTP page.
pub struct Shared {
    pub process: String,
    pub counters: Arc<LiveCounters>,
    figures: Mutex<Figures>,
}

impl Shared {
    pub fn new(process: String) -> Arc<Self> {
        Arc::new(Self {
            process,
            counters: Arc::default(),
            figures: Mutex::default(),
        })
    }

    pub fn figures(&self) -> MutexGuard<'_, Figures> {
        self.figures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The aggregator monitor `rank` reads: `aggregator-(rank % aggregators)`.
pub fn source_of(rank: u16, config: &SystemConfig) -> Result<ProcessId, String> {
    let k = config.topology.aggregators;
    if k == 0 {
        return Err("the topology has no aggregator to monitor".into());
    }
    Ok(ProcessId::new(Kind::Aggregator, rank % k))
}

pub struct Run {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Run {
    /// Attaches to the aggregator's store (which its start created: daqctl
    /// starts the aggregators first) and starts reading.
    pub fn start(
        shared: &Arc<Shared>,
        id: ProcessId,
        run: u32,
        config: &SystemConfig,
    ) -> Result<Self, String> {
        let source = source_of(id.rank, config)?;
        let path = segment_path(config.partition, &source.to_string());
        let monitor = ShmMonitor::open(&path).map_err(|e| {
            format!(
                "cannot attach to {source}'s store {}: {e} (a monitor runs on its aggregator's host, started after it)",
                path.display()
            )
        })?;
        let t = &config.topology;
        shared.counters.reset();
        {
            let mut f = shared.figures();
            *f = Figures {
                record: MonitorRecord {
                    process: shared.process.clone(),
                    source: source.to_string(),
                    run,
                    // Published before we attached: never read.
                    events_skipped: monitor.attached_at(),
                    ..MonitorRecord::default()
                },
                modules: Some(Modules::new(t.boardreaders, t.eventbuilders)),
                started: Some(Instant::now()),
            };
        }
        if monitor.attached_at() > 0 {
            warn!(process = %shared.process, skipped = monitor.attached_at(), "attached after events were published: those are skipped");
            shared
                .counters
                .update(|c| c.events_skipped = monitor.attached_at());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            shared: shared.clone(),
            monitor,
            stop: stop.clone(),
            started: Instant::now(),
            leak_bytes_per_event: config.leak.bytes_per_event_in(Kind::Monitor),
        };
        let thread = std::thread::Builder::new()
            .name(format!("{}-reader", shared.process))
            .spawn(move || reader.run())
            .map_err(|e| format!("cannot start the reader thread: {e}"))?;
        info!(process = %shared.process, run, %source, path = %path.display(), "monitoring");
        Ok(Self { stop, thread })
    }

    /// Reads what is left in the store, then ends the run's figures.
    pub async fn stop(self, shared: &Shared) -> Vec<String> {
        self.stop.store(true, Ordering::Release);
        let thread = self.thread;
        let mut problems = Vec::new();
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => problems.push(format!("{}: the reader thread panicked", shared.process)),
            Err(e) => problems.push(format!(
                "{}: joining the reader failed: {e}",
                shared.process
            )),
        }
        let mut f = shared.figures();
        if let Some(t) = f.started {
            f.record.elapsed_s = t.elapsed().as_secs_f64();
        }
        if let Some(m) = f.modules.as_mut() {
            m.rate.close();
        }
        f.record.finished = true;
        let r = &f.record;
        let failed = f
            .modules
            .as_ref()
            .map_or(0, |m| m.integrity.figures().events_failed);
        info!(process = %shared.process, read = r.events_read, skipped = r.events_skipped, torn = r.events_torn, integrity_failed = failed, "run stopped");
        if failed > 0 {
            warn!(process = %shared.process, failed, "events failed the integrity check");
        }
        problems
    }
}

/// The reader thread.
struct Reader {
    shared: Arc<Shared>,
    monitor: ShmMonitor,
    stop: Arc<AtomicBool>,
    started: Instant,
    leak_bytes_per_event: u64,
}

impl Reader {
    fn run(mut self) {
        let (mut missed, mut torn) = (0u64, 0u64);
        loop {
            // Read after the stop flag: the last poll sees everything the
            // aggregator published before its stop.
            let stopping = self.stop.load(Ordering::Acquire);
            let events = self.monitor.poll();
            let skipped = self.monitor.missed() - missed;
            let torn_now = self.monitor.torn() - torn;
            (missed, torn) = (self.monitor.missed(), self.monitor.torn());
            let at = self.started.elapsed();
            let n = events.len() as u64;
            let bytes: u64 = events.iter().map(|e| e.data.len() as u64).sum();
            let mut failures = None;
            {
                let mut f = self.shared.figures();
                let before = f
                    .modules
                    .as_ref()
                    .map_or(0, |m| m.integrity.figures().events_failed);
                if let Some(m) = f.modules.as_mut() {
                    for e in &events {
                        m.event(&EventView {
                            sequence_id: e.sequence_id,
                            fragment_count: e.fragment_count,
                            expected: e.expected,
                            complete: e.complete,
                            data: &e.data,
                            at,
                        });
                    }
                    m.skipped(skipped, at);
                    m.rate.advance(at);
                    if m.integrity.figures().events_failed != before {
                        failures = Some(m.integrity.figures().by_reason.clone());
                    }
                }
                let r = &mut f.record;
                r.events_read += n;
                r.events_skipped += skipped;
                r.events_torn += torn_now;
                r.bytes_read += bytes;
            }
            drop(events);
            if n > 0 || skipped > 0 || failures.is_some() {
                daq_runtime::leak::inject_leak(self.leak_bytes_per_event, n);
                self.shared.counters.update(|c| {
                    c.events_monitored += n;
                    c.events_skipped += skipped;
                    c.bytes_received += bytes;
                    if let Some(by) = failures {
                        c.integrity_failures = by.into_iter().collect();
                    }
                });
            }
            if stopping {
                return;
            }
            if n == 0 {
                std::thread::sleep(IDLE_POLL);
            }
        }
    }
}
