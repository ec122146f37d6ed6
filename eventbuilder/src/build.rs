//! The builder task of an eventbuilder run: places each fragment into the
//! shared-memory buffer of its sequence id (`crate::assembly`), publishes
//! complete events, releases stale ones incomplete, parks a source whose
//! fragments find no free buffer, and at the end accounts for every
//! fragment.

use crate::assembly::{Assembly, Placed, Released, Unpublished};
use daq_format::fragment::Fragment;
use daq_format::process::{Kind, ProcessId};
use tokio::sync::Notify;

use crate::receive::{BuilderInput, Ingress, Shared};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, warn};

/// Wakes between the two tasks: the builder published, the sender freed.
#[derive(Default)]
pub(crate) struct Signals {
    pub(crate) published: Notify,
    pub(crate) freed: Notify,
    /// Events that hold their store buffer on their way into a link's ring
    /// (`send::InStore`): queued, batched or being written.
    pub(crate) in_store: std::sync::atomic::AtomicUsize,
}

/// A batch of one source waiting for room in shared memory.
pub(crate) struct Parked {
    pub(crate) fragments: Vec<Fragment>,
    pub(crate) next: usize,
    pub(crate) _permit: OwnedSemaphorePermit,
}

/// Per-batch tallies, added to the counters once per batch.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) built: u64,
    pub(crate) duplicate: u64,
    pub(crate) late: u64,
    pub(crate) oversize: u64,
    /// Released incomplete at once: they miss only gone sources' fragments.
    pub(crate) incomplete: u64,
}

/// Events lost in shared memory during the run (their buffer could not be
/// published), for the stop reply.
#[derive(Default)]
pub(crate) struct Lost {
    pub(crate) events: u64,
    pub(crate) fragments: u64,
    /// The first few, named.
    pub(crate) first: Vec<Unpublished>,
}

pub(crate) struct Builder {
    pub(crate) shared: Arc<Shared>,
    pub(crate) assembly: Assembly,
    pub(crate) signals: Arc<Signals>,
    pub(crate) parked: Vec<VecDeque<Parked>>,
    pub(crate) stale_timeout: Duration,
    /// The run's receiving side: whose streams have ended, and whether
    /// their batches are all placed (every permit of the source is back).
    pub(crate) ingress: Arc<Ingress>,
    pub(crate) queue_batches: usize,
    pub(crate) sender: Option<(JoinHandle<Vec<String>>, oneshot::Sender<()>)>,
    /// Bytes orphaned per event released, complete or not (the injected leak; 0 = none).
    pub(crate) leak_bytes_per_event: u64,
    pub(crate) lost: Lost,
}

impl Builder {
    /// Places parked fragments in order, per source; returns true when some
    /// source is blocked for want of a free buffer.
    fn place_parked(&mut self) -> bool {
        let mut tally = Tally::default();
        let mut blocked = false;
        for queue in &mut self.parked {
            'source: while let Some(batch) = queue.front_mut() {
                while let Some(fragment) = batch.fragments.get(batch.next) {
                    match self.assembly.place(fragment) {
                        Placed::NoBuffer => {
                            blocked = true;
                            break 'source;
                        }
                        Placed::Pending => {}
                        Placed::Complete => tally.built += 1,
                        Placed::Incomplete => tally.incomplete += 1,
                        Placed::Duplicate => tally.duplicate += 1,
                        Placed::Late => tally.late += 1,
                        // Both are counted `oversize_fragments` (the record's name).
                        Placed::TooLarge | Placed::UnknownFragmentId => tally.oversize += 1,
                        // Counted with its event's other fragments below.
                        Placed::Unpublished => {}
                    }
                    batch.next += 1;
                }
                queue.pop_front();
            }
        }
        self.assembly.observe_build_latencies();
        self.count_unpublished();
        daq_runtime::leak::inject_leak(self.leak_bytes_per_event, tally.built + tally.incomplete);
        self.shared.counters.update(|c| {
            c.events_built += tally.built;
            c.events_incomplete += tally.incomplete;
            c.duplicate_fragments += tally.duplicate;
            c.late_fragments += tally.late;
            c.oversize_fragments += tally.oversize;
        });
        if tally.built + tally.incomplete > 0 {
            self.signals.published.notify_one();
        }
        let process = &self.shared.process;
        if tally.duplicate > 0 {
            warn!(%process, fragments = tally.duplicate, "duplicate fragments dropped");
        }
        if tally.late > 0 {
            error!(%process, fragments = tally.late, "late fragments for released events dropped");
        }
        if tally.oversize > 0 {
            error!(%process, fragments = tally.oversize, "over-size fragments rejected");
        }
        blocked
    }

    /// Counts the events the store could not publish since the last call
    /// (`fragments_unpublished`), naming them in the log and at stop.
    fn count_unpublished(&mut self) {
        let lost = self.assembly.take_unpublished();
        if lost.is_empty() {
            return;
        }
        let fragments: u64 = lost.iter().map(|u| u64::from(u.fragments)).sum();
        self.shared
            .counters
            .update(|c| c.fragments_unpublished += fragments);
        for u in &lost {
            error!(process = %self.shared.process, seq = u.sequence_id, fragments = u.fragments, error = %u.error, "event lost: its shared-memory buffer could not be published");
        }
        self.lost.events += lost.len() as u64;
        self.lost.fragments += fragments;
        let room = 10usize.saturating_sub(self.lost.first.len());
        self.lost.first.extend(lost.into_iter().take(room));
    }

    fn released_incomplete(&mut self, released: Vec<Released>, why: &str) {
        self.count_unpublished();
        if released.is_empty() {
            return;
        }
        let n = released.len() as u64;
        daq_runtime::leak::inject_leak(self.leak_bytes_per_event, n);
        self.shared.counters.update(|c| c.events_incomplete += n);
        for r in released.iter().take(10) {
            warn!(process = %self.shared.process, seq = r.sequence_id, missing = ?r.missing, why, "event released incomplete");
        }
        if n > 10 {
            warn!(process = %self.shared.process, events = n, why, "events released incomplete");
        }
        self.signals.published.notify_one();
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<BuilderInput>) {
        let mut tick = tokio::time::interval(
            (self.stale_timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut blocked_since: Option<Instant> = None;
        loop {
            let blocked = self.place_parked();
            match (blocked, blocked_since) {
                (true, None) => blocked_since = Some(Instant::now()),
                (false, Some(t)) => {
                    self.add_wait(t);
                    blocked_since = None;
                }
                _ => {}
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(BuilderInput::Fragments { source, fragments, permit }) => {
                        if let Some(q) = self.parked.get_mut(source) {
                            q.push_back(Parked { fragments, next: 0, _permit: permit });
                        }
                    }
                    Some(BuilderInput::Finish(ack)) => {
                        if let Some(t) = blocked_since {
                            self.add_wait(t);
                        }
                        // A stream still open after the stop timeout may have
                        // queued batches behind the finish: take them, refuse more.
                        rx.close();
                        while let Ok(BuilderInput::Fragments { source, fragments, permit }) = rx.try_recv() {
                            if let Some(q) = self.parked.get_mut(source) {
                                q.push_back(Parked { fragments, next: 0, _permit: permit });
                            }
                        }
                        let problems = self.finish().await;
                        let _ = ack.send(problems);
                        return;
                    }
                    None => return,
                },
                _ = self.signals.freed.notified(), if blocked => {}
                _ = tick.tick() => {
                    self.forget_gone_sources();
                    let stale = self.assembly.release_stale(self.stale_timeout);
                    self.released_incomplete(stale, "stale");
                }
            }
        }
    }

    /// Stops waiting for the sources whose stream has ended (broken, cut
    /// off by the keep-alive, rejected, or ended at stop) once every batch
    /// they sent is placed: the events that miss only their fragments are
    /// released incomplete at once, and later events no longer wait for
    /// them (see `Assembly::source_gone`).
    fn forget_gone_sources(&mut self) {
        let states = self.ingress.intake.sources.snapshot();
        for (id, st) in states.iter().enumerate() {
            let placed = self
                .ingress
                .permits
                .get(id)
                .is_some_and(|p| p.available_permits() >= self.queue_batches);
            let Ok(source) = u16::try_from(id) else {
                continue;
            };
            if !st.ended || !placed || self.assembly.gone_sources().any(|g| g == source) {
                continue;
            }
            let released = self.assembly.source_gone(source);
            warn!(process = %self.shared.process, source = %ProcessId::new(Kind::BoardReader, source), error = ?st.error, events = released.len(), "stream ended: its fragments are no longer waited for; events that miss only them are released incomplete");
            self.released_incomplete(released, "source gone");
        }
    }

    fn add_wait(&self, since: Instant) {
        let ms = since.elapsed().as_millis() as u64;
        self.shared
            .counters
            .update(|c| c.backpressure_wait_ms += ms);
    }

    /// End of run: place what is parked (making room by releasing the oldest
    /// open events if nothing frees), release every open event incomplete,
    /// then let the sender drain and end its streams.
    pub(crate) async fn finish(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        self.forget_gone_sources();
        while self.place_parked() {
            let freed =
                tokio::time::timeout(Duration::from_millis(200), self.signals.freed.notified())
                    .await;
            if freed.is_ok() {
                continue;
            }
            let counts = self.assembly.store().counts();
            let sender_alive = self.sender.as_ref().is_some_and(|(h, _)| !h.is_finished());
            if counts.occupied() > 0 && sender_alive {
                // Published events wait for the sender, which waits for the
                // aggregators (backpressure): it will free buffers.
                continue;
            }
            if counts.occupied() == 0
                && let Some(r) = self.assembly.release_oldest()
            {
                // Every buffer holds an open event that waits for a fragment
                // parked behind a new event: make room, oldest first.
                self.released_incomplete(vec![r], "stop: every buffer waits for a parked fragment");
                continue;
            }
            // Nobody will free a buffer (the sender is gone): what is
            // parked cannot be placed. Counted and reported, never silent.
            let n: usize = self
                .parked
                .iter()
                .flatten()
                .map(|b| b.fragments.len() - b.next)
                .sum();
            self.shared
                .counters
                .update(|c| c.fragments_unplaced += n as u64);
            problems.push(format!(
                "{n} fragments could not be placed: the sender stage is gone"
            ));
            self.parked.iter_mut().for_each(VecDeque::clear);
            break;
        }
        let left = self.assembly.release_all();
        if !left.is_empty() {
            problems.push(format!("{} incomplete events released at stop", left.len()));
        }
        self.released_incomplete(left, "stop");
        if self.lost.events > 0 {
            let named: Vec<String> = self
                .lost
                .first
                .iter()
                .map(|u| format!("{} ({})", u.sequence_id, u.error))
                .collect();
            problems.push(format!(
                "{} events ({} fragments) lost: their shared-memory buffer could not be published; sequence ids {}{}",
                self.lost.events,
                self.lost.fragments,
                named.join(", "),
                if self.lost.events > named.len() as u64 { ", ..." } else { "" }
            ));
        }
        if let Some((sender, finish)) = self.sender.take() {
            let _ = finish.send(());
            self.signals.published.notify_one();
            match sender.await {
                Ok(p) => problems.extend(p),
                Err(e) => problems.push(format!("sender task failed: {e}")),
            }
        }
        problems
    }
}
