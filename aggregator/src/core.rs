//! The data path of an aggregator run: the `EventSink` service takes event
//! streams from every eventbuilder and deserializes each event through
//! NetMonInput (owned deserialization); a writer thread appends the events
//! to the run's HDF5 files.
//!
//! Backpressure: decoded batches reach the writer through a bounded queue;
//! when the disk is slower than the network the receivers stop reading,
//! which stalls the eventbuilders' streams. Nothing is dropped.

use crate::datafile::{
    Compression, EventView, FileAttributes, FragmentView, RunFiles, RunWriter, WriterOptions,
};
use common::config::{NetMonInput, SystemConfig};
use common::netmon::{self, Event};
use common::sources::Sources;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

#[derive(Debug, Default)]
pub struct Counters {
    pub events_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub events_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub streams_rejected: AtomicU64,
    pub data_files: Mutex<Vec<String>>,
}

impl Counters {
    fn reset(&self) {
        for c in [
            &self.events_received,
            &self.bytes_received,
            &self.events_written,
            &self.bytes_written,
            &self.streams_rejected,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.data_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn to_proto(&self) -> proto::Counters {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        proto::Counters {
            events_received: l(&self.events_received),
            bytes_received: l(&self.bytes_received),
            events_written: l(&self.events_written),
            bytes_written: l(&self.bytes_written),
            streams_rejected: l(&self.streams_rejected),
            data_files: self
                .data_files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            ..Default::default()
        }
    }
}

enum WriterInput {
    Events(Vec<Event>),
    Finish(oneshot::Sender<Result<Option<RunFiles>, String>>),
}

struct Ingress {
    run: u32,
    /// Deserialization path: fixed, or legacy (leaks on purpose).
    decode: fn(bytes::Bytes) -> Result<Event, netmon::NetMonError>,
    sources: Sources,
    tx: mpsc::Sender<WriterInput>,
}

/// State shared by run control and the `EventSink` service.
pub struct Shared {
    process: String,
    pub counters: Counters,
    ingress: RwLock<Option<Arc<Ingress>>>,
}

impl Shared {
    pub fn new(process: String) -> Arc<Self> {
        Arc::new(Self {
            process,
            counters: Counters::default(),
            ingress: RwLock::new(None),
        })
    }

    fn ingress(&self) -> Option<Arc<Ingress>> {
        self.ingress
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_ingress(&self, i: Option<Arc<Ingress>>) {
        *self.ingress.write().unwrap_or_else(|p| p.into_inner()) = i;
    }
}

pub struct Run {
    ingress: Arc<Ingress>,
    writer: JoinHandle<()>,
    finish_timeout: Duration,
}

impl Run {
    /// Opens the run's first data file (if writing) and starts receiving.
    pub fn start(
        shared: &Arc<Shared>,
        run: u32,
        config: &SystemConfig,
        data_dir: &Path,
    ) -> Result<Self, String> {
        let writer = if config.aggregator.write_data {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| format!("cannot create data dir {}: {e}", data_dir.display()))?;
            let a = &config.aggregator;
            let options = WriterOptions {
                compression: if a.deflate_level == 0 {
                    Compression::None
                } else {
                    Compression::Deflate(a.deflate_level)
                },
                batch_events: a.batch_events,
                max_file_bytes: a.max_file_bytes,
            };
            let attrs = FileAttributes {
                run,
                subrun: 1,
                process: shared.process.clone(),
                config_toml: config.to_toml(),
                software_version: env!("CARGO_PKG_VERSION").to_string(),
            };
            Some(RunWriter::create(data_dir, attrs, options).map_err(|e| e.to_string())?)
        } else {
            None
        };
        shared.counters.reset();
        let (tx, rx) = mpsc::channel(config.transfer.queue_batches);
        let ingress = Arc::new(Ingress {
            run,
            decode: match config.aggregator.netmon_input {
                NetMonInput::Fixed => netmon::decode,
                NetMonInput::Legacy => netmon::decode_legacy,
            },
            sources: Sources::new("eventbuilder", usize::from(config.topology.eventbuilders)),
            tx,
        });
        let s = shared.clone();
        let writer = tokio::task::spawn_blocking(move || write_loop(s, writer, rx));
        shared.set_ingress(Some(ingress.clone()));
        info!(process = %shared.process, run, netmon_input = config.aggregator.netmon_input.as_str(), "run started");
        Ok(Self {
            ingress,
            writer,
            finish_timeout: Duration::from_millis(config.transfer.end_of_data_timeout_ms),
        })
    }

    /// Waits for every eventbuilder's end-of-data (or the idle timeout),
    /// then closes the data files. Returns the problems found.
    pub async fn stop(self, shared: &Shared) -> Vec<String> {
        let mut problems = self.ingress.sources.wait_all(self.finish_timeout).await;
        shared.set_ingress(None);
        let (ack, done) = oneshot::channel();
        if self
            .ingress
            .tx
            .send(WriterInput::Finish(ack))
            .await
            .is_err()
        {
            problems.push("writer ended before stop".into());
        } else {
            match done.await {
                Ok(Ok(Some(files))) => {
                    let c = &shared.counters;
                    c.bytes_written
                        .store(files.bytes_on_disk, Ordering::Relaxed);
                    *c.data_files.lock().unwrap_or_else(|p| p.into_inner()) = files
                        .files
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect();
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => problems.push(e),
                Err(_) => problems.push("writer ended during stop".into()),
            }
        }
        if let Err(e) = self.writer.await {
            problems.push(format!("writer failed: {e}"));
        }
        problems
    }
}

/// The writer thread: append every event, close the files at the end.
fn write_loop(
    shared: Arc<Shared>,
    mut writer: Option<RunWriter>,
    mut rx: mpsc::Receiver<WriterInput>,
) {
    let mut failed: Option<String> = None;
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            WriterInput::Events(events) => {
                let n = events.len() as u64;
                if let (Some(w), None) = (writer.as_mut(), &failed) {
                    let mut fragments: Vec<FragmentView<'_>> = Vec::new();
                    for e in &events {
                        fragments.clear();
                        fragments.extend(e.fragments.iter().map(|f| FragmentView {
                            fragment_id: f.fragment_id(),
                            fragment_type: f.header().fragment_type,
                            sequence_id: f.sequence_id(),
                            timestamp: f.timestamp(),
                            metadata: f.metadata(),
                            payload: f.payload(),
                        }));
                        let view = EventView {
                            run: e.aux.run,
                            subrun: e.aux.subrun,
                            event: e.aux.event,
                            sequence_id: e.aux.sequence_id,
                            timestamp: e.aux.timestamp,
                            complete: e.aux.complete,
                            fragments: &fragments,
                        };
                        if let Err(err) = w.append(&view) {
                            warn!(process = %shared.process, error = %err, "data file write failed; events from here on are lost");
                            failed = Some(format!("data file write failed: {err}"));
                            break;
                        }
                    }
                    if failed.is_none() {
                        shared
                            .counters
                            .events_written
                            .fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
            WriterInput::Finish(ack) => {
                let result = match (writer.take(), failed.take()) {
                    (_, Some(e)) => Err(e),
                    (Some(w), None) => w
                        .close()
                        .map(Some)
                        .map_err(|e| format!("closing data files failed: {e}")),
                    (None, None) => Ok(None),
                };
                let _ = ack.send(result);
                return;
            }
        }
    }
}

/// The `EventSink` gRPC service: one client stream per eventbuilder per run.
pub struct EventSink {
    pub shared: Arc<Shared>,
}

impl EventSink {
    fn reject(&self, ingress: &Ingress, source: Option<usize>, msg: String) -> Status {
        self.shared
            .counters
            .streams_rejected
            .fetch_add(1, Ordering::Relaxed);
        warn!(process = %self.shared.process, ?source, error = %msg, "event stream rejected");
        if let Some(s) = source {
            ingress.sources.ended(s, Some(msg.clone()));
        }
        Status::invalid_argument(format!("{}: {msg}", self.shared.process))
    }
}

#[tonic::async_trait]
impl proto::event_sink_server::EventSink for EventSink {
    async fn send(
        &self,
        request: Request<Streaming<proto::EventBatch>>,
    ) -> Result<Response<proto::TransferSummary>, Status> {
        let Some(ingress) = self.shared.ingress() else {
            return Err(Status::failed_precondition(format!(
                "{} is not running; events refused",
                self.shared.process
            )));
        };
        let n_sources = ingress.sources.len();
        let mut stream = request.into_inner();
        let mut source: Option<usize> = None;
        let mut received = 0u64;
        let mut announced = None;
        loop {
            let batch = match stream.message().await {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(status) => {
                    if let Some(s) = source {
                        ingress.sources.ended(s, Some(status.message().to_string()));
                    }
                    return Err(status);
                }
            };
            if batch.run != ingress.run {
                return Err(self.reject(
                    &ingress,
                    source,
                    format!("batch for run {} during run {}", batch.run, ingress.run),
                ));
            }
            let src = batch.source as usize;
            if src >= n_sources || source.is_some_and(|s| s != src) {
                return Err(self.reject(
                    &ingress,
                    source,
                    format!("batch from unexpected source {src}"),
                ));
            }
            source = Some(src);
            let mut events = Vec::with_capacity(batch.events.len());
            let mut bytes = 0u64;
            for raw in batch.events {
                bytes += raw.len() as u64;
                match (ingress.decode)(raw) {
                    Ok(e) => events.push(e),
                    Err(e) => {
                        return Err(self.reject(
                            &ingress,
                            source,
                            format!("malformed event from eventbuilder-{src}: {e}"),
                        ));
                    }
                }
            }
            let n = events.len() as u64;
            if n > 0 {
                if ingress.tx.send(WriterInput::Events(events)).await.is_err() {
                    return Err(self.reject(
                        &ingress,
                        source,
                        "run ended while events were arriving".into(),
                    ));
                }
                received += n;
                ingress.sources.received(src, n);
                let c = &self.shared.counters;
                c.events_received.fetch_add(n, Ordering::Relaxed);
                c.bytes_received.fetch_add(bytes, Ordering::Relaxed);
            }
            if let Some(count) = batch.end_of_data {
                announced = Some(count);
                ingress.sources.announced(src, count);
            }
        }
        if let Some(s) = source {
            ingress.sources.ended(s, None);
        }
        Ok(Response::new(proto::TransferSummary {
            received,
            announced,
        }))
    }
}

/// The data directory of a run, as run control passes it.
pub fn data_dir(dir: PathBuf) -> PathBuf {
    if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    }
}
