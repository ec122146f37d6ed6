//! Owns the artdaq-binary data files of a run: artdaq's `BinaryFileOutput`
//! layout, the writer that fills and rolls them over with one vectored write
//! per batch of events, and the walker that reads them back.
//!
//! # Layout
//!
//! Every fragment of every event, back to back, exactly as it is in memory:
//! its artdaq header-v2 (4 little-endian u64 words, see
//! [`daq_format::fragment`]), its metadata words, its payload words; each
//! fragment is `word_count` x 8 bytes. No file header, no index, no padding.
//! The fragments of one event are consecutive and share a sequence id; events
//! follow in the order the aggregator wrote them (its store's publication
//! order, not sorted). Any C program can walk it: read word 0, take
//! `word_count`, step `word_count * 8` bytes. Nothing else is recorded: the
//! run number is in the file name, and an incomplete event is one with fewer
//! fragments than the others.
//!
//! # File naming and roll-over
//!
//! One run of one process writes `<dir>/run<RUN:06>_<process>_<INDEX:03>.artdaq.bin`,
//! `INDEX` from 0. As with the HDF5 files, a new file is started when the
//! current one exceeds `max_file_bytes` after a batch (0 = never); the next
//! file is created only when there is something to write into it, so a run
//! never ends with an empty trailing file (a run without events has an empty
//! file `000`). An event is never split between files. An existing file is
//! never overwritten.
//!
//! # Crash contract
//!
//! A batch reaches the operating system with `writev` (so it survives a crash
//! of this process); it is forced to stable storage at roll-over and at close.
//! A crash can leave the last fragment of a file cut short: a reader takes the
//! longest prefix of whole fragments ([`FragmentWalker`] stops at the first
//! fragment that does not fit, and says where).

use daq_format::fragment::{
    Fragment, FragmentError, FragmentHeader, HEADER_BYTES, HEADER_VERSION, HEADER_WORDS, WORD_BYTES,
};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, IoSlice, Read, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::datafile::RunFiles;

/// File-name suffix of artdaq-binary files (after the index).
pub const EXTENSION: &str = "artdaq.bin";

/// The signature every HDF5 file starts with (at offset 0 for ours).
pub const HDF5_SIGNATURE: [u8; 8] = [0x89, b'H', b'D', b'F', b'\r', b'\n', 0x1a, b'\n'];

/// Errors of writing or reading an artdaq-binary file.
#[derive(Debug, thiserror::Error)]
pub enum BinaryFileError {
    #[error("invalid process name {0:?}: use ascii letters, digits, '-', '_' or '.'")]
    InvalidProcessName(String),
    #[error("failed to create output directory {path}: {cause}")]
    CreateDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("data file {path} already exists")]
    FileExists { path: PathBuf },
    #[error("failed to create data file {path}: {cause}")]
    CreateFile {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("failed to write to data file {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("failed to sync data file {path}: {cause}")]
    Sync {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("failed to get the size of {path}: {cause}")]
    FileSize {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("writer is unusable after an earlier write failure")]
    WriterFailed,
    #[error("failed to open data file {path}: {cause}")]
    Open {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("failed to read {path} at byte offset {offset}: {cause}")]
    Read {
        path: PathBuf,
        offset: u64,
        cause: std::io::Error,
    },
    #[error("{path} is not an artdaq-binary file: {reason}")]
    NotArtdaqBinary { path: PathBuf, reason: String },
}

/// The file name of file `index` of a run of a process.
pub fn file_name(run: u32, process: &str, index: u32) -> String {
    format!("run{run:06}_{process}_{index:03}.{EXTENSION}")
}

/// A file of the run open for appending.
struct OpenBinary {
    path: PathBuf,
    file: File,
    bytes: u64,
}

impl OpenBinary {
    fn create(dir: &Path, run: u32, process: &str, index: u32) -> Result<Self, BinaryFileError> {
        let path = dir.join(file_name(run, process, index));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|cause| {
                if cause.kind() == std::io::ErrorKind::AlreadyExists {
                    BinaryFileError::FileExists { path: path.clone() }
                } else {
                    BinaryFileError::CreateFile {
                        path: path.clone(),
                        cause,
                    }
                }
            })?;
        Ok(Self {
            path,
            file,
            bytes: 0,
        })
    }

    fn sync(&self) -> Result<(), BinaryFileError> {
        self.file
            .sync_data()
            .map_err(|cause| BinaryFileError::Sync {
                path: self.path.clone(),
                cause,
            })
    }
}

/// Writes the events of one run of one process into one or more
/// artdaq-binary files, rolling over by size (see the module docs).
///
/// Events are given as they sit in an event store buffer: the event's
/// fragments packed back to back. The writer neither parses nor copies them:
/// a batch is one `writev` of the buffers (split only where the kernel's
/// limit of 1024 buffers per call, or a short write, forces it).
pub struct BinaryWriter {
    dir: PathBuf,
    run: u32,
    process: String,
    max_file_bytes: u64,
    /// The file being written; `None` after a roll-over until the next batch.
    current: Option<OpenBinary>,
    next_index: u32,
    files: Vec<PathBuf>,
    events_written: u64,
    failed: bool,
}

impl BinaryWriter {
    /// Creates the first file (and `dir` if needed). Fails if it exists.
    pub fn create(
        dir: &Path,
        run: u32,
        process: &str,
        max_file_bytes: u64,
    ) -> Result<Self, BinaryFileError> {
        let valid = !process.is_empty()
            && process != "."
            && process != ".."
            && process
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(BinaryFileError::InvalidProcessName(process.to_owned()));
        }
        std::fs::create_dir_all(dir).map_err(|cause| BinaryFileError::CreateDir {
            path: dir.to_owned(),
            cause,
        })?;
        let first = OpenBinary::create(dir, run, process, 0)?;
        Ok(Self {
            dir: dir.to_owned(),
            run,
            process: process.to_owned(),
            max_file_bytes,
            files: vec![first.path.clone()],
            current: Some(first),
            next_index: 1,
            events_written: 0,
            failed: false,
        })
    }

    /// Appends a batch of events (each its fragments back to back) to the
    /// current file, creating the next file first after a roll-over, then
    /// rolls over if the file exceeds `max_file_bytes`.
    pub fn write_batch<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), BinaryFileError> {
        if self.failed {
            return Err(BinaryFileError::WriterFailed);
        }
        let mut count = 0u64;
        let mut slices: Vec<IoSlice<'a>> = events
            .into_iter()
            .inspect(|_| count += 1)
            .filter(|e| !e.is_empty())
            .map(IoSlice::new)
            .collect();
        if count == 0 {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let result = self.write_slices(&mut slices);
        daq_runtime::metrics::data_path()
            .write_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.failed = true;
        } else {
            self.events_written += count;
        }
        result
    }

    fn write_slices(&mut self, mut slices: &mut [IoSlice<'_>]) -> Result<(), BinaryFileError> {
        let open = match &mut self.current {
            Some(open) => open,
            None => {
                let open = OpenBinary::create(&self.dir, self.run, &self.process, self.next_index)?;
                self.next_index += 1;
                self.files.push(open.path.clone());
                self.current.insert(open)
            }
        };
        let start = open.bytes;
        while !slices.is_empty() {
            let cause = match open.file.write_vectored(slices) {
                Ok(0) => std::io::ErrorKind::WriteZero.into(),
                Ok(n) => {
                    open.bytes += n as u64;
                    IoSlice::advance_slices(&mut slices, n);
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(cause) => cause,
            };
            // A failed batch leaves no part of itself (a short write before
            // a full disk): the file ends with the last whole batch, so its
            // events are exactly those counted written.
            if open.file.set_len(start).is_ok() {
                open.bytes = start;
            }
            return Err(BinaryFileError::Write {
                path: open.path.clone(),
                cause,
            });
        }
        let max = self.max_file_bytes;
        if let Some(full) = self.current.take_if(|o| max > 0 && o.bytes > max) {
            full.sync()?;
        }
        Ok(())
    }

    /// Events written so far.
    pub fn events_written(&self) -> u64 {
        self.events_written
    }

    /// Files created so far, in order; the last may still be open.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Forces the current file to stable storage and closes it.
    pub fn close(mut self) -> Result<RunFiles, BinaryFileError> {
        if let Some(open) = self.current.take() {
            open.sync()?;
        }
        RunFiles::measure(self.files, self.events_written)
            .map_err(|(path, cause)| BinaryFileError::FileSize { path, cause })
    }
}

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
            .map_err(|cause| BinaryFileError::FileSize {
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

#[cfg(test)]
mod tests {
    use super::*;
    use daq_format::fragment::{FragmentSpec, FragmentType};

    fn fragment(seq: u64, id: u16, payload: usize) -> Fragment {
        Fragment::build(
            FragmentSpec {
                fragment_type: FragmentType::User(2),
                sequence_id: seq,
                fragment_id: id,
                timestamp: seq * 10,
            },
            &[id as u8; 8],
            &vec![seq as u8; payload],
        )
        .expect("valid")
    }

    /// An event as it sits in a store buffer: fragments back to back.
    fn event(seq: u64, boards: u16, payload: usize) -> Vec<u8> {
        (0..boards)
            .flat_map(|b| fragment(seq, b, payload).into_bytes().to_vec())
            .collect()
    }

    #[test]
    fn batches_are_written_back_to_back_and_read_back_as_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = BinaryWriter::create(dir.path(), 7, "aggregator-0", 0).expect("create");
        let events: Vec<Vec<u8>> = (1..=5).map(|s| event(s, 3, 20)).collect();
        w.write_batch(events[..2].iter().map(Vec::as_slice))
            .expect("write");
        w.write_batch(events[2..].iter().map(Vec::as_slice))
            .expect("write");
        w.write_batch(std::iter::empty()).expect("empty batch");
        let files = w.close().expect("close");
        assert_eq!(files.events, 5);
        assert_eq!(files.files.len(), 1);
        assert!(files.files[0].ends_with("run000007_aggregator-0_000.artdaq.bin"));
        let raw = std::fs::read(&files.files[0]).expect("read");
        assert_eq!(raw, events.concat());
        assert_eq!(files.bytes_on_disk, raw.len() as u64);
        let f = read_file(&files.files[0]).expect("reads");
        assert_eq!(f.stop, None);
        assert_eq!(f.fragments.len(), 15);
        let seqs: Vec<u64> = f.events().map(|e| e[0].sequence_id()).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert!(f.events().all(|e| e.len() == 3));
        assert_eq!(f.fragments[4], fragment(2, 1, 20));
    }

    #[test]
    fn files_roll_over_by_size_between_batches_and_never_end_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 2 fragments of 4 + 1 + 3 words = 128 bytes per event.
        let e = event(1, 2, 20);
        assert_eq!(e.len(), 128);
        let mut w = BinaryWriter::create(dir.path(), 1, "ag", 300).expect("create");
        for _ in 0..3 {
            // Two events per batch: 256 bytes, then 512 > 300 rolls over.
            w.write_batch([e.as_slice(), e.as_slice()]).expect("write");
        }
        let files = w.close().expect("close");
        let sizes: Vec<u64> = files
            .files
            .iter()
            .map(|p| std::fs::metadata(p).expect("exists").len())
            .collect();
        assert_eq!(sizes, vec![512, 256]);
        assert_eq!(files.events, 6);
        assert_eq!(files.bytes_on_disk, 768);

        // A roll-over after the last batch leaves no empty file behind.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = BinaryWriter::create(dir.path(), 1, "ag", 100).expect("create");
        w.write_batch([e.as_slice()]).expect("write");
        let files = w.close().expect("close");
        assert_eq!(files.files.len(), 1);

        // No events at all: one empty file 000.
        let dir = tempfile::tempdir().expect("tempdir");
        let files = BinaryWriter::create(dir.path(), 1, "ag", 100)
            .expect("create")
            .close()
            .expect("close");
        assert_eq!(files.files.len(), 1);
        assert_eq!(files.bytes_on_disk, 0);
        assert_eq!(
            read_file(&files.files[0]).expect("reads").fragments.len(),
            0
        );
        assert!(matches!(
            BinaryWriter::create(dir.path(), 1, "ag", 100),
            Err(BinaryFileError::FileExists { .. })
        ));
    }

    #[test]
    fn a_cut_file_yields_its_whole_fragments_and_the_offset_where_it_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cut.artdaq.bin");
        let bytes: Vec<u8> = (1..=3).flat_map(|s| event(s, 2, 20)).collect();
        // Cut 3 bytes into the 5th fragment (each is 64 bytes).
        std::fs::write(&path, &bytes[..64 * 4 + 3]).expect("write");
        let f = read_file(&path).expect("reads");
        assert_eq!(f.fragments.len(), 4);
        assert_eq!(
            f.stop,
            Some(Stop {
                offset: 256,
                whole_fragments: 4,
                reason: StopReason::Truncated {
                    fragment_bytes: 32,
                    available: 3
                }
            })
        );
        std::fs::write(&path, &bytes[..64 * 4 + 40]).expect("write");
        let f = read_file(&path).expect("reads");
        let stop = f.stop.expect("stops");
        assert_eq!((stop.offset, stop.whole_fragments), (256, 4));
        assert_eq!(
            stop.reason,
            StopReason::Truncated {
                fragment_bytes: 64,
                available: 40
            }
        );
        assert!(
            stop.to_string()
                .starts_with("truncated at byte offset 256: 4 whole fragments before it")
        );
        // Garbage after two whole fragments.
        let mut bad = bytes[..128].to_vec();
        bad.extend_from_slice(&[0xFF; 40]);
        std::fs::write(&path, &bad).expect("write");
        let f = read_file(&path).expect("reads");
        assert_eq!(f.fragments.len(), 2);
        assert_eq!(
            f.stop.expect("stops").reason,
            StopReason::BadFragment(FragmentError::UnknownVersion { version: 0xFFFF })
        );
    }

    #[test]
    fn other_formats_are_refused_saying_what_they_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h5 = dir.path().join("x.h5");
        let mut b = HDF5_SIGNATURE.to_vec();
        b.extend_from_slice(&[0; 100]);
        std::fs::write(&h5, &b).expect("write");
        let e = read_file(&h5).expect_err("refused");
        assert!(
            e.to_string()
                .ends_with("is not an artdaq-binary file: it is an HDF5 file"),
            "{e}"
        );
        let txt = dir.path().join("x.toml");
        std::fs::write(&txt, "host = \"127.0.0.1\"\n").expect("write");
        let e = read_file(&txt).expect_err("refused");
        assert!(e.to_string().contains("is not a fragment header"), "{e}");
    }
}
