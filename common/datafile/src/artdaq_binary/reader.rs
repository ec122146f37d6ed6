//! Reads artdaq-binary files back: [`FragmentWalker`] steps fragment by
//! fragment and stops, saying where, at the first one that does not fit;
//! [`read_file`] groups the fragments into events.

use super::BinaryFileError;
use crate::{FileError, HDF5_SIGNATURE};
use daq_format::fragment::{
    Fragment, FragmentError, FragmentHeader, HEADER_BYTES, HEADER_VERSION, HEADER_WORDS, WORD_BYTES,
};
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// Why a walk ended before the end of the file: where, after how many whole
/// fragments, and what was found there.
#[derive(Debug, PartialEq, Eq)]
pub struct Stop {
    /// Byte offset of the first byte not part of a whole fragment.
    pub offset: u64,
    /// Whole fragments before `offset`.
    pub whole_fragments: u64,
    pub reason: StopReason,
}

#[derive(Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The file ends inside a fragment (what a crash leaves):
    /// `fragment_bytes` from its `word_count` (a header's 32 if the header
    /// itself is cut), of which `available` are in the file.
    Truncated { fragment_bytes: u64, available: u64 },
    /// The bytes at `offset` are not a valid header-v2 fragment.
    BadFragment(FragmentError),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reason {
            StopReason::Truncated {
                fragment_bytes,
                available,
            } => write!(
                f,
                "truncated at byte offset {}: {} whole fragments before it, then a fragment of {} bytes with only {} in the file",
                self.offset, self.whole_fragments, fragment_bytes, available
            ),
            StopReason::BadFragment(e) => write!(
                f,
                "corrupt at byte offset {}: {} whole fragments before it, then {e}",
                self.offset, self.whole_fragments
            ),
        }
    }
}

/// One step of a [`FragmentWalker`].
#[derive(Debug)]
pub enum Step {
    Fragment(Fragment),
    /// The file ended exactly after a whole fragment.
    End,
    /// The longest prefix of whole fragments ended before the file did.
    Stop(Stop),
}

/// Walks an artdaq-binary file fragment by fragment, streaming, as any C
/// reader would: read the header, step `word_count * 8` bytes.
pub struct FragmentWalker {
    path: PathBuf,
    reader: BufReader<File>,
    file_bytes: u64,
    offset: u64,
    whole: u64,
    finished: bool,
}

impl FragmentWalker {
    /// Opens a file; fails unless it is empty or starts with a header-v2
    /// fragment (so an HDF5 or any other file is refused, saying what it is).
    pub fn open(path: &Path) -> Result<Self, BinaryFileError> {
        let file = File::open(path).map_err(|cause| BinaryFileError::Open {
            path: path.to_owned(),
            cause,
        })?;
        let file_bytes = file
            .metadata()
            .map_err(|cause| FileError::FileSize {
                path: path.to_owned(),
                cause,
            })?
            .len();
        if file_bytes > 0 {
            // Peek at the first word without moving the cursor.
            let mut first = [0u8; 8];
            let want = first.len().min(file_bytes as usize);
            file.read_exact_at(first.get_mut(..want).unwrap_or_default(), 0)
                .map_err(|cause| BinaryFileError::Read {
                    path: path.to_owned(),
                    offset: 0,
                    cause,
                })?;
            if let Some(reason) = not_artdaq_binary(first.get(..want).unwrap_or_default()) {
                return Err(BinaryFileError::NotArtdaqBinary {
                    path: path.to_owned(),
                    reason,
                });
            }
        }
        Ok(Self {
            path: path.to_owned(),
            reader: BufReader::with_capacity(1 << 20, file),
            file_bytes,
            offset: 0,
            whole: 0,
            finished: false,
        })
    }

    /// Size of the file when it was opened.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Whole fragments read so far.
    pub fn whole_fragments(&self) -> u64 {
        self.whole
    }

    /// Reads as much of `buf` as the file holds.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, BinaryFileError> {
        let mut n = 0;
        while let Some(rest) = buf.get_mut(n..).filter(|rest| !rest.is_empty()) {
            match self.reader.read(rest) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(cause) => {
                    return Err(BinaryFileError::Read {
                        path: self.path.clone(),
                        offset: self.offset + n as u64,
                        cause,
                    });
                }
            }
        }
        Ok(n)
    }

    /// The next whole fragment, the end of the file, or where the longest
    /// prefix of whole fragments stops. After `End` or `Stop`, returns `End`.
    pub fn step(&mut self) -> Result<Step, BinaryFileError> {
        if self.finished {
            return Ok(Step::End);
        }
        let stop = |s: &mut Self, reason| {
            s.finished = true;
            Ok(Step::Stop(Stop {
                offset: s.offset,
                whole_fragments: s.whole,
                reason,
            }))
        };
        let available = self.file_bytes.saturating_sub(self.offset);
        if available == 0 {
            self.finished = true;
            return Ok(Step::End);
        }
        if available < HEADER_BYTES as u64 {
            return stop(
                self,
                StopReason::Truncated {
                    fragment_bytes: HEADER_BYTES as u64,
                    available,
                },
            );
        }
        let mut head = [0u8; HEADER_BYTES];
        let n = self.fill(&mut head)?;
        if n < HEADER_BYTES {
            // The file shrank since it was opened.
            return stop(
                self,
                StopReason::Truncated {
                    fragment_bytes: HEADER_BYTES as u64,
                    available: n as u64,
                },
            );
        }
        let mut words = [0u64; HEADER_WORDS];
        for (w, b) in words.iter_mut().zip(head.chunks_exact(WORD_BYTES)) {
            *w = b.try_into().map_or(0, u64::from_le_bytes);
        }
        let header = FragmentHeader::decode(words);
        if header.version != HEADER_VERSION {
            return stop(
                self,
                StopReason::BadFragment(FragmentError::UnknownVersion {
                    version: header.version,
                }),
            );
        }
        let fragment_bytes = u64::from(header.word_count) * WORD_BYTES as u64;
        if fragment_bytes < HEADER_BYTES as u64 {
            return stop(
                self,
                StopReason::BadFragment(FragmentError::TooShort {
                    bytes: fragment_bytes as usize,
                    expected: HEADER_BYTES,
                }),
            );
        }
        if fragment_bytes > available {
            return stop(
                self,
                StopReason::Truncated {
                    fragment_bytes,
                    available,
                },
            );
        }
        let mut buf = Vec::with_capacity(fragment_bytes as usize);
        buf.extend_from_slice(&head);
        buf.resize(fragment_bytes as usize, 0);
        let n = self.fill(buf.get_mut(HEADER_BYTES..).unwrap_or_default())?;
        if n < buf.len() - HEADER_BYTES {
            return stop(
                self,
                StopReason::Truncated {
                    fragment_bytes,
                    available: (HEADER_BYTES + n) as u64,
                },
            );
        }
        match Fragment::parse(buf.into()) {
            Ok(f) => {
                self.offset += fragment_bytes;
                self.whole += 1;
                Ok(Step::Fragment(f))
            }
            Err(e) => stop(self, StopReason::BadFragment(e)),
        }
    }
}

/// Why the first bytes of a file cannot start an artdaq-binary file, or
/// `None` if they can (a header-v2 word 0).
pub fn not_artdaq_binary(first: &[u8]) -> Option<String> {
    if first.starts_with(&HDF5_SIGNATURE) {
        return Some("it is an HDF5 file".into());
    }
    let Ok(word) = <[u8; 8]>::try_from(first.get(..8)?) else {
        return Some(format!("it is only {} bytes long", first.len()));
    };
    let w0 = u64::from_le_bytes(word);
    let version = (w0 >> 32) as u16;
    let word_count = w0 as u32;
    if version != HEADER_VERSION {
        return Some(format!(
            "its first word {w0:#018x} is not a fragment header (version {version}, expected {HEADER_VERSION})"
        ));
    }
    if (word_count as usize) < HEADER_WORDS {
        return Some(format!(
            "its first fragment header has word_count {word_count}, less than a header"
        ));
    }
    None
}

/// An artdaq-binary file read whole: the longest prefix of whole fragments
/// and, if the file goes on after it, where and why it stops.
#[derive(Debug)]
pub struct BinaryFile {
    pub fragments: Vec<Fragment>,
    pub stop: Option<Stop>,
    pub file_bytes: u64,
}

impl BinaryFile {
    /// The events: runs of consecutive fragments with the same sequence id.
    pub fn events(&self) -> impl Iterator<Item = &[Fragment]> {
        self.fragments
            .chunk_by(|a, b| a.sequence_id() == b.sequence_id())
    }
}

/// Reads a whole file (see [`FragmentWalker`]).
pub fn read_file(path: &Path) -> Result<BinaryFile, BinaryFileError> {
    let mut w = FragmentWalker::open(path)?;
    let mut fragments = Vec::new();
    loop {
        match w.step()? {
            Step::Fragment(f) => fragments.push(f),
            Step::End => {
                return Ok(BinaryFile {
                    fragments,
                    stop: None,
                    file_bytes: w.file_bytes,
                });
            }
            Step::Stop(s) => {
                return Ok(BinaryFile {
                    fragments,
                    stop: Some(s),
                    file_bytes: w.file_bytes,
                });
            }
        }
    }
}
