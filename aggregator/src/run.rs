//! The data path of an aggregator run.
//!
//! ```text
//! EventSink streams (one per eventbuilder): NetMonInput deserializes each
//!   event (fixed: owned; legacy: the original leak, on purpose)
//!   -> ingest task: copies the event's fragments into a buffer of the
//!      aggregator's shared-memory store and publishes it
//!   -> writer thread: takes events out of shared memory and writes them,
//!      straight from the mapping, to the run's data files (`output`: HDF5,
//!      or artdaq-binary with one write per batch of events)
//! ```
//!
//! Backpressure: when every buffer is full the ingest task waits for the
//! writer to free one; the receivers' queue fills and they stop reading,
//! which stalls the eventbuilders' streams. Nothing is dropped; the wait is
//! counted (`backpressure_wait_ms`).
//!
//! A data-file failure (disk full, the directory removed or read-only)
//! ends writing for the run: the process moves to Error with the failure
//! (file and errno), the writer thread keeps emptying shared memory so the
//! streams still end cleanly, and every event received from then on, plus
//! those the failed write lost, is counted in `events_unwritten`, so that
//! `events_received == events_written + events_unwritten` (the events a
//! writer had not yet put in a file when it failed count as unwritten).

use crate::output::Output;
use daq_format::config::{NetMonInput, SystemConfig};
use daq_format::netmon::{self, Event};
use daq_format::process::{Kind, ProcessId};
use daq_format::seqranges;
use daq_runtime::control::StopArgs;
use daq_runtime::counters::LiveCounters;
use daq_runtime::sources::RunSlot;
use daq_runtime::transport::{Decoded, Events, Hop, Intake, Receiver, RunEnded};
use daq_shm::{ShmReader, ShmStore, StoreSpec, segment_path};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};
use tracing::{error, info, warn};

enum IngestInput {
    Events(Vec<Event>),
    /// Everything received is in; drain, close the files, report.
    Finish(oneshot::Sender<Written>),
}

struct Ingress {
    intake: Intake,
    /// Deserialization path: fixed, or legacy (leaks on purpose).
    decode: fn(bytes::Bytes) -> Result<Event, netmon::NetMonError>,
    tx: mpsc::Sender<IngestInput>,
    /// Bytes orphaned per event received (the injected leak; 0 = none).
    leak_bytes_per_event: u64,
    /// The step between the sequence ids one eventbuilder sends here
    /// (eventbuilders x aggregators), for `received_ranges`.
    range_step: u64,
}

/// The receiving end of a run's event streams (the loop is the transport's).
impl Receiver for Ingress {
    type Hop = Events;
    type Item = Event;

    fn intake(&self) -> &Intake {
        &self.intake
    }

    fn decode(&self, source: usize, raw: bytes::Bytes) -> Result<Decoded<Event>, String> {
        (self.decode)(raw)
            .map(Decoded::Item)
            .map_err(|e| format!("malformed event from eventbuilder-{source}: {e}"))
    }

    async fn deliver(&self, source: usize, events: Vec<Event>) -> Result<(), RunEnded> {
        // What came from whom, as ranges (one per gap): names the events
        // lost with an eventbuilder that dies.
        let name = u16::try_from(source)
            .map(|r| ProcessId::new(Kind::EventBuilder, r).to_string())
            .unwrap_or_else(|_| format!("eventbuilder-{source}"));
        self.counters().update(|c| {
            if !c.received_ranges.iter().any(|r| r.source == name) {
                c.received_ranges.push(proto::SourceRanges {
                    source: name.clone(),
                    ranges: Vec::new(),
                });
            }
            if let Some(r) = c.received_ranges.iter_mut().find(|r| r.source == name) {
                for e in &events {
                    seqranges::insert(&mut r.ranges, e.aux.sequence_id, self.range_step);
                }
            }
        });
        self.tx
            .send(IngestInput::Events(events))
            .await
            .map_err(|_| RunEnded)
    }

    fn received(&self, events: u64, bytes: u64) {
        daq_runtime::leak::inject_leak(self.leak_bytes_per_event, events);
        self.counters()
            .update(|c| Events::count_received(c, events, bytes));
    }
}

/// State shared by run control and the `EventSink` service.
pub struct Shared {
    process: String,
    pub counters: Arc<LiveCounters>,
    ingress: RunSlot<Ingress>,
    /// The current run's data-file failure, if writing failed.
    failure: std::sync::Mutex<Option<String>>,
}

impl Shared {
    pub fn new(process: String) -> Arc<Self> {
        Arc::new(Self {
            process,
            counters: Arc::default(),
            ingress: RunSlot::default(),
            failure: std::sync::Mutex::default(),
        })
    }

    fn failure_slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why writing failed in the current run (`None`: it did not).
    pub fn failure(&self) -> Option<String> {
        self.failure_slot().clone()
    }
}

/// What the writer thread leaves at the end of a run.
struct Written {
    /// The run's files, in order (listed after a failure too: those closed
    /// before it are whole, the last one readable up to its last flush).
    files: Vec<PathBuf>,
    bytes_on_disk: u64,
    /// The failure that ended writing, naming the file and the cause.
    error: Option<String>,
}

impl Written {
    /// The files as they are on disk now (a vanished one counts 0 bytes).
    fn on_disk(files: &[PathBuf], error: Option<String>) -> Self {
        let bytes_on_disk = files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        Self {
            files: files.to_vec(),
            bytes_on_disk,
            error,
        }
    }
}

/// Wakes between the ingest task and the writer thread.
#[derive(Default)]
struct Signals {
    published: Notify,
    freed: Notify,
    /// Set by the ingest task once everything received is published.
    finishing: AtomicBool,
    /// Set when the writer thread has ended (normally or by a panic).
    writer_gone: AtomicBool,
}

/// Marks the writer gone when the writer thread ends, however it ends.
struct WriterGone(Arc<Signals>);

impl Drop for WriterGone {
    fn drop(&mut self) {
        self.0.writer_gone.store(true, Ordering::Release);
        self.0.freed.notify_one();
    }
}

pub struct Run {
    ingress: Arc<Ingress>,
    ingest: JoinHandle<()>,
    finish_timeout: Duration,
}

impl Run {
    /// Creates the shared-memory store, opens the run's first data file (if
    /// writing) and starts receiving.
    pub fn start(
        shared: &Arc<Shared>,
        run: u32,
        config: &SystemConfig,
        data_dir: &Path,
    ) -> Result<Self, String> {
        *shared.failure_slot() = None;
        let writer = if config.aggregator.write_data {
            writable_data_dir(data_dir)?;
            Some(
                Output::create(config, run, &shared.process, data_dir)
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        let a = &config.aggregator;
        let store = ShmStore::create(
            &segment_path(config.partition, &shared.process),
            StoreSpec {
                buffer_count: a.buffer_count,
                buffer_bytes: a.buffer_bytes,
            },
        )
        .map_err(|e| format!("shared-memory event store: {e}"))?;
        if store.replaced_stale() {
            warn!(process = %shared.process, path = %store.path().display(), "replaced a stale shared-memory segment left by a crashed process");
        }
        daq_runtime::metrics::data_path().set_buffers(Some(store.monitor()));
        shared.counters.reset();
        let signals = Arc::new(Signals::default());
        let (done_tx, done_rx) = oneshot::channel();
        let w = WriterThread {
            shared: shared.clone(),
            reader: store.reader(),
            signals: signals.clone(),
            run,
            writer,
            delay: Duration::from_micros(a.write_delay_us),
            rt: tokio::runtime::Handle::current(),
        };
        std::thread::Builder::new()
            .name(format!("{}-writer", shared.process))
            .spawn(move || {
                let _gone = WriterGone(w.signals.clone());
                // Timers and notifications of the runtime are used from here.
                let _context = w.rt.clone();
                let _entered = _context.enter();
                let _ = done_tx.send(w.run());
            })
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        let (tx, rx) = mpsc::channel(config.transfer.queue_batches);
        let ingress = Arc::new(Ingress {
            intake: Intake::new::<Events>(
                run,
                usize::from(config.topology.eventbuilders),
                shared.counters.clone(),
            ),
            decode: match config.aggregator.netmon_input {
                NetMonInput::Fixed => netmon::decode,
                NetMonInput::Legacy => netmon::decode_legacy,
            },
            tx,
            leak_bytes_per_event: config.leak.bytes_per_event_in(Kind::Aggregator),
            range_step: u64::from(config.topology.eventbuilders).max(1)
                * u64::from(config.topology.aggregators).max(1),
        });
        daq_runtime::metrics::data_path().set_queue_sender("ingest_batches", &ingress.tx);
        let ingest = Ingest {
            shared: shared.clone(),
            store,
            signals,
            buffer_bytes: a.buffer_bytes as usize,
        };
        let ingest = tokio::spawn(ingest.run(rx, done_rx));
        shared.ingress.set(Some(ingress.clone()));
        info!(process = %shared.process, run, netmon_input = config.aggregator.netmon_input.as_str(), format = config.aggregator.format.as_str(), "run started");
        Ok(Self {
            ingress,
            ingest,
            finish_timeout: Duration::from_millis(config.transfer.end_of_data_timeout_ms),
        })
    }

    /// Waits for every eventbuilder's end-of-data (or the idle timeout),
    /// then drains shared memory and closes the data files. Returns the
    /// problems found.
    pub async fn stop(self, shared: &Shared, args: StopArgs) -> Vec<String> {
        let (mut problems, written) = daq_runtime::transport::inbound::end_run(
            &shared.ingress,
            &*self.ingress,
            args.source_wait(self.finish_timeout),
            &self.ingress.tx,
            IngestInput::Finish,
            "ingest",
        )
        .await;
        if let Some(w) = written {
            shared.counters.update(|c| {
                c.bytes_written = w.bytes_on_disk;
                c.data_files = w.files.iter().map(|p| p.display().to_string()).collect();
            });
            problems.extend(w.error);
            for f in w.files.iter().filter(|f| !f.exists()) {
                problems.push(format!(
                    "data file {} is gone: removed during the run, its events with it",
                    f.display()
                ));
            }
        }
        let unwritten = shared.counters.read(|c| c.events_unwritten);
        if unwritten > 0 {
            problems.push(format!(
                "{unwritten} events received but not written: the data files had failed"
            ));
        }
        if let Err(e) = self.ingest.await {
            problems.push(format!("ingest task failed: {e}"));
        }
        problems
    }
}

/// The ingest task: the single writer of the aggregator's store.
struct Ingest {
    shared: Arc<Shared>,
    store: ShmStore,
    signals: Arc<Signals>,
    buffer_bytes: usize,
}

type Done = oneshot::Receiver<Written>;

impl Ingest {
    async fn run(mut self, mut rx: mpsc::Receiver<IngestInput>, done: Done) {
        while let Some(msg) = rx.recv().await {
            match msg {
                IngestInput::Events(events) => {
                    for e in events {
                        self.place(e).await;
                    }
                }
                IngestInput::Finish(ack) => {
                    // Batches a late stream queued behind the finish are
                    // still placed; later ones are refused.
                    rx.close();
                    while let Ok(IngestInput::Events(events)) = rx.try_recv() {
                        for e in events {
                            self.place(e).await;
                        }
                    }
                    self.signals.finishing.store(true, Ordering::Release);
                    self.signals.published.notify_one();
                    let result = done.await.unwrap_or_else(|_| Written {
                        files: vec![],
                        bytes_on_disk: 0,
                        error: Some("writer thread ended without a result".into()),
                    });
                    let _ = ack.send(result);
                    // The store (and its segment) goes when this task ends.
                    return;
                }
            }
        }
    }

    /// Copies one event into a free buffer, waiting for one if need be.
    async fn place(&mut self, e: Event) {
        let seq = e.aux.sequence_id;
        if e.fragment_bytes() > self.buffer_bytes {
            self.shared.counters.update(|c| c.oversize_fragments += 1);
            error!(process = %self.shared.process, seq, bytes = e.fragment_bytes(), "event larger than a buffer rejected");
            return;
        }
        let n = e.fragments.len() as u32;
        let mut waited: Option<Instant> = None;
        let idx = loop {
            if let Some(idx) = self.store.claim(seq, n) {
                break idx;
            }
            if self.signals.writer_gone.load(Ordering::Acquire) {
                // Nobody will free a buffer: the event is lost, and counted.
                self.shared.counters.update(|c| c.events_unwritten += 1);
                return;
            }
            waited.get_or_insert_with(Instant::now);
            let _ = tokio::time::timeout(Duration::from_millis(100), self.signals.freed.notified())
                .await;
        };
        if let Some(t) = waited {
            let ms = t.elapsed().as_millis() as u64;
            self.shared
                .counters
                .update(|c| c.backpressure_wait_ms += ms);
        }
        for f in &e.fragments {
            if let Err(err) = self.store.append(idx, f.bytes()) {
                error!(process = %self.shared.process, seq, error = %err, "event copy into shared memory failed");
                break;
            }
        }
        if let Err(err) = self.store.publish(idx, e.aux.complete) {
            error!(process = %self.shared.process, seq, error = %err, "event publish failed");
        }
        self.signals.published.notify_one();
    }
}

/// The disk writer: a thread that takes events out of shared memory.
struct WriterThread {
    shared: Arc<Shared>,
    reader: ShmReader,
    signals: Arc<Signals>,
    run: u32,
    writer: Option<Output>,
    delay: Duration,
    rt: tokio::runtime::Handle,
}

impl WriterThread {
    /// Writes until the run ends. Keeps emptying shared memory after a
    /// failure, counting what it cannot write.
    fn run(mut self) -> Written {
        let mut failed: Option<String> = None;
        // Events the writer accepted (HDF5: perhaps still buffered).
        let mut accepted = 0u64;
        // What the counters last said is in the files: (events, bytes).
        let mut reported = (0u64, 0u64);
        let limit = self.writer.as_ref().map_or(1, Output::batch_limit);
        let mut batch = Vec::with_capacity(limit);
        loop {
            // Every event ready, up to the writer's batch: one write for all.
            batch.extend(std::iter::from_fn(|| self.reader.take()).take(limit));
            if batch.is_empty() {
                if self.signals.finishing.load(Ordering::Acquire) && self.reader.counts().full == 0
                {
                    break;
                }
                let _ = self.rt.block_on(tokio::time::timeout(
                    Duration::from_millis(50),
                    self.signals.published.notified(),
                ));
                continue;
            }
            let n = batch.len() as u64;
            match (self.writer.as_mut(), &failed) {
                (Some(w), None) => {
                    let pending = w.events_pending();
                    match w.write(self.run, &batch) {
                        Ok(()) => accepted += n,
                        Err(e) => {
                            // This batch, and what the writer had accepted
                            // but not yet put in a file, are lost.
                            accepted -= pending;
                            let msg = format!("data file write failed: {e}");
                            self.fail(msg.clone(), n + pending, accepted);
                            failed = Some(msg);
                        }
                    }
                }
                (Some(_), Some(_)) => {
                    self.shared.counters.update(|c| c.events_unwritten += n);
                }
                // Disk writing is off: events are consumed, none is written.
                (None, _) => {}
            }
            batch.clear();
            self.signals.freed.notify_one();
            // Live: once per batch that reached a file, events and bytes
            // together (a failure has set them already).
            if let (Some(w), None) = (&self.writer, &failed) {
                let now = w.in_files();
                if now != reported {
                    reported = now;
                    self.shared.counters.update(|c| {
                        (c.events_written, c.bytes_written) = now;
                    });
                }
            }
            if !self.delay.is_zero() {
                std::thread::sleep(self.delay * n as u32);
            }
        }
        let Some(w) = self.writer.take() else {
            return Written::on_disk(&[], None);
        };
        if failed.is_some() {
            return Written::on_disk(w.files(), failed);
        }
        let files = w.files().to_vec();
        match w.close() {
            Ok(f) => {
                // Every event accepted is in a file now.
                self.shared.counters.update(|c| c.events_written = accepted);
                Written {
                    files: f.files,
                    bytes_on_disk: f.bytes_on_disk,
                    error: None,
                }
            }
            Err(failed) => {
                // Exactly what did not reach a file is unwritten.
                let msg = format!("closing data files failed: {}", failed.error);
                let written = failed.events_in_files.min(accepted);
                self.fail(msg.clone(), accepted - written, written);
                Written::on_disk(&files, Some(msg))
            }
        }
    }

    /// Writing failed: `lost` events are counted unwritten, `written` is
    /// what is in the files, and run control is told (Error state).
    fn fail(&self, msg: String, lost: u64, written: u64) {
        error!(process = %self.shared.process, error = %msg, lost, "data files failed; events from here on are not written");
        self.shared.counters.update(|c| {
            c.events_written = written;
            c.events_unwritten += lost;
        });
        *self.shared.failure_slot() = Some(msg);
    }
}

/// The `EventSink` gRPC service: one client stream per eventbuilder per run.
pub struct EventSink(pub Arc<Shared>);

#[tonic::async_trait]
impl proto::event_sink_server::EventSink for EventSink {
    async fn send(
        &self,
        request: Request<Streaming<proto::EventBatch>>,
    ) -> Result<Response<proto::TransferSummary>, Status> {
        let s = &self.0;
        daq_runtime::transport::inbound::serve(&s.process, &s.ingress, request).await
    }

    async fn attach(
        &self,
        request: Request<proto::LinkOffer>,
    ) -> Result<Response<proto::LinkAccept>, Status> {
        let s = &self.0;
        daq_runtime::transport::shm::accept(&s.process, &s.ingress, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// Creates the run's data directory on this host, as this process's user,
/// and checks that this process can create files in it. An error names the
/// path, the user and the fix: the data directory belongs to the process
/// that writes into it, and nobody else creates it.
pub fn writable_data_dir(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!(".aggregator-write-check-{}", std::process::id()));
    let made = std::fs::create_dir_all(dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map(drop)
    });
    match made {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(permission_message(dir, &e)),
    }
}

/// "cannot create ... : why; who I am, which directory refuses me, and
/// what to do".
fn permission_message(dir: &Path, e: &std::io::Error) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut msg = format!("cannot create data dir {}: {e}", dir.display());
    if e.kind() != std::io::ErrorKind::PermissionDenied {
        return msg;
    }
    // The owner of /proc/self is this process's effective user.
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let user = uid.map_or_else(|| "this process's user".to_string(), user_name);
    // The deepest directory that exists is the one that refused.
    let refusing = dir
        .ancestors()
        .find(|a| a.is_dir())
        .unwrap_or_else(|| Path::new("/"));
    let owner = std::fs::metadata(refusing)
        .map(|m| format!("owner {}, mode {:o}", user_name(m.uid()), m.mode() & 0o7777))
        .unwrap_or_default();
    msg.push_str(&format!(
        "; the aggregator runs as user {user}, and {} ({owner}) does not let it write: \
         make it writable by {user} (e.g. `chown {user} {}`), or give daqctl a --run-dir \
         that {user} can write (under /var/lib/daq for the systemd units); \
         this aggregator stays Ready, so `daqctl start` can be retried",
        refusing.display(),
        refusing.display()
    ));
    msg
}

/// The name of user `uid` from /etc/passwd, or `uid N`.
fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id: u32 = f.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_string())
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The data directory of a run, as run control passes it.
pub fn data_dir(dir: PathBuf) -> PathBuf {
    if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    }
}
