//! The receiving side of the end-of-data handshake: per-source counts of
//! what arrived and what the source announced, and the wait at stop until
//! every source is accounted for.
//!
//! A receiver stops waiting for a source once the source's stream has ended
//! with an end-of-data count equal to what arrived, or once no source has
//! made progress for the timeout; each source short of its count is then a
//! problem named in the reply to stop, never silent.
//!
//! A stop may also bound the whole wait (a stop on a signal): a source
//! still sending when it runs out is not waited for. Either way, once the
//! wait is over the streams still open are cut ([`Sources::cut`]): each
//! ends at its next batch boundary, recorded as ended in error, and its
//! sender sees the stream fail and counts what it could not deliver. So
//! nothing arrives after the run's task was told to finish, and a sender
//! that goes on sending cannot hold a stop up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// How long a stop waits for its sources' end-of-data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// Until no source made progress for this long.
    pub idle: Duration,
    /// And at most this long in all, progress or not (a stop on a signal).
    pub within: Option<Duration>,
}

impl Wait {
    /// Until the sources are idle for `idle`, with no bound in all.
    pub fn idle(idle: Duration) -> Self {
        Self { idle, within: None }
    }
}

/// What a cut stream's source is recorded with.
pub const CUT: &str = "cut at stop: still open when the run ended";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceState {
    /// Data items received (fragments or events; end-of-data excluded).
    pub received: u64,
    /// The count the source announced in its end-of-data.
    pub announced: Option<u64>,
    /// The stream ended (cleanly or not).
    pub ended: bool,
    /// Why the stream was rejected, if it was.
    pub error: Option<String>,
}

impl SourceState {
    fn done(&self) -> bool {
        self.ended
    }
}

/// Per-source handshake state of one run.
#[derive(Debug)]
pub struct Sources {
    kind: &'static str,
    states: Mutex<Vec<SourceState>>,
    progress: Notify,
    /// Turned true once: every open stream ends at its next batch.
    cut: watch::Sender<bool>,
    /// Streams being served now (whatever their source).
    open: AtomicUsize,
}

/// One stream being served; dropping it (the stream's loop returned) is
/// progress for [`Sources::wait_closed`].
#[must_use]
pub struct OpenStream<'a>(&'a Sources);

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.progress.notify_waiters();
    }
}

impl Sources {
    /// `kind` names the sources in problems ("boardreader", "eventbuilder").
    pub fn new(kind: &'static str, n: usize) -> Self {
        Self {
            kind,
            states: Mutex::new(vec![SourceState::default(); n]),
            progress: Notify::new(),
            cut: watch::Sender::new(false),
            open: AtomicUsize::new(0),
        }
    }

    /// Counts a stream as served until the guard drops.
    pub fn open_stream(&self) -> OpenStream<'_> {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenStream(self)
    }

    /// Tells every stream still open to end at its next batch boundary.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Resolves once [`Sources::cut`] was called (at once if it was).
    pub async fn cut_signal(&self) {
        let mut rx = self.cut.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Waits until no stream is being served, at most `within`; returns
    /// how many still are.
    pub async fn wait_closed(&self, within: Duration) -> usize {
        let until = Instant::now() + within;
        loop {
            let notified = self.progress.notified();
            let open = self.open.load(Ordering::Acquire);
            let left = until.saturating_duration_since(Instant::now());
            if open == 0 || left.is_zero() {
                return open;
            }
            let _ = tokio::time::timeout(left, notified).await;
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Vec<SourceState>) -> R) -> R {
        let mut g = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut g);
        drop(g);
        self.progress.notify_waiters();
        r
    }

    pub fn len(&self) -> usize {
        self.states.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts `n` items from `source`.
    pub fn received(&self, source: usize, n: u64) {
        self.with(|s| {
            if let Some(st) = s.get_mut(source) {
                st.received += n;
            }
        });
    }

    /// Records the source's end-of-data count.
    pub fn announced(&self, source: usize, count: u64) {
        self.with(|s| {
            if let Some(st) = s.get_mut(source) {
                st.announced = Some(count);
            }
        });
    }

    /// Records the end of a source's stream, with the reason if rejected.
    pub fn ended(&self, source: usize, error: Option<String>) {
        self.with(|s| {
            if let Some(st) = s.get_mut(source) {
                st.ended = true;
                if error.is_some() {
                    st.error = error;
                }
            }
        });
    }

    pub fn snapshot(&self) -> Vec<SourceState> {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Total items received from all sources.
    pub fn total_received(&self) -> u64 {
        self.snapshot().iter().map(|s| s.received).sum()
    }

    /// Waits until every source is done, or until none made progress for
    /// `wait.idle`, or (if given) `wait.within` has passed, progress or
    /// not; returns one problem per source that fell short.
    pub async fn wait_all(&self, wait: Wait) -> Vec<String> {
        let mut last = self.snapshot();
        let mut last_change = Instant::now();
        let idle_timeout = wait.idle;
        let until = wait.within.map(|w| Instant::now() + w);
        loop {
            let notified = self.progress.notified();
            let now = self.snapshot();
            if now.iter().all(SourceState::done) {
                break;
            }
            if now != last {
                last = now;
                last_change = Instant::now();
            }
            let mut left = idle_timeout.saturating_sub(last_change.elapsed());
            if let Some(until) = until {
                left = left.min(until.saturating_duration_since(Instant::now()));
            }
            if left.is_zero() {
                break;
            }
            let _ = tokio::time::timeout(left, notified).await;
        }
        self.problems()
    }

    /// One line per source that is not accounted for.
    pub fn problems(&self) -> Vec<String> {
        let kind = self.kind;
        self.snapshot()
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match (&s.error, s.announced, s.ended) {
                (Some(e), _, _) => Some(format!(
                    "{kind}-{i}: stream ended in error after {} items: {e}",
                    s.received
                )),
                (None, Some(a), _) if a != s.received => Some(format!(
                    "{kind}-{i}: end-of-data announced {a}, received {}",
                    s.received
                )),
                (None, Some(_), true) => None,
                (None, Some(_), false) => Some(format!(
                    "{kind}-{i}: stream did not end after its end-of-data"
                )),
                (None, None, true) => Some(format!(
                    "{kind}-{i}: stream ended without end-of-data after {} items",
                    s.received
                )),
                (None, None, false) => Some(format!(
                    "{kind}-{i}: no end-of-data (received {}) before the stop timeout",
                    s.received
                )),
            })
            .collect()
    }
}

/// The receiving side of the current run, shared between run control
/// (which sets it at start and clears it at stop) and the data service
/// (which refuses streams while it is empty).
pub struct RunSlot<T>(RwLock<Option<Arc<T>>>);

impl<T> Default for RunSlot<T> {
    fn default() -> Self {
        Self(RwLock::new(None))
    }
}

impl<T> RunSlot<T> {
    pub fn get(&self) -> Option<Arc<T>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, value: Option<Arc<T>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn all_sources_accounted_for_gives_no_problem() {
        let s = Sources::new("boardreader", 2);
        s.received(0, 5);
        s.announced(0, 5);
        s.ended(0, None);
        s.received(1, 3);
        s.announced(1, 3);
        s.ended(1, None);
        assert!(
            s.wait_all(Wait::idle(Duration::from_secs(5)))
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn shortfall_and_silence_are_named() {
        let s = Sources::new("eventbuilder", 3);
        s.received(0, 4);
        s.announced(0, 5);
        s.ended(0, None);
        s.received(1, 2);
        s.ended(2, Some("malformed".into()));
        let p = s.wait_all(Wait::idle(Duration::from_millis(50))).await;
        assert_eq!(
            p,
            vec![
                "eventbuilder-0: end-of-data announced 5, received 4".to_string(),
                "eventbuilder-1: no end-of-data (received 2) before the stop timeout".to_string(),
                "eventbuilder-2: stream ended in error after 0 items: malformed".to_string(),
            ]
        );
    }

    #[tokio::test]
    async fn a_bounded_wait_ends_while_a_source_goes_on_sending() {
        let s = std::sync::Arc::new(Sources::new("boardreader", 1));
        let s2 = s.clone();
        let sender = tokio::spawn(async move {
            loop {
                s2.received(0, 1);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let wait = Wait {
            idle: Duration::from_secs(30),
            within: Some(Duration::from_millis(100)),
        };
        let p = tokio::time::timeout(Duration::from_secs(10), s.wait_all(wait))
            .await
            .expect("returns long before the idle timeout");
        sender.abort();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("boardreader-0: no end-of-data"), "{p:?}");
    }

    #[tokio::test]
    async fn a_cut_reaches_streams_open_before_and_after_it_and_closing_is_awaited() {
        let s = std::sync::Arc::new(Sources::new("boardreader", 2));
        let streams: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move {
                    let _open = s.open_stream();
                    s.cut_signal().await;
                })
            })
            .collect();
        tokio::task::yield_now().await;
        s.cut();
        assert_eq!(s.wait_closed(Duration::from_secs(10)).await, 0);
        for t in streams {
            t.await.expect("joins");
        }
        // A stream opened after the cut ends at once.
        tokio::time::timeout(Duration::from_secs(10), s.cut_signal())
            .await
            .expect("already cut");
    }

    #[tokio::test]
    async fn wait_returns_when_the_last_source_ends() {
        let s = std::sync::Arc::new(Sources::new("boardreader", 1));
        let s2 = s.clone();
        let h = tokio::spawn(async move { s2.wait_all(Wait::idle(Duration::from_secs(30))).await });
        tokio::task::yield_now().await;
        s.received(0, 1);
        s.announced(0, 1);
        s.ended(0, None);
        let p = tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("returns before the idle timeout")
            .expect("joins");
        assert!(p.is_empty());
    }
}
