//! Event serialization between eventbuilders and aggregators: the
//! NetMonOutput (encode) and NetMonInput (decode) sides.
//!
//! An event travels as one self-describing binary record (little endian):
//! ```text
//! magic "DAQE" | version u16 = 1 | flags u16 (bit 0: complete)
//! run u32 | subrun u32 | event u64 | sequence_id u64 | timestamp u64
//! history: count u16, then per entry: process, release, parameter_set_id
//!   (each: length u16, UTF-8 bytes), time_ns u64
//! missing fragment ids: count u16, then u16 each
//! fragments: count u32, then each artdaq fragment back to back (its word_count gives its length)
//! ```
//! [`decode`] owns everything it deserializes: the history is a plain value
//! inside the returned [`Event`], and fragments are slices of the received
//! buffer (no copy). Nothing is allocated that the event does not own.

use crate::fragment::{Fragment, FragmentError};
use bytes::{BufMut, Bytes, BytesMut};

const MAGIC: &[u8; 4] = b"DAQE";
pub const FORMAT_VERSION: u16 = 1;

/// Run, subrun and event auxiliaries of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventAux {
    pub run: u32,
    pub subrun: u32,
    pub event: u64,
    pub sequence_id: u64,
    pub timestamp: u64,
    pub complete: bool,
}

/// One process an event passed through (art's ProcessConfiguration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub process: String,
    /// Software release that handled the event.
    pub release: String,
    /// Digest of the configuration the process ran with.
    pub parameter_set_id: String,
    /// Wall-clock time (ns since the Unix epoch) when the process handled the event.
    pub time_ns: u64,
}

/// The processes an event passed through, in order (art's History).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub entries: Vec<HistoryEntry>,
}

/// A built event: auxiliaries, history, fragments and (if incomplete) the
/// fragment ids that never arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub aux: EventAux,
    pub history: History,
    pub missing: Vec<u16>,
    pub fragments: Vec<Fragment>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetMonError {
    #[error("serialized event truncated in {field}: {needed} bytes needed, {left} left")]
    Truncated {
        field: &'static str,
        needed: usize,
        left: usize,
    },
    #[error("serialized event has bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    #[error("serialized event format version {0} is not supported (expected {FORMAT_VERSION})")]
    UnsupportedVersion(u16),
    #[error("history entry {index}: {field} is not UTF-8")]
    BadHistoryString { index: usize, field: &'static str },
    #[error("fragment {index} of the event is malformed: {source}")]
    Fragment { index: usize, source: FragmentError },
    #[error("serialized event has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("event has too many {what}: {count}")]
    TooMany { what: &'static str, count: usize },
}

impl Event {
    /// Serialized size in bytes.
    pub fn encoded_len(&self) -> usize {
        head_len(&self.history, &self.missing) + self.fragment_bytes()
    }

    /// Payload bytes of all fragments (header, metadata and payload).
    pub fn fragment_bytes(&self) -> usize {
        self.fragments.iter().map(Fragment::len).sum()
    }
}

/// NetMonOutput: serializes an event into one buffer.
pub fn encode(event: &Event) -> Result<Bytes, NetMonError> {
    encode_gathered(
        &event.aux,
        &event.history,
        &event.missing,
        event.fragments.iter().map(|f| f.bytes().as_ref()),
    )
}

/// NetMonOutput by gathering: serializes an event whose fragments are
/// byte slices wherever they are (straight from a shared-memory buffer, in
/// the order given), copying each byte once into the one buffer. The same
/// bytes as [`encode`] of the same event.
pub fn encode_gathered<'a, I>(
    aux: &EventAux,
    history: &History,
    missing: &[u16],
    fragments: I,
) -> Result<Bytes, NetMonError>
where
    I: Iterator<Item = &'a [u8]> + Clone,
{
    let (n, fragment_bytes) = fragments
        .clone()
        .fold((0usize, 0usize), |(n, b), f| (n + 1, b + f.len()));
    let mut b = encode_head(aux, history, missing, n, fragment_bytes)?;
    for f in fragments {
        b.put_slice(f);
    }
    Ok(b.freeze())
}

/// The serialized event up to its fragments, for `n` fragments: what
/// [`encode_gathered`] writes before them. The serialized event is this,
/// then the fragments back to back, so a sender can gather those wherever
/// it writes the event (a shared-memory link's ring). The buffer has room
/// for `fragment_bytes` more.
pub fn encode_head(
    aux: &EventAux,
    history: &History,
    missing: &[u16],
    n: usize,
    fragment_bytes: usize,
) -> Result<BytesMut, NetMonError> {
    fn count16(what: &'static str, n: usize) -> Result<u16, NetMonError> {
        u16::try_from(n).map_err(|_| NetMonError::TooMany { what, count: n })
    }
    let mut b = BytesMut::with_capacity(head_len(history, missing) + fragment_bytes);
    b.put_slice(MAGIC);
    b.put_u16_le(FORMAT_VERSION);
    b.put_u16_le(u16::from(aux.complete));
    b.put_u32_le(aux.run);
    b.put_u32_le(aux.subrun);
    b.put_u64_le(aux.event);
    b.put_u64_le(aux.sequence_id);
    b.put_u64_le(aux.timestamp);
    b.put_u16_le(count16("history entries", history.entries.len())?);
    for h in &history.entries {
        for s in [&h.process, &h.release, &h.parameter_set_id] {
            b.put_u16_le(count16("bytes in a history string", s.len())?);
            b.put_slice(s.as_bytes());
        }
        b.put_u64_le(h.time_ns);
    }
    b.put_u16_le(count16("missing fragments", missing.len())?);
    for m in missing {
        b.put_u16_le(*m);
    }
    let n = u32::try_from(n).map_err(|_| NetMonError::TooMany {
        what: "fragments",
        count: n,
    })?;
    b.put_u32_le(n);
    Ok(b)
}

/// Serialized bytes before the fragments.
fn head_len(history: &History, missing: &[u16]) -> usize {
    4 + 2
        + 2
        + 4
        + 4
        + 8
        + 8
        + 8
        + 2
        + history
            .entries
            .iter()
            .map(|h| 6 + h.process.len() + h.release.len() + h.parameter_set_id.len() + 8)
            .sum::<usize>()
        + 2
        + 2 * missing.len()
        + 4
}

/// A cursor over a serialized event that names the field it fails in.
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0 }
    }
    fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, NetMonError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(NetMonError::Truncated {
                field,
                needed: n,
                left,
            });
        }
        let s = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], NetMonError> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&s);
        Ok(a)
    }
    fn u16(&mut self, f: &'static str) -> Result<u16, NetMonError> {
        Ok(u16::from_le_bytes(self.array(f)?))
    }
    fn u32(&mut self, f: &'static str) -> Result<u32, NetMonError> {
        Ok(u32::from_le_bytes(self.array(f)?))
    }
    fn u64(&mut self, f: &'static str) -> Result<u64, NetMonError> {
        Ok(u64::from_le_bytes(self.array(f)?))
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Reads the fixed header and auxiliaries.
pub(crate) fn decode_aux(r: &mut Reader) -> Result<EventAux, NetMonError> {
    let magic: [u8; 4] = r.array("magic")?;
    if &magic != MAGIC {
        return Err(NetMonError::BadMagic(magic));
    }
    let version = r.u16("version")?;
    if version != FORMAT_VERSION {
        return Err(NetMonError::UnsupportedVersion(version));
    }
    let flags = r.u16("flags")?;
    Ok(EventAux {
        complete: flags & 1 != 0,
        run: r.u32("run")?,
        subrun: r.u32("subrun")?,
        event: r.u64("event")?,
        sequence_id: r.u64("sequence_id")?,
        timestamp: r.u64("timestamp")?,
    })
}

/// Reads the history record.
pub(crate) fn decode_history(r: &mut Reader) -> Result<History, NetMonError> {
    let n = r.u16("history count")? as usize;
    // Never trust a count for an allocation: an entry takes at least 14 bytes.
    let mut entries = Vec::with_capacity(n.min(r.remaining() / 14));
    for index in 0..n {
        let mut string = |field| -> Result<String, NetMonError> {
            let len = r.u16(field)? as usize;
            let raw = r.take(len, field)?;
            std::str::from_utf8(&raw)
                .map(str::to_owned)
                .map_err(|_| NetMonError::BadHistoryString { index, field })
        };
        let process = string("history process")?;
        let release = string("history release")?;
        let parameter_set_id = string("history parameter set id")?;
        let time_ns = r.u64("history time")?;
        entries.push(HistoryEntry {
            process,
            release,
            parameter_set_id,
            time_ns,
        });
    }
    Ok(History { entries })
}

/// Reads the missing ids and the fragments after the history.
pub(crate) fn decode_rest(
    r: &mut Reader,
    aux: EventAux,
    history: History,
) -> Result<Event, NetMonError> {
    let n_missing = r.u16("missing count")? as usize;
    let mut missing = Vec::with_capacity(n_missing.min(r.remaining() / 2));
    for _ in 0..n_missing {
        missing.push(r.u16("missing fragment id")?);
    }
    let n = r.u32("fragment count")? as usize;
    // Never trust a count for an allocation: at least one header per fragment.
    let mut fragments = Vec::with_capacity(n.min(r.remaining() / crate::fragment::HEADER_BYTES));
    for index in 0..n {
        let rest = r.buf.get(r.pos..).unwrap_or_default();
        let len = Fragment::peek_len(rest).ok_or(NetMonError::Truncated {
            field: "fragment header",
            needed: 4,
            left: rest.len(),
        })?;
        let bytes = r.take(len, "fragment")?;
        fragments.push(
            Fragment::parse(bytes).map_err(|source| NetMonError::Fragment { index, source })?,
        );
    }
    if r.remaining() != 0 {
        return Err(NetMonError::TrailingBytes(r.remaining()));
    }
    Ok(Event {
        aux,
        history,
        missing,
        fragments,
    })
}

/// NetMonInput, the corrected path: deserializes an event it fully owns.
pub fn decode(buf: Bytes) -> Result<Event, NetMonError> {
    let mut r = Reader::new(buf);
    let aux = decode_aux(&mut r)?;
    let history = decode_history(&mut r)?;
    decode_rest(&mut r, aux, history)
}

/// NetMonInput, the legacy path: reproduces the artdaq bug fixed in April
/// 2016 on purpose. The history is deserialized into its own heap
/// allocation, a copy of it is kept in the event, and the original is never
/// freed: one orphaned history (a box, its entry vector and three strings
/// per entry, about 180 bytes for one entry) per event. Exists only to prove that the heap instrumentation
/// finds a real leak; never the default.
#[inline(never)]
pub fn decode_legacy(buf: Bytes) -> Result<Event, NetMonError> {
    let mut r = Reader::new(buf);
    let aux = decode_aux(&mut r)?;
    let original: Box<History> = Box::new(decode_history(&mut r)?);
    let kept = History::clone(&original);
    // The leaky line: the deserialized original is orphaned, not owned.
    Box::leak(original);
    decode_rest(&mut r, aux, kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fragment::{FragmentSpec, FragmentType};

    fn sample() -> Event {
        let frag = |id: u16, n: usize| {
            Fragment::build(
                FragmentSpec {
                    fragment_type: FragmentType::User(1),
                    sequence_id: 42,
                    fragment_id: id,
                    timestamp: 420,
                },
                &[7; 8],
                &vec![id as u8; n],
            )
            .expect("valid")
        };
        Event {
            aux: EventAux {
                run: 3,
                subrun: 1,
                event: 42,
                sequence_id: 42,
                timestamp: 420,
                complete: false,
            },
            history: History {
                entries: vec![
                    HistoryEntry {
                        process: "eventbuilder-0".into(),
                        release: "daq 0.1.0".into(),
                        parameter_set_id: "0123456789abcdef0123456789abcdef".into(),
                        time_ns: 5,
                    },
                    HistoryEntry {
                        process: "é".into(),
                        release: String::new(),
                        parameter_set_id: "x".into(),
                        time_ns: u64::MAX,
                    },
                ],
            },
            missing: vec![2, 65534],
            fragments: vec![frag(0, 80), frag(1, 0)],
        }
    }

    #[test]
    fn event_round_trips_exactly() {
        let e = sample();
        let b = encode(&e).expect("encodes");
        assert_eq!(b.len(), e.encoded_len());
        assert_eq!(decode(b).expect("decodes"), e);
    }

    #[test]
    fn legacy_path_decodes_the_same_event() {
        let e = sample();
        let b = encode(&e).expect("encodes");
        assert_eq!(decode_legacy(b).expect("decodes"), e);
    }

    #[test]
    fn legacy_path_orphans_memory_per_event_and_fixed_does_not() {
        let b = encode(&sample()).expect("encodes");
        let growth = |f: fn(Bytes) -> Result<Event, NetMonError>| {
            // Warm up, then measure many decodes on this thread.
            for _ in 0..100 {
                drop(f(b.clone()));
            }
            // Per-thread totals: other tests' allocations do not count.
            let (a0, d0) = daq_alloc::thread_allocation_totals();
            for _ in 0..20_000 {
                drop(f(b.clone()));
            }
            let (a1, d1) = daq_alloc::thread_allocation_totals();
            (a1 - a0) as i64 - (d1 - d0) as i64
        };
        let fixed = growth(decode);
        let legacy = growth(decode_legacy);
        // Box<History> (24 B) + 2 entries (2 x 80 B) + six strings: >= 250 B per event.
        assert!(legacy >= 20_000 * 250, "legacy grew {legacy} B");
        assert!(fixed.abs() < 20_000 * 8, "fixed grew {fixed} B");
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let b = encode(&sample()).expect("encodes");
        for cut in 0..b.len() {
            let err = decode(b.slice(..cut)).expect_err("truncated");
            assert!(
                matches!(
                    err,
                    NetMonError::Truncated { .. } | NetMonError::Fragment { .. }
                ),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn bad_header_fields_are_named() {
        let b = encode(&sample()).expect("encodes").to_vec();
        let mut m = b.clone();
        m[0] = b'X';
        assert_eq!(decode(m.into()), Err(NetMonError::BadMagic(*b"XAQE")));
        let mut v = b.clone();
        v[4] = 9;
        assert_eq!(decode(v.into()), Err(NetMonError::UnsupportedVersion(9)));
        let mut t = b.clone();
        t.push(0);
        assert_eq!(decode(t.into()), Err(NetMonError::TrailingBytes(1)));
        // First history name starts after 40 header bytes and 4 count/length bytes.
        let mut u = b;
        u[44] = 0xFF;
        assert_eq!(
            decode(u.into()),
            Err(NetMonError::BadHistoryString {
                index: 0,
                field: "history process"
            })
        );
    }
}
