//! Prometheus metrics of a process: the OpenMetrics text served at
//! `/metrics` (prometheus-client), what is read at scrape time (run state,
//! run number, the run record's counters, a heap snapshot, shared-memory
//! buffers by state, queue depths) and the data-path histograms the process
//! crates observe once per batch.
//!
//! Names follow Prometheus conventions: `daq_` prefix, base units (seconds,
//! bytes) in the name, `_total` on counters. Every series carries a
//! `process` label; the run record's counters also carry `run`.
//!
//! The counters are derived mechanically from [`daq_format::record::Counters`]
//! (serialized to a map at scrape time): a new counter in the run record is a
//! new metric with no code here. A field `x` becomes `daq_x_total`, a field
//! `x_ms` becomes `daq_x_seconds_total` (divided by 1000), fields listed in
//! [`GAUGE_FIELDS`] become gauges, a map of numbers becomes one counter with a
//! `reason` label, lists (data files) are skipped.
//!
//! The data-path histograms live in one process-wide [`DataPath`] (a static,
//! [`data_path`]): one process per binary, and the hooks in the data path stay
//! one line each, with no handle threaded through every constructor.

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use daq_format::record::Counters;
use daq_format::state::State;
use daq_shm::{ShmMonitor, StateCounts};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use proto::HeapSnapshot;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

/// Counters of the run record that are levels, not counts: exported as gauges.
pub const GAUGE_FIELDS: [&str; 1] = ["last_sequence_id"];

/// Content type of the OpenMetrics text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What run control knows about a process, read at every scrape.
pub trait Observed: Send + Sync + 'static {
    fn state(&self) -> State;
    /// The current (or last) run number; 0 before the first start.
    fn run(&self) -> u32;
    fn counters(&self) -> Counters;
    /// Told the URL once the metrics endpoint is bound (for the Status reply).
    fn set_metrics_url(&self, _url: String) {}
}

/// The URL of a metrics endpoint bound at `addr`.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/metrics")
}

/// A probe read at scrape time (a queue depth).
type Probe = Box<dyn Fn() -> u64 + Send + Sync>;

/// Histograms and scrape-time probes of the data path, one per process.
pub struct DataPath {
    /// First fragment of an event to its completion, per event, observed
    /// once per batch (`eventbuilder::assembly`).
    pub event_build_seconds: Histogram,
    /// One batch of events written to a data file (`daq_datafile::hdf5`,
    /// `daq_datafile::artdaq_binary`).
    pub write_batch_seconds: Histogram,
    /// Items (fragments at an eventbuilder, events at an aggregator) per
    /// gRPC batch received (`transport::inbound`).
    pub grpc_batch_items: Histogram,
    buffers: Mutex<Option<ShmMonitor>>,
    queues: Mutex<BTreeMap<&'static str, Probe>>,
}

impl DataPath {
    fn new() -> Self {
        Self {
            // 10 us .. ~42 s
            event_build_seconds: Histogram::new(exponential_buckets(1e-5, 4.0, 12)),
            // 100 us .. ~26 s
            write_batch_seconds: Histogram::new(exponential_buckets(1e-4, 4.0, 10)),
            grpc_batch_items: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            buffers: Mutex::new(None),
            queues: Mutex::new(BTreeMap::new()),
        }
    }

    /// The shared-memory store whose buffers are reported by state (a
    /// monitor of the run's store; `None` when the run ends).
    pub fn set_buffers(&self, monitor: Option<ShmMonitor>) {
        *self.buffers.lock().unwrap_or_else(|p| p.into_inner()) = monitor;
    }

    /// Reports `depth()` as `daq_queue_depth{queue=name}` at every scrape.
    pub fn set_queue(&self, name: &'static str, depth: impl Fn() -> u64 + Send + Sync + 'static) {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, Box::new(depth));
    }

    /// Reports the batches waiting in `tx`'s channel as
    /// `daq_queue_depth{queue=name}` (holds only a weak reference).
    pub fn set_queue_sender<T: Send + 'static>(
        &self,
        name: &'static str,
        tx: &tokio::sync::mpsc::Sender<T>,
    ) {
        let weak = tx.downgrade();
        self.set_queue(name, move || {
            weak.upgrade()
                .map_or(0, |tx| (tx.max_capacity() - tx.capacity()) as u64)
        });
    }

    fn buffer_counts(&self) -> Option<StateCounts> {
        self.buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(ShmMonitor::counts)
    }

    fn queue_depths(&self) -> Vec<(&'static str, u64)> {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, f)| (*n, f()))
            .collect()
    }
}

/// The process-wide data-path metrics.
pub fn data_path() -> &'static DataPath {
    static DATA_PATH: LazyLock<DataPath> = LazyLock::new(DataPath::new);
    &DATA_PATH
}

/// Everything read at scrape time.
struct Scraped {
    observed: Arc<dyn Observed>,
}

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scraped")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Vec<(&str, String)>, f64)],
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Vec<(&str, String)>, f64)],
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// One metric derived from a run-record counter field.
#[derive(Debug, PartialEq)]
pub struct Derived {
    /// Full metric name as exposed (`daq_fragments_sent_total`).
    pub name: String,
    pub gauge: bool,
    /// `(reason, value)` for a map field, `(None, value)` otherwise.
    pub series: Vec<(Option<String>, f64)>,
}

/// The metrics of a run record's counters, derived from their serialized
/// form (see the module documentation for the rules).
pub fn derive_counters(c: &Counters) -> Vec<Derived> {
    let Ok(serde_json::Value::Object(map)) = serde_json::to_value(c) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (field, value) in map {
        let (stem, scale) = match field.strip_suffix("_ms") {
            Some(stem) => (format!("{stem}_seconds"), 1e-3),
            None => (field.clone(), 1.0),
        };
        let gauge = GAUGE_FIELDS.contains(&field.as_str());
        let name = if gauge {
            format!("daq_{stem}")
        } else {
            format!("daq_{stem}_total")
        };
        let series = match value {
            serde_json::Value::Number(n) => vec![(None, n.as_f64().unwrap_or(0.0) * scale)],
            serde_json::Value::Object(reasons) => reasons
                .into_iter()
                .filter_map(|(r, v)| Some((Some(r), v.as_f64()? * scale)))
                .collect(),
            _ => continue,
        };
        out.push(Derived {
            name,
            gauge,
            series,
        });
    }
    out
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let o = &self.observed;
        let state = o.state();
        let run = o.run().to_string();
        let states: Vec<_> = State::ALL
            .iter()
            .map(|s| {
                (
                    vec![("state", s.to_string())],
                    if *s == state { 1.0 } else { 0.0 },
                )
            })
            .collect();
        gauge(
            &mut encoder,
            "daq_run_state",
            "1 for the state the process is in, 0 for the others",
            &states,
        )?;
        gauge(
            &mut encoder,
            "daq_run_number",
            "the current (or last) run number, 0 before the first start",
            &[(vec![], o.run() as f64)],
        )?;
        for d in derive_counters(&o.counters()) {
            let series: Vec<_> = d
                .series
                .into_iter()
                .map(|(reason, v)| {
                    let mut labels = vec![("run", run.clone())];
                    if let Some(r) = reason {
                        labels.push(("reason", r));
                    }
                    (labels, v)
                })
                .collect();
            let help = "run-record counter of the current (or last) run";
            if d.gauge {
                gauge(&mut encoder, &d.name, help, &series)?;
            } else {
                // The exposed name carries `_total`; the descriptor does not.
                let base = d.name.trim_end_matches("_total");
                counter(&mut encoder, base, help, &series)?;
            }
        }
        // Unreadable statistics: no heap gauges in this scrape (never zeros).
        if let Ok(snapshot) = crate::sampler::heap_snapshot(0) {
            heap_gauges(&mut encoder, &snapshot)?;
        }
        let dp = data_path();
        if let Some(c) = dp.buffer_counts() {
            let series = [
                ("empty", c.empty),
                ("writing", c.writing),
                ("full", c.full),
                ("reading", c.reading),
            ]
            .map(|(s, n)| (vec![("state", s.to_string())], f64::from(n)));
            gauge(
                &mut encoder,
                "daq_shm_buffers",
                "shared-memory buffers of the event store by state",
                &series,
            )?;
        }
        let queues = dp.queue_depths();
        if !queues.is_empty() {
            let series: Vec<_> = queues
                .into_iter()
                .map(|(q, n)| (vec![("queue", q.to_string())], n as f64))
                .collect();
            gauge(
                &mut encoder,
                "daq_queue_depth",
                "items waiting in a bounded queue",
                &series,
            )?;
        }
        Ok(())
    }
}

/// Every field of a heap snapshot as `daq_heap_<field>_bytes` (counts
/// without the unit), from its serialized form.
fn heap_gauges(encoder: &mut DescriptorEncoder, s: &HeapSnapshot) -> Result<(), std::fmt::Error> {
    let Ok(serde_json::Value::Object(map)) = serde_json::to_value(s) else {
        return Ok(());
    };
    for (field, v) in map {
        // Not memory: the time of the reading and the events handled.
        if field == "unix_ms" || field == "events" {
            continue;
        }
        let name = if field.starts_with("live_") {
            format!("daq_heap_{field}")
        } else {
            format!("daq_heap_{field}_bytes")
        };
        let v = v.as_f64().unwrap_or(0.0);
        gauge(
            encoder,
            &name,
            "heap snapshot taken at scrape time",
            &[(vec![], v)],
        )?;
    }
    Ok(())
}

/// The registry of one process: scrape-time readings of `observed` and the
/// data-path histograms of its kind (the name before the rank:
/// eventbuilders build events, aggregators write batches, both receive
/// gRPC batches), every series labelled with `process`.
pub fn registry(process: &str, observed: Arc<dyn Observed>) -> Registry {
    let mut r = Registry::with_labels(
        [(Cow::Borrowed("process"), Cow::Owned(process.to_string()))].into_iter(),
    );
    let dp = data_path();
    let kind = process.rsplit_once('-').map_or(process, |(k, _)| k);
    if kind == "eventbuilder" {
        r.register(
            "daq_event_build_seconds",
            "time from an event's first fragment to its completion",
            dp.event_build_seconds.clone(),
        );
    }
    if kind == "aggregator" {
        r.register(
            "daq_write_batch_seconds",
            "time to write one batch of events to a data file",
            dp.write_batch_seconds.clone(),
        );
    }
    if kind == "eventbuilder" || kind == "aggregator" {
        r.register(
            "daq_grpc_batch_items",
            "items (fragments or events) per gRPC batch received",
            dp.grpc_batch_items.clone(),
        );
    }
    r.register_collector(Box::new(Scraped { observed }));
    r
}

/// Failure to serve metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics listener has no local address: {0}")]
    LocalAddr(std::io::Error),
    #[error("metrics server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

async fn scrape(registry: Arc<Registry>) -> axum::response::Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            warn!(error = %e, "encoding metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed\n",
            )
                .into_response()
        }
    }
}

/// Serves `GET /metrics` and the routes of `extra` (any other path: 404)
/// on `listener` until `exit` turns true.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    extra: Option<axum::Router>,
    mut exit: watch::Receiver<bool>,
) -> Result<(), MetricsError> {
    let addr = listener.local_addr().map_err(MetricsError::LocalAddr)?;
    let registry = Arc::new(registry);
    let mut app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || scrape(registry.clone())),
    );
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    info!(%addr, "serving metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = exit.wait_for(|v| *v).await;
        })
        .await
        .map_err(|source| MetricsError::Serve { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_become_total_counters_in_base_units_and_levels_become_gauges() {
        let c = Counters {
            fragments_sent: 7,
            backpressure_wait_ms: 1500,
            last_sequence_id: 42,
            data_files: vec!["a.h5".into()],
            ..Default::default()
        };
        let d = derive_counters(&c);
        let get = |n: &str| d.iter().find(|x| x.name == n);
        assert_eq!(
            get("daq_fragments_sent_total").map(|x| x.series.clone()),
            Some(vec![(None, 7.0)])
        );
        assert_eq!(
            get("daq_backpressure_wait_seconds_total").map(|x| x.series.clone()),
            Some(vec![(None, 1.5)])
        );
        let seq = get("daq_last_sequence_id").expect("gauge");
        assert!(seq.gauge);
        assert!(get("daq_data_files_total").is_none());
        assert!(d.iter().all(|x| x.gauge || x.name.ends_with("_total")));
    }
}
