//! Sets of sequence ids kept as sorted, disjoint arithmetic ranges
//! (`first..=last`, every `step`-th): what an aggregator received from each
//! eventbuilder, and what was lost with a dead one.
//!
//! Every range of one set has the same step and its members the same
//! residue modulo the step (the routing guarantees it: an aggregator gets
//! from one eventbuilder exactly the sequence ids `s` with the same
//! `s mod (eventbuilders x aggregators)`), so a set of a run that lost
//! nothing is one range, whatever order the events came in.

pub use proto::SequenceRange;

/// The number of sequence ids in `r`.
pub fn count(r: &SequenceRange) -> u64 {
    if r.last < r.first {
        return 0;
    }
    (r.last - r.first) / r.step.max(1) + 1
}

/// Adds `seq` to `set` (sorted, disjoint, all of step `step`), merging with
/// its neighbours. O(log n) to find the place; the set stays as small as the
/// number of gaps.
pub fn insert(set: &mut Vec<SequenceRange>, seq: u64, step: u64) {
    let step = step.max(1);
    let i = set.partition_point(|r| r.last < seq);
    if set.get(i).is_some_and(|r| r.first <= seq) {
        return; // Already in.
    }
    let (before, after) = set.split_at_mut(i);
    let prev = before
        .last_mut()
        .filter(|r| r.last.checked_add(step) == Some(seq));
    let next = after
        .first_mut()
        .filter(|r| seq.checked_add(step) == Some(r.first));
    match (prev, next) {
        (Some(p), Some(n)) => {
            p.last = n.last;
            set.remove(i);
        }
        (Some(p), None) => p.last = seq,
        (None, Some(n)) => n.first = seq,
        (None, None) => set.insert(
            i,
            SequenceRange {
                first: seq,
                last: seq,
                step,
            },
        ),
    }
}

/// The members of `expected` that are not in `have` (sorted, disjoint,
/// same step and residue as `expected`).
pub fn subtract(expected: &SequenceRange, have: &[SequenceRange]) -> Vec<SequenceRange> {
    let step = expected.step.max(1);
    let mut out = Vec::new();
    if expected.last < expected.first {
        return out;
    }
    let mut next = expected.first;
    for h in have {
        if h.last < next {
            continue;
        }
        if h.first > expected.last {
            break;
        }
        if h.first > next {
            out.push(SequenceRange {
                first: next,
                last: h.first - step,
                step,
            });
        }
        match h.last.checked_add(step) {
            Some(n) => next = n,
            None => return out,
        }
        if next > expected.last {
            return out;
        }
    }
    out.push(SequenceRange {
        first: next,
        last: expected.last,
        step,
    });
    out
}

/// Ranges of step `step` covering exactly the ids of `ranges` (any steps),
/// as few as the ids allow: the lost ids of one eventbuilder, gathered from
/// every aggregator's share, become one range of step `eventbuilders` when
/// they are contiguous. Gives `ranges` back unchanged (sorted) when they
/// hold more than `limit` ids.
pub fn merge(mut ranges: Vec<SequenceRange>, step: u64, limit: u64) -> Vec<SequenceRange> {
    let total: u64 = ranges.iter().map(count).sum();
    if total > limit {
        ranges.sort_by_key(|r| r.first);
        return ranges;
    }
    let mut ids: Vec<u64> = ranges
        .iter()
        .flat_map(|r| (0..count(r)).map(move |k| r.first + k * r.step.max(1)))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out: Vec<SequenceRange> = Vec::new();
    for id in ids {
        insert(&mut out, id, step);
    }
    out
}

/// `first..=last` (or `first..=last step N`, or `first` alone), for messages.
pub fn display(r: &SequenceRange) -> String {
    match (r.first == r.last, r.step) {
        (true, _) => r.first.to_string(),
        (false, 0 | 1) => format!("{}..={}", r.first, r.last),
        (false, s) => format!("{}..={} step {s}", r.first, r.last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: u64, last: u64, step: u64) -> SequenceRange {
        SequenceRange { first, last, step }
    }

    #[test]
    fn out_of_order_inserts_merge_into_one_range() {
        let mut s = Vec::new();
        for seq in [9, 1, 5, 13, 5, 17] {
            insert(&mut s, seq, 4);
        }
        assert_eq!(s, vec![r(1, 17, 4)]);
        insert(&mut s, 25, 4);
        assert_eq!(s, vec![r(1, 17, 4), r(25, 25, 4)]);
        insert(&mut s, 21, 4);
        assert_eq!(s, vec![r(1, 25, 4)]);
        assert_eq!(count(&s[0]), 7);
    }

    #[test]
    fn subtract_leaves_the_gaps_and_the_tail() {
        let have = [r(3, 11, 4), r(19, 23, 4)];
        assert_eq!(
            subtract(&r(3, 35, 4), &have),
            vec![r(15, 15, 4), r(27, 35, 4)]
        );
        assert_eq!(subtract(&r(3, 23, 4), &have), vec![r(15, 15, 4)]);
        assert_eq!(subtract(&r(3, 35, 4), &[]), vec![r(3, 35, 4)]);
        assert_eq!(subtract(&r(7, 11, 4), &have), vec![]);
    }

    #[test]
    fn shares_of_every_aggregator_merge_into_the_eventbuilders_step() {
        // Eventbuilder 1 of 2, two aggregators: shares of step 4.
        let merged = merge(vec![r(101, 201, 4), r(103, 199, 4)], 2, 1_000_000);
        assert_eq!(merged, vec![r(101, 201, 2)]);
        assert_eq!(display(&merged[0]), "101..=201 step 2");
        assert_eq!(merge(vec![r(5, 9, 4)], 2, 1), vec![r(5, 9, 4)]);
    }
}
