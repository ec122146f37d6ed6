//! The receiving side of a hop: the loop that serves one inbound stream.
//! Every batch is checked (run, one known source), its items decoded by the
//! process and handed on as one batch (waiting while the process's queue is
//! full: backpressure, never a drop), counted once per batch, and the end
//! of the stream recorded in the run's end-of-data handshake
//! ([`Sources`]), whose summary is the reply the sender checks.

use super::hop::Hop;
use super::links::{self, Mechanism};
use crate::counters::LiveCounters;
use crate::sources::{RunSlot, Sources};
use bytes::Bytes;
use std::future::Future;
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

/// One decoded item of an inbound stream.
pub enum Decoded<T> {
    /// A data item, handed on.
    Item(T),
    /// The sender's end-of-data count, for hops that carry it among the
    /// items.
    EndOfData(u64),
}

/// The run ended (its queue closed) while items were arriving.
#[derive(Debug)]
pub struct RunEnded;

/// What every receiving run holds for the transport: its run number, the
/// end-of-data handshake of its sources, and the process's counters.
pub struct Intake {
    pub run: u32,
    pub sources: Sources,
    pub counters: std::sync::Arc<LiveCounters>,
}

impl Intake {
    /// Run `run` receiving from `n_sources` senders of hop `H`.
    pub fn new<H: Hop>(run: u32, n_sources: usize, counters: std::sync::Arc<LiveCounters>) -> Self {
        Self {
            run,
            sources: Sources::new(H::SENDER, n_sources),
            counters,
        }
    }
}

/// The receiving end of one run of a process on hop `H`: what the generic
/// loop needs from the process.
pub trait Receiver: Send + Sync + 'static {
    type Hop: Hop;
    /// A decoded item (a fragment, an event).
    type Item: Send;

    /// The run's number, its sources' handshake and the counters.
    fn intake(&self) -> &Intake;
    fn run(&self) -> u32 {
        self.intake().run
    }
    /// The run's end-of-data handshake, one entry per source.
    fn sources(&self) -> &Sources {
        &self.intake().sources
    }
    /// The process's counters. A rejected stream counts in
    /// `streams_rejected`; the items of its rejected batch in the hop's
    /// rejected (malformed) and discarded (well-formed) fields. Batches the
    /// sender had queued behind a rejected one are never read and counted
    /// nowhere here: the sender's stop names the failed stream and how many
    /// items it had sent on it.
    fn counters(&self) -> &LiveCounters {
        &self.intake().counters
    }
    /// Decodes one raw item of `source`'s stream; an error rejects the
    /// stream, with the error as the reason. Counts nothing itself (the
    /// loop counts a rejected batch by reason).
    fn decode(&self, source: usize, raw: Bytes) -> Result<Decoded<Self::Item>, String>;
    /// Hands one batch of `source`'s items on, waiting while the process's
    /// queue is full.
    fn deliver(
        &self,
        source: usize,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Result<(), RunEnded>> + Send;
    /// Counts one batch handed on: `items` items of `bytes` bytes, in the
    /// hop's received fields. Called once per batch, never per item; the
    /// place to observe batch sizes.
    fn received(&self, items: u64, bytes: u64) {
        self.counters()
            .update(|c| <Self::Hop as Hop>::count_received(c, items, bytes));
    }
}

/// Serves one inbound stream of the current run (refused when no run is
/// in `slot`) until it ends; the reply is the summary the sender checks.
pub async fn serve<R: Receiver>(
    process: &str,
    slot: &RunSlot<R>,
    request: Request<Streaming<<R::Hop as Hop>::Batch>>,
) -> Result<Response<proto::TransferSummary>, Status> {
    let items_name = <R::Hop as Hop>::ITEMS;
    let Some(receiver) = slot.get() else {
        return Err(Status::failed_precondition(format!(
            "{process} is not running; {items_name} refused"
        )));
    };
    serve_stream(process, &*receiver, request.into_inner(), Mechanism::Grpc)
        .await
        .map(Response::new)
}

/// The loop of one inbound stream of a run, whatever carries it (a gRPC
/// stream, a shared-memory link: `mechanism`, recorded for the status):
/// the summary the sender checks, or the rejection.
pub async fn serve_stream<R: Receiver, S>(
    process: &str,
    r: &R,
    mut stream: S,
    mechanism: Mechanism,
) -> Result<proto::TransferSummary, Status>
where
    S: futures::Stream<Item = Result<<R::Hop as Hop>::Batch, Status>> + Unpin,
{
    let items_name = <R::Hop as Hop>::ITEMS;
    let _open = r.sources().open_stream();
    let mut inbound = Inbound::new(process, r.sources(), r.run(), r.counters());
    while let Some(batch) = inbound.next(&mut stream).await? {
        let (run, source) = (R::Hop::run(&batch), R::Hop::source(&batch));
        let (raw, mut end_of_data) = R::Hop::into_items(batch);
        let first = inbound.source.is_none();
        let src = match inbound.batch(run, source) {
            Ok(src) if first => {
                links::set(&format!("{}-{src}", <R::Hop as Hop>::SENDER), mechanism);
                src
            }
            Ok(src) => src,
            Err(rejected) => {
                // Not this run's or not this stream's: every item goes.
                r.counters()
                    .update(|c| R::Hop::count_rejected(c, 0, raw.len() as u64));
                return Err(rejected);
            }
        };
        let mut items = Vec::with_capacity(raw.len());
        let mut bytes = 0u64;
        let mut raw = raw.into_iter();
        while let Some(one) = raw.next() {
            let len = one.len() as u64;
            match r.decode(src, one) {
                Ok(Decoded::Item(item)) => {
                    bytes += len;
                    items.push(item);
                }
                Ok(Decoded::EndOfData(count)) => end_of_data = Some(count),
                Err(why) => {
                    // The batch goes whole: the malformed items and the
                    // well-formed ones beside them, each counted by reason.
                    let (malformed, discarded) = classify(r, src, raw);
                    let discarded = discarded + items.len() as u64;
                    r.counters()
                        .update(|c| R::Hop::count_rejected(c, 1 + malformed, discarded));
                    return Err(inbound.reject(why));
                }
            }
        }
        let n = items.len() as u64;
        crate::metrics::data_path()
            .grpc_batch_items
            .observe(n as f64);
        if n > 0 {
            if r.deliver(src, items).await.is_err() {
                r.counters().update(|c| R::Hop::count_rejected(c, 0, n));
                return Err(inbound.reject(format!("run ended while {items_name} were arriving")));
            }
            inbound.received(n);
            r.received(n, bytes);
        }
        if let Some(count) = end_of_data {
            inbound.announced(count);
        }
    }
    Ok(inbound.finish())
}

/// The rest of a batch rejected for a malformed item, decoded only to be
/// counted: (malformed items, well-formed data items). End-of-data items
/// are neither.
fn classify<R: Receiver>(r: &R, src: usize, rest: impl Iterator<Item = Bytes>) -> (u64, u64) {
    rest.fold((0, 0), |(bad, good), raw| match r.decode(src, raw) {
        Ok(Decoded::Item(_)) => (bad, good + 1),
        Ok(Decoded::EndOfData(_)) => (bad, good),
        Err(_) => (bad + 1, good),
    })
}

/// One inbound stream of a run: checks that every batch belongs to the run
/// and comes from one known source, counts what arrived, and records how
/// the stream ended in the handshake.
struct Inbound<'a> {
    process: &'a str,
    sources: &'a Sources,
    run: u32,
    counters: &'a LiveCounters,
    source: Option<usize>,
    received: u64,
    announced: Option<u64>,
}

impl<'a> Inbound<'a> {
    /// A rejected stream counts in `counters.streams_rejected`.
    fn new(process: &'a str, sources: &'a Sources, run: u32, counters: &'a LiveCounters) -> Self {
        Self {
            process,
            sources,
            run,
            counters,
            source: None,
            received: 0,
            announced: None,
        }
    }

    /// Checks a batch's run and source; returns the source's index.
    fn batch(&mut self, run: u32, source: u32) -> Result<usize, Status> {
        if run != self.run {
            return Err(self.reject(format!("batch for run {run} during run {}", self.run)));
        }
        let src = source as usize;
        if src >= self.sources.len() || self.source.is_some_and(|s| s != src) {
            return Err(self.reject(format!("batch from unexpected source {src}")));
        }
        self.source = Some(src);
        Ok(src)
    }

    /// Rejects the stream: counted, logged, recorded as the source's end.
    fn reject(&self, msg: impl std::fmt::Display) -> Status {
        self.counters.update(|c| c.streams_rejected += 1);
        let msg = msg.to_string();
        warn!(process = self.process, source = ?self.source, error = %msg, "stream rejected");
        if let Some(s) = self.source {
            self.sources.ended(s, Some(msg.clone()));
        }
        Status::invalid_argument(format!("{}: {msg}", self.process))
    }

    /// The stream's next batch; `None` at its clean end. A broken stream
    /// (the sender died, the connection dropped) is recorded as the
    /// source's end and returned as the error.
    async fn next<T, S>(&self, stream: &mut S) -> Result<Option<T>, Status>
    where
        S: futures::Stream<Item = Result<T, Status>> + Unpin,
    {
        use futures::StreamExt;
        // The cut first: a sender that always has a batch ready must not
        // keep the stream open past it.
        let next = tokio::select! {
            biased;
            () = self.sources.cut_signal() => {
                if let Some(s) = self.source {
                    self.sources.ended(s, Some(crate::sources::CUT.to_string()));
                }
                return Err(Status::aborted(format!("{}: {}", self.process, crate::sources::CUT)));
            }
            next = stream.next() => next,
        };
        next.transpose().inspect_err(|status| {
            if let Some(s) = self.source {
                self.sources.ended(s, Some(status.message().to_string()));
            }
        })
    }

    /// Counts `n` items taken from the current batch.
    fn received(&mut self, n: u64) {
        if let Some(s) = self.source {
            self.received += n;
            self.sources.received(s, n);
        }
    }

    /// Records the sender's end-of-data count.
    fn announced(&mut self, count: u64) {
        if let Some(s) = self.source {
            self.announced = Some(count);
            self.sources.announced(s, count);
        }
    }

    /// The stream ended cleanly: the reply the sender compares with.
    fn finish(self) -> proto::TransferSummary {
        if let Some(s) = self.source {
            self.sources.ended(s, None);
        }
        proto::TransferSummary {
            received: self.received,
            announced: self.announced,
        }
    }
}

/// How long the streams cut at stop get to end (each ends at its next
/// batch boundary, or at once when it waits for one).
const CLOSE_AFTER_CUT: std::time::Duration = std::time::Duration::from_millis(500);

/// How a receiving run ends, the same for every receiver: stop reporting
/// the run's store in the metrics (it goes with the run), wait for every
/// source's end-of-data (at most `wait`), refuse new streams for the run,
/// cut the streams still open and let them end, then send the run's task
/// `finish(ack)` and wait for its answer. Returns
/// the problems found with the answer; `None` when the task had already
/// ended, which the problems then say (`<task> ended before/during stop`).
pub async fn end_run<R: Receiver, M, T>(
    slot: &RunSlot<R>,
    ingress: &R,
    wait: crate::sources::Wait,
    tx: &tokio::sync::mpsc::Sender<M>,
    finish: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> M,
    task: &str,
) -> (Vec<String>, Option<T>) {
    crate::metrics::data_path().set_buffers(None);
    let sources = ingress.sources();
    let mut problems = sources.wait_all(wait).await;
    slot.set(None);
    // Streams still open now (a source that goes on sending, or hangs)
    // are cut, so that nothing arrives once the task is told to finish.
    sources.cut();
    let open = sources.wait_closed(CLOSE_AFTER_CUT).await;
    if open > 0 {
        problems.push(format!(
            "{open} inbound streams did not end within {} ms of the cut",
            CLOSE_AFTER_CUT.as_millis()
        ));
    }
    let (ack, done) = tokio::sync::oneshot::channel();
    if tx.send(finish(ack)).await.is_err() {
        problems.push(format!("{task} ended before stop"));
        return (problems, None);
    }
    match done.await {
        Ok(answer) => (problems, Some(answer)),
        Err(_) => {
            problems.push(format!("{task} ended during stop"));
            (problems, None)
        }
    }
}
