//! Owns the event data files of a run: the interface the aggregator core writes events through (the view types, [`RunWriter`], [`RunFiles`]) and, behind it, the HDF5 file format, its writer (with roll-over) and its reader.
//!
//! # Modules
//!
//! - `format`: the file-format contract (naming, attributes, groups,
//!   chunking, crash consistency) and the empty layout a file starts from.
//! - `columns`: the column table, the one list of the datasets that the
//!   layout, the writer, the reader and `tests/h5dump_events.py` follow.
//! - `writer`: [`RunWriter`], buffering, crash-consistent appends, roll-over.
//! - `reader`: [`read_file`].
//!
//! Nothing outside this module sees `hdf5-pure`.
//!
//! # How the aggregator writes through it
//!
//! The aggregator's `output` module (which picks the format from `aggregator.format`) builds
//! [`WriterOptions`] and [`FileAttributes`] from the config, calls
//! [`RunWriter::create`], then [`RunWriter::append`] with an [`EventView`]
//! borrowed from shared memory for each event, and finally
//! [`RunWriter::close`], which returns the [`RunFiles`] for the run record.
//! Flushing and rolling over to the next file happen inside the writer.
//!
//! Copies of each payload byte on the way from the shared-memory mapping to
//! the file: one of ours, gathering the batch's fragments into the `data`
//! column buffer (the event's shared-memory buffer is freed as soon as
//! [`RunWriter::append`] returns, so the writer never holds one across a
//! flush); then, inside `hdf5-pure` 0.47, three to build the chunks (its
//! append builder, the trailing-chunk assembly, the split into chunk buffers)
//! and one into its write coalescer (chunks under 1 MiB are gathered before
//! they are issued), then the kernel's copy into the page cache. The bytes go
//! in with `Dataset::append_raw`: the typed append serialized them one
//! element at a time, which was most of the writer's CPU. The library's
//! copies can only go with the library (there is no direct chunk write);
//! [`crate::artdaq_binary`] makes no copy of its own.
//! The other format, [`crate::artdaq_binary`], sits beside this module rather
//! than behind these calls: it writes whole shared-memory buffers a batch at
//! a time and never looks at a fragment, which an [`EventView`] (one view per
//! fragment) would undo. [`RunFiles`] is shared by both.

use std::path::PathBuf;

pub use crate::RunFiles;
pub use crate::rolling::{BatchObserver, BatchWritten, FileError};

mod columns;
mod format;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use format::{FORMAT_NAME, FORMAT_VERSION, file_name};
pub use reader::{ReadEvent, ReadFile, ReadFragment, read_file};
pub use writer::RunWriter;

/// Errors of writing or reading a data file.
#[derive(Debug, thiserror::Error)]
pub enum DataFileError {
    #[error("invalid writer options: {0}")]
    InvalidOptions(String),
    /// Naming, creating and rolling the files (shared with artdaq-binary).
    #[error(transparent)]
    File(#[from] FileError),
    #[error("failed to build the layout of data file {path}: {cause}")]
    BuildLayout {
        path: PathBuf,
        cause: hdf5_pure::Error,
    },
    #[error("failed to open data file {path} for appending: {cause}")]
    OpenForAppend {
        path: PathBuf,
        cause: hdf5_pure::Error,
    },
    #[error("failed to open dataset {dataset} in {path}: {cause}")]
    OpenDataset {
        path: PathBuf,
        dataset: &'static str,
        cause: hdf5_pure::Error,
    },
    #[error("failed to append to dataset {dataset} in {path}: {cause}")]
    Append {
        path: PathBuf,
        dataset: &'static str,
        cause: hdf5_pure::Error,
    },
    #[error("failed to write attribute {name} of {path}: {cause}")]
    WriteAttribute {
        path: PathBuf,
        name: &'static str,
        cause: hdf5_pure::Error,
    },
    #[error("failed to sync data file {path}: {cause}")]
    Sync {
        path: PathBuf,
        cause: hdf5_pure::Error,
    },
    #[error("failed to close data file {path}: {cause}")]
    Close {
        path: PathBuf,
        cause: hdf5_pure::Error,
    },
    #[error(
        "fragment {fragment_id} of event {event} has {len} bytes of metadata, more than a u32 can describe"
    )]
    MetadataTooLarge {
        event: u64,
        fragment_id: u16,
        len: usize,
    },
    #[error("failed to open data file {path}: {cause}")]
    Open {
        path: PathBuf,
        cause: hdf5_pure::Error,
    },
    #[error("failed to read the attributes of {path}: {cause}")]
    ReadAttributes {
        path: PathBuf,
        cause: hdf5_pure::Error,
    },
    #[error("{path} is not a {FORMAT_NAME} file: {reason}")]
    NotDataFile { path: PathBuf, reason: String },
    #[error("{path} has unsupported format version {version}")]
    UnsupportedVersion { path: PathBuf, version: u64 },
    #[error("attribute {name} of {path} is missing or has the wrong type")]
    BadAttribute { path: PathBuf, name: &'static str },
    #[error("failed to read dataset {dataset} in {path}: {cause}")]
    Read {
        path: PathBuf,
        dataset: &'static str,
        cause: hdf5_pure::Error,
    },
    #[error("corrupt data in {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// One fragment of an event to write; borrowed from the caller.
#[derive(Clone, Copy, Debug)]
pub struct FragmentView<'a> {
    pub fragment_id: u16,
    pub fragment_type: u8,
    pub sequence_id: u64,
    pub timestamp: u64,
    pub metadata: &'a [u8],
    pub payload: &'a [u8],
}

/// One event to write; borrowed from the caller.
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    pub run: u32,
    pub subrun: u32,
    pub event: u64,
    pub sequence_id: u64,
    pub timestamp: u64,
    pub complete: bool,
    pub fragments: &'a [FragmentView<'a>],
}

/// Compression of every dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    /// Shuffle then deflate at this level, 1..=9.
    Deflate(u8),
}

/// How a [`RunWriter`] writes.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Default [`Compression::None`].
    pub compression: Compression,
    /// Events buffered in memory before one append per dataset; default 1000.
    /// Also the chunk length of every column except `fragments/data`.
    pub batch_events: usize,
    /// Roll over to a new file when the current one exceeds this many bytes
    /// (checked after each flush); 0 = never. Default 1 GiB.
    pub max_file_bytes: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            compression: Compression::None,
            batch_events: 1000,
            max_file_bytes: 1 << 30,
        }
    }
}

/// Run-level attributes stored in every file of a run.
#[derive(Clone, Debug)]
pub struct FileAttributes {
    pub run: u32,
    pub subrun: u32,
    /// Part of the file name: ascii letters, digits, '-', '_' and '.' only.
    pub process: String,
    pub config_toml: String,
    pub software_version: String,
}
