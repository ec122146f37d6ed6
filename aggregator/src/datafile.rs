//! Owns the HDF5 event data files of a run: the on-disk layout (the file-format contract below), the writer that fills and rolls over files, and the reader.
//!
//! Files are written with the pure-Rust `hdf5-pure` crate and read by any HDF5
//! reader (h5py, the C library 1.10+/2.x).
//!
//! # File naming
//!
//! One run of one process writes `<dir>/run<RUN:06>_<process>_<INDEX:03>.h5`,
//! `INDEX` counting from 0. A new file is started when the current one exceeds
//! [`WriterOptions::max_file_bytes`] after a flush; the next file is created
//! only when there is something to write into it, so a run never ends with an
//! empty trailing file (a run with no events at all still has file `000`).
//! An existing file is never overwritten: creating it fails with
//! [`DataFileError::FileExists`].
//!
//! # Layout (format version 1)
//!
//! File (root group) attributes:
//!
//! | name               | type                     | meaning                                        |
//! |--------------------|--------------------------|------------------------------------------------|
//! | `format`           | variable-length string   | always `"daq-events"`                          |
//! | `format_version`   | u32                      | `1`                                            |
//! | `run`, `subrun`    | u32                      | run and subrun numbers                         |
//! | `process`          | variable-length string   | name of the writing process                    |
//! | `software_version` | variable-length string   | version of the writing software                |
//! | `config`           | variable-length string   | the run configuration, TOML text               |
//! | `events`           | u64                      | events in this file; written by close only, so |
//! |                    |                          | its absence means the writer did not finish    |
//!
//! Every dataset is one-dimensional, chunked and unlimited (`maxshape=(None,)`).
//! Row `i` of all columns of a group describes the same fragment or event.
//!
//! Group `/fragments`, one row per fragment, in event order:
//!
//! | dataset          | type | meaning                                                      |
//! |------------------|------|--------------------------------------------------------------|
//! | `fragment_id`    | u16  | fragment (board) id                                          |
//! | `type`           | u8   | fragment type                                                |
//! | `sequence_id`    | u64  | sequence id carried by the fragment                          |
//! | `timestamp`      | u64  | timestamp carried by the fragment                            |
//! | `metadata_bytes` | u32  | size of the metadata at the start of the fragment's data     |
//! | `data_end`       | u64  | cumulative end offset of the fragment's bytes in `data`      |
//! | `data`           | u8   | each fragment's metadata then payload, back to back          |
//!
//! Fragment `j` occupies `data[start..data_end[j]]` with `start = data_end[j-1]`
//! (0 for `j == 0`); its metadata is the first `metadata_bytes[j]` of those
//! bytes and its payload the rest.
//!
//! Group `/events`, one row per event:
//!
//! | dataset        | type | meaning                                                          |
//! |----------------|------|------------------------------------------------------------------|
//! | `run`          | u32  | run number                                                       |
//! | `subrun`       | u32  | subrun number                                                    |
//! | `event`        | u64  | event number                                                     |
//! | `sequence_id`  | u64  | sequence id the event was built for                              |
//! | `timestamp`    | u64  | event timestamp                                                  |
//! | `complete`     | u8   | 1 if all expected fragments arrived, else 0                      |
//! | `fragment_end` | u64  | cumulative end index into the `/fragments` columns               |
//!
//! Event `i` owns fragment rows `fragment_end[i-1]..fragment_end[i]` (from 0 for
//! `i == 0`). Offsets and indices restart at 0 in every file.
//!
//! Chunking: `/fragments/data` uses chunks of 32768 bytes; every other column
//! uses chunks of `batch_events` elements (clamped to 1..=32768), so a full
//! batch appends whole chunks. No chunk dimension exceeds 32768 elements:
//! HDF5 2.x cannot read a dataset written by `hdf5-pure` 0.47 whose chunk
//! dimension is 65,536 or more. With [`Compression::Deflate`] every dataset has
//! the shuffle and deflate filters; otherwise no filter.
//!
//! # Crash consistency
//!
//! Each flush appends, in this order: `fragments/data`, the other fragment
//! columns, the event columns, and `events/fragment_end` last. Every append is
//! atomic against a crash of the writing process, so after a crash the columns
//! may differ in length but each holds a valid prefix. Readers take the
//! *shortest consistent prefix*: the events (in order) whose `fragment_end`
//! lies within every fragment column and whose fragments' `data_end` lies
//! within `data`. [`read_file`] and `tests/h5dump_events.py` both do this.
//!
//! Files are opened with `SyncPolicy::OnClose`: a flush reaches the operating
//! system (so it survives a crash of this process) but is forced to stable
//! storage only by [`RunWriter::sync`], by a rollover and by
//! [`RunWriter::close`].
//!
//! # Space overhead of partial chunks
//!
//! `hdf5-pure` writes a partially filled trailing chunk into a fresh
//! allocation on every append that touches it and does not reuse the old one.
//! A flush that does not end on a chunk boundary therefore leaves up to one
//! chunk per column unused in the file (at most about 64 KiB per flush with
//! default options, far less with deflate). Full batches of events with a
//! constant number of fragments end on chunk boundaries for every column but
//! `data`.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use hdf5_pure::{
    AttrValue, Dataset, DatasetBuilder, File, FileAccessProperties, FileBuilder, H5Element,
    MaxExtent, SyncPolicy,
};

/// Value of the `format` file attribute.
pub const FORMAT_NAME: &str = "daq-events";
/// Value of the `format_version` file attribute written by this module.
pub const FORMAT_VERSION: u32 = 1;

/// Largest chunk dimension used for any dataset (see the module docs).
const MAX_CHUNK_ELEMENTS: u64 = 32_768;
/// Chunk dimension of `fragments/data`, in bytes.
const DATA_CHUNK_BYTES: u64 = 32_768;
/// A batch is flushed early once its fragment data reaches this many bytes,
/// bounding the writer's memory whatever the event size.
const MAX_BUFFERED_DATA_BYTES: usize = 64 * 1024 * 1024;

/// Errors of writing or reading a data file.
#[derive(Debug, thiserror::Error)]
pub enum DataFileError {
    #[error("invalid writer options: {0}")]
    InvalidOptions(String),
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
    #[error("failed to get the size of {path}: {cause}")]
    FileSize {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "fragment {fragment_id} of event {event} has {len} bytes of metadata, more than a u32 can describe"
    )]
    MetadataTooLarge {
        event: u64,
        fragment_id: u16,
        len: usize,
    },
    #[error("writer is unusable after an earlier write failure")]
    WriterFailed,
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

/// What a closed [`RunWriter`] produced.
#[derive(Clone, Debug)]
pub struct RunFiles {
    /// Every file written, in order.
    pub files: Vec<PathBuf>,
    /// Events written over all files.
    pub events: u64,
    /// Total size of `files` on disk after closing.
    pub bytes_on_disk: u64,
}

/// One fragment read back from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadFragment {
    pub fragment_id: u16,
    pub fragment_type: u8,
    pub sequence_id: u64,
    pub timestamp: u64,
    pub metadata: Vec<u8>,
    pub payload: Vec<u8>,
}

/// One event read back from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadEvent {
    pub run: u32,
    pub subrun: u32,
    pub event: u64,
    pub sequence_id: u64,
    pub timestamp: u64,
    pub complete: bool,
    pub fragments: Vec<ReadFragment>,
}

/// A whole file read back by [`read_file`].
#[derive(Clone, Debug)]
pub struct ReadFile {
    pub run: u32,
    pub subrun: u32,
    pub process: String,
    pub config_toml: String,
    pub software_version: String,
    /// The `events` attribute written at close; `None` if the writer did not
    /// finish the file (crash, or still writing).
    pub recorded_events: Option<u64>,
    /// The shortest consistent prefix of the file's events.
    pub events: Vec<ReadEvent>,
}

#[derive(Clone, Copy)]
enum Kind {
    U8,
    U16,
    U32,
    U64,
}

/// One dataset of the layout. `path` is `group/name`.
struct Column {
    path: &'static str,
    kind: Kind,
}

// Indices into `COLUMNS`, which is in append order.
const DATA: usize = 0;
const FRAGMENT_ID: usize = 1;
const FRAGMENT_TYPE: usize = 2;
const FRAGMENT_SEQUENCE_ID: usize = 3;
const FRAGMENT_TIMESTAMP: usize = 4;
const METADATA_BYTES: usize = 5;
const DATA_END: usize = 6;
const RUN: usize = 7;
const SUBRUN: usize = 8;
const EVENT: usize = 9;
const SEQUENCE_ID: usize = 10;
const TIMESTAMP: usize = 11;
const COMPLETE: usize = 12;
const FRAGMENT_END: usize = 13;

const COLUMNS: [Column; 14] = [
    Column {
        path: "fragments/data",
        kind: Kind::U8,
    },
    Column {
        path: "fragments/fragment_id",
        kind: Kind::U16,
    },
    Column {
        path: "fragments/type",
        kind: Kind::U8,
    },
    Column {
        path: "fragments/sequence_id",
        kind: Kind::U64,
    },
    Column {
        path: "fragments/timestamp",
        kind: Kind::U64,
    },
    Column {
        path: "fragments/metadata_bytes",
        kind: Kind::U32,
    },
    Column {
        path: "fragments/data_end",
        kind: Kind::U64,
    },
    Column {
        path: "events/run",
        kind: Kind::U32,
    },
    Column {
        path: "events/subrun",
        kind: Kind::U32,
    },
    Column {
        path: "events/event",
        kind: Kind::U64,
    },
    Column {
        path: "events/sequence_id",
        kind: Kind::U64,
    },
    Column {
        path: "events/timestamp",
        kind: Kind::U64,
    },
    Column {
        path: "events/complete",
        kind: Kind::U8,
    },
    Column {
        path: "events/fragment_end",
        kind: Kind::U64,
    },
];

const GROUPS: [&str; 2] = ["fragments", "events"];

/// The file name of file `index` of a run of a process.
pub fn file_name(run: u32, process: &str, index: u32) -> String {
    format!("run{run:06}_{process}_{index:03}.h5")
}

/// In-memory column buffers of the events not yet flushed; reused between
/// flushes.
#[derive(Default)]
struct Buffers {
    data: Vec<u8>,
    fragment_id: Vec<u16>,
    fragment_type: Vec<u8>,
    fragment_sequence_id: Vec<u64>,
    fragment_timestamp: Vec<u64>,
    metadata_bytes: Vec<u32>,
    data_end: Vec<u64>,
    run: Vec<u32>,
    subrun: Vec<u32>,
    event: Vec<u64>,
    sequence_id: Vec<u64>,
    timestamp: Vec<u64>,
    complete: Vec<u8>,
    fragment_end: Vec<u64>,
}

impl Buffers {
    fn with_event_capacity(events: usize) -> Self {
        Self {
            run: Vec::with_capacity(events),
            subrun: Vec::with_capacity(events),
            event: Vec::with_capacity(events),
            sequence_id: Vec::with_capacity(events),
            timestamp: Vec::with_capacity(events),
            complete: Vec::with_capacity(events),
            fragment_end: Vec::with_capacity(events),
            ..Self::default()
        }
    }

    fn events(&self) -> usize {
        self.fragment_end.len()
    }

    fn fragments(&self) -> usize {
        self.data_end.len()
    }

    fn clear(&mut self) {
        self.data.clear();
        self.fragment_id.clear();
        self.fragment_type.clear();
        self.fragment_sequence_id.clear();
        self.fragment_timestamp.clear();
        self.metadata_bytes.clear();
        self.data_end.clear();
        self.run.clear();
        self.subrun.clear();
        self.event.clear();
        self.sequence_id.clear();
        self.timestamp.clear();
        self.complete.clear();
        self.fragment_end.clear();
    }
}

/// A file of the run open for appending.
struct OpenFile {
    path: PathBuf,
    file: File,
    /// One handle per entry of `COLUMNS`, same order.
    datasets: Vec<Dataset>,
    /// Events, fragments and data bytes flushed into this file.
    events: u64,
    fragments: u64,
    data_bytes: u64,
}

impl OpenFile {
    fn create(
        dir: &Path,
        attrs: &FileAttributes,
        options: &WriterOptions,
        index: u32,
    ) -> Result<Self, DataFileError> {
        let path = dir.join(file_name(attrs.run, &attrs.process, index));
        let bytes =
            layout(attrs, options)
                .finish()
                .map_err(|cause| DataFileError::BuildLayout {
                    path: path.clone(),
                    cause,
                })?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|cause| {
                if cause.kind() == std::io::ErrorKind::AlreadyExists {
                    DataFileError::FileExists { path: path.clone() }
                } else {
                    DataFileError::CreateFile {
                        path: path.clone(),
                        cause,
                    }
                }
            })?;
        out.write_all(&bytes)
            .and_then(|()| out.flush())
            .map_err(|cause| DataFileError::CreateFile {
                path: path.clone(),
                cause,
            })?;
        drop(out);

        let access = FileAccessProperties::new().with_sync_policy(SyncPolicy::OnClose);
        let file = File::open_rw_with_options(&path, access).map_err(|cause| {
            DataFileError::OpenForAppend {
                path: path.clone(),
                cause,
            }
        })?;
        let mut datasets = Vec::with_capacity(COLUMNS.len());
        for column in &COLUMNS {
            let ds = file
                .dataset(column.path)
                .map_err(|cause| DataFileError::OpenDataset {
                    path: path.clone(),
                    dataset: column.path,
                    cause,
                })?;
            datasets.push(ds);
        }
        Ok(Self {
            path,
            file,
            datasets,
            events: 0,
            fragments: 0,
            data_bytes: 0,
        })
    }

    fn append<T: H5Element>(&mut self, column: usize, values: &[T]) -> Result<(), DataFileError> {
        if values.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        self.datasets[column]
            .append(values)
            .map_err(|cause| DataFileError::Append {
                path: path.clone(),
                dataset: COLUMNS[column].path,
                cause,
            })
    }

    /// Appends one batch in the crash-consistent order of the module docs.
    fn write_batch(&mut self, b: &Buffers) -> Result<(), DataFileError> {
        self.append(DATA, &b.data)?;
        self.append(FRAGMENT_ID, &b.fragment_id)?;
        self.append(FRAGMENT_TYPE, &b.fragment_type)?;
        self.append(FRAGMENT_SEQUENCE_ID, &b.fragment_sequence_id)?;
        self.append(FRAGMENT_TIMESTAMP, &b.fragment_timestamp)?;
        self.append(METADATA_BYTES, &b.metadata_bytes)?;
        self.append(DATA_END, &b.data_end)?;
        self.append(RUN, &b.run)?;
        self.append(SUBRUN, &b.subrun)?;
        self.append(EVENT, &b.event)?;
        self.append(SEQUENCE_ID, &b.sequence_id)?;
        self.append(TIMESTAMP, &b.timestamp)?;
        self.append(COMPLETE, &b.complete)?;
        self.append(FRAGMENT_END, &b.fragment_end)?;
        self.events += b.events() as u64;
        self.fragments += b.fragments() as u64;
        self.data_bytes += b.data.len() as u64;
        Ok(())
    }

    fn sync(&self) -> Result<(), DataFileError> {
        self.file.sync().map_err(|cause| DataFileError::Sync {
            path: self.path.clone(),
            cause,
        })
    }

    /// Writes the end-of-file attributes and closes the file (one fsync).
    fn finish(self) -> Result<(), DataFileError> {
        let Self {
            path,
            file,
            datasets,
            events,
            ..
        } = self;
        drop(datasets);
        file.root()
            .set_attr("events", AttrValue::U64(events))
            .map_err(|cause| DataFileError::WriteAttribute {
                path: path.clone(),
                name: "events",
                cause,
            })?;
        file.close()
            .map_err(|cause| DataFileError::Close { path, cause })
    }
}

/// The initial, empty file: attributes, groups and datasets.
fn layout(attrs: &FileAttributes, options: &WriterOptions) -> FileBuilder {
    let mut builder = FileBuilder::new();
    let text = |s: &str| AttrValue::VarLenString(s.to_owned());
    builder.set_attr("format", text(FORMAT_NAME));
    builder.set_attr("format_version", AttrValue::U32(FORMAT_VERSION));
    builder.set_attr("run", AttrValue::U32(attrs.run));
    builder.set_attr("subrun", AttrValue::U32(attrs.subrun));
    builder.set_attr("process", text(&attrs.process));
    builder.set_attr("software_version", text(&attrs.software_version));
    builder.set_attr("config", text(&attrs.config_toml));

    let column_chunk = (options.batch_events as u64).clamp(1, MAX_CHUNK_ELEMENTS);
    for group_name in GROUPS {
        let mut group = builder.create_group(group_name);
        for (index, column) in COLUMNS.iter().enumerate() {
            let Some((g, name)) = column.path.split_once('/') else {
                continue;
            };
            if g != group_name {
                continue;
            }
            let chunk = if index == DATA {
                DATA_CHUNK_BYTES
            } else {
                column_chunk
            };
            configure(group.create_dataset(name), column.kind, chunk, options);
        }
        builder.add_group(group.finish());
    }
    builder
}

fn configure(ds: &mut DatasetBuilder, kind: Kind, chunk: u64, options: &WriterOptions) {
    match kind {
        Kind::U8 => ds.with_u8_data(&[]),
        Kind::U16 => ds.with_u16_data(&[]),
        Kind::U32 => ds.with_u32_data(&[]),
        Kind::U64 => ds.with_u64_data(&[]),
    };
    ds.with_shape(&[0])
        .with_maxshape(&[MaxExtent::Unlimited])
        .with_chunks(&[chunk]);
    if let Compression::Deflate(level) = options.compression {
        ds.with_shuffle().with_deflate(u32::from(level));
    }
}

fn validate(attrs: &FileAttributes, options: &WriterOptions) -> Result<(), DataFileError> {
    if let Compression::Deflate(level @ (0 | 10..)) = options.compression {
        return Err(DataFileError::InvalidOptions(format!(
            "deflate level {level} is outside 1..=9"
        )));
    }
    if options.batch_events == 0 {
        return Err(DataFileError::InvalidOptions(
            "batch_events must be at least 1".to_owned(),
        ));
    }
    let p = &attrs.process;
    let valid = !p.is_empty()
        && p != "."
        && p != ".."
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(DataFileError::InvalidProcessName(p.clone()));
    }
    Ok(())
}

/// Writes the events of one run of one process into one or more files
/// `<dir>/run<RUN:06>_<process>_<INDEX:03>.h5` (index from 0), rolling over by size.
///
/// Events are buffered column-wise and appended once per `batch_events`
/// events (or 64 MiB of fragment data). Call [`close`](Self::close) to flush
/// the last batch and mark the files complete; dropping the writer instead
/// loses the buffered events and leaves the current file without its `events`
/// attribute (still readable).
///
/// After a failed flush the file may hold part of the batch (readers drop it
/// as an inconsistent tail); the writer then refuses further work with
/// [`DataFileError::WriterFailed`].
pub struct RunWriter {
    dir: PathBuf,
    attrs: FileAttributes,
    options: WriterOptions,
    buffers: Buffers,
    /// The file being written; `None` after a rollover until the next flush.
    current: Option<OpenFile>,
    next_index: u32,
    files: Vec<PathBuf>,
    events_written: u64,
    failed: bool,
}

impl RunWriter {
    /// Validates the options and creates the first file (creating `dir` if
    /// needed). Fails if the file already exists.
    pub fn create(
        dir: &Path,
        attrs: FileAttributes,
        options: WriterOptions,
    ) -> Result<Self, DataFileError> {
        validate(&attrs, &options)?;
        std::fs::create_dir_all(dir).map_err(|cause| DataFileError::CreateDir {
            path: dir.to_owned(),
            cause,
        })?;
        let first = OpenFile::create(dir, &attrs, &options, 0)?;
        let files = vec![first.path.clone()];
        let batch = options.batch_events;
        Ok(Self {
            dir: dir.to_owned(),
            attrs,
            options,
            buffers: Buffers::with_event_capacity(batch),
            current: Some(first),
            next_index: 1,
            files,
            events_written: 0,
            failed: false,
        })
    }

    /// Copies the event into the column buffers; flushes when `batch_events`
    /// events (or 64 MiB of fragment data) are buffered.
    pub fn append(&mut self, event: &EventView<'_>) -> Result<(), DataFileError> {
        if self.failed {
            return Err(DataFileError::WriterFailed);
        }
        for f in event.fragments {
            if u32::try_from(f.metadata.len()).is_err() {
                return Err(DataFileError::MetadataTooLarge {
                    event: event.event,
                    fragment_id: f.fragment_id,
                    len: f.metadata.len(),
                });
            }
        }
        let (data_base, fragment_base) = match &self.current {
            Some(open) => (open.data_bytes, open.fragments),
            None => (0, 0),
        };
        let b = &mut self.buffers;
        for f in event.fragments {
            b.data.extend_from_slice(f.metadata);
            b.data.extend_from_slice(f.payload);
            b.fragment_id.push(f.fragment_id);
            b.fragment_type.push(f.fragment_type);
            b.fragment_sequence_id.push(f.sequence_id);
            b.fragment_timestamp.push(f.timestamp);
            // Checked above.
            b.metadata_bytes
                .push(u32::try_from(f.metadata.len()).unwrap_or(u32::MAX));
            b.data_end.push(data_base + b.data.len() as u64);
        }
        b.run.push(event.run);
        b.subrun.push(event.subrun);
        b.event.push(event.event);
        b.sequence_id.push(event.sequence_id);
        b.timestamp.push(event.timestamp);
        b.complete.push(u8::from(event.complete));
        b.fragment_end
            .push(fragment_base + b.fragment_id.len() as u64);
        self.events_written += 1;
        if b.events() >= self.options.batch_events || b.data.len() >= MAX_BUFFERED_DATA_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends the buffered events to the current file (creating the next file
    /// first after a rollover), then rolls over if the file exceeds
    /// `max_file_bytes`.
    pub fn flush(&mut self) -> Result<(), DataFileError> {
        if self.failed {
            return Err(DataFileError::WriterFailed);
        }
        if self.buffers.events() == 0 {
            return Ok(());
        }
        let result = self.flush_buffers();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn flush_buffers(&mut self) -> Result<(), DataFileError> {
        let open = match &mut self.current {
            Some(open) => open,
            None => {
                let open =
                    OpenFile::create(&self.dir, &self.attrs, &self.options, self.next_index)?;
                self.next_index += 1;
                self.files.push(open.path.clone());
                self.current.insert(open)
            }
        };
        open.write_batch(&self.buffers)?;
        self.buffers.clear();
        let max = self.options.max_file_bytes;
        if let Some(full) = self
            .current
            .take_if(|open| max > 0 && open.file.file_size() > max)
        {
            full.finish()?;
        }
        Ok(())
    }

    /// Forces everything flushed so far to stable storage (fsync). Buffered
    /// events are not written; call [`flush`](Self::flush) first for that.
    pub fn sync(&self) -> Result<(), DataFileError> {
        match &self.current {
            Some(open) => open.sync(),
            None => Ok(()),
        }
    }

    /// Events appended so far, including those still buffered.
    pub fn events_written(&self) -> u64 {
        self.events_written
    }

    /// Files created so far, in order; the last may still be open.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Flushes, writes the end-of-run attributes (the events count of the
    /// current file) and closes it.
    pub fn close(mut self) -> Result<RunFiles, DataFileError> {
        self.flush()?;
        if let Some(open) = self.current.take() {
            open.finish()?;
        }
        let mut bytes_on_disk = 0;
        for path in &self.files {
            let meta = std::fs::metadata(path).map_err(|cause| DataFileError::FileSize {
                path: path.clone(),
                cause,
            })?;
            bytes_on_disk += meta.len();
        }
        Ok(RunFiles {
            files: self.files,
            events: self.events_written,
            bytes_on_disk,
        })
    }
}

/// Reads a whole data file, taking the shortest consistent prefix of its
/// events if the columns differ in length (a file whose writer crashed).
pub fn read_file(path: &Path) -> Result<ReadFile, DataFileError> {
    let file = File::open_streaming(path).map_err(|cause| DataFileError::Open {
        path: path.to_owned(),
        cause,
    })?;
    let attrs = file
        .root()
        .attrs()
        .map_err(|cause| DataFileError::ReadAttributes {
            path: path.to_owned(),
            cause,
        })?;
    let not_ours = |reason: &str| DataFileError::NotDataFile {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    match attrs.get("format").and_then(AttrValue::as_str) {
        Some(FORMAT_NAME) => {}
        Some(other) => return Err(not_ours(&format!("format attribute is {other:?}"))),
        None => return Err(not_ours("no format attribute")),
    }
    let bad = |name: &'static str| DataFileError::BadAttribute {
        path: path.to_owned(),
        name,
    };
    let version = attrs
        .get("format_version")
        .and_then(AttrValue::as_u64)
        .ok_or_else(|| bad("format_version"))?;
    if version != u64::from(FORMAT_VERSION) {
        return Err(DataFileError::UnsupportedVersion {
            path: path.to_owned(),
            version,
        });
    }
    let u32_attr = |name: &'static str| {
        attrs
            .get(name)
            .and_then(AttrValue::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| bad(name))
    };
    let string_attr = |name: &'static str| {
        attrs
            .get(name)
            .and_then(AttrValue::as_str)
            .map(str::to_owned)
            .ok_or_else(|| bad(name))
    };
    let run = u32_attr("run")?;
    let subrun = u32_attr("subrun")?;
    let process = string_attr("process")?;
    let software_version = string_attr("software_version")?;
    let config_toml = string_attr("config")?;
    let recorded_events = match attrs.get("events") {
        Some(v) => Some(v.as_u64().ok_or_else(|| bad("events"))?),
        None => None,
    };

    let read = |column: usize| {
        file.dataset(COLUMNS[column].path)
            .map_err(|cause| DataFileError::Read {
                path: path.to_owned(),
                dataset: COLUMNS[column].path,
                cause,
            })
    };
    let fail = |column: usize| {
        move |cause| DataFileError::Read {
            path: path.to_owned(),
            dataset: COLUMNS[column].path,
            cause,
        }
    };
    let data = read(DATA)?.read_u8().map_err(fail(DATA))?;
    let fragment_id = read(FRAGMENT_ID)?.read_u16().map_err(fail(FRAGMENT_ID))?;
    let fragment_type = read(FRAGMENT_TYPE)?
        .read_u8()
        .map_err(fail(FRAGMENT_TYPE))?;
    let fragment_sequence_id = read(FRAGMENT_SEQUENCE_ID)?
        .read_u64()
        .map_err(fail(FRAGMENT_SEQUENCE_ID))?;
    let fragment_timestamp = read(FRAGMENT_TIMESTAMP)?
        .read_u64()
        .map_err(fail(FRAGMENT_TIMESTAMP))?;
    let metadata_bytes = read(METADATA_BYTES)?
        .read_u32()
        .map_err(fail(METADATA_BYTES))?;
    let data_end = read(DATA_END)?.read_u64().map_err(fail(DATA_END))?;
    let ev_run = read(RUN)?.read_u32().map_err(fail(RUN))?;
    let ev_subrun = read(SUBRUN)?.read_u32().map_err(fail(SUBRUN))?;
    let ev_event = read(EVENT)?.read_u64().map_err(fail(EVENT))?;
    let ev_sequence_id = read(SEQUENCE_ID)?.read_u64().map_err(fail(SEQUENCE_ID))?;
    let ev_timestamp = read(TIMESTAMP)?.read_u64().map_err(fail(TIMESTAMP))?;
    let ev_complete = read(COMPLETE)?.read_u8().map_err(fail(COMPLETE))?;
    let fragment_end = read(FRAGMENT_END)?.read_u64().map_err(fail(FRAGMENT_END))?;

    let corrupt = |reason: String| DataFileError::Corrupt {
        path: path.to_owned(),
        reason,
    };

    // Fragments: the prefix present in every fragment column whose bytes are
    // all within `data`.
    let fragment_rows = [
        fragment_id.len(),
        fragment_type.len(),
        fragment_sequence_id.len(),
        fragment_timestamp.len(),
        metadata_bytes.len(),
        data_end.len(),
    ]
    .into_iter()
    .min()
    .unwrap_or(0);
    let mut fragments = Vec::with_capacity(fragment_rows);
    let mut start = 0usize;
    for j in 0..fragment_rows {
        let end = usize::try_from(data_end[j])
            .map_err(|_| corrupt(format!("fragment {j} data_end {} overflows", data_end[j])))?;
        if end < start {
            return Err(corrupt(format!(
                "fragment {j} data_end {end} is before the previous {start}"
            )));
        }
        if end > data.len() {
            break;
        }
        let meta = metadata_bytes[j] as usize;
        if meta > end - start {
            return Err(corrupt(format!(
                "fragment {j} has {meta} bytes of metadata but only {} bytes of data",
                end - start
            )));
        }
        let split = start + meta;
        fragments.push(ReadFragment {
            fragment_id: fragment_id[j],
            fragment_type: fragment_type[j],
            sequence_id: fragment_sequence_id[j],
            timestamp: fragment_timestamp[j],
            metadata: data[start..split].to_vec(),
            payload: data[split..end].to_vec(),
        });
        start = end;
    }
    drop(data);

    // Events: the prefix present in every event column whose fragments are
    // all in the fragment prefix.
    let event_rows = [
        ev_run.len(),
        ev_subrun.len(),
        ev_event.len(),
        ev_sequence_id.len(),
        ev_timestamp.len(),
        ev_complete.len(),
        fragment_end.len(),
    ]
    .into_iter()
    .min()
    .unwrap_or(0);
    let mut events = Vec::with_capacity(event_rows);
    let mut fragments = fragments.into_iter();
    let mut first = 0usize;
    for i in 0..event_rows {
        let end = usize::try_from(fragment_end[i]).map_err(|_| {
            corrupt(format!(
                "event row {i} fragment_end {} overflows",
                fragment_end[i]
            ))
        })?;
        if end < first {
            return Err(corrupt(format!(
                "event row {i} fragment_end {end} is before the previous {first}"
            )));
        }
        if fragments.len() < end - first {
            break;
        }
        events.push(ReadEvent {
            run: ev_run[i],
            subrun: ev_subrun[i],
            event: ev_event[i],
            sequence_id: ev_sequence_id[i],
            timestamp: ev_timestamp[i],
            complete: ev_complete[i] != 0,
            fragments: fragments.by_ref().take(end - first).collect(),
        });
        first = end;
    }

    Ok(ReadFile {
        run,
        subrun,
        process,
        config_toml,
        software_version,
        recorded_events,
        events,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::process::Command;

    fn attributes(process: &str) -> FileAttributes {
        FileAttributes {
            run: 42,
            subrun: 3,
            process: process.to_owned(),
            config_toml: "[run]\nnumber = 42\nname = \"calibration \\\"α\\\"\"\n\n[boards]\nids = [1, 2, 7]\n"
                .to_owned(),
            software_version: "aggregator 0.3.1+g1234abc".to_owned(),
        }
    }

    fn byte(seed: u64, i: usize) -> u8 {
        // splitmix64 of (seed, i)
        let mut x = seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(i as u64);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (x ^ (x >> 31)) as u8
    }

    /// Deterministic events `first..first + n`; event `i` has `fragments_of(i)`
    /// fragments with varied sizes, including empty metadata and payloads.
    fn make_events(
        first: usize,
        n: usize,
        fragments_of: fn(usize) -> usize,
        compressible: bool,
    ) -> Vec<ReadEvent> {
        (first..first + n)
            .map(|i| {
                let fragments = (0..fragments_of(i))
                    .map(|k| {
                        let meta_len = (i + 5 * k) % 24;
                        let payload_len = if (i + k) % 13 == 0 {
                            0
                        } else {
                            (i * 37 + k * 101) % 1500
                        };
                        let seed = (i as u64) << 8 | k as u64;
                        let content = |j: usize| {
                            if compressible {
                                (j % 7) as u8
                            } else {
                                byte(seed, j)
                            }
                        };
                        ReadFragment {
                            fragment_id: (k * 3 + 1) as u16,
                            fragment_type: (i % 4) as u8,
                            sequence_id: 1_000 + i as u64,
                            timestamp: 5_000_000_000 + 1_000 * i as u64 + k as u64,
                            metadata: (0..meta_len).map(|j| byte(!seed, j)).collect(),
                            payload: (0..payload_len).map(content).collect(),
                        }
                    })
                    .collect();
                ReadEvent {
                    run: 42,
                    subrun: 3,
                    event: i as u64 + 1,
                    sequence_id: 1_000 + i as u64,
                    timestamp: 5_000_000_000 + 1_000 * i as u64,
                    complete: i % 5 != 0,
                    fragments,
                }
            })
            .collect()
    }

    fn two(_: usize) -> usize {
        2
    }

    fn write_events(writer: &mut RunWriter, events: &[ReadEvent]) {
        let mut views = Vec::new();
        for e in events {
            views.clear();
            views.extend(e.fragments.iter().map(|f| FragmentView {
                fragment_id: f.fragment_id,
                fragment_type: f.fragment_type,
                sequence_id: f.sequence_id,
                timestamp: f.timestamp,
                metadata: &f.metadata,
                payload: &f.payload,
            }));
            writer
                .append(&EventView {
                    run: e.run,
                    subrun: e.subrun,
                    event: e.event,
                    sequence_id: e.sequence_id,
                    timestamp: e.timestamp,
                    complete: e.complete,
                    fragments: &views,
                })
                .unwrap();
        }
    }

    fn write_run(dir: &Path, options: WriterOptions, events: &[ReadEvent]) -> RunFiles {
        let mut writer = RunWriter::create(dir, attributes("eb01"), options).unwrap();
        write_events(&mut writer, events);
        assert_eq!(writer.events_written(), events.len() as u64);
        writer.close().unwrap()
    }

    fn assert_file_attributes(read: &ReadFile) {
        let expected = attributes("eb01");
        assert_eq!(read.run, 42);
        assert_eq!(read.subrun, 3);
        assert_eq!(read.process, "eb01");
        assert_eq!(read.config_toml, expected.config_toml);
        assert_eq!(read.software_version, "aggregator 0.3.1+g1234abc");
    }

    fn first_mismatch(actual: &[ReadEvent], expected: &[ReadEvent]) -> Option<usize> {
        actual.iter().zip(expected).position(|(a, e)| a != e)
    }

    #[test]
    fn round_trip_preserves_every_event_fragment_and_attribute() {
        let dir = tempfile::tempdir().unwrap();
        let events = make_events(0, 2_500, two, false);
        let run = write_run(dir.path(), WriterOptions::default(), &events);

        let path = dir.path().join("run000042_eb01_000.h5");
        assert_eq!(run.files, vec![path.clone()]);
        assert_eq!(run.events, 2_500);
        assert_eq!(run.bytes_on_disk, std::fs::metadata(&path).unwrap().len());

        let read = read_file(&path).unwrap();
        assert_file_attributes(&read);
        assert_eq!(read.recorded_events, Some(2_500));
        assert_eq!(read.events.len(), 2_500);
        assert_eq!(first_mismatch(&read.events, &events), None);
        assert_eq!(read.events, events);
        // The generator really covers the edge cases.
        let all = || events.iter().flat_map(|e| &e.fragments);
        assert!(all().any(|f| f.metadata.is_empty()));
        assert!(all().any(|f| f.payload.is_empty()));
        assert!(all().any(|f| f.metadata.is_empty() && f.payload.is_empty()));
    }

    #[test]
    fn varying_fragment_counts_including_none_round_trip_with_unaligned_batches() {
        let dir = tempfile::tempdir().unwrap();
        let events = make_events(0, 503, |i| i % 4, false);
        let options = WriterOptions {
            batch_events: 7,
            ..WriterOptions::default()
        };
        let run = write_run(dir.path(), options, &events);
        let read = read_file(&run.files[0]).unwrap();
        assert_eq!(read.events, events);
        assert_eq!(read.recorded_events, Some(503));
    }

    #[test]
    fn deflate_round_trips_and_shrinks_compressible_data() {
        let events = make_events(0, 1_200, two, true);
        let plain_dir = tempfile::tempdir().unwrap();
        let plain = write_run(plain_dir.path(), WriterOptions::default(), &events);
        let dir = tempfile::tempdir().unwrap();
        let options = WriterOptions {
            compression: Compression::Deflate(6),
            batch_events: 250,
            ..WriterOptions::default()
        };
        let packed = write_run(dir.path(), options, &events);

        let read = read_file(&packed.files[0]).unwrap();
        assert_file_attributes(&read);
        assert_eq!(read.events, events);
        assert_eq!(read.recorded_events, Some(1_200));
        assert!(
            packed.bytes_on_disk * 3 < plain.bytes_on_disk,
            "deflate {} vs plain {}",
            packed.bytes_on_disk,
            plain.bytes_on_disk
        );
        let file = File::open(&packed.files[0]).unwrap();
        assert_eq!(
            file.dataset("fragments/data").unwrap().filters(),
            vec![2, 1]
        );
        let file = File::open(&plain.files[0]).unwrap();
        assert!(file.dataset("fragments/data").unwrap().filters().is_empty());
    }

    #[test]
    fn rollover_splits_the_run_into_ordered_named_files() {
        let dir = tempfile::tempdir().unwrap();
        let events = make_events(0, 2_000, two, false);
        let max = 400_000;
        let options = WriterOptions {
            batch_events: 100,
            max_file_bytes: max,
            ..WriterOptions::default()
        };
        let run = write_run(dir.path(), options, &events);
        assert!(run.files.len() >= 3, "{} files", run.files.len());
        assert_eq!(run.events, 2_000);

        let mut seen = Vec::new();
        let mut total_bytes = 0;
        for (index, path) in run.files.iter().enumerate() {
            let name = format!("run000042_eb01_{index:03}.h5");
            assert_eq!(path, &dir.path().join(name));
            let size = std::fs::metadata(path).unwrap().len();
            total_bytes += size;
            if index + 1 < run.files.len() {
                assert!(size > max, "file {index} rolled over at {size} bytes");
            }
            let read = read_file(path).unwrap();
            assert_file_attributes(&read);
            assert!(!read.events.is_empty(), "file {index} is empty");
            assert_eq!(read.recorded_events, Some(read.events.len() as u64));
            seen.extend(read.events);
        }
        assert_eq!(total_bytes, run.bytes_on_disk);
        assert_eq!(seen.len(), 2_000);
        assert_eq!(seen, events);
        // Nothing else was written to the directory.
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            run.files.len()
        );
    }

    #[test]
    fn a_run_without_events_leaves_one_readable_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = write_run(dir.path(), WriterOptions::default(), &[]);
        assert_eq!(run.files.len(), 1);
        assert_eq!(run.events, 0);
        let read = read_file(&run.files[0]).unwrap();
        assert_file_attributes(&read);
        assert_eq!(read.recorded_events, Some(0));
        assert!(read.events.is_empty());
    }

    #[test]
    fn flushed_events_are_readable_before_close_and_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let events = make_events(0, 30, two, false);
        let mut writer =
            RunWriter::create(dir.path(), attributes("eb01"), WriterOptions::default()).unwrap();
        write_events(&mut writer, &events[..20]);
        let path = writer.files()[0].clone();
        assert!(read_file(&path).unwrap().events.is_empty());
        writer.flush().unwrap();
        writer.sync().unwrap();
        let live = read_file(&path).unwrap();
        assert_eq!(live.recorded_events, None);
        assert_eq!(live.events, events[..20]);

        // Buffered but never flushed events are lost on drop; the file stays
        // readable without its end-of-run attribute.
        write_events(&mut writer, &events[20..]);
        assert_eq!(writer.events_written(), 30);
        drop(writer);
        let dropped = read_file(&path).unwrap();
        assert_eq!(dropped.recorded_events, None);
        assert_eq!(dropped.events, events[..20]);
    }

    fn push<T: H5Element>(file: &File, dataset: &str, values: &[T]) {
        file.dataset(dataset).unwrap().append(values).unwrap();
    }

    #[test]
    fn columns_of_different_lengths_read_as_the_shortest_consistent_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let events = make_events(0, 50, |i| i % 3, false);
        let options = WriterOptions {
            batch_events: 10,
            ..WriterOptions::default()
        };
        let run = write_run(dir.path(), options, &events);
        let path = &run.files[0];
        let fragments: usize = events.iter().map(|e| e.fragments.len()).sum();
        let data_len = File::open(path)
            .unwrap()
            .dataset("fragments/data")
            .unwrap()
            .shape()
            .unwrap()[0];

        // A crash mid-flush: the data and some fragment columns of a new
        // fragment, and every event column but fragment_end.
        let file = File::open_rw(path).unwrap();
        push(&file, "fragments/data", &[7u8, 8, 9, 10]);
        push(&file, "fragments/fragment_id", &[99u16]);
        push(&file, "fragments/type", &[1u8]);
        push(&file, "events/run", &[42u32]);
        push(&file, "events/subrun", &[3u32]);
        push(&file, "events/event", &[51u64]);
        push(&file, "events/sequence_id", &[2_000u64]);
        push(&file, "events/timestamp", &[6_000u64]);
        push(&file, "events/complete", &[1u8]);
        file.close().unwrap();
        let read = read_file(path).unwrap();
        assert_eq!(read.recorded_events, Some(50));
        assert_eq!(read.events, events);

        // The fragment columns complete; the event still lacks fragment_end.
        let file = File::open_rw(path).unwrap();
        push(&file, "fragments/sequence_id", &[2_000u64]);
        push(&file, "fragments/timestamp", &[6_001u64]);
        push(&file, "fragments/metadata_bytes", &[1u32]);
        push(&file, "fragments/data_end", &[data_len + 4]);
        file.close().unwrap();
        assert_eq!(read_file(path).unwrap().events, events);

        // fragment_end, written last, publishes the event.
        let file = File::open_rw(path).unwrap();
        push(&file, "events/fragment_end", &[fragments as u64 + 1]);
        // A further complete event row whose fragments were never written.
        push(&file, "events/run", &[42u32]);
        push(&file, "events/subrun", &[3u32]);
        push(&file, "events/event", &[52u64]);
        push(&file, "events/sequence_id", &[2_001u64]);
        push(&file, "events/timestamp", &[6_002u64]);
        push(&file, "events/complete", &[0u8]);
        push(&file, "events/fragment_end", &[fragments as u64 + 3]);
        file.close().unwrap();
        let read = read_file(path).unwrap();
        assert_eq!(read.events.len(), 51);
        assert_eq!(read.events[..50], events[..]);
        assert_eq!(
            read.events[50],
            ReadEvent {
                run: 42,
                subrun: 3,
                event: 51,
                sequence_id: 2_000,
                timestamp: 6_000,
                complete: true,
                fragments: vec![ReadFragment {
                    fragment_id: 99,
                    fragment_type: 1,
                    sequence_id: 2_000,
                    timestamp: 6_001,
                    metadata: vec![7],
                    payload: vec![8, 9, 10],
                }],
            }
        );
    }

    #[test]
    fn decreasing_offsets_are_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let run = write_run(
            dir.path(),
            WriterOptions::default(),
            &make_events(0, 5, two, false),
        );
        let path = &run.files[0];
        let file = File::open_rw(path).unwrap();
        push(&file, "fragments/data", &[1u8]);
        push(&file, "fragments/fragment_id", &[1u16]);
        push(&file, "fragments/type", &[1u8]);
        push(&file, "fragments/sequence_id", &[1u64]);
        push(&file, "fragments/timestamp", &[1u64]);
        push(&file, "fragments/metadata_bytes", &[0u32]);
        push(&file, "fragments/data_end", &[0u64]);
        file.close().unwrap();
        let err = read_file(path).unwrap_err();
        assert!(matches!(err, DataFileError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().starts_with("corrupt data in "), "{err}");
    }

    #[test]
    fn reading_a_missing_or_foreign_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.h5");
        let err = read_file(&missing).unwrap_err();
        assert!(matches!(err, DataFileError::Open { .. }), "{err:?}");
        let message = err.to_string();
        let prefix = format!("failed to open data file {}: ", missing.display());
        assert!(message.starts_with(&prefix), "{message}");
        assert!(message.len() > prefix.len(), "{message}");

        let text = dir.path().join("notes.h5");
        std::fs::write(&text, "this is not an HDF5 file\n").unwrap();
        let err = read_file(&text).unwrap_err();
        assert!(matches!(err, DataFileError::Open { .. }), "{err:?}");

        let empty = dir.path().join("empty.h5");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(read_file(&empty), Err(DataFileError::Open { .. })));

        let foreign = dir.path().join("foreign.h5");
        let mut builder = FileBuilder::new();
        builder.create_dataset("x").with_u32_data(&[1, 2, 3]);
        builder.write(&foreign).unwrap();
        let err = read_file(&foreign).unwrap_err();
        assert!(matches!(err, DataFileError::NotDataFile { .. }), "{err:?}");

        let future = dir.path().join("future.h5");
        let mut builder = FileBuilder::new();
        builder.set_attr("format", AttrValue::VarLenString(FORMAT_NAME.into()));
        builder.set_attr("format_version", AttrValue::U32(2));
        builder.write(&future).unwrap();
        let err = read_file(&future).unwrap_err();
        assert!(
            matches!(err, DataFileError::UnsupportedVersion { version: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn create_refuses_to_overwrite_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run000042_eb01_000.h5");
        std::fs::write(&path, "precious").unwrap();
        let err = RunWriter::create(dir.path(), attributes("eb01"), WriterOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, DataFileError::FileExists { .. }), "{err:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn invalid_options_and_process_names_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let create = |process: &str, options: WriterOptions| {
            RunWriter::create(dir.path(), attributes(process), options).err()
        };
        for level in [0, 10] {
            let options = WriterOptions {
                compression: Compression::Deflate(level),
                ..WriterOptions::default()
            };
            assert!(matches!(
                create("eb01", options),
                Some(DataFileError::InvalidOptions(_))
            ));
        }
        let options = WriterOptions {
            batch_events: 0,
            ..WriterOptions::default()
        };
        assert!(matches!(
            create("eb01", options),
            Some(DataFileError::InvalidOptions(_))
        ));
        for process in ["", "..", "a/b", "eb 01", "ä"] {
            assert!(
                matches!(
                    create(process, WriterOptions::default()),
                    Some(DataFileError::InvalidProcessName(_))
                ),
                "{process:?}"
            );
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn every_dataset_is_chunked_unlimited_and_typed_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let options = WriterOptions {
            batch_events: 100_000,
            ..WriterOptions::default()
        };
        let run = write_run(dir.path(), options, &make_events(0, 10, two, false));
        let file = File::open(&run.files[0]).unwrap();
        for column in &COLUMNS {
            let ds = file.dataset(column.path).unwrap();
            assert_eq!(ds.maxshape().unwrap(), Some(vec![MaxExtent::Unlimited]));
            let chunk = ds.chunk_shape().unwrap().unwrap();
            assert_eq!(chunk, vec![32_768], "{}", column.path);
            let size = match column.kind {
                Kind::U8 => 1,
                Kind::U16 => 2,
                Kind::U32 => 4,
                Kind::U64 => 8,
            };
            assert_eq!(ds.element_size().unwrap(), size, "{}", column.path);
        }
    }

    #[test]
    fn errors_can_cross_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<DataFileError>();
        assert_send_sync::<RunWriter>();
    }

    fn json_string(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The document `tests/h5dump_events.py` should print for these files.
    fn expected_dump(files: &[(&Path, ReadFile)]) -> String {
        let file_docs: Vec<String> = files
            .iter()
            .map(|(path, read)| {
                let events: Vec<String> = read
                    .events
                    .iter()
                    .map(|e| {
                        let fragments: Vec<String> = e
                            .fragments
                            .iter()
                            .map(|f| {
                                format!(
                                    "{{\"fragment_id\":{},\"type\":{},\"sequence_id\":{},\"timestamp\":{},\"metadata_hex\":\"{}\",\"payload_hex\":\"{}\"}}",
                                    f.fragment_id,
                                    f.fragment_type,
                                    f.sequence_id,
                                    f.timestamp,
                                    hex(&f.metadata),
                                    hex(&f.payload)
                                )
                            })
                            .collect();
                        format!(
                            "{{\"run\":{},\"subrun\":{},\"event\":{},\"sequence_id\":{},\"timestamp\":{},\"complete\":{},\"fragments\":[{}]}}",
                            e.run,
                            e.subrun,
                            e.event,
                            e.sequence_id,
                            e.timestamp,
                            e.complete,
                            fragments.join(",")
                        )
                    })
                    .collect();
                let recorded = read
                    .recorded_events
                    .map_or_else(|| "null".to_owned(), |n| n.to_string());
                format!(
                    "{{\"path\":{},\"attrs\":{{\"run\":{},\"subrun\":{},\"process\":{},\"format_version\":{FORMAT_VERSION},\"events\":{recorded}}},\"events\":[{}]}}",
                    json_string(&path.display().to_string()),
                    read.run,
                    read.subrun,
                    json_string(&read.process),
                    events.join(",")
                )
            })
            .collect();
        format!("{{\"files\":[{}]}}", file_docs.join(","))
    }

    /// Runs the dump script on the files, compares its output with the
    /// expected document, and checks dtypes and chunking with h5py itself.
    const H5PY_CHECK: &str = r#"
import json, subprocess, sys
import h5py
script, expected_path, *paths = sys.argv[1:]
out = subprocess.run([sys.executable, script, *paths], check=True, capture_output=True, text=True).stdout
actual = json.loads(out)
with open(expected_path) as f:
    expected = json.load(f)
if actual != expected:
    for fa, fe in zip(actual["files"], expected["files"]):
        if fa["attrs"] != fe["attrs"]:
            sys.exit(f"attrs differ: {fa['attrs']} != {fe['attrs']}")
        if len(fa["events"]) != len(fe["events"]):
            sys.exit(f"event counts differ: {len(fa['events'])} != {len(fe['events'])}")
        for i, (a, e) in enumerate(zip(fa["events"], fe["events"])):
            if a != e:
                sys.exit(f"event {i} differs: {a} != {e}")
    sys.exit("documents differ")
types = {"fragments/fragment_id": "uint16", "fragments/type": "uint8",
         "fragments/sequence_id": "uint64", "fragments/timestamp": "uint64",
         "fragments/metadata_bytes": "uint32", "fragments/data_end": "uint64",
         "fragments/data": "uint8", "events/run": "uint32", "events/subrun": "uint32",
         "events/event": "uint64", "events/sequence_id": "uint64",
         "events/timestamp": "uint64", "events/complete": "uint8",
         "events/fragment_end": "uint64"}
for p in paths:
    with h5py.File(p, "r", locking=False) as f:
        assert f.attrs["format"] == "daq-events", f.attrs["format"]
        assert isinstance(f.attrs["config"], str)
        for name, dtype in types.items():
            ds = f[name]
            assert str(ds.dtype) == dtype, (name, ds.dtype)
            assert ds.maxshape == (None,), (name, ds.maxshape)
            assert ds.chunks is not None and ds.chunks[0] <= 32768, (name, ds.chunks)
            ds[()]
print("ok")
"#;

    fn python_with_h5py() -> Option<String> {
        let python = std::env::var("DAQ_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let ok = Command::new(&python)
            .args(["-c", "import h5py, numpy"])
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(python)
    }

    #[test]
    fn h5dump_script_agrees_with_read_file() {
        let Some(python) = python_with_h5py() else {
            eprintln!("skipped: no python with h5py (set DAQ_TEST_PYTHON)");
            return;
        };
        let script = std::env::var("DAQ_H5DUMP_SCRIPT").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/h5dump_events.py").to_owned()
        });
        let dir = tempfile::tempdir().unwrap();
        let events = make_events(0, 700, |i| 1 + i % 3, false);
        let options = WriterOptions {
            compression: Compression::Deflate(1),
            batch_events: 64,
            max_file_bytes: 600_000,
        };
        let run = write_run(dir.path(), options, &events);
        assert!(run.files.len() >= 2, "{run:?}");

        // A crashed file too: an event row without its fragments.
        let crashed = dir.path().join("crashed.h5");
        std::fs::copy(run.files.last().unwrap(), &crashed).unwrap();
        let file = File::open_rw(&crashed).unwrap();
        push(&file, "fragments/data", &[1u8, 2]);
        push(&file, "events/run", &[42u32]);
        push(&file, "events/subrun", &[3u32]);
        push(&file, "events/event", &[9_999u64]);
        push(&file, "events/sequence_id", &[1u64]);
        push(&file, "events/timestamp", &[1u64]);
        push(&file, "events/complete", &[1u8]);
        push(&file, "events/fragment_end", &[u64::MAX / 2]);
        file.root().remove_attr("events").unwrap();
        file.close().unwrap();

        let mut paths: Vec<&Path> = run.files.iter().map(PathBuf::as_path).collect();
        paths.push(&crashed);
        let reads: Vec<(&Path, ReadFile)> =
            paths.iter().map(|p| (*p, read_file(p).unwrap())).collect();
        assert_eq!(reads.last().unwrap().1.recorded_events, None);
        let expected = dir.path().join("expected.json");
        std::fs::write(&expected, expected_dump(&reads)).unwrap();

        let output = Command::new(&python)
            .arg("-c")
            .arg(H5PY_CHECK)
            .arg(&script)
            .arg(&expected)
            .args(&paths)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "h5py check failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
