use super::*;
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn pair(capacity: usize) -> (tempfile::TempDir, LinkWriter, LinkReader) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = link_path_in(dir.path(), 7, "boardreader-0", "eventbuilder-1");
    let mut w = LinkWriter::create(&path, capacity, 42).expect("create");
    let r = LinkReader::attach(&path, std::process::id(), 42).expect("attach");
    w.unlink();
    assert!(!path.exists(), "the name goes once the receiver mapped it");
    (dir, w, r)
}

fn item(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i as usize * 31 + k) as u8).collect()
}

#[test]
fn batches_arrive_in_order_across_many_wraps() {
    let (_d, mut w, mut r) = pair(MIN_CAPACITY);
    let sender = std::thread::spawn(move || {
        for b in 0..2_000u64 {
            let items: Vec<Vec<u8>> = (0..(b % 5 + 1))
                .map(|i| item(b * 10 + i, (b as usize * 37 + i as usize * 11) % 3000))
                .collect();
            let eod = (b == 1_999).then_some(12_345);
            w.send(3, 1, &items, eod).expect("send");
        }
        w.finish();
        w.wait_reply()
    });
    let mut seen = 0u64;
    let mut last_eod = None;
    while let Some(rec) = r.next().expect("next") {
        let b = parse_batch(rec.as_ref()).expect("parse");
        assert_eq!((b.run, b.source), (3, 1));
        assert_eq!(b.items.len() as u64, seen % 5 + 1, "batch {seen}");
        for (i, range) in b.items.iter().enumerate() {
            let want = item(seen * 10 + i as u64, (seen as usize * 37 + i * 11) % 3000);
            assert_eq!(
                &rec.as_ref()[range.clone()],
                &want[..],
                "batch {seen} item {i}"
            );
        }
        last_eod = b.end_of_data;
        seen += 1;
    }
    assert_eq!(seen, 2_000);
    assert_eq!(last_eod, Some(12_345));
    r.reply(seen, last_eod);
    assert_eq!(
        sender.join().expect("sender thread").expect("reply"),
        (2_000, Some(12_345))
    );
}

#[test]
fn items_that_write_themselves_are_made_in_the_ring_and_split_like_bytes() {
    // Items known only by (seed, length): each is made straight into the
    // ring by the callback, over bytes that held earlier records.
    let (_d, mut w, mut r) = pair(MIN_CAPACITY);
    let sender = std::thread::spawn(move || {
        for b in 0..500u64 {
            let items: Vec<(u64, usize)> = (0..(b % 7 + 1))
                .map(|i| (b * 10 + i, (b as usize * 53 + i as usize * 7) % 9000))
                .collect();
            w.send_with(
                2,
                5,
                &items,
                |&(_, len)| len,
                |&(seed, len), dst| {
                    assert_eq!(dst.len(), len);
                    dst.copy_from_slice(&item(seed, len));
                },
                (b == 499).then_some(99),
            )
            .expect("send");
        }
        w.finish();
        w.wait_reply()
    });
    let (mut items, mut records, mut eod) = (0u64, 0u64, None);
    let mut want = (0..500u64).flat_map(|b| {
        (0..(b % 7 + 1)).map(move |i| (b * 10 + i, (b as usize * 53 + i as usize * 7) % 9000))
    });
    while let Some(rec) = r.next().expect("next") {
        let b = parse_batch(rec.as_ref()).expect("parse");
        assert_eq!((b.run, b.source), (2, 5));
        for range in &b.items {
            let (seed, len) = want.next().expect("no more items than sent");
            assert_eq!(&rec.as_ref()[range.clone()], &item(seed, len)[..]);
            items += 1;
        }
        eod = b.end_of_data.or(eod);
        records += 1;
    }
    assert!(want.next().is_none(), "every item arrived");
    assert!(
        records >= 500,
        "a batch too big for a record went as several"
    );
    assert_eq!(eod, Some(99));
    r.reply(items, eod);
    assert_eq!(sender.join().expect("sender").expect("reply").0, items);
}

#[test]
fn a_batch_larger_than_a_record_goes_as_several_and_a_huge_item_is_refused() {
    let (_d, mut w, mut r) = pair(MIN_CAPACITY);
    let items: Vec<Vec<u8>> = (0..20).map(|i| item(i, 4000)).collect();
    let sender = std::thread::spawn(move || {
        w.send(1, 0, &items, Some(20)).expect("send");
        let huge = vec![0u8; MIN_CAPACITY];
        let err = w.send(1, 0, &[huge], None).expect_err("too large");
        assert!(matches!(err, LinkError::TooLarge { .. }), "{err}");
        w.finish();
    });
    let (mut n, mut records, mut eod) = (0, 0, None);
    while let Some(rec) = r.next().expect("next") {
        let b = parse_batch(rec.as_ref()).expect("parse");
        n += b.items.len();
        records += 1;
        eod = eod.or(b.end_of_data);
    }
    sender.join().expect("sender");
    assert_eq!(n, 20);
    assert!(
        records > 1,
        "20 x 4000 bytes exceed one record of a 64 KiB ring"
    );
    assert_eq!(eod, Some(20), "end-of-data rides on the last record");
}

#[test]
fn space_is_released_in_ring_order_whatever_order_records_are_dropped() {
    let (_d, mut w, mut r) = pair(MIN_CAPACITY);
    for i in 0..3 {
        w.send(1, 0, &[item(i, 100)], None).expect("send");
    }
    let a = r.next().expect("a").expect("a");
    let b = r.next().expect("b").expect("b");
    let c = r.next().expect("c").expect("c");
    let tail = |r: &LinkReader| r.shared.seg.u64(H_TAIL).load(Ordering::Acquire);
    drop(b);
    assert_eq!(tail(&r), 0, "b is released but a is still lent");
    drop(a);
    let after_ab = tail(&r);
    assert!(after_ab > 0);
    drop(c);
    assert!(tail(&r) > after_ab);
    assert_eq!(tail(&r), w.head, "everything written is released");
}

#[test]
fn a_full_ring_blocks_the_sender_until_the_receiver_releases() {
    let (_d, mut w, mut r) = pair(MIN_CAPACITY);
    let (tx, rx) = mpsc::channel();
    let sender = std::thread::spawn(move || {
        for i in 0..64u64 {
            w.send(1, 0, &[item(i, 8000)], None).expect("send");
            tx.send(i).expect("progress");
        }
        w.finish();
    });
    // Hold every record: the sender can publish only what fits the ring.
    let mut held = Vec::new();
    for _ in 0..7 {
        held.push(r.next().expect("next").expect("record"));
    }
    let sent_while_held: Vec<u64> = rx.try_iter().collect();
    assert!(
        sent_while_held.len() <= 8,
        "a 64 KiB ring holds at most 8 items of 8000 bytes, {} were sent",
        sent_while_held.len()
    );
    drop(held);
    let mut n = 7;
    while let Some(rec) = r.next().expect("next") {
        drop(rec);
        n += 1;
    }
    sender.join().expect("sender");
    assert_eq!(n, 64);
}

#[test]
fn the_sleeping_receiver_wakes_when_the_sender_dies_or_abandons() {
    let (_d, w, mut r) = pair(MIN_CAPACITY);
    let waker = r.waker();
    let reader = std::thread::spawn(move || r.next().map(|o| o.is_some()));
    waker.peer_gone();
    let err = reader.join().expect("reader").expect_err("gone");
    assert!(matches!(err, LinkError::PeerGone("sender")), "{err}");
    drop(w);

    let (_d, mut w, mut r) = pair(MIN_CAPACITY);
    w.send(1, 0, &[item(0, 10)], None).expect("send");
    drop(w);
    assert!(r.next().expect("what was sent still arrives").is_some());
    assert!(matches!(r.next(), Err(LinkError::Abandoned)));
}

#[test]
fn the_sender_learns_of_a_rejection_or_a_dead_receiver() {
    let (_d, mut w, r) = pair(MIN_CAPACITY);
    r.reject("batch for run 4 during run 3");
    let err = w.send(1, 0, &[item(0, 10)], None).expect_err("rejected");
    assert_eq!(
        err.to_string(),
        "the receiver rejected the stream: batch for run 4 during run 3"
    );
    assert!(matches!(w.wait_reply(), Err(LinkError::Rejected(_))));

    let (_d, mut w, _r) = pair(MIN_CAPACITY);
    let waker = w.waker();
    // Fill the ring so that the sender sleeps, then say the receiver died.
    let sender = std::thread::spawn(move || {
        loop {
            if let Err(e) = w.send(1, 0, &[item(0, 8000)], None) {
                return e;
            }
        }
    });
    waker.peer_gone();
    let err = sender.join().expect("sender");
    assert!(matches!(err, LinkError::PeerGone("receiver")), "{err}");
}

#[test]
fn attach_checks_the_creator_the_nonce_the_mode_and_the_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = link_path_in(dir.path(), 0, "a", "b");
    let _w = LinkWriter::create(&path, MIN_CAPACITY, 9).expect("create");
    let mode = fs::metadata(&path).expect("meta").mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pid = std::process::id();
    assert!(matches!(
        LinkReader::attach(&path, pid, 8),
        Err(LinkError::Invalid { .. })
    ));
    assert!(matches!(
        LinkReader::attach(&path, pid + 1, 9),
        Err(LinkError::Invalid { .. })
    ));
    fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("chmod");
    let err = LinkReader::attach(&path, pid, 9)
        .err()
        .expect("mode refused");
    assert!(err.to_string().contains("is not 0600"), "{err}");
    fs::set_permissions(&path, Permissions::from_mode(0o600)).expect("chmod");
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len((DATA_OFFSET + 1000) as u64))
        .expect("truncate");
    let err = LinkReader::attach(&path, pid, 9)
        .err()
        .expect("size refused");
    assert!(err.to_string().contains("no link size"), "{err}");
    assert!(matches!(
        LinkReader::attach(&dir.path().join("none"), pid, 9),
        Err(LinkError::Open { .. })
    ));
    assert!(matches!(
        LinkWriter::create(&dir.path().join("x"), 100_000, 1),
        Err(LinkError::Capacity(100_000))
    ));
}

#[test]
fn a_corrupt_head_or_record_is_an_error_never_a_read_outside_the_ring() {
    let (_d, w, mut r) = pair(MIN_CAPACITY);
    w.seg
        .u64(H_HEAD)
        .store(MIN_CAPACITY as u64 * 3, Ordering::Release);
    assert!(matches!(r.next(), Err(LinkError::Corrupt(_))));

    let (_d, w, mut r) = pair(MIN_CAPACITY);
    // A record header claiming more than was published.
    let mut h = [0u8; 8];
    h[0..4].copy_from_slice(&60_000u32.to_le_bytes());
    h[4..8].copy_from_slice(&KIND_BATCH.to_le_bytes());
    w.seg.write(0, &h);
    w.seg.u64(H_HEAD).store(64, Ordering::Release);
    assert!(matches!(r.next(), Err(LinkError::Corrupt(_))));
}

#[test]
fn parse_batch_checks_every_length() {
    assert!(parse_batch(&[]).is_err());
    let mut p = vec![0u8; BATCH_HEADER];
    p[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(parse_batch(&p).is_err(), "a count beyond the payload");
    let mut p = vec![0u8; BATCH_HEADER + 8 + 8];
    p[8..12].copy_from_slice(&1u32.to_le_bytes());
    p[BATCH_HEADER..BATCH_HEADER + 4].copy_from_slice(&9u32.to_le_bytes());
    assert!(parse_batch(&p).is_err(), "an item past the end");
    p[BATCH_HEADER..BATCH_HEADER + 4].copy_from_slice(&8u32.to_le_bytes());
    let b = parse_batch(&p).expect("fits exactly");
    assert_eq!(b.items, vec![BATCH_HEADER + 8..BATCH_HEADER + 16]);
    p[12..16].copy_from_slice(&4u32.to_le_bytes());
    assert!(parse_batch(&p).is_err(), "unknown flags");
}

#[test]
fn abandoned_names_of_dead_creators_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = dir.path().join("daq-p3-link-a-to-b-999999999-0");
    fs::write(&dead, b"").expect("write");
    let live = link_path_in(dir.path(), 3, "a", "b");
    let _w = LinkWriter::create(&live, MIN_CAPACITY, 1).expect("create");
    let other_partition = dir.path().join("daq-p4-link-a-to-b-999999999-0");
    fs::write(&other_partition, b"").expect("write");
    assert_eq!(remove_abandoned_links(dir.path(), 3), 1);
    assert!(!dead.exists() && live.exists() && other_partition.exists());
}

#[test]
fn a_peer_that_stops_beating_is_given_up_and_one_that_beats_is_waited_for() {
    let (_d, w, mut r) = pair(MIN_CAPACITY);
    r.set_hung_after(Duration::from_millis(200));
    let started = Instant::now();
    let err = r.next().err().expect("a silent sender is hung");
    assert!(matches!(err, LinkError::PeerHung("sender", _)), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(200));

    // A sender that beats is waited for past hung_after, until it sends.
    let (_d, mut w2, mut r2) = pair(MIN_CAPACITY);
    r2.set_hung_after(Duration::from_millis(200));
    let beats = w2.waker();
    let (tx, rx) = mpsc::channel::<()>();
    let beater = std::thread::spawn(move || {
        // Beat for at least 3 x hung_after (each recv_timeout is one
        // interval), then send.
        for _ in 0..12 {
            beats.beat();
            let _ = rx.recv_timeout(Duration::from_millis(50));
        }
        w2.send(1, 0, &[item(0, 10)], None).expect("send");
        w2
    });
    let record = r2.next().expect("a beating sender is not hung");
    assert!(record.is_some());
    drop(tx);
    drop(beater.join().expect("beater"));
    drop(w);
}

#[test]
fn a_receiver_that_stops_beating_is_found_while_the_ring_still_has_room() {
    let started = Instant::now();
    let (_d, mut w, _r) = pair(MIN_CAPACITY);
    w.set_hung_after(Duration::from_millis(100));
    let err = loop {
        // One small batch at a time: the ring never fills.
        if let Err(e) = w.send(1, 0, &[item(0, 8)], None) {
            break e;
        }
        let tail = w.seg.u64(H_TAIL).load(Ordering::Acquire);
        w.seg.u64(H_TAIL).store(w.head.max(tail), Ordering::Release);
    };
    assert!(matches!(err, LinkError::PeerHung("receiver", _)), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(100));
}
