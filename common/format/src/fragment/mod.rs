//! The artdaq header-v2 fragment format: parse and write, bit for bit.
//!
//! A fragment is a 4-word header (little-endian u64 words), then
//! `metadata_word_count` metadata words, then payload words; `word_count`
//! counts all three. Layout of the header:
//!
//! | word | bits 0-31 | bits 32-47 | bits 48-55 | bits 56-63 |
//! |---|---|---|---|---|
//! | 0 | word_count | version | type | metadata_word_count |
//! | 1 | sequence_id (bits 0-47) | | fragment_id (bits 48-63) | |
//! | 2 | timestamp | | | |
//! | 3 | valid (bit 0), complete (bit 1), atime_ns (bits 2-31) | atime_s (bits 32-63) | | |

use bytes::{Bytes, BytesMut};

/// Bytes in one fragment word.
pub const WORD_BYTES: usize = 8;
/// Words in a version-2 header.
pub const HEADER_WORDS: usize = 4;
/// Bytes in a version-2 header.
pub const HEADER_BYTES: usize = HEADER_WORDS * WORD_BYTES;
/// The header version this module reads and writes.
pub const HEADER_VERSION: u16 = 2;
/// Largest sequence id (48 bits); all ones is the invalid marker.
pub const MAX_SEQUENCE_ID: u64 = (1 << 48) - 1;
/// Invalid-marker values.
pub const INVALID_VERSION: u16 = 0xFFFF;
pub const INVALID_SEQUENCE_ID: u64 = MAX_SEQUENCE_ID;
pub const INVALID_FRAGMENT_ID: u16 = 0xFFFF;
pub const INVALID_TIMESTAMP: u64 = u64::MAX;
/// Largest value of the 30-bit `atime_ns` field.
pub const MAX_ATIME_NS: u32 = (1 << 30) - 1;

/// Fragment type, as stored in the 8-bit `type` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FragmentType {
    Invalid,
    /// User types 1..=224 (e.g. the ToySimulator's TOY1 and TOY2).
    User(u8),
    EndOfData,
    Data,
    Init,
    EndOfRun,
    EndOfSubrun,
    Shutdown,
    Empty,
    Container,
    Error,
    /// 234..=255, reserved for the system and not yet assigned.
    Reserved(u8),
}

impl FragmentType {
    pub const FIRST_USER: u8 = 1;
    pub const LAST_USER: u8 = 224;

    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Invalid,
            1..=224 => Self::User(v),
            225 => Self::EndOfData,
            226 => Self::Data,
            227 => Self::Init,
            228 => Self::EndOfRun,
            229 => Self::EndOfSubrun,
            230 => Self::Shutdown,
            231 => Self::Empty,
            232 => Self::Container,
            233 => Self::Error,
            _ => Self::Reserved(v),
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Self::Invalid => 0,
            Self::User(v) | Self::Reserved(v) => v,
            Self::EndOfData => 225,
            Self::Data => 226,
            Self::Init => 227,
            Self::EndOfRun => 228,
            Self::EndOfSubrun => 229,
            Self::Shutdown => 230,
            Self::Empty => 231,
            Self::Container => 232,
            Self::Error => 233,
        }
    }

    /// System types go to every destination; user types are routed.
    pub fn is_system(self) -> bool {
        !matches!(self, Self::User(_))
    }
}

/// Every malformed input the codec can meet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FragmentError {
    #[error("fragment too short: {bytes} bytes, a header needs {expected}")]
    TooShort { bytes: usize, expected: usize },
    #[error("fragment length {bytes} is not a whole number of 8-byte words")]
    NotWordAligned { bytes: usize },
    #[error("fragment word_count {word_count} disagrees with the buffer's {buffer_words} words")]
    WordCountMismatch {
        word_count: u32,
        buffer_words: usize,
    },
    #[error("fragment header version {version} is not supported (expected {HEADER_VERSION})")]
    UnknownVersion { version: u16 },
    #[error(
        "fragment metadata_word_count {metadata_words} does not fit in word_count {word_count}"
    )]
    MetadataTooLong { metadata_words: u8, word_count: u32 },
    #[error("sequence id {0:#x} exceeds 48 bits")]
    SequenceIdTooLarge(u64),
    #[error("atime_ns {0} exceeds 30 bits")]
    AtimeNsTooLarge(u32),
    #[error("fragment of {words} words exceeds the 32-bit word_count")]
    TooLong { words: usize },
    #[error("metadata of {bytes} bytes is not a whole number of words or exceeds 255 words")]
    BadMetadata { bytes: usize },
    #[error("fragment of type {found} is not {expected}")]
    WrongType { found: u8, expected: &'static str },
    #[error("end-of-data fragment payload is {words} words, expected 1")]
    BadEndOfData { words: usize },
}

/// The decoded header of a fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentHeader {
    pub word_count: u32,
    pub version: u16,
    pub fragment_type: u8,
    pub metadata_word_count: u8,
    pub sequence_id: u64,
    pub fragment_id: u16,
    pub timestamp: u64,
    pub valid: bool,
    pub complete: bool,
    pub atime_ns: u32,
    pub atime_s: u32,
}

/// Stamps a fragment's access time (header word 3, `atime_s` and
/// `atime_ns`) with `at`, as artdaq's `Fragment::touch()` does when a
/// fragment is made; `valid`, `complete` and every other word are left as
/// they are. A buffer shorter than a header is left alone.
pub fn touch(fragment: &mut [u8], at: std::time::SystemTime) {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let Some(word) = fragment.get_mut(3 * WORD_BYTES..HEADER_BYTES) else {
        return;
    };
    let Ok(old) = <[u8; WORD_BYTES]>::try_from(&*word) else {
        return;
    };
    let flags = u64::from_le_bytes(old) & 0b11;
    // A second holds fewer than 2^30 nanoseconds; seconds wrap in 2106 (u32).
    let w3 = flags
        | u64::from(since.subsec_nanos() & MAX_ATIME_NS) << 2
        | (since.as_secs() & u64::from(u32::MAX)) << 32;
    word.copy_from_slice(&w3.to_le_bytes());
}

impl FragmentHeader {
    /// Decodes the four header words without checking them against a buffer.
    pub fn decode(words: [u64; HEADER_WORDS]) -> Self {
        let [w0, w1, w2, w3] = words;
        Self {
            word_count: w0 as u32,
            version: (w0 >> 32) as u16,
            fragment_type: (w0 >> 48) as u8,
            metadata_word_count: (w0 >> 56) as u8,
            sequence_id: w1 & MAX_SEQUENCE_ID,
            fragment_id: (w1 >> 48) as u16,
            timestamp: w2,
            valid: w3 & 1 != 0,
            complete: w3 & 2 != 0,
            atime_ns: ((w3 >> 2) as u32) & MAX_ATIME_NS,
            atime_s: (w3 >> 32) as u32,
        }
    }

    /// Encodes the header words; fails on fields wider than their bits.
    pub fn encode(&self) -> Result<[u64; HEADER_WORDS], FragmentError> {
        if self.sequence_id > MAX_SEQUENCE_ID {
            return Err(FragmentError::SequenceIdTooLarge(self.sequence_id));
        }
        if self.atime_ns > MAX_ATIME_NS {
            return Err(FragmentError::AtimeNsTooLarge(self.atime_ns));
        }
        let w0 = u64::from(self.word_count)
            | u64::from(self.version) << 32
            | u64::from(self.fragment_type) << 48
            | u64::from(self.metadata_word_count) << 56;
        let w1 = self.sequence_id | u64::from(self.fragment_id) << 48;
        let w3 = u64::from(self.valid)
            | u64::from(self.complete) << 1
            | u64::from(self.atime_ns) << 2
            | u64::from(self.atime_s) << 32;
        Ok([w0, w1, self.timestamp, w3])
    }

    pub fn kind(&self) -> FragmentType {
        FragmentType::from_u8(self.fragment_type)
    }
}

/// Fields a sender chooses when it builds a fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentSpec {
    pub fragment_type: FragmentType,
    pub sequence_id: u64,
    pub fragment_id: u16,
    pub timestamp: u64,
}

/// A validated fragment: its header and the whole binary (header, metadata,
/// payload) as shared bytes, so forwarding it never copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    header: FragmentHeader,
    bytes: Bytes,
}

/// Word `i` of `b`, or 0 past its end (callers check the length first).
fn read_word(b: &[u8], i: usize) -> u64 {
    b.get(i * WORD_BYTES..(i + 1) * WORD_BYTES)
        .and_then(|w| <[u8; WORD_BYTES]>::try_from(w).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Checks a whole binary fragment and returns its header.
fn validate(bytes: &[u8]) -> Result<FragmentHeader, FragmentError> {
    if bytes.len() < HEADER_BYTES {
        return Err(FragmentError::TooShort {
            bytes: bytes.len(),
            expected: HEADER_BYTES,
        });
    }
    if !bytes.len().is_multiple_of(WORD_BYTES) {
        return Err(FragmentError::NotWordAligned { bytes: bytes.len() });
    }
    let header = FragmentHeader::decode([
        read_word(bytes, 0),
        read_word(bytes, 1),
        read_word(bytes, 2),
        read_word(bytes, 3),
    ]);
    if header.version != HEADER_VERSION {
        return Err(FragmentError::UnknownVersion {
            version: header.version,
        });
    }
    let buffer_words = bytes.len() / WORD_BYTES;
    if header.word_count as usize != buffer_words {
        return Err(FragmentError::WordCountMismatch {
            word_count: header.word_count,
            buffer_words,
        });
    }
    if HEADER_WORDS + header.metadata_word_count as usize > buffer_words {
        return Err(FragmentError::MetadataTooLong {
            metadata_words: header.metadata_word_count,
            word_count: header.word_count,
        });
    }
    Ok(header)
}

/// The metadata bytes of a fragment `validate` accepted (empty otherwise).
fn metadata_of<'b>(header: &FragmentHeader, bytes: &'b [u8]) -> &'b [u8] {
    let end = HEADER_BYTES + header.metadata_word_count as usize * WORD_BYTES;
    bytes.get(HEADER_BYTES..end).unwrap_or_default()
}

/// The payload bytes of a fragment `validate` accepted (empty otherwise).
fn payload_of<'b>(header: &FragmentHeader, bytes: &'b [u8]) -> &'b [u8] {
    let start = HEADER_BYTES + header.metadata_word_count as usize * WORD_BYTES;
    bytes.get(start..).unwrap_or_default()
}

/// A validated fragment borrowed from a buffer (e.g. shared memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentRef<'a> {
    pub header: FragmentHeader,
    pub bytes: &'a [u8],
}

impl<'a> FragmentRef<'a> {
    /// Validates like [`Fragment::parse`], without taking ownership.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FragmentError> {
        Ok(Self {
            header: validate(bytes)?,
            bytes,
        })
    }

    pub fn metadata(&self) -> &'a [u8] {
        metadata_of(&self.header, self.bytes)
    }

    pub fn payload(&self) -> &'a [u8] {
        payload_of(&self.header, self.bytes)
    }
}

/// Splits fragments packed back to back (each length from its word_count).
pub fn split_packed(
    mut buf: &[u8],
) -> impl Iterator<Item = Result<FragmentRef<'_>, FragmentError>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let len = match Fragment::peek_len(buf) {
            Some(l) if l >= HEADER_BYTES && l <= buf.len() => l,
            _ => {
                let err = FragmentError::TooShort {
                    bytes: buf.len(),
                    expected: Fragment::peek_len(buf)
                        .unwrap_or(HEADER_BYTES)
                        .max(HEADER_BYTES),
                };
                buf = &[];
                return Some(Err(err));
            }
        };
        let (head, rest) = buf.split_at(len);
        buf = rest;
        Some(FragmentRef::parse(head))
    })
}

impl Fragment {
    /// Validates a binary fragment: length, word alignment, header version,
    /// `word_count` against the buffer and the metadata size.
    pub fn parse(bytes: Bytes) -> Result<Self, FragmentError> {
        let header = validate(&bytes)?;
        Ok(Self { header, bytes })
    }

    /// Reads the `word_count` of the fragment at the start of `buf`, so that
    /// fragments packed back to back can be split. `None` if `buf` is shorter
    /// than a header word.
    pub fn peek_len(buf: &[u8]) -> Option<usize> {
        let first: [u8; 4] = buf.get(..4)?.try_into().ok()?;
        Some(u32::from_le_bytes(first) as usize * WORD_BYTES)
    }

    /// Builds a valid, complete fragment. `metadata` must be whole words;
    /// `payload` is zero-padded to a whole number of words.
    pub fn build(
        spec: FragmentSpec,
        metadata: &[u8],
        payload: &[u8],
    ) -> Result<Self, FragmentError> {
        if !metadata.len().is_multiple_of(WORD_BYTES)
            || metadata.len() / WORD_BYTES > u8::MAX as usize
        {
            return Err(FragmentError::BadMetadata {
                bytes: metadata.len(),
            });
        }
        let payload_words = payload.len().div_ceil(WORD_BYTES);
        let words = HEADER_WORDS + metadata.len() / WORD_BYTES + payload_words;
        let word_count = u32::try_from(words).map_err(|_| FragmentError::TooLong { words })?;
        let header = FragmentHeader {
            word_count,
            version: HEADER_VERSION,
            fragment_type: spec.fragment_type.as_u8(),
            metadata_word_count: (metadata.len() / WORD_BYTES) as u8,
            sequence_id: spec.sequence_id,
            fragment_id: spec.fragment_id,
            timestamp: spec.timestamp,
            valid: true,
            complete: true,
            atime_ns: 0,
            atime_s: 0,
        };
        Self::with_header(header, metadata, payload)
    }

    /// Builds a fragment from an explicit header (every field as given,
    /// `word_count` included), then the metadata and zero-padded payload.
    /// Use [`Fragment::parse`] on the result's bytes to validate it.
    pub fn with_header(
        header: FragmentHeader,
        metadata: &[u8],
        payload: &[u8],
    ) -> Result<Self, FragmentError> {
        let words = header.encode()?;
        let padded = payload.len().div_ceil(WORD_BYTES) * WORD_BYTES;
        let mut buf = BytesMut::with_capacity(HEADER_BYTES + metadata.len() + padded);
        for w in words {
            buf.extend_from_slice(&w.to_le_bytes());
        }
        buf.extend_from_slice(metadata);
        buf.extend_from_slice(payload);
        buf.resize(HEADER_BYTES + metadata.len() + padded, 0);
        Ok(Self {
            header,
            bytes: buf.freeze(),
        })
    }

    /// An EndOfData fragment whose single payload word is `count`.
    pub fn end_of_data(
        fragment_id: u16,
        sequence_id: u64,
        count: u64,
    ) -> Result<Self, FragmentError> {
        Self::build(
            FragmentSpec {
                fragment_type: FragmentType::EndOfData,
                sequence_id,
                fragment_id,
                timestamp: 0,
            },
            &[],
            &count.to_le_bytes(),
        )
    }

    /// The count carried by an EndOfData fragment.
    pub fn end_of_data_count(&self) -> Result<u64, FragmentError> {
        if self.kind() != FragmentType::EndOfData {
            return Err(FragmentError::WrongType {
                found: self.header.fragment_type,
                expected: "EndOfData",
            });
        }
        let payload = self.payload();
        if payload.len() != WORD_BYTES {
            return Err(FragmentError::BadEndOfData {
                words: payload.len() / WORD_BYTES,
            });
        }
        Ok(read_word(payload, 0))
    }

    pub fn header(&self) -> &FragmentHeader {
        &self.header
    }
    pub fn kind(&self) -> FragmentType {
        self.header.kind()
    }
    pub fn sequence_id(&self) -> u64 {
        self.header.sequence_id
    }
    pub fn fragment_id(&self) -> u16 {
        self.header.fragment_id
    }
    pub fn timestamp(&self) -> u64 {
        self.header.timestamp
    }
    /// The whole binary fragment.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
    /// Metadata words, as bytes.
    pub fn metadata(&self) -> &[u8] {
        metadata_of(&self.header, &self.bytes)
    }
    /// Payload words, as bytes (including any padding the sender added).
    pub fn payload(&self) -> &[u8] {
        payload_of(&self.header, &self.bytes)
    }
    /// Size of the whole fragment in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
mod tests;
