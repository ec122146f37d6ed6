//! The one skeleton both writers roll their files with: a run's files are
//! `<dir>/run<RUN:06>_<process>_<INDEX:03>.<extension>`, `INDEX` from 0;
//! file 0 is created with the writer, a later file only when a batch is
//! about to go into it (so a run never ends with an empty trailing file);
//! a file is closed once it exceeds `max_file_bytes` after a batch (0 =
//! never), so no batch is ever split between files; an existing file is
//! never overwritten; after a failed batch the writer refuses further work.
//!
//! A format supplies a [`Segment`] (one open file: how big it is, how it
//! is closed) and how to open one; the counting, naming, roll-over and the
//! run's [`RunFiles`] are written here once.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The failures that do not depend on the format.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
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
    #[error("failed to get the size of {path}: {cause}")]
    FileSize {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("writer is unusable after an earlier write failure")]
    WriterFailed,
}

/// What a closed writer produced.
#[derive(Clone, Debug)]
pub struct RunFiles {
    /// Every file written, in order.
    pub files: Vec<PathBuf>,
    /// Events written over all files.
    pub events: u64,
    /// Total size of `files` on disk after closing.
    pub bytes_on_disk: u64,
}

impl RunFiles {
    /// The closed files of a run (either format) with their size on disk;
    /// the error names the file that could not be measured.
    pub fn measure(files: Vec<PathBuf>, events: u64) -> Result<Self, FileError> {
        let mut bytes_on_disk = 0;
        for path in &files {
            let meta = std::fs::metadata(path).map_err(|cause| FileError::FileSize {
                path: path.clone(),
                cause,
            })?;
            bytes_on_disk += meta.len();
        }
        Ok(Self {
            files,
            events,
            bytes_on_disk,
        })
    }
}

/// One batch that reached its file: what a writer's observer is told.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchWritten {
    /// Events in the batch.
    pub events: u64,
    /// Bytes the batch added to its file.
    pub bytes: u64,
    /// How long the write took.
    pub elapsed: Duration,
}

/// Called after every batch that reached a file (metrics, live counters).
pub type BatchObserver = Box<dyn FnMut(BatchWritten) + Send + Sync>;

/// One open file of a run, in some format.
pub(crate) trait Segment: Sized {
    type Error: From<FileError>;
    /// Its size now, as the roll-over rule counts it.
    fn bytes(&self) -> u64;
    /// Completes and closes it (at roll-over and at the end of the run).
    fn finish(self) -> Result<(), Self::Error>;
}

/// The file name of file `index` of a run of a process.
pub(crate) fn file_name(run: u32, process: &str, index: u32, extension: &str) -> String {
    format!("run{run:06}_{process}_{index:03}.{extension}")
}

/// Creates `path`, never replacing a file that exists.
pub(crate) fn create_new(path: &Path) -> Result<File, FileError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|cause| {
            if cause.kind() == std::io::ErrorKind::AlreadyExists {
                FileError::FileExists {
                    path: path.to_owned(),
                }
            } else {
                FileError::CreateFile {
                    path: path.to_owned(),
                    cause,
                }
            }
        })
}

/// A process name fit for a file name: ascii letters, digits, '-', '_', '.'.
fn check_process_name(p: &str) -> Result<(), FileError> {
    let valid = !p.is_empty()
        && p != "."
        && p != ".."
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(FileError::InvalidProcessName(p.to_owned()))
    }
}

/// The rolling files of one run of one process.
pub(crate) struct Rolling<S> {
    dir: PathBuf,
    run: u32,
    process: String,
    extension: &'static str,
    max_file_bytes: u64,
    /// The file being written; `None` after a roll-over until the next batch.
    current: Option<S>,
    next_index: u32,
    files: Vec<PathBuf>,
    events: u64,
    /// Sizes of the files closed so far.
    closed_bytes: u64,
    failed: bool,
    observer: Option<BatchObserver>,
}

impl<S: Segment> Rolling<S> {
    /// Checks the name, creates `dir` if needed and opens file 0 with `open`.
    pub(crate) fn create(
        dir: &Path,
        run: u32,
        process: &str,
        extension: &'static str,
        max_file_bytes: u64,
        open: impl FnOnce(&Path, u32) -> Result<S, S::Error>,
    ) -> Result<Self, S::Error> {
        check_process_name(process)?;
        std::fs::create_dir_all(dir).map_err(|cause| FileError::CreateDir {
            path: dir.to_owned(),
            cause,
        })?;
        let mut rolling = Self {
            dir: dir.to_owned(),
            run,
            process: process.to_owned(),
            extension,
            max_file_bytes,
            current: None,
            next_index: 0,
            files: Vec::new(),
            events: 0,
            closed_bytes: 0,
            failed: false,
            observer: None,
        };
        rolling.open_next(open)?;
        Ok(rolling)
    }

    fn open_next(
        &mut self,
        open: impl FnOnce(&Path, u32) -> Result<S, S::Error>,
    ) -> Result<&mut S, S::Error> {
        let path = self.dir.join(file_name(
            self.run,
            &self.process,
            self.next_index,
            self.extension,
        ));
        let segment = open(&path, self.next_index)?;
        self.next_index += 1;
        self.files.push(path);
        Ok(self.current.insert(segment))
    }

    /// Refuses work after a failed batch.
    pub(crate) fn usable(&self) -> Result<(), FileError> {
        if self.failed {
            Err(FileError::WriterFailed)
        } else {
            Ok(())
        }
    }

    /// The file being written, without opening one.
    pub(crate) fn current(&self) -> Option<&S> {
        self.current.as_ref()
    }

    /// Writes one batch of `events` with `write` into the current file
    /// (opening the next one first after a roll-over), then closes the file
    /// if it is now over `max_file_bytes`. A failure makes the writer
    /// unusable.
    pub(crate) fn write_batch<T>(
        &mut self,
        events: u64,
        open: impl FnOnce(&Path, u32) -> Result<S, S::Error>,
        write: impl FnOnce(&mut S) -> Result<T, S::Error>,
    ) -> Result<T, S::Error> {
        self.usable()?;
        let result = self.write_batch_inner(events, open, write);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn write_batch_inner<T>(
        &mut self,
        events: u64,
        open: impl FnOnce(&Path, u32) -> Result<S, S::Error>,
        write: impl FnOnce(&mut S) -> Result<T, S::Error>,
    ) -> Result<T, S::Error> {
        let segment = match self.current.take() {
            Some(s) => self.current.insert(s),
            None => self.open_next(open)?,
        };
        let before = segment.bytes();
        let started = std::time::Instant::now();
        let out = write(segment)?;
        let batch = BatchWritten {
            events,
            bytes: segment.bytes().saturating_sub(before),
            elapsed: started.elapsed(),
        };
        self.events += events;
        if let Some(observe) = &mut self.observer {
            observe(batch);
        }
        let max = self.max_file_bytes;
        if let Some(full) = self.current.take_if(|s| max > 0 && s.bytes() > max) {
            let before = full.bytes();
            full.finish()?;
            // Its final size, with what finishing added (HDF5's attributes).
            let closed = self.files.last().and_then(|p| std::fs::metadata(p).ok());
            self.closed_bytes += closed.map_or(before, |m| m.len());
        }
        Ok(out)
    }

    /// Tells `observer` of every batch from now on.
    pub(crate) fn observe(&mut self, observer: BatchObserver) {
        self.observer = Some(observer);
    }

    /// Events in files so far (whole batches).
    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// The files' sizes so far: those closed and the one open (what close
    /// has still to add, such as HDF5's end-of-file attributes, is not in).
    pub(crate) fn bytes(&self) -> u64 {
        self.closed_bytes + self.current.as_ref().map_or(0, Segment::bytes)
    }

    /// Files created so far, in order; the last may still be open.
    pub(crate) fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Closes the current file and measures the run's files.
    pub(crate) fn close(mut self, events: u64) -> Result<RunFiles, S::Error> {
        if let Some(open) = self.current.take() {
            open.finish()?;
        }
        Ok(RunFiles::measure(self.files, events)?)
    }
}
