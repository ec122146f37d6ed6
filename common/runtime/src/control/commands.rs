//! The run-control commands as the gRPC service answers them: each one
//! checked against the state machine, run on the app, its heap boundaries
//! recorded; and the queries (status, heap, the run record).

use super::*;
use daq_alloc as heap;
use daq_format::config::SystemConfig;
use daq_format::state::Command;
use proto::run_control_server::RunControl;
use std::path::PathBuf;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// The command handlers, run by [`Control`] in tasks of their own.
impl<A: App> Inner<A> {
    async fn init(
        &self,
        request: Request<proto::InitRequest>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        let req = request.into_inner();
        let config = SystemConfig::from_toml(&req.config_toml, "init request")
            .map_err(|e| Status::invalid_argument(format!("{}: {e}", self.process)))?;
        let interval = Duration::from_millis(config.heap.sample_interval_ms);
        crate::net::set_keepalive(
            Duration::from_millis(config.transfer.keepalive_interval_ms),
            Duration::from_millis(config.transfer.keepalive_timeout_ms),
        );
        let args = InitArgs {
            config,
            destinations: req.destinations,
        };
        let reply = self
            .exec(Command::Init, async {
                self.app.init(args).await.map(|_| vec![])
            })
            .await?;
        // Only a successful init replaces what is in force.
        self.heap_state().sample_interval = interval;
        self.run_info().config_toml = req.config_toml;
        Ok(reply)
    }

    async fn start(
        &self,
        request: Request<proto::StartRequest>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        let req = request.into_inner();
        let run = req.run;
        let reply = self
            .exec(Command::Start, async {
                self.app.start(run, PathBuf::from(req.data_dir)).await?;
                let mut info = self.run_info();
                info.run = run;
                info.record_dir = req.record_dir;
                info.started_unix_ms = unix_ms_now();
                Ok(vec![])
            })
            .await?;
        self.start_sampler();
        Ok(reply)
    }

    async fn pause(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        self.exec(Command::Pause, async {
            self.app.pause().await.map(|_| vec![])
        })
        .await
    }

    async fn resume(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        self.exec(Command::Resume, async {
            self.app.resume().await.map(|_| vec![])
        })
        .await
    }

    async fn stop(
        &self,
        request: Request<proto::StopRequest>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        let args = StopArgs {
            end_sequence_id: request.into_inner().end_sequence_id,
            source_wait_limit: None,
        };
        let reply = self.exec(Command::Stop, self.app.stop(args)).await?;
        self.stop_sampler().await;
        Ok(reply)
    }

    async fn shutdown(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        let reply = self
            .exec(Command::Shutdown, async {
                self.app.shutdown().await.map(|_| vec![])
            })
            .await?;
        let _ = self.exit.send(true);
        Ok(reply)
    }

    async fn status(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::StatusReply>, Status> {
        let state = self.state();
        let info = self.run_info();
        Ok(Response::new(proto::StatusReply {
            process: self.process.clone(),
            state: state.to_string(),
            legal_commands: state
                .legal_commands()
                .iter()
                .map(|c| c.to_string())
                .collect(),
            counters: Some(self.counters()),
            run: info.run,
            metrics_url: self.metrics_url.get().cloned().unwrap_or_default(),
            pid: std::process::id(),
            record_dir: info.record_dir.clone(),
            run_started_unix_ms: info.started_unix_ms,
            config_toml: info.config_toml.clone(),
            error: self.error_message().clone(),
            links: crate::transport::links::lines(),
        }))
    }

    async fn heap(&self, _: Request<proto::Empty>) -> Result<Response<proto::HeapReply>, Status> {
        let current = self.snapshot("current");
        let h = self.heap_state();
        Ok(Response::new(proto::HeapReply {
            boundaries: h
                .boundaries
                .iter()
                .map(|(label, s)| proto::LabeledSnapshot {
                    label: label.clone(),
                    snapshot: Some(*s),
                })
                .collect(),
            current,
            profiling: heap::profiling_enabled(),
            profiles: h.profiles.iter().map(|(label, _)| label.clone()).collect(),
        }))
    }

    async fn run_record(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::RunRecordReply>, Status> {
        let run = self.run_info().run;
        let (samples, profiles, timed) = {
            let h = self.heap_state();
            let samples = h.samples.as_ref().map(std::fs::File::try_clone).transpose();
            let timed = h.timed.as_ref().map(|t| t.list()).unwrap_or_default();
            (samples, h.profiles.clone(), timed)
        };
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            Status::internal(format!("{}: cannot read {what}: {e}", self.process))
        };
        let samples = match samples.map_err(|e| internal("heap samples", &e))? {
            Some(f) => crate::sampler::read_rows(&f).map_err(|e| internal("heap samples", &e))?,
            None => vec![],
        };
        let mut out = Vec::new();
        for (label, path) in profiles {
            let data = std::fs::read(&path).map_err(|e| internal("a heap profile", &e))?;
            out.push(proto::HeapProfile {
                label,
                data: data.into(),
                ..Default::default()
            });
        }
        for t in timed {
            // A dump thinned away since the list was taken is skipped.
            let Ok(data) = std::fs::read(&t.path) else {
                continue;
            };
            out.push(proto::HeapProfile {
                label: "timed".into(),
                data: data.into(),
                unix_ms: t.unix_ms,
                events: t.events,
            });
        }
        Ok(Response::new(proto::RunRecordReply {
            run,
            samples,
            profiles: out,
            files: self.app.record_files(),
        }))
    }
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

macro_rules! spawned {
    ($self:ident, $method:ident, $request:ident) => {{
        let inner = $self.0.clone();
        tokio::spawn(async move { inner.$method($request).await })
            .await
            .unwrap_or_else(|e| Err(Status::internal(format!("command task failed: {e}"))))
    }};
}

#[tonic::async_trait]
impl<A: App> RunControl for Control<A> {
    async fn init(
        &self,
        request: Request<proto::InitRequest>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        spawned!(self, init, request)
    }

    async fn start(
        &self,
        request: Request<proto::StartRequest>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        spawned!(self, start, request)
    }

    async fn pause(
        &self,
        request: Request<proto::Empty>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        spawned!(self, pause, request)
    }

    async fn resume(
        &self,
        request: Request<proto::Empty>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        spawned!(self, resume, request)
    }

    async fn stop(
        &self,
        request: Request<proto::StopRequest>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        spawned!(self, stop, request)
    }

    async fn shutdown(
        &self,
        request: Request<proto::Empty>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        spawned!(self, shutdown, request)
    }

    async fn status(
        &self,
        request: Request<proto::Empty>,
    ) -> Result<Response<proto::StatusReply>, Status> {
        self.0.status(request).await
    }

    async fn heap(
        &self,
        request: Request<proto::Empty>,
    ) -> Result<Response<proto::HeapReply>, Status> {
        self.0.heap(request).await
    }

    async fn run_record(
        &self,
        request: Request<proto::Empty>,
    ) -> Result<Response<proto::RunRecordReply>, Status> {
        self.0.run_record(request).await
    }
}
