//! A link: the data stream of one sender to one receiver on the same host,
//! as a single-producer single-consumer ring of records in a shared
//! segment. The transport (`daq_runtime::transport::shm`) puts the same
//! batches on it that it puts on a gRPC stream.
//!
//! # Life of a segment
//!
//! The sender creates the segment (mode 0600, `O_EXCL`, in the store
//! directory, named per partition), asks the receiver over the
//! authenticated control channel to attach, and unlinks the name as soon as
//! the receiver has mapped it (or refused). From then on the segment is
//! only the two mappings: whatever happens to either process, the kernel
//! frees the memory when the last mapping goes, and nothing is left in
//! `/dev/shm`. A sender killed between create and unlink leaves a name
//! whose pid is dead: [`remove_abandoned_links`] removes those.
//!
//! # Layout (version 1)
//!
//! ```text
//! 0     magic u64, version u32, flags u32, capacity u64, writer pid u32,
//!       reader pid u32, nonce u64
//! 64    head u64 (bytes published, written by the sender), data_seq u32
//!       (futex: bumped after each publish), reader_waiting u32
//! 128   tail u64 (bytes released, written by the receiver), space_seq u32
//!       (futex: bumped after each release), writer_waiting u32
//! 192   writer_state u32, reader_state u32, reply_seq u32 (futex),
//!       pad u32, received u64, announced u64, has_announced u32,
//!       reply_len u32, writer beat u64, reader beat u64
//! 256   reply message, REPLY_MAX bytes (as u64 words)
//! 4096  data: `capacity` bytes, a power of two
//! ```
//!
//! A record is `len u32, kind u32` and `len` bytes of payload, padded to 8
//! bytes, and never wraps: when it does not fit before the end of the data
//! area the sender writes a pad record to the end and starts again at 0.
//! A batch record's payload is `run u32, source u32, count u32, flags u32,
//! end_of_data u64`, `count` item lengths (u32), padding to 8, then the
//! items, each padded to 8.
//!
//! # Wake-ups
//!
//! Nobody spins or polls. A side that finds nothing to do reads the other
//! side's sequence word, says it is waiting, checks again, and sleeps in
//! `futex(FUTEX_WAIT)` on that word; the other side bumps the word after
//! every publish (or release) and calls `FUTEX_WAKE` when someone waits.
//! The death of the other process, or the local end of the link, bumps the
//! words too ([`LinkWaker::peer_gone`], [`Replier::reject`], the writer's
//! drop), so a sleeper always wakes to see it.
//!
//! A process that is alive but hung (stopped, wedged) does not die: each
//! side's runtime bumps its beat word every second ([`LinkWaker::beat`]),
//! and a side that has waited `hung_after` (the gRPC keep-alive's 4 s by
//! default) without the other's beat moving gives the link up as
//! [`LinkError::PeerHung`], as HTTP/2 keep-alive breaks a stream to a hung
//! peer. A peer that is slow but alive keeps beating, so backpressure is
//! never cut. Sleepers therefore wake at most once per `hung_after / 4` to
//! look at the beat: a liveness check, never a poll for data.
//!
//! # Unsafe invariants
//!
//! 1. The mapping is a `memmap2::MmapMut` of exactly `DATA_OFFSET +
//!    capacity` bytes held in an `Arc` by every handle, and the records a
//!    reader hands out keep that `Arc`.
//! 2. Header words are only accessed as atomics at their fixed, aligned
//!    offsets (any bit pattern is valid).
//! 3. Data bytes in `[tail, head)` are written by the sender only before it
//!    publishes them (Release store of `head`) and read by the receiver only
//!    after it loaded that `head` (Acquire); the sender writes only into
//!    `[head, tail + capacity)`, which the receiver has released (Release
//!    store of `tail`, Acquire load by the sender). So no byte is written
//!    while it is read, as long as the other process follows the protocol.
//! 4. A foreign process that breaks the protocol can make the receiver read
//!    torn bytes, never read outside the mapping: every length and offset
//!    read from the segment is checked against the capacity before use
//!    ([`parse_batch`], `LinkReader::next`). It cannot shrink the mapping:
//!    the file is checked to be exactly the expected size at attach, and a
//!    later truncation would fault (SIGBUS); both sides run as the same user.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memmap2::{MmapMut, MmapOptions};

use crate::sys;

pub const LINK_MAGIC: u64 = 0x4b4e_494c_5144_4144; // "DAQLINK" little-endian-ish
pub const LINK_VERSION: u32 = 1;
/// Where the data area starts: one page of header.
pub const DATA_OFFSET: usize = 4096;
/// Bytes of the reply message area.
pub const REPLY_MAX: usize = 1024;
/// Smallest and largest ring.
pub const MIN_CAPACITY: usize = 64 * 1024;
pub const MAX_CAPACITY: usize = 1 << 34;

const RECORD_HEADER: usize = 8;
const BATCH_HEADER: usize = 24;
const KIND_BATCH: u32 = 1;
const KIND_PAD: u32 = 2;
const FLAG_END_OF_DATA: u32 = 1;

// Header offsets.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 8;
const H_CAPACITY: usize = 16;
const H_WRITER_PID: usize = 24;
const H_READER_PID: usize = 28;
const H_NONCE: usize = 32;
const H_HEAD: usize = 64;
const H_DATA_SEQ: usize = 72;
const H_READER_WAITING: usize = 76;
const H_TAIL: usize = 128;
const H_SPACE_SEQ: usize = 136;
const H_WRITER_WAITING: usize = 140;
const H_WRITER_STATE: usize = 192;
const H_READER_STATE: usize = 196;
const H_REPLY_SEQ: usize = 200;
const H_RECEIVED: usize = 208;
const H_ANNOUNCED: usize = 216;
const H_HAS_ANNOUNCED: usize = 224;
const H_REPLY_LEN: usize = 228;
const H_WRITER_BEAT: usize = 232;
const H_READER_BEAT: usize = 240;
const H_REPLY: usize = 256;

const WRITER_OPEN: u32 = 0;
/// Every batch is published; nothing more comes.
const WRITER_FINISHED: u32 = 1;
/// The sender gave the link up (it failed, or its run ended early).
const WRITER_ABANDONED: u32 = 2;

const READER_OPEN: u32 = 0;
/// The receiver wrote its summary (received, announced).
const READER_REPLIED: u32 = 1;
/// The receiver rejected the stream; the reply message says why.
const READER_FAILED: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot create link segment {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot open link segment {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("link segment {} is not a link of this version: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("link capacity {0} is not a power of two between 64 KiB and 16 GiB")]
    Capacity(usize),
    #[error("an item of {len} bytes does not fit a link of {capacity} bytes")]
    TooLarge { len: usize, capacity: usize },
    #[error("the {0} is gone")]
    PeerGone(&'static str),
    #[error("the {0} is not responding (no heartbeat for {1:?})")]
    PeerHung(&'static str, std::time::Duration),
    #[error("the link was closed here")]
    Closed,
    #[error("the receiver rejected the stream: {0}")]
    Rejected(String),
    #[error("the sender abandoned the stream")]
    Abandoned,
    #[error("corrupt link: {0}")]
    Corrupt(String),
}

/// The mapped segment, shared by a side's handles and the records it lent.
struct Segment {
    base: NonNull<u8>,
    capacity: usize,
    _map: MmapMut,
}

// SAFETY: plain memory mapped until the Segment drops; shared words are
// atomics, data follows the ring protocol (module invariants 2, 3).
unsafe impl Send for Segment {}
// SAFETY: as for Send.
unsafe impl Sync for Segment {}

impl Segment {
    fn map(file: &File, capacity: usize) -> io::Result<Self> {
        let len = DATA_OFFSET + capacity;
        // SAFETY: the file is exactly `len` bytes (created so, or checked at
        // attach), shared only through this protocol (invariants 3, 4).
        let mut map = unsafe { MmapOptions::new().len(len).map_mut(file) }?;
        let base = NonNull::new(map.as_mut_ptr()).ok_or_else(|| io::Error::other("null map"))?;
        Ok(Self {
            base,
            capacity,
            _map: map,
        })
    }

    fn u64(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= DATA_OFFSET);
        // SAFETY: a fixed, 8-aligned header offset inside the mapping of a
        // page-aligned base; atomics are valid for any bits (invariant 2).
        unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU64>() }
    }

    fn u32(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= DATA_OFFSET);
        // SAFETY: as for `u64`.
        unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU32>() }
    }

    /// The data bytes `[at, at + len)` of the ring, `at + len <= capacity`.
    fn data(&self, at: usize, len: usize) -> *mut u8 {
        assert!(at <= self.capacity && len <= self.capacity - at);
        // SAFETY: checked to lie inside the data area of the mapping.
        unsafe { self.base.as_ptr().add(DATA_OFFSET + at) }
    }

    fn write(&self, at: usize, bytes: &[u8]) {
        let dst = self.data(at, bytes.len());
        // SAFETY: inside the data area (checked by `data`); the sender owns
        // this free space until it publishes it (invariant 3).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) }
    }

    /// The free bytes `[at, at + len)` for the sender to fill in place.
    ///
    /// # Safety
    /// Only the sender may call this, on space it reserved and has not
    /// published (invariant 3), and no two slices it holds at once may
    /// overlap; the slice must be dropped before `publish`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice_mut(&self, at: usize, len: usize) -> &mut [u8] {
        let dst = self.data(at, len);
        // SAFETY: inside the data area (checked by `data`); exclusive by
        // the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(dst, len) }
    }

    fn slice(&self, at: usize, len: usize) -> &[u8] {
        let src = self.data(at, len);
        // SAFETY: inside the data area (checked by `data`), published and
        // not yet released, so the sender does not write it (invariant 3);
        // the slice lives no longer than `self`.
        unsafe { std::slice::from_raw_parts(src, len) }
    }

    fn wait(&self, seq_off: usize, waiting_off: usize, seen: u32, timeout: Duration) {
        let waiting = self.u32(waiting_off);
        waiting.fetch_add(1, Ordering::SeqCst);
        sys::futex_wait(self.u32(seq_off), seen, Some(timeout));
        waiting.fetch_sub(1, Ordering::SeqCst);
    }

    fn bump(&self, seq_off: usize, waiting_off: usize) {
        self.u32(seq_off).fetch_add(1, Ordering::SeqCst);
        if self.u32(waiting_off).load(Ordering::SeqCst) != 0 {
            sys::futex_wake(self.u32(seq_off));
        }
    }

    fn bump_all(&self) {
        self.bump(H_DATA_SEQ, H_READER_WAITING);
        self.bump(H_SPACE_SEQ, H_WRITER_WAITING);
        self.u32(H_REPLY_SEQ).fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(self.u32(H_REPLY_SEQ));
    }
}

/// The other side's beat, as a waiting side follows it: `Err` once it has
/// not moved for `hung_after`.
struct Liveness {
    beat_off: usize,
    side: &'static str,
    hung_after: Duration,
    last: u64,
    since: Instant,
}

impl Liveness {
    fn new(seg: &Segment, beat_off: usize, side: &'static str, hung_after: Duration) -> Self {
        Self {
            beat_off,
            side,
            hung_after,
            last: seg.u64(beat_off).load(Ordering::Relaxed),
            since: Instant::now(),
        }
    }

    /// How long one sleep may last before the beat is looked at again.
    fn slice(&self) -> Duration {
        (self.hung_after / 4).max(Duration::from_millis(10))
    }

    fn check(&mut self, seg: &Segment) -> Result<(), LinkError> {
        let beat = seg.u64(self.beat_off).load(Ordering::Relaxed);
        if beat != self.last {
            self.last = beat;
            self.since = Instant::now();
            return Ok(());
        }
        if self.since.elapsed() >= self.hung_after {
            return Err(LinkError::PeerHung(self.side, self.hung_after));
        }
        Ok(())
    }
}

/// How long a side waits on a peer whose beat does not move (the gRPC
/// keep-alive's timeout).
pub const DEFAULT_HUNG_AFTER: Duration = Duration::from_secs(4);

fn pad8(n: usize) -> usize {
    n.next_multiple_of(8)
}

/// The largest payload one record may carry on a ring of `capacity`.
pub fn max_payload(capacity: usize) -> usize {
    capacity / 2 - RECORD_HEADER
}

/// Bytes of the batch record payload for items of these lengths.
fn batch_payload_len(lens: impl Iterator<Item = usize> + Clone) -> usize {
    let n = lens.clone().count();
    BATCH_HEADER + pad8(4 * n) + lens.map(pad8).sum::<usize>()
}

/// The name of a link segment: per partition, sender and receiver, with
/// the creating pid, so that [`remove_abandoned_links`] can tell a dead
/// creator's.
pub fn link_path_in(dir: &Path, partition: u32, sender: &str, receiver: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    dir.join(format!(
        "daq-p{partition}-link-{}-to-{}-{}-{}",
        clean(sender),
        clean(receiver),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Removes the link segments of `partition` in `dir` whose creator is dead
/// (it died between creating and unlinking one). Returns how many.
pub fn remove_abandoned_links(dir: &Path, partition: u32) -> usize {
    let prefix = format!("daq-p{partition}-link-");
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(&prefix) {
            continue;
        }
        // ...-<pid>-<counter>
        let mut parts = name.rsplit('-');
        let (_counter, pid) = (parts.next(), parts.next());
        let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !sys::pid_alive(pid) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The sending side of a link.
pub struct LinkWriter {
    seg: Arc<Segment>,
    path: Option<PathBuf>,
    /// Bytes written so far (this side's copy of `head`).
    head: u64,
    hung_after: Duration,
    /// The receiver's beat, checked at every batch as well as in every
    /// wait: a hung receiver is found while the ring still has room, as
    /// HTTP/2 keep-alive breaks a stream that is still being written.
    alive: Liveness,
}

impl std::fmt::Debug for LinkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkWriter")
            .field("path", &self.path)
            .field("capacity", &self.seg.capacity)
            .finish_non_exhaustive()
    }
}

impl LinkWriter {
    /// Creates the segment at `path` (mode 0600, exclusive): `capacity`
    /// data bytes, a power of two. `nonce` is what the receiver checks.
    pub fn create(path: &Path, capacity: usize, nonce: u64) -> Result<Self, LinkError> {
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(LinkError::Capacity(capacity));
        }
        let err = |source| LinkError::Create {
            path: path.to_path_buf(),
            source,
        };
        let file = sys::create_private(path).map_err(err)?;
        let writer = (|| {
            file.set_len((DATA_OFFSET + capacity) as u64)?;
            Segment::map(&file, capacity)
        })();
        let seg = match writer {
            Ok(seg) => seg,
            Err(e) => {
                let _ = fs::remove_file(path);
                return Err(err(e));
            }
        };
        seg.u64(H_CAPACITY)
            .store(capacity as u64, Ordering::Relaxed);
        seg.u32(H_WRITER_PID)
            .store(std::process::id(), Ordering::Relaxed);
        seg.u64(H_NONCE).store(nonce, Ordering::Relaxed);
        seg.u32(H_VERSION).store(LINK_VERSION, Ordering::Relaxed);
        // Release: a reader that sees the magic sees the rest.
        seg.u64(H_MAGIC).store(LINK_MAGIC, Ordering::Release);
        let alive = Liveness::new(&seg, H_READER_BEAT, "receiver", DEFAULT_HUNG_AFTER);
        Ok(Self {
            seg: Arc::new(seg),
            path: Some(path.to_path_buf()),
            head: 0,
            hung_after: DEFAULT_HUNG_AFTER,
            alive,
        })
    }

    /// Removes the segment's name (once the receiver mapped it, or refused).
    pub fn unlink(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_file(p);
        }
    }

    pub fn capacity(&self) -> usize {
        self.seg.capacity
    }

    /// How long to wait on a receiver whose beat does not move.
    pub fn set_hung_after(&mut self, d: Duration) {
        self.hung_after = d;
        self.alive.hung_after = d;
    }

    /// The receiver's pid, as it wrote it at attach.
    pub fn reader_pid(&self) -> u32 {
        self.seg.u32(H_READER_PID).load(Ordering::Acquire)
    }

    /// A waker for another thread: the receiver died, or the link must
    /// end now.
    pub fn waker(&self) -> LinkWaker {
        LinkWaker {
            seg: self.seg.clone(),
            gone: "receiver",
        }
    }

    fn reader_state(&self) -> u32 {
        self.seg.u32(H_READER_STATE).load(Ordering::Acquire)
    }

    fn check_reader(&self) -> Result<(), LinkError> {
        match self.reader_state() {
            READER_OPEN | READER_REPLIED => {}
            READER_FAILED => return Err(LinkError::Rejected(self.reply_message())),
            _ => return Err(LinkError::PeerGone("receiver")),
        }
        if self.seg.u32(H_WRITER_STATE).load(Ordering::Acquire) != WRITER_OPEN {
            return Err(LinkError::Closed);
        }
        Ok(())
    }

    /// Waits until `need` contiguous bytes are free at the write position
    /// (writing a pad record to wrap if needed); returns the position.
    fn reserve(&mut self, need: usize) -> Result<usize, LinkError> {
        let cap = self.seg.capacity;
        loop {
            self.check_reader()?;
            self.alive.check(&self.seg)?;
            let seen = self.seg.u32(H_SPACE_SEQ).load(Ordering::SeqCst);
            let tail = self.seg.u64(H_TAIL).load(Ordering::Acquire);
            let used = self.head.wrapping_sub(tail) as usize;
            if used > cap {
                return Err(LinkError::Corrupt(format!(
                    "tail {tail} is ahead of head {}",
                    self.head
                )));
            }
            let at = (self.head % cap as u64) as usize;
            let to_end = cap - at;
            let free = cap - used;
            if to_end < need {
                // Pad to the end, then start again at 0.
                if free >= to_end {
                    self.seg.write(at, &pad_header(to_end));
                    self.publish(to_end);
                    continue;
                }
            } else if free >= need {
                return Ok(at);
            }
            self.seg
                .wait(H_SPACE_SEQ, H_WRITER_WAITING, seen, self.alive.slice());
        }
    }

    fn publish(&mut self, len: usize) {
        self.head += len as u64;
        self.seg.u64(H_HEAD).store(self.head, Ordering::Release);
        self.seg.bump(H_DATA_SEQ, H_READER_WAITING);
    }

    /// Puts a batch of items on the link, waiting while the ring is full.
    /// A batch too big for one record goes as several (each a batch of the
    /// same run and source; `end_of_data` on the last).
    pub fn send<B: AsRef<[u8]>>(
        &mut self,
        run: u32,
        source: u32,
        items: &[B],
        end_of_data: Option<u64>,
    ) -> Result<(), LinkError> {
        self.send_with(
            run,
            source,
            items,
            |b| b.as_ref().len(),
            |b, dst| dst.copy_from_slice(b.as_ref()),
            end_of_data,
        )
    }

    /// [`send`](Self::send) for items that write themselves: each item's
    /// `len` bytes are reserved in the ring and `write` fills them in
    /// place, so an item made there (generated, or gathered from a store)
    /// is never copied into a buffer of its own first. `write` gets a slice
    /// of exactly `len(item)` bytes and must fill all of it (what it leaves
    /// holds older data of the ring).
    pub fn send_with<T>(
        &mut self,
        run: u32,
        source: u32,
        items: &[T],
        len: impl Fn(&T) -> usize,
        mut write: impl FnMut(&T, &mut [u8]),
        end_of_data: Option<u64>,
    ) -> Result<(), LinkError> {
        let max = max_payload(self.seg.capacity);
        let mut rest = items;
        loop {
            // As many items as fit one record.
            let mut n = 0;
            let mut bytes = BATCH_HEADER;
            for item in rest {
                let add = 4 + 8 + pad8(len(item));
                if bytes + add > max {
                    break;
                }
                bytes += add;
                n += 1;
            }
            if let (0, Some(first)) = (n, rest.first()) {
                return Err(LinkError::TooLarge {
                    len: len(first),
                    capacity: self.seg.capacity,
                });
            }
            let (chunk, after) = rest.split_at(n);
            let last = after.is_empty();
            let eod = if last { end_of_data } else { None };
            self.write_batch(run, source, chunk, &len, &mut write, eod)?;
            if last {
                return Ok(());
            }
            rest = after;
        }
    }

    fn write_batch<T>(
        &mut self,
        run: u32,
        source: u32,
        items: &[T],
        len: &impl Fn(&T) -> usize,
        write: &mut impl FnMut(&T, &mut [u8]),
        end_of_data: Option<u64>,
    ) -> Result<(), LinkError> {
        let payload = batch_payload_len(items.iter().map(len));
        let at = self.reserve(RECORD_HEADER + payload)?;
        let mut head = [0u8; RECORD_HEADER + BATCH_HEADER];
        head[0..4].copy_from_slice(&(payload as u32).to_le_bytes());
        head[4..8].copy_from_slice(&KIND_BATCH.to_le_bytes());
        head[8..12].copy_from_slice(&run.to_le_bytes());
        head[12..16].copy_from_slice(&source.to_le_bytes());
        head[16..20].copy_from_slice(&(items.len() as u32).to_le_bytes());
        let flags = if end_of_data.is_some() {
            FLAG_END_OF_DATA
        } else {
            0
        };
        head[20..24].copy_from_slice(&flags.to_le_bytes());
        head[24..32].copy_from_slice(&end_of_data.unwrap_or(0).to_le_bytes());
        self.seg.write(at, &head);
        let mut pos = at + head.len();
        for item in items {
            self.seg.write(pos, &(len(item) as u32).to_le_bytes());
            pos += 4;
        }
        pos = at + RECORD_HEADER + BATCH_HEADER + pad8(4 * items.len());
        for item in items {
            let n = len(item);
            // SAFETY: the sender (`&mut self`), inside the space `reserve`
            // gave and not yet published; `pos` moves past each item, so
            // no two slices overlap, and each is gone before `publish`.
            let dst = unsafe { self.seg.slice_mut(pos, n) };
            write(item, dst);
            pos += pad8(n);
        }
        self.publish(RECORD_HEADER + payload);
        Ok(())
    }

    /// Every batch is on the link: the receiver ends the stream once it
    /// has read them.
    pub fn finish(&mut self) {
        self.seg
            .u32(H_WRITER_STATE)
            .store(WRITER_FINISHED, Ordering::Release);
        self.seg.bump(H_DATA_SEQ, H_READER_WAITING);
    }

    /// The receiver's summary once it has ended the stream: `(received,
    /// announced)`, or why it rejected the stream or is gone.
    pub fn wait_reply(&self) -> Result<(u64, Option<u64>), LinkError> {
        let mut alive = Liveness::new(&self.seg, H_READER_BEAT, "receiver", self.hung_after);
        loop {
            let seen = self.seg.u32(H_REPLY_SEQ).load(Ordering::SeqCst);
            match self.reader_state() {
                READER_REPLIED => {
                    let received = self.seg.u64(H_RECEIVED).load(Ordering::Acquire);
                    let announced = (self.seg.u32(H_HAS_ANNOUNCED).load(Ordering::Acquire) != 0)
                        .then(|| self.seg.u64(H_ANNOUNCED).load(Ordering::Acquire));
                    return Ok((received, announced));
                }
                READER_FAILED => return Err(LinkError::Rejected(self.reply_message())),
                READER_OPEN => {}
                _ => return Err(LinkError::PeerGone("receiver")),
            }
            sys::futex_wait(self.seg.u32(H_REPLY_SEQ), seen, Some(alive.slice()));
            alive.check(&self.seg)?;
        }
    }

    fn reply_message(&self) -> String {
        let len = (self.seg.u32(H_REPLY_LEN).load(Ordering::Acquire) as usize).min(REPLY_MAX);
        let mut bytes = Vec::with_capacity(len);
        for w in 0..len.div_ceil(8) {
            let word = self.seg.u64(H_REPLY + 8 * w).load(Ordering::Relaxed);
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.truncate(len);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for LinkWriter {
    fn drop(&mut self) {
        self.unlink();
        let state = self.seg.u32(H_WRITER_STATE);
        let _ = state.compare_exchange(
            WRITER_OPEN,
            WRITER_ABANDONED,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        self.seg.bump_all();
    }
}

fn pad_header(len: usize) -> [u8; RECORD_HEADER] {
    let mut h = [0u8; RECORD_HEADER];
    h[0..4].copy_from_slice(&((len - RECORD_HEADER) as u32).to_le_bytes());
    h[4..8].copy_from_slice(&KIND_PAD.to_le_bytes());
    h
}

/// Wakes a side's sleeper from another thread: the other process is gone
/// (its pidfd said so), or this side is ending the link.
#[derive(Clone)]
pub struct LinkWaker {
    seg: Arc<Segment>,
    gone: &'static str,
}

impl LinkWaker {
    /// This side is alive: its runtime calls this every second.
    pub fn beat(&self) {
        let off = if self.gone == "receiver" {
            H_WRITER_BEAT
        } else {
            H_READER_BEAT
        };
        self.seg.u64(off).fetch_add(1, Ordering::Relaxed);
    }

    /// The other process died: record it in the segment (it cannot any
    /// more) and wake whoever waits here.
    pub fn peer_gone(&self) {
        let off = if self.gone == "receiver" {
            H_READER_STATE
        } else {
            H_WRITER_STATE
        };
        let state = self.seg.u32(off);
        let _ = state.compare_exchange(
            if self.gone == "receiver" {
                READER_OPEN
            } else {
                WRITER_OPEN
            },
            u32::MAX,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        self.seg.bump_all();
    }
}

/// One batch read from a link: its run, source, end-of-data count and the
/// byte ranges of its items in the payload.
#[derive(Debug, PartialEq, Eq)]
pub struct BatchView {
    pub run: u32,
    pub source: u32,
    pub end_of_data: Option<u64>,
    pub items: Vec<Range<usize>>,
}

/// Parses a batch record's payload, checking every length against it.
pub fn parse_batch(payload: &[u8]) -> Result<BatchView, LinkError> {
    let corrupt = |why: String| LinkError::Corrupt(why);
    let word = |at: usize| -> Result<u32, LinkError> {
        payload
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| corrupt(format!("batch of {} bytes is truncated", payload.len())))
    };
    let run = word(0)?;
    let source = word(4)?;
    let count = word(8)? as usize;
    let flags = word(12)?;
    let eod = payload
        .get(16..24)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| corrupt("batch header truncated".into()))?;
    if flags & !FLAG_END_OF_DATA != 0 {
        return Err(corrupt(format!("unknown batch flags {flags:#x}")));
    }
    let lens_end = count
        .checked_mul(4)
        .map(pad8)
        .and_then(|l| l.checked_add(BATCH_HEADER))
        .filter(|&e| e <= payload.len())
        .ok_or_else(|| {
            corrupt(format!(
                "{count} items do not fit a batch of {} bytes",
                payload.len()
            ))
        })?;
    let mut items = Vec::with_capacity(count);
    let mut pos = lens_end;
    for i in 0..count {
        let len = word(BATCH_HEADER + 4 * i)? as usize;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= payload.len())
            .ok_or_else(|| {
                corrupt(format!(
                    "item {i} of {len} bytes runs past the batch of {} bytes",
                    payload.len()
                ))
            })?;
        items.push(pos..end);
        pos = pad8(end).min(payload.len());
    }
    Ok(BatchView {
        run,
        source,
        end_of_data: (flags & FLAG_END_OF_DATA != 0).then_some(eod),
        items,
    })
}

/// Releases of records lent out, in ring order: the tail advances over the
/// released prefix.
struct Releases {
    /// (start, end, released) of each record read and not yet passed by
    /// the tail.
    lent: VecDeque<(u64, u64, bool)>,
}

struct ReaderShared {
    seg: Arc<Segment>,
    releases: Mutex<Releases>,
}

impl ReaderShared {
    fn release(&self, start: u64) {
        let mut r = self.releases.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = r.lent.iter_mut().find(|e| e.0 == start) {
            e.2 = true;
        }
        let mut tail = None;
        while let Some(&(_, end, true)) = r.lent.front() {
            tail = Some(end);
            r.lent.pop_front();
        }
        drop(r);
        if let Some(t) = tail {
            self.seg.u64(H_TAIL).store(t, Ordering::Release);
            self.seg.bump(H_SPACE_SEQ, H_WRITER_WAITING);
        }
    }
}

/// A record's payload, lent from the ring until dropped (then its space is
/// released, in ring order).
pub struct Record {
    shared: Arc<ReaderShared>,
    start: u64,
    at: usize,
    len: usize,
}

impl AsRef<[u8]> for Record {
    fn as_ref(&self) -> &[u8] {
        self.shared.seg.slice(self.at, self.len)
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.shared.release(self.start);
    }
}

/// The receiving side of a link.
pub struct LinkReader {
    shared: Arc<ReaderShared>,
    /// Where the next record starts.
    pos: u64,
    hung_after: Duration,
}

impl LinkReader {
    /// Maps the segment at `path`, checking that it is a link of this
    /// version, of the size its header says, mode 0600 and owned by this
    /// user, created by `writer_pid` with `nonce`; records this pid as the
    /// reader's.
    pub fn attach(path: &Path, writer_pid: u32, nonce: u64) -> Result<Self, LinkError> {
        let invalid = |reason: String| LinkError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| LinkError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| LinkError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.mode() & 0o077 != 0 {
            return Err(invalid(format!(
                "mode {:o} is not 0600",
                meta.mode() & 0o777
            )));
        }
        if meta.uid() != sys::euid() {
            return Err(invalid(format!(
                "owned by uid {}, this process runs as {}",
                meta.uid(),
                sys::euid()
            )));
        }
        let size = usize::try_from(meta.len()).map_err(|_| invalid("too large".into()))?;
        let capacity = size
            .checked_sub(DATA_OFFSET)
            .filter(|c| c.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(c))
            .ok_or_else(|| invalid(format!("{size} bytes is no link size")))?;
        let seg = Segment::map(&file, capacity).map_err(|source| LinkError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let magic = seg.u64(H_MAGIC).load(Ordering::Acquire);
        if magic != LINK_MAGIC {
            return Err(invalid(format!("magic {magic:#x}")));
        }
        let version = seg.u32(H_VERSION).load(Ordering::Relaxed);
        if version != LINK_VERSION {
            return Err(invalid(format!(
                "version {version}, expected {LINK_VERSION}"
            )));
        }
        let cap = seg.u64(H_CAPACITY).load(Ordering::Relaxed);
        if cap != capacity as u64 {
            return Err(invalid(format!(
                "header says {cap} bytes, the file holds {capacity}"
            )));
        }
        let (pid, n) = (
            seg.u32(H_WRITER_PID).load(Ordering::Relaxed),
            seg.u64(H_NONCE).load(Ordering::Relaxed),
        );
        if pid != writer_pid || n != nonce {
            return Err(invalid(format!(
                "created by pid {pid} with another nonce, not by {writer_pid}"
            )));
        }
        if seg.u64(H_HEAD).load(Ordering::Acquire) != 0
            || seg.u64(H_TAIL).load(Ordering::Acquire) != 0
        {
            return Err(invalid("already in use".into()));
        }
        seg.u32(H_READER_PID)
            .store(std::process::id(), Ordering::Release);
        Ok(Self {
            shared: Arc::new(ReaderShared {
                seg: Arc::new(seg),
                releases: Mutex::new(Releases {
                    lent: VecDeque::new(),
                }),
            }),
            pos: 0,
            hung_after: DEFAULT_HUNG_AFTER,
        })
    }

    /// How long to wait on a sender whose beat does not move.
    pub fn set_hung_after(&mut self, d: Duration) {
        self.hung_after = d;
    }

    /// A waker for another thread: the sender died, or this side ends.
    pub fn waker(&self) -> LinkWaker {
        LinkWaker {
            seg: self.shared.seg.clone(),
            gone: "sender",
        }
    }

    /// The next batch record, waiting for one. `Ok(None)` once the sender
    /// finished and every record is read; an error when the sender is gone
    /// or abandoned the stream, the link was closed here, or a record is
    /// corrupt.
    #[allow(clippy::should_implement_trait)] // fallible and blocking: not an Iterator
    pub fn next(&mut self) -> Result<Option<Record>, LinkError> {
        let seg = &self.shared.seg;
        let cap = seg.capacity;
        let mut alive = Liveness::new(seg, H_WRITER_BEAT, "sender", self.hung_after);
        loop {
            if seg.u32(H_READER_STATE).load(Ordering::Acquire) != READER_OPEN {
                return Err(LinkError::Closed);
            }
            let seen = seg.u32(H_DATA_SEQ).load(Ordering::SeqCst);
            let state = seg.u32(H_WRITER_STATE).load(Ordering::Acquire);
            let head = seg.u64(H_HEAD).load(Ordering::Acquire);
            let avail = head.wrapping_sub(self.pos);
            if avail > cap as u64 {
                return Err(LinkError::Corrupt(format!(
                    "head {head} is more than the ring ahead of {}",
                    self.pos
                )));
            }
            if avail == 0 {
                match state {
                    WRITER_OPEN => {
                        seg.wait(H_DATA_SEQ, H_READER_WAITING, seen, alive.slice());
                        alive.check(seg)?;
                        continue;
                    }
                    WRITER_FINISHED => return Ok(None),
                    WRITER_ABANDONED => return Err(LinkError::Abandoned),
                    _ => return Err(LinkError::PeerGone("sender")),
                }
            }
            let avail = avail as usize;
            let at = (self.pos % cap as u64) as usize;
            if avail < RECORD_HEADER || cap - at < RECORD_HEADER {
                return Err(LinkError::Corrupt(format!(
                    "{avail} bytes at {at} are no record"
                )));
            }
            let mut h = [0u8; RECORD_HEADER];
            h.copy_from_slice(seg.slice(at, RECORD_HEADER));
            let [l0, l1, l2, l3, k0, k1, k2, k3] = h;
            let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
            let kind = u32::from_le_bytes([k0, k1, k2, k3]);
            let total = RECORD_HEADER + pad8(len);
            if total > avail || total > cap - at {
                return Err(LinkError::Corrupt(format!(
                    "record of {len} bytes at {at} runs past what was published ({avail}) or the ring"
                )));
            }
            let start = self.pos;
            self.pos += total as u64;
            {
                let mut r = self
                    .shared
                    .releases
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                r.lent.push_back((start, self.pos, kind == KIND_PAD));
            }
            match kind {
                KIND_PAD => {
                    self.shared.release(start);
                    continue;
                }
                KIND_BATCH => {
                    return Ok(Some(Record {
                        shared: self.shared.clone(),
                        start,
                        at: at + RECORD_HEADER,
                        len,
                    }));
                }
                other => {
                    self.shared.release(start);
                    return Err(LinkError::Corrupt(format!("record kind {other}")));
                }
            }
        }
    }

    /// Ends the stream with the summary the sender checks.
    pub fn reply(&self, received: u64, announced: Option<u64>) {
        self.replier().reply(received, announced);
    }

    /// Rejects the stream: the sender's next write, or its wait for the
    /// summary, fails with `why`; a `next` waiting here returns.
    pub fn reject(&self, why: &str) {
        self.replier().reject(why);
    }

    /// The reply side, for another thread than the one that reads.
    pub fn replier(&self) -> Replier {
        Replier {
            shared: self.shared.clone(),
        }
    }
}

/// The receiver's answer on a link, given from any thread: the summary at
/// the stream's end, or a rejection (which also wakes the reading thread).
#[derive(Clone)]
pub struct Replier {
    shared: Arc<ReaderShared>,
}

impl Replier {
    /// Ends the stream with the summary the sender checks.
    pub fn reply(&self, received: u64, announced: Option<u64>) {
        let seg = &self.shared.seg;
        seg.u64(H_RECEIVED).store(received, Ordering::Relaxed);
        seg.u64(H_ANNOUNCED)
            .store(announced.unwrap_or(0), Ordering::Relaxed);
        seg.u32(H_HAS_ANNOUNCED)
            .store(u32::from(announced.is_some()), Ordering::Relaxed);
        self.set_state(READER_REPLIED);
    }

    /// Rejects the stream: the sender's next write, or its wait for the
    /// summary, fails with `why`.
    pub fn reject(&self, why: &str) {
        let seg = &self.shared.seg;
        let bytes = why.as_bytes().get(..REPLY_MAX).unwrap_or(why.as_bytes());
        let len = bytes.len();
        for (w, chunk) in bytes.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            for (d, s) in word.iter_mut().zip(chunk) {
                *d = *s;
            }
            seg.u64(H_REPLY + 8 * w)
                .store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        seg.u32(H_REPLY_LEN).store(len as u32, Ordering::Relaxed);
        self.set_state(READER_FAILED);
    }

    fn set_state(&self, state: u32) {
        let seg = &self.shared.seg;
        let _ = seg.u32(H_READER_STATE).compare_exchange(
            READER_OPEN,
            state,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        seg.bump_all();
    }
}

/// Turns a record into the batch it carries, checked.
pub fn batch_of(record: &Record) -> Result<BatchView, LinkError> {
    parse_batch(record.as_ref())
}

#[cfg(test)]
mod tests;
