//! Event assembly: where fragments wait for the rest of their event.
//!
//! [`EventStore`] is the one interface the builder uses; [`MemoryStore`]
//! keeps partial events in a map. The shared-memory store replaces it behind
//! the same interface.

use common::fragment::Fragment;
use std::collections::HashMap;

/// An event taken out of the store: complete, or released incomplete with
/// the fragment ids that never arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    pub sequence_id: u64,
    /// Ordered by fragment id.
    pub fragments: Vec<Fragment>,
    pub missing: Vec<u16>,
}

impl Assembled {
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// What became of an inserted fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Insert {
    /// Stored; its event still waits for other fragments.
    Pending,
    /// It completed its event, which leaves the store.
    Complete(Assembled),
    /// A fragment with this sequence id and fragment id is already stored;
    /// the new one is dropped.
    Duplicate,
}

pub trait EventStore: Send {
    /// Stores a data fragment whose fragment id is below the expected count.
    fn insert(&mut self, fragment: Fragment) -> Insert;
    /// Takes every partial event out, as incomplete, in sequence-id order.
    fn drain_incomplete(&mut self) -> Vec<Assembled>;
    /// Events waiting for fragments.
    fn pending(&self) -> usize;
}

/// Partial events in a hash map, one slot per expected fragment.
pub struct MemoryStore {
    expected: usize,
    events: HashMap<u64, Partial>,
}

struct Partial {
    slots: Vec<Option<Fragment>>,
    filled: usize,
}

impl MemoryStore {
    /// A store for events of `expected` fragments (ids 0..expected).
    pub fn new(expected: usize) -> Self {
        Self {
            expected,
            events: HashMap::new(),
        }
    }
}

fn assemble(sequence_id: u64, slots: Vec<Option<Fragment>>) -> Assembled {
    let mut fragments = Vec::with_capacity(slots.len());
    let mut missing = Vec::new();
    for (id, s) in slots.into_iter().enumerate() {
        match s {
            Some(f) => fragments.push(f),
            None => missing.push(id as u16),
        }
    }
    Assembled {
        sequence_id,
        fragments,
        missing,
    }
}

impl EventStore for MemoryStore {
    fn insert(&mut self, fragment: Fragment) -> Insert {
        let seq = fragment.sequence_id();
        let id = usize::from(fragment.fragment_id());
        let expected = self.expected;
        let p = self.events.entry(seq).or_insert_with(|| Partial {
            slots: vec![None; expected],
            filled: 0,
        });
        match p.slots.get_mut(id) {
            Some(slot @ None) => {
                *slot = Some(fragment);
                p.filled += 1;
            }
            _ => return Insert::Duplicate,
        }
        if p.filled < expected {
            return Insert::Pending;
        }
        match self.events.remove(&seq) {
            Some(p) => Insert::Complete(assemble(seq, p.slots)),
            None => Insert::Pending,
        }
    }

    fn drain_incomplete(&mut self) -> Vec<Assembled> {
        let mut v: Vec<_> = self
            .events
            .drain()
            .map(|(seq, p)| assemble(seq, p.slots))
            .collect();
        v.sort_by_key(|a| a.sequence_id);
        v
    }

    fn pending(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::fragment::{FragmentSpec, FragmentType};

    fn frag(seq: u64, id: u16) -> Fragment {
        Fragment::build(
            FragmentSpec {
                fragment_type: FragmentType::User(1),
                sequence_id: seq,
                fragment_id: id,
                timestamp: seq,
            },
            &[],
            &[id as u8; 8],
        )
        .expect("valid")
    }

    #[test]
    fn event_completes_when_every_fragment_arrived_in_any_order() {
        let mut s = MemoryStore::new(3);
        assert_eq!(s.insert(frag(5, 2)), Insert::Pending);
        assert_eq!(s.insert(frag(6, 0)), Insert::Pending);
        assert_eq!(s.insert(frag(5, 0)), Insert::Pending);
        match s.insert(frag(5, 1)) {
            Insert::Complete(a) => {
                assert_eq!(a.sequence_id, 5);
                assert!(a.is_complete());
                let ids: Vec<u16> = a.fragments.iter().map(Fragment::fragment_id).collect();
                assert_eq!(ids, vec![0, 1, 2]);
            }
            other => panic!("expected complete, got {other:?}"),
        }
        assert_eq!(s.pending(), 1);
    }

    #[test]
    fn duplicate_and_out_of_range_fragments_are_refused() {
        let mut s = MemoryStore::new(2);
        assert_eq!(s.insert(frag(1, 0)), Insert::Pending);
        assert_eq!(s.insert(frag(1, 0)), Insert::Duplicate);
        assert_eq!(s.insert(frag(1, 7)), Insert::Duplicate);
    }

    #[test]
    fn drain_releases_partial_events_with_missing_ids() {
        let mut s = MemoryStore::new(3);
        s.insert(frag(9, 1));
        s.insert(frag(8, 0));
        s.insert(frag(8, 2));
        let d = s.drain_incomplete();
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].sequence_id, d[0].missing.clone()), (8, vec![1]));
        assert_eq!((d[1].sequence_id, d[1].missing.clone()), (9, vec![0, 2]));
        assert_eq!(s.pending(), 0);
    }
}
