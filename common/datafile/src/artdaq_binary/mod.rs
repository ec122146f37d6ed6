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

use std::fs::File;
use std::io::{IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::RunFiles;
use crate::rolling::{BatchObserver, FileError, Rolling, Segment, create_new};

/// File-name suffix of artdaq-binary files (after the index).
pub const EXTENSION: &str = "artdaq.bin";

pub use crate::HDF5_SIGNATURE;

/// Errors of writing or reading an artdaq-binary file.
#[derive(Debug, thiserror::Error)]
pub enum BinaryFileError {
    /// Naming, creating, measuring and rolling the files (shared with HDF5).
    #[error(transparent)]
    File(#[from] FileError),
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
    /// The file through the page cache: every batch without `direct_io`,
    /// the small ones with it.
    file: File,
    bytes: u64,
    /// artdaq's `directIO`: the same file opened with `O_DIRECT`, and its
    /// aligned buffer; `None` writes everything through the page cache.
    direct: Option<Box<Direct>>,
}

struct Direct {
    file: File,
    buffer: direct::DirectBuffer,
}

impl OpenBinary {
    /// Creates `path`; with `direct_io`, opens it again with `O_DIRECT`
    /// where its file system takes it.
    fn create(path: &Path, direct_io: bool) -> Result<Self, BinaryFileError> {
        let file = create_new(path)?;
        let mut direct = None;
        if direct_io {
            let reopened = direct::reopen_direct(path).map_err(|cause| BinaryFileError::Open {
                path: path.to_owned(),
                cause,
            })?;
            direct = reopened.map(|file| {
                Box::new(Direct {
                    file,
                    buffer: direct::DirectBuffer::new(),
                })
            });
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            bytes: 0,
            direct,
        })
    }

    /// Appends one batch: with `O_DIRECT` through the aligned buffer when
    /// it is large, otherwise with `writev` through the page cache (see
    /// `direct`'s docs for why small batches are). A failed batch leaves no
    /// part of itself.
    fn write_batch(&mut self, slices: &mut [IoSlice<'_>]) -> Result<(), BinaryFileError> {
        let Some(d) = self.direct.as_mut() else {
            return self.write_slices(slices);
        };
        let start = self.bytes;
        let small = slices.iter().map(|s| s.len()).sum::<usize>() < direct::SMALL_BATCH;
        let mut file = &self.file;
        // Every batch goes into the buffer (a small one never fills it), so
        // that it holds the file's last partial block for the next large
        // batch; a small one is then written through the page cache.
        let written = (|| {
            for s in slices.iter() {
                d.buffer.append(&d.file, s)?;
            }
            if small {
                d.buffer.keep_partial_block();
                file.seek(SeekFrom::Start(start))?;
                return Ok(None);
            }
            d.buffer.end_batch(&d.file).map(Some)
        })();
        match written {
            Ok(None) => self.write_slices(slices),
            Ok(Some(end)) => {
                self.bytes = end;
                Ok(())
            }
            Err(cause) => {
                // The writer is refused work from here on (`Rolling`), so
                // the buffer's state no longer matters; the file ends with
                // the last whole batch.
                let _ = self.file.set_len(start);
                Err(BinaryFileError::Write {
                    path: self.path.clone(),
                    cause,
                })
            }
        }
    }

    /// Appends one batch with as few `writev` calls as the kernel allows.
    /// A failed batch leaves no part of itself (a short write before a full
    /// disk): the file ends with the last whole batch, so its events are
    /// exactly those counted written.
    fn write_slices(&mut self, mut slices: &mut [IoSlice<'_>]) -> Result<(), BinaryFileError> {
        let start = self.bytes;
        while !slices.is_empty() {
            let cause = match self.file.write_vectored(slices) {
                Ok(0) => std::io::ErrorKind::WriteZero.into(),
                Ok(n) => {
                    self.bytes += n as u64;
                    IoSlice::advance_slices(&mut slices, n);
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(cause) => cause,
            };
            if self.file.set_len(start).is_ok() {
                self.bytes = start;
            }
            return Err(BinaryFileError::Write {
                path: self.path.clone(),
                cause,
            });
        }
        Ok(())
    }
}

impl Segment for OpenBinary {
    type Error = BinaryFileError;

    fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Forces the file to stable storage (the crash contract's fsync).
    fn finish(self) -> Result<(), BinaryFileError> {
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
    files: Rolling<OpenBinary>,
    direct_io: bool,
}

impl BinaryWriter {
    /// Creates the first file (and `dir` if needed). Fails if it exists.
    pub fn create(
        dir: &Path,
        run: u32,
        process: &str,
        max_file_bytes: u64,
    ) -> Result<Self, BinaryFileError> {
        Self::create_with(dir, run, process, max_file_bytes, false)
    }

    /// [`create`](Self::create), with artdaq's `directIO` option: with
    /// `direct_io` every file is written with `O_DIRECT` through one aligned
    /// buffer (one copy, and none into the page cache) where its file system
    /// takes it ([`direct_io`](Self::direct_io) tells).
    pub fn create_with(
        dir: &Path,
        run: u32,
        process: &str,
        max_file_bytes: u64,
        direct_io: bool,
    ) -> Result<Self, BinaryFileError> {
        let files = Rolling::create(dir, run, process, EXTENSION, max_file_bytes, |path, _| {
            OpenBinary::create(path, direct_io)
        })?;
        Ok(Self { files, direct_io })
    }

    /// Whether the file being written is written with `O_DIRECT` (asked for,
    /// and taken by its file system).
    pub fn direct_io(&self) -> bool {
        self.files.current().is_some_and(|f| f.direct.is_some())
    }

    /// Appends a batch of events (each its fragments back to back) to the
    /// current file, creating the next file first after a roll-over, then
    /// rolls over if the file exceeds `max_file_bytes`.
    pub fn write_batch<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), BinaryFileError> {
        self.files.usable()?;
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
        let direct_io = self.direct_io;
        self.files.write_batch(
            count,
            |path, _| OpenBinary::create(path, direct_io),
            |open| open.write_batch(&mut slices),
        )
    }

    /// Tells `observer` of every batch that reaches a file.
    pub fn observe(&mut self, observer: BatchObserver) {
        self.files.observe(observer);
    }

    /// Events written so far.
    pub fn events_written(&self) -> u64 {
        self.files.events()
    }

    /// The files' sizes so far (nothing is added at close).
    pub fn bytes_written(&self) -> u64 {
        self.files.bytes()
    }

    /// Files created so far, in order; the last may still be open.
    pub fn files(&self) -> &[PathBuf] {
        self.files.files()
    }

    /// Forces the current file to stable storage and closes it.
    pub fn close(self) -> Result<RunFiles, BinaryFileError> {
        let events = self.files.events();
        self.files.close(events)
    }
}

mod direct;
mod reader;
#[cfg(test)]
mod tests;

pub use reader::{
    BinaryFile, FragmentWalker, Step, Stop, StopReason, not_artdaq_binary, read_file,
};
