//! Monitor: online monitoring beside the disk writer, as artdaq-demo's
//! second aggregator did. `monitor-i` attaches read-only to the
//! shared-memory store of `aggregator-(i % aggregators)` on its host, reads
//! events in place of the writer's copy (never a copy of its own into
//! shared memory: the reader-versus-copier difference of the original leak
//! investigation), runs the monitoring modules (`modules`) on every event it
//! read, and serves its figures: `GET /` (the live page, one self-contained
//! file), `GET /monitor.json` (the figures), beside `/metrics` on its HTTP
//! port; at the end of the run `monitor/<monitor>.json` and its plots as SVG
//! (`svg`) go into the run record.

pub mod modules;
pub mod run;
pub mod svg;

use axum::http::header;
use axum::response::IntoResponse;
use daq_format::monitor::{MonitorRecord, record_path};
use daq_format::process::{Kind, ProcessId};
use daq_runtime::control::{AppError, StopArgs};
use daq_runtime::stage::{Stage, Start};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The live page: one file, no fetches but `monitor.json`.
pub const PAGE: &str = include_str!("page.html");

/// The monitor's data path behind the process skeleton.
pub struct Monitor {
    id: ProcessId,
    shared: Arc<run::Shared>,
}

/// `/monitor.json` and the record's file: the typed record and the user
/// modules' figures under `modules`.
#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    record: &'a MonitorRecord,
    modules: BTreeMap<String, serde_json::Value>,
}

/// The figures of the current (or last) run as JSON.
pub fn report_json(shared: &run::Shared) -> Vec<u8> {
    let (record, modules) = shared.figures().snapshot();
    serde_json::to_vec_pretty(&Report {
        record: &record,
        modules,
    })
    .unwrap_or_default()
}

#[tonic::async_trait]
impl Stage for Monitor {
    const KIND: Kind = Kind::Monitor;
    const ABOUT: &'static str = "DAQ online monitor: reads an aggregator's shared-memory store read-only, serves live plots";
    type Run = run::Run;

    fn new(id: ProcessId) -> Self {
        Self {
            id,
            shared: run::Shared::new(id.to_string()),
        }
    }

    async fn start(&self, s: Start<'_>) -> Result<run::Run, AppError> {
        run::Run::start(&self.shared, self.id, s.run, &s.init.config).map_err(AppError::new)
    }

    async fn stop(&self, run: run::Run, _args: StopArgs) -> Vec<String> {
        run.stop(&self.shared).await
    }

    fn events_handled(&self) -> u64 {
        self.shared.counters.read(|c| c.events_monitored)
    }

    fn counters(&self) -> proto::Counters {
        self.shared.counters.snapshot()
    }

    fn record_files(&self) -> Vec<proto::RecordFile> {
        let json = report_json(&self.shared);
        let (record, _) = self.shared.figures().snapshot();
        if record.run == 0 {
            return Vec::new();
        }
        let name = &self.shared.process;
        vec![
            proto::RecordFile {
                path: record_path(name),
                data: json.into(),
            },
            proto::RecordFile {
                path: format!("monitor/{name}-adc.svg"),
                data: svg::adc(name, &record.adc).into_bytes().into(),
            },
            proto::RecordFile {
                path: format!("monitor/{name}-rate.svg"),
                data: svg::series(name, &record.series).into_bytes().into(),
            },
        ]
    }

    fn http_routes(&self) -> Option<axum::Router> {
        let shared = self.shared.clone();
        Some(
            axum::Router::new()
                .route(
                    "/",
                    axum::routing::get(|| async {
                        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
                    }),
                )
                .route(
                    "/monitor.json",
                    axum::routing::get(move || {
                        let shared = shared.clone();
                        async move {
                            (
                                [
                                    (header::CONTENT_TYPE, "application/json"),
                                    (header::CACHE_CONTROL, "no-store"),
                                ],
                                report_json(&shared),
                            )
                                .into_response()
                        }
                    }),
                ),
        )
    }
}
