//! Tests of the buffer state machine, publication order and monitors within
//! one process (in memory under Miri), including several threads at once.

use super::*;

#[test]
fn claim_append_publish_take_release_round_trip() {
    let mut fx = fixture(spec(4, 256));
    let s = &mut fx.store;
    let a: Vec<u8> = (0..10u8).collect();
    let b: Vec<u8> = (100..113u8).collect();
    let idx = s.claim(7, 2).unwrap();
    assert_eq!(s.lookup(7), Some(idx));
    assert_eq!(s.state(idx), Some(BufferState::Writing));
    assert_eq!(s.append(idx, &a).unwrap(), 1);
    assert_eq!(s.append(idx, &b).unwrap(), 2);
    assert_eq!(
        s.counts(),
        StateCounts {
            empty: 3,
            writing: 1,
            full: 0,
            reading: 0
        }
    );
    s.publish(idx, true).unwrap();
    assert_eq!(s.lookup(7), None);
    assert_eq!(s.state(idx), Some(BufferState::Full));
    assert_eq!(s.header().published_total, 1);

    let r = s.reader();
    let g = r.take().unwrap();
    assert_eq!(g.sequence_id(), 7);
    assert_eq!(g.fragment_count(), 2);
    assert_eq!(g.expected(), 2);
    assert!(g.complete());
    assert_eq!(g.publish_seq(), 1);
    assert_eq!(g.index(), idx);
    let mut want = a.clone();
    want.extend_from_slice(&b);
    assert_eq!(g.data(), want.as_slice());
    assert_eq!(r.counts().reading, 1);
    assert!(r.take().is_none(), "nothing else is Full");
    drop(g);
    assert_eq!(s.counts().empty, 4);
    assert!(r.take().is_none());
}

#[test]
fn content_across_word_boundaries() {
    let mut fx = fixture(spec(1, 200));
    let s = &mut fx.store;
    let r = s.reader();
    for shift in 0..9usize {
        let idx = s.claim(shift as u64, 3).unwrap();
        let parts: Vec<Vec<u8>> = [shift + 1, 3, 17]
            .iter()
            .enumerate()
            .map(|(p, &n)| (0..n).map(|k| (k * 7 + p * 31 + shift) as u8).collect())
            .collect();
        for p in &parts {
            s.append(idx, p).unwrap();
        }
        s.publish(idx, true).unwrap();
        let g = r.take().unwrap();
        assert_eq!(g.data(), parts.concat().as_slice());
        assert!(g.release());
    }
}

#[test]
fn too_large_is_rejected_and_writes_nothing() {
    let mut fx = fixture(spec(2, 64));
    let s = &mut fx.store;
    let idx = s.claim(1, 2).unwrap();
    assert_eq!(s.append(idx, &[0xAA; 60]).unwrap(), 1);
    match s.append(idx, &[0xBB; 5]) {
        Err(ShmError::TooLarge {
            idx: i,
            len: 5,
            used: 60,
            capacity: 64,
        }) => assert_eq!(i, idx),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(s.append(idx, &[0xCC; 4]).unwrap(), 2, "exactly full fits");
    s.publish(idx, false).unwrap();
    let idx2 = s.claim(2, 1).unwrap();
    assert!(matches!(
        s.append(idx2, &[1; 65]),
        Err(ShmError::TooLarge { used: 0, .. })
    ));
    s.publish(idx2, false).unwrap();

    let r = s.reader();
    let g = r.take().unwrap();
    let mut want = vec![0xAA; 60];
    want.extend_from_slice(&[0xCC; 4]);
    assert_eq!(g.data(), want.as_slice());
    assert_eq!(g.fragment_count(), 2);
    assert!(!g.complete());
    drop(g);
    let g = r.take().unwrap();
    assert_eq!(g.sequence_id(), 2);
    assert!(g.data().is_empty());
    assert_eq!(g.fragment_count(), 0);
}

#[test]
fn wrong_buffer_or_state_is_an_error() {
    let mut fx = fixture(spec(2, 64));
    let s = &mut fx.store;
    assert!(matches!(
        s.append(2, b"x"),
        Err(ShmError::NoSuchBuffer { idx: 2, count: 2 })
    ));
    assert!(matches!(
        s.append(0, b"x"),
        Err(ShmError::NotWriting {
            idx: 0,
            state: BufferState::Empty
        })
    ));
    let idx = s.claim(5, 1).unwrap();
    assert_eq!(
        s.claim(5, 1),
        Some(idx),
        "claiming an open seq returns its buffer"
    );
    s.publish(idx, true).unwrap();
    assert!(matches!(
        s.publish(idx, true),
        Err(ShmError::NotWriting {
            state: BufferState::Full,
            ..
        })
    ));
    let e = ShmError::TooLarge {
        idx: 1,
        len: 2,
        used: 3,
        capacity: 4,
    };
    assert_eq!(
        e.to_string(),
        "2 bytes do not fit buffer 1: 3 of 4 bytes used"
    );
}

#[test]
fn invalid_specs_are_rejected() {
    for bad in [spec(0, 64), spec(1, 0), spec(1 << 17, 64), spec(1, 1 << 41)] {
        assert!(
            matches!(Geometry::new(bad), Err(ShmError::InvalidSpec(_))),
            "{bad:?}"
        );
    }
    let g = Geometry::new(spec(3, 100)).unwrap();
    assert_eq!(g.stride, 128);
    assert_eq!(g.data_offset, 128 + 3 * 64);
    assert_eq!(g.total, 128 + 3 * 64 + 3 * 128);
}

#[test]
fn backpressure_claim_none_until_a_release() {
    let mut fx = fixture(spec(3, 32));
    let s = &mut fx.store;
    let idxs: Vec<usize> = (0..3).map(|q| s.claim(q, 1).unwrap()).collect();
    assert_eq!(idxs.iter().collect::<HashSet<_>>().len(), 3);
    assert_eq!(s.claim(3, 1), None, "all buffers Writing");
    s.append(idxs[1], b"one").unwrap();
    s.publish(idxs[1], true).unwrap();
    assert_eq!(s.claim(3, 1), None, "a Full buffer is not available");
    let r = s.reader();
    let g = r.take().unwrap();
    assert_eq!(s.claim(3, 1), None, "a Reading buffer is not available");
    assert_eq!(s.counts().available(), 0);
    assert!(g.release());
    assert_eq!(s.counts().available(), 1);
    assert_eq!(
        s.claim(3, 1),
        Some(idxs[1]),
        "the released buffer is reused"
    );
    assert_eq!(s.counts().pending(), 3);
}

#[test]
fn stale_writing_returns_exactly_the_old_ones_oldest_first() {
    let mut fx = fixture(spec(5, 32));
    let s = &mut fx.store;
    let i13 = s.claim(13, 2).unwrap();
    test_clock::advance(Duration::from_secs(10));
    let i11 = s.claim(11, 2).unwrap();
    test_clock::advance(Duration::from_secs(10));
    s.claim(10, 2).unwrap();
    s.claim(12, 2).unwrap();
    // Ages now: 13 -> 20 s, 11 -> 10 s, 10 and 12 -> 0 s.
    assert_eq!(
        s.stale_writing(Duration::from_secs(5)),
        vec![(i13, 13), (i11, 11)]
    );
    assert_eq!(s.stale_writing(Duration::from_secs(15)), vec![(i13, 13)]);
    assert_eq!(s.stale_writing(Duration::from_secs(25)), vec![]);
    assert_eq!(s.stale_writing(Duration::ZERO).len(), 4);
    // An append touches the buffer: no longer stale.
    s.append(i13, b"late fragment").unwrap();
    assert_eq!(s.stale_writing(Duration::from_secs(5)), vec![(i11, 11)]);
    // The writer releases it as incomplete.
    s.publish(i11, false).unwrap();
    assert!(s.stale_writing(Duration::from_secs(5)).is_empty());
    let r = s.reader();
    let g = r.take().unwrap();
    assert_eq!(
        (
            g.sequence_id(),
            g.complete(),
            g.fragment_count(),
            g.expected()
        ),
        (11, false, 0, 2)
    );
}

#[test]
fn recover_stale_reading_only_revokes_dead_readers() {
    let mut fx = fixture(spec(4, 32));
    let s = &mut fx.store;
    let a = publish_one(s, 1, b"alive");
    let b = publish_one(s, 2, b"dead");
    let c = publish_one(s, 3, b"unknown");
    let r = s.reader();

    // A live guard in this process is never revoked, however old.
    let g = r.take().unwrap();
    assert_eq!(g.index(), a);
    // Leases of a dead process and of an unknown pid.
    assert!(r.lease_to(b, dead_pid()));
    assert!(r.lease_to(c, 0));
    assert_eq!(s.counts().reading, 3);
    assert_eq!(
        r.recover_stale_reading(Duration::from_secs(60)),
        0,
        "too young"
    );
    test_clock::advance(Duration::from_secs(120));
    assert_eq!(r.recover_stale_reading(Duration::from_secs(60)), 1);
    assert_eq!(
        s.state(a),
        Some(BufferState::Reading),
        "our own lease stays"
    );
    assert_eq!(s.state(b), Some(BufferState::Full), "the dead one is back");
    assert_eq!(
        s.state(c),
        Some(BufferState::Reading),
        "pid 0 is never revoked"
    );
    assert_eq!(r.recover_stale_reading(Duration::ZERO), 0);

    let g2 = r.take().unwrap();
    assert_eq!((g2.sequence_id(), g2.data()), (2, &b"dead"[..]));
    assert!(g2.release());
    assert!(g.release());
    assert_eq!(
        s.counts(),
        StateCounts {
            empty: 3,
            writing: 0,
            full: 0,
            reading: 1
        }
    );
}

#[test]
fn panicking_reader_puts_the_event_back() {
    let mut fx = fixture(spec(2, 32));
    let s = &mut fx.store;
    publish_one(s, 9, b"precious");
    let r = s.reader();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let g = r.take().unwrap();
        assert_eq!(g.data(), b"precious");
        panic!("reader dies mid-event");
    }));
    assert!(res.is_err());
    assert_eq!(s.counts().full, 1);
    let g = r.take().unwrap();
    assert_eq!((g.sequence_id(), g.data()), (9, &b"precious"[..]));
}

#[test]
fn take_follows_publication_order() {
    let mut fx = fixture(spec(4, 32));
    let s = &mut fx.store;
    let i5 = s.claim(5, 1).unwrap();
    let i6 = s.claim(6, 1).unwrap();
    let i7 = s.claim(7, 1).unwrap();
    s.publish(i7, true).unwrap();
    s.publish(i5, true).unwrap();
    s.publish(i6, true).unwrap();
    let r = s.reader();
    let order: Vec<(u64, u64)> = std::iter::from_fn(|| {
        let g = r.take()?;
        let v = (g.sequence_id(), g.publish_seq());
        assert!(g.release());
        Some(v)
    })
    .collect();
    assert_eq!(order, vec![(7, 1), (5, 2), (6, 3)]);
}

#[test]
fn generation_is_odd_while_writing_and_even_when_published() {
    let mut fx = fixture(spec(1, 32));
    let s = &mut fx.store;
    assert_eq!(generation(s, 0), 0);
    let idx = s.claim(1, 1).unwrap();
    assert_eq!(generation(s, idx), 1);
    s.append(idx, b"x").unwrap();
    s.publish(idx, true).unwrap();
    assert_eq!(generation(s, idx), 2);
    let r = s.reader();
    let g = r.take().unwrap();
    assert_eq!(generation(s, idx), 2, "taking does not change the content");
    drop(g);
    assert_eq!(generation(s, idx), 2, "nor does releasing");
    s.claim(2, 1).unwrap();
    assert_eq!(generation(s, idx), 3);
}

#[test]
fn monitor_sees_new_events_and_counts_missed() {
    let mut fx = fixture(spec(2, 64));
    let s = &mut fx.store;
    publish_one(s, 100, b"before attach");
    let mut m = s.monitor();
    assert_eq!(m.attached_at(), 1);
    assert!(m.poll().is_empty());

    publish_one(s, 101, b"one-o-one");
    let evs = m.poll();
    assert_eq!(evs.len(), 1);
    assert_eq!(
        evs[0],
        MonitoredEvent {
            sequence_id: 101,
            fragment_count: 1,
            expected: 1,
            complete: true,
            publish_seq: 2,
            data: b"one-o-one".to_vec()
        }
    );
    assert!(m.poll().is_empty(), "nothing new");

    // Both buffers recycled before the monitor looks: 102, 103 missed,
    // 104, 105 seen. Taking does not disturb what a monitor can see.
    let r = s.reader();
    while let Some(g) = r.take() {
        drop(g);
    }
    publish_one(s, 102, b"a");
    publish_one(s, 103, b"b");
    while let Some(g) = r.take() {
        drop(g);
    }
    publish_one(s, 104, b"c");
    publish_one(s, 105, b"d");
    let _g = r.take().unwrap();
    let seqs: Vec<u64> = m.poll().iter().map(|e| e.sequence_id).collect();
    assert_eq!(seqs, vec![104, 105]);
    assert_eq!((m.seen(), m.missed(), m.torn()), (3, 2, 0));
    let h = m.header();
    assert_eq!(
        (h.buffer_count, h.buffer_bytes, h.published_total),
        (2, 64, 6)
    );
    assert_eq!(h.owner_pid, std::process::id());
    assert!(!h.closed);
}

#[test]
fn monitor_discards_an_event_recycled_during_the_copy() {
    let mut fx = fixture(spec(1, 64));
    let s = &mut fx.store;
    let r = s.reader();
    let mut m = s.monitor();
    publish_one(s, 1, b"original content");
    drop(r.take().unwrap()); // released: the writer may reuse it
    let evs = m.poll_with(|idx| {
        // The writer recycles the buffer while the monitor copies it.
        let i = s.claim(2, 1).unwrap();
        assert_eq!(i, idx);
        s.append(i, b"OVERWRITTEN").unwrap();
    });
    assert!(evs.is_empty(), "a torn copy is never returned");
    assert_eq!((m.seen(), m.missed(), m.torn()), (0, 1, 1));
    s.publish(0, true).unwrap();
    let evs = m.poll();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].data, b"OVERWRITTEN");
    assert_eq!((m.seen(), m.missed(), m.torn()), (1, 1, 1));
}

#[test]
fn reader_outlives_store() {
    let mut fx = fixture(spec(2, 32));
    publish_one(&mut fx.store, 1, b"kept");
    let r = fx.store.reader();
    let mut m = fx.store.monitor();
    let Fixture { store, _dir } = fx;
    drop(store);
    assert!(m.header().closed);
    let g = r.take().unwrap();
    assert_eq!(g.data(), b"kept");
    assert!(m.poll().is_empty(), "published before the monitor attached");
}

#[test]
fn segment_paths() {
    assert_eq!(
        segment_path_in(Path::new("/dev/shm"), 3, "eventbuilder01"),
        PathBuf::from("/dev/shm/daq-p3-eventbuilder01-events")
    );
    assert_eq!(
        segment_path_in(Path::new("/tmp/x"), 0, "a/b"),
        PathBuf::from("/tmp/x/daq-p0-a_b-events")
    );
    let dir = std::env::var_os(SHM_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from);
    assert_eq!(segment_path(1, "agg"), dir.join("daq-p1-agg-events"));
}

/// Writer, two destructive readers and a monitor on threads of one
/// process (small enough to run under Miri).
#[test]
fn threads_writer_two_readers_and_a_monitor() {
    let (n, max, count, bytes, group) = if cfg!(miri) {
        (24u64, 20usize, 3u32, 60u64, 2u64)
    } else {
        (4000, 700, 6, 2100, 4)
    };
    let mut fx = fixture(spec(count, bytes));
    let reader = fx.store.reader();
    let mut monitor = fx.store.monitor();
    let taken = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(if cfg!(miri) { 3600 } else { 60 });
    let store = &mut fx.store;
    let (got_a, got_b) = std::thread::scope(|sc| {
        let w = sc.spawn(|| write_events(store, 0..n, max, group, deadline));
        let a = sc.spawn(|| drain(&reader, n, &taken, max, false, deadline));
        let b = sc.spawn(|| {
            let r2 = reader.clone();
            drain(&r2, n, &taken, max, false, deadline)
        });
        let m = sc.spawn(|| watch(&mut monitor, n, max, deadline));
        w.join().unwrap();
        m.join().unwrap();
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut all: Vec<u64> = got_a.iter().chain(&got_b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "every event exactly once");
    assert_eq!(fx.store.counts().empty, count);
    assert_eq!(monitor.seen() + monitor.missed(), n);
}
