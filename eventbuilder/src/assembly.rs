//! Event assembly in shared memory: each fragment is written straight into
//! the buffer of its sequence id in the eventbuilder's
//! [`ShmStore`](daq_shm::ShmStore); an event is published when it holds
//! one fragment of every boardreader, or released incomplete when its
//! buffer has been untouched for the stale timeout.
//!
//! A boardreader whose stream has ended (lost, cut off, or ended at stop)
//! sends nothing more: [`Assembly::source_gone`] releases at once, as
//! incomplete, every open event that misses only the fragments of gone
//! sources, and from then on an event is released (incomplete) as soon as
//! it holds one fragment of every source still expected, without waiting
//! for the stale timeout.
//!
//! Late fragments (for an event already released) are dropped and counted,
//! never written into a buffer that was reused; duplicates too; fragments
//! larger than `max_fragment_bytes` are rejected before anything is written.
//! An event whose buffer cannot be published (its descriptor is no longer
//! ours: another process wrote into the segment) is lost with every
//! fragment it held; it is kept in [`Assembly::take_unpublished`] for the
//! caller to count and name, never dropped silently.

use daq_format::fragment::Fragment;
use daq_shm::ShmStore;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How many released sequence ids are remembered to recognise late
/// fragments: a ring indexed by sequence id, allocated once per run (512 KiB),
/// so that remembering costs no memory per event. A fragment more than this
/// many sequence ids late is not recognised: it opens a new event, which is
/// released incomplete after the stale timeout (and counted there).
pub const RELEASED_MEMORY: usize = 1 << 16;

/// What became of a fragment offered to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    /// Written; its event waits for other fragments.
    Pending,
    /// Written, and its event is complete and published.
    Complete,
    /// Its event already has a fragment with this id: dropped.
    Duplicate,
    /// Its event was already released downstream: dropped.
    Late,
    /// Larger than `max_fragment_bytes` or than its buffer can still
    /// take: rejected, nothing written.
    TooLarge,
    /// A fragment id outside the topology's boardreaders: rejected, nothing
    /// written.
    UnknownFragmentId,
    /// Written, and its event holds every fragment still expected but
    /// misses those of a gone source ([`Assembly::source_gone`]): released
    /// incomplete at once.
    Incomplete,
    /// Its event could not be written or published in shared memory: the
    /// event and its fragments are lost (see [`Assembly::take_unpublished`]).
    Unpublished,
    /// No buffer is free for a new event: nothing written, offer it again
    /// once the next stage has released a buffer (backpressure).
    NoBuffer,
}

struct Open {
    idx: usize,
    /// When its first fragment arrived (for the event-building latency).
    opened: Instant,
    have: Vec<bool>,
    count: u32,
}

/// An event lost because its buffer could not be written or published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpublished {
    pub sequence_id: u64,
    /// Fragments it held, this one included: all lost.
    pub fragments: u32,
    pub error: String,
}

/// A released-incomplete event: its sequence id and missing fragment ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    pub sequence_id: u64,
    pub missing: Vec<u16>,
}

pub struct Assembly {
    store: ShmStore,
    expected: u32,
    /// `gone[id]`: source `id`'s stream ended; its fragments are no longer
    /// waited for.
    gone: Vec<bool>,
    max_fragment_bytes: usize,
    open: HashMap<u64, Open>,
    /// `released[seq % RELEASED_MEMORY] == seq` once `seq` left the store.
    released: Vec<u64>,
    /// Latencies of events completed since the last `observe_build_latencies`.
    build_latencies: Vec<Duration>,
    /// Events lost since the last `take_unpublished`.
    unpublished: Vec<Unpublished>,
}

impl Assembly {
    /// Events of `expected` fragments (ids `0..expected`).
    pub fn new(store: ShmStore, expected: u32, max_fragment_bytes: u64) -> Self {
        Self {
            store,
            expected,
            gone: vec![false; expected as usize],
            max_fragment_bytes: usize::try_from(max_fragment_bytes).unwrap_or(usize::MAX),
            open: HashMap::new(),
            released: vec![u64::MAX; RELEASED_MEMORY],
            build_latencies: Vec::new(),
            unpublished: Vec::new(),
        }
    }

    pub fn store(&self) -> &ShmStore {
        &self.store
    }

    /// Observes the building latencies of the events completed since the
    /// last call in `daq_event_build_seconds` (called once per batch).
    pub fn observe_build_latencies(&mut self) {
        let h = &daq_runtime::metrics::data_path().event_build_seconds;
        for d in self.build_latencies.drain(..) {
            h.observe(d.as_secs_f64());
        }
    }

    /// Events lost since the last call: written fragments whose buffer
    /// could not be published, or was taken from us while being written.
    pub fn take_unpublished(&mut self) -> Vec<Unpublished> {
        std::mem::take(&mut self.unpublished)
    }

    fn lose(&mut self, seq: u64, fragments: u32, error: daq_shm::ShmError) {
        self.remember_released(seq);
        self.unpublished.push(Unpublished {
            sequence_id: seq,
            fragments,
            error: error.to_string(),
        });
    }

    /// Events being assembled.
    pub fn open_events(&self) -> usize {
        self.open.len()
    }

    fn remember_released(&mut self, seq: u64) {
        if let Some(slot) = self.released.get_mut(seq as usize % RELEASED_MEMORY) {
            *slot = seq;
        }
    }

    fn was_released(&self, seq: u64) -> bool {
        self.released.get(seq as usize % RELEASED_MEMORY) == Some(&seq)
    }

    /// Offers one data fragment.
    pub fn place(&mut self, f: &Fragment) -> Placed {
        let seq = f.sequence_id();
        let id = usize::from(f.fragment_id());
        if f.len() > self.max_fragment_bytes {
            return Placed::TooLarge;
        }
        if id >= self.expected as usize {
            return Placed::UnknownFragmentId;
        }
        if self.was_released(seq) {
            return Placed::Late;
        }
        if !self.open.contains_key(&seq) {
            let Some(idx) = self.store.claim(seq, self.expected) else {
                return Placed::NoBuffer;
            };
            self.open.insert(
                seq,
                Open {
                    idx,
                    opened: Instant::now(),
                    have: vec![false; self.expected as usize],
                    count: 0,
                },
            );
        }
        let Some(open) = self.open.get_mut(&seq) else {
            return Placed::NoBuffer;
        };
        // `id < expected` was checked above and `have` has `expected` slots.
        let Some(have) = open.have.get_mut(id) else {
            return Placed::UnknownFragmentId;
        };
        if *have {
            return Placed::Duplicate;
        }
        match self.store.append(open.idx, f.bytes()) {
            Ok(_) => {}
            // The buffer cannot take it: nothing was written.
            Err(daq_shm::ShmError::TooLarge { .. }) => return Placed::TooLarge,
            Err(e) => {
                // The buffer is not ours any more: the event is lost.
                let fragments = open.count + 1;
                self.open.remove(&seq);
                self.lose(seq, fragments, e);
                return Placed::Unpublished;
            }
        }
        *have = true;
        open.count += 1;
        if open.count < self.expected {
            if !Self::waits_for_none(&open.have, &self.gone) {
                return Placed::Pending;
            }
            return match self.release(seq) {
                Some(_) => Placed::Incomplete,
                None => Placed::Unpublished,
            };
        }
        let (idx, count) = (open.idx, open.count);
        self.build_latencies.push(open.opened.elapsed());
        self.open.remove(&seq);
        self.remember_released(seq);
        match self.store.publish(idx, true) {
            Ok(()) => Placed::Complete,
            Err(e) => {
                self.lose(seq, count, e);
                Placed::Unpublished
            }
        }
    }

    /// True when an event holding `have` misses no fragment of a source
    /// still expected (some are missing: those of gone sources).
    fn waits_for_none(have: &[bool], gone: &[bool]) -> bool {
        gone.iter().any(|&g| g) && have.iter().zip(gone).all(|(&h, &g)| h || g)
    }

    /// Source `id`'s stream has ended: its fragments are no longer waited
    /// for. Releases, incomplete and in sequence-id order, every open event
    /// that now misses only fragments of gone sources (one that cannot be
    /// published goes to `take_unpublished`). Idempotent.
    pub fn source_gone(&mut self, id: u16) -> Vec<Released> {
        match self.gone.get_mut(usize::from(id)) {
            Some(g) if !*g => *g = true,
            _ => return Vec::new(),
        }
        let mut seqs: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, o)| Self::waits_for_none(&o.have, &self.gone))
            .map(|(&s, _)| s)
            .collect();
        seqs.sort_unstable();
        seqs.into_iter().filter_map(|s| self.release(s)).collect()
    }

    /// The sources whose fragments are no longer waited for.
    pub fn gone_sources(&self) -> impl Iterator<Item = u16> + '_ {
        self.gone
            .iter()
            .enumerate()
            .filter(|(_, g)| **g)
            .map(|(i, _)| i as u16)
    }

    fn release(&mut self, seq: u64) -> Option<Released> {
        let open = self.open.remove(&seq)?;
        self.remember_released(seq);
        let missing = open
            .have
            .iter()
            .enumerate()
            .filter(|(_, h)| !**h)
            .map(|(i, _)| i as u16)
            .collect();
        if let Err(e) = self.store.publish(open.idx, false) {
            self.lose(seq, open.count, e);
            return None;
        }
        Some(Released {
            sequence_id: seq,
            missing,
        })
    }

    /// Releases, incomplete, every event untouched for `age`, oldest first
    /// (one that cannot be published goes to `take_unpublished`).
    pub fn release_stale(&mut self, age: Duration) -> Vec<Released> {
        let stale = self.store.stale_writing(age);
        stale
            .into_iter()
            .filter_map(|(_, seq)| self.release(seq))
            .collect()
    }

    /// Releases every open event, incomplete, in sequence-id order (at stop).
    pub fn release_all(&mut self) -> Vec<Released> {
        let mut seqs: Vec<u64> = self.open.keys().copied().collect();
        seqs.sort_unstable();
        seqs.into_iter().filter_map(|s| self.release(s)).collect()
    }

    /// Releases the oldest open event, incomplete (to make room at stop).
    pub fn release_oldest(&mut self) -> Option<Released> {
        let seq = self.open.keys().min().copied()?;
        self.release(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daq_format::fragment::{FragmentSpec, FragmentType};
    use daq_shm::{StoreSpec, segment_path_in};

    fn frag(seq: u64, id: u16, n: usize) -> Fragment {
        Fragment::build(
            FragmentSpec {
                fragment_type: FragmentType::User(1),
                sequence_id: seq,
                fragment_id: id,
                timestamp: seq,
            },
            &[],
            &vec![id as u8; n],
        )
        .expect("valid")
    }

    fn assembly(name: &str, buffers: u32) -> (tempfile::TempDir, Assembly) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShmStore::create(
            &segment_path_in(dir.path(), 0, name),
            StoreSpec {
                buffer_count: buffers,
                buffer_bytes: 4096,
            },
        )
        .expect("store");
        (dir, Assembly::new(store, 2, 1024))
    }

    #[test]
    fn fragments_complete_their_event_and_it_is_read_back_whole() {
        let (_d, mut a) = assembly("t1", 4);
        let reader = a.store().reader();
        assert_eq!(a.place(&frag(7, 1, 16)), Placed::Pending);
        assert_eq!(a.place(&frag(8, 0, 16)), Placed::Pending);
        assert_eq!(a.place(&frag(7, 0, 16)), Placed::Complete);
        let g = reader.take().expect("published");
        assert_eq!(
            (g.sequence_id(), g.fragment_count(), g.complete()),
            (7, 2, true)
        );
        let mut want = frag(7, 1, 16).bytes().to_vec();
        want.extend_from_slice(frag(7, 0, 16).bytes());
        assert_eq!(g.data(), &want[..]);
        assert_eq!(a.open_events(), 1);
    }

    #[test]
    fn stale_events_are_released_with_their_missing_ids_and_late_fragments_dropped() {
        let (_d, mut a) = assembly("t2", 4);
        let reader = a.store().reader();
        assert_eq!(a.place(&frag(3, 1, 8)), Placed::Pending);
        let r = a.release_stale(Duration::ZERO);
        assert_eq!(
            r,
            vec![Released {
                sequence_id: 3,
                missing: vec![0]
            }]
        );
        let g = reader.take().expect("released");
        assert!(!g.complete());
        assert_eq!(g.fragment_count(), 1);
        drop(g);
        // The buffer is free again, but event 3 is gone for good.
        assert_eq!(a.place(&frag(3, 0, 8)), Placed::Late);
        assert!(reader.take().is_none());
        // Remembering is a fixed ring: far later ids reuse its slots.
        let far = 3 + RELEASED_MEMORY as u64;
        assert_eq!(a.place(&frag(far, 0, 8)), Placed::Pending);
    }

    /// Marks buffer `idx` Empty behind the writer's back, as another
    /// process scribbling on the segment would (descriptor `idx` is at
    /// 128 + 64 * idx, its state word first: see `daq_shm::layout`).
    fn steal_buffer(path: &std::path::Path, idx: u64) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("opens the segment");
        f.write_all_at(&0u32.to_le_bytes(), 128 + 64 * idx)
            .expect("writes");
    }

    #[test]
    fn events_whose_buffer_cannot_be_published_are_counted_with_every_fragment() {
        let (_d, mut a) = assembly("t-lost", 4);
        let path = a.store().path().to_path_buf();
        let reader = a.store().reader();
        let mut offered = 0u64;
        let mut place = |a: &mut Assembly, f: Fragment| {
            offered += 1;
            a.place(&f)
        };
        // Event 7: its buffer (0) is taken from us between its fragments.
        assert_eq!(place(&mut a, frag(7, 1, 16)), Placed::Pending);
        steal_buffer(&path, 0);
        assert_eq!(place(&mut a, frag(7, 0, 16)), Placed::Unpublished);
        // Event 8 (buffer 1) is taken before the stop releases it.
        assert_eq!(place(&mut a, frag(8, 1, 16)), Placed::Pending);
        steal_buffer(&path, 1);
        // Event 9 completes normally.
        assert_eq!(place(&mut a, frag(9, 0, 16)), Placed::Pending);
        assert_eq!(place(&mut a, frag(9, 1, 16)), Placed::Complete);
        assert_eq!(a.release_all(), vec![]);
        let lost = a.take_unpublished();
        assert_eq!(
            lost.iter()
                .map(|u| (u.sequence_id, u.fragments))
                .collect::<Vec<_>>(),
            [(7, 2), (8, 1)]
        );
        assert!(lost[0].error.contains("not writing"), "{lost:?}");
        // Every fragment offered is in a published event or a lost one.
        let published: u64 = std::iter::from_fn(|| reader.take())
            .map(|g| u64::from(g.fragment_count()))
            .sum();
        let unpublished: u64 = lost.iter().map(|u| u64::from(u.fragments)).sum();
        assert_eq!((published, unpublished), (2, 3));
        assert_eq!(offered, published + unpublished);
        // Late fragments of a lost event are recognised as late.
        assert_eq!(a.place(&frag(7, 1, 16)), Placed::Late);
        assert!(a.take_unpublished().is_empty());
    }

    #[test]
    fn a_gone_source_releases_at_once_what_waits_only_for_it_and_is_not_waited_for_again() {
        let (_d, mut a) = assembly("t-gone", 8);
        let reader = a.store().reader();
        // Events 1 and 2 wait for source 1; event 3 waits for source 0.
        assert_eq!(a.place(&frag(1, 0, 8)), Placed::Pending);
        assert_eq!(a.place(&frag(2, 0, 8)), Placed::Pending);
        assert_eq!(a.place(&frag(3, 1, 8)), Placed::Pending);
        let r = a.source_gone(1);
        assert_eq!(
            r,
            vec![
                Released {
                    sequence_id: 1,
                    missing: vec![1]
                },
                Released {
                    sequence_id: 2,
                    missing: vec![1]
                }
            ]
        );
        for seq in [1, 2] {
            let g = reader.take().expect("released at once");
            assert_eq!((g.sequence_id(), g.complete()), (seq, false));
        }
        // Event 3 still waits for source 0, which is still expected.
        assert_eq!(a.open_events(), 1);
        assert!(reader.take().is_none());
        // Saying it again changes nothing.
        assert!(a.source_gone(1).is_empty());
        assert_eq!(a.gone_sources().collect::<Vec<_>>(), [1]);
        // A later event goes out as soon as source 0's fragment is in.
        assert_eq!(a.place(&frag(4, 0, 8)), Placed::Incomplete);
        let g = reader.take().expect("event 4");
        assert_eq!(
            (g.sequence_id(), g.fragment_count(), g.complete()),
            (4, 1, false)
        );
        drop(g);
        // A fragment that still arrives from the gone source completes
        // its event as usual.
        assert_eq!(a.place(&frag(3, 0, 8)), Placed::Complete);
        assert!(reader.take().expect("event 3").complete());
        assert_eq!(a.open_events(), 0);
    }

    #[test]
    fn duplicates_and_oversize_fragments_are_refused_and_nothing_is_written() {
        let (_d, mut a) = assembly("t3", 4);
        assert_eq!(a.place(&frag(1, 0, 8)), Placed::Pending);
        assert_eq!(a.place(&frag(1, 0, 8)), Placed::Duplicate);
        assert_eq!(a.place(&frag(2, 0, 2000)), Placed::TooLarge);
        assert_eq!(a.open_events(), 1);
        assert_eq!(a.store().counts().writing, 1);
    }

    #[test]
    fn no_free_buffer_is_backpressure_not_loss() {
        let (_d, mut a) = assembly("t4", 2);
        let reader = a.store().reader();
        assert_eq!(a.place(&frag(1, 0, 8)), Placed::Pending);
        assert_eq!(a.place(&frag(2, 0, 8)), Placed::Pending);
        assert_eq!(a.place(&frag(3, 0, 8)), Placed::NoBuffer);
        assert_eq!(a.place(&frag(1, 1, 8)), Placed::Complete);
        drop(reader.take().expect("event 1"));
        assert_eq!(a.place(&frag(3, 0, 8)), Placed::Pending);
        assert_eq!(a.release_all().len(), 2);
    }
}
