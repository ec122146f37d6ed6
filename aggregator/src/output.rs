//! Owns the choice of data-file format for a run (`aggregator.format`): opens
//! the configured writer, HDF5 or artdaq-binary, and hands it batches of
//! events straight from the shared-memory store.

use daq_datafile::RunFiles;
use daq_datafile::artdaq_binary::{BinaryFileError, BinaryWriter};
use daq_datafile::hdf5::{
    BatchObserver, Compression, DataFileError, EventView, FileAttributes, FragmentView, RunWriter,
    WriterOptions,
};
use daq_format::config::{DataFormat, SystemConfig};
use daq_format::fragment::{FragmentError, split_packed};
use daq_shm::ReadGuard;
use std::path::Path;

/// Errors of opening, writing or closing a run's data files.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("hdf5 data file: {0}")]
    Hdf5(#[from] DataFileError),
    #[error("artdaq-binary data file: {0}")]
    ArtdaqBinary(#[from] BinaryFileError),
    #[error("event {seq}: corrupt shared-memory buffer: {cause}")]
    CorruptEvent { seq: u64, cause: FragmentError },
}

/// The data files of one run of one aggregator, in the configured format.
pub enum Output {
    Hdf5(Box<RunWriter>),
    ArtdaqBinary {
        writer: BinaryWriter,
        batch_events: usize,
    },
}

impl Output {
    /// Opens the run's first file in `dir` (created if need be).
    pub fn create(
        config: &SystemConfig,
        run: u32,
        process: &str,
        dir: &Path,
    ) -> Result<Self, OutputError> {
        let a = &config.aggregator;
        Ok(match a.format {
            DataFormat::Hdf5 => {
                let options = WriterOptions {
                    compression: if a.deflate_level == 0 {
                        Compression::None
                    } else {
                        Compression::Deflate(a.deflate_level)
                    },
                    batch_events: a.batch_events,
                    max_file_bytes: a.max_file_bytes,
                };
                let attrs = FileAttributes {
                    run,
                    subrun: 1,
                    process: process.to_owned(),
                    config_toml: config.to_toml(),
                    software_version: env!("CARGO_PKG_VERSION").to_string(),
                };
                let mut w = RunWriter::create(dir, attrs, options)?;
                w.observe(batch_metrics());
                Self::Hdf5(Box::new(w))
            }
            DataFormat::ArtdaqBinary => {
                let mut writer =
                    BinaryWriter::create_with(dir, run, process, a.max_file_bytes, a.direct_io)?;
                if a.direct_io && !writer.direct_io() {
                    tracing::warn!(
                        dir = %dir.display(),
                        "aggregator.direct_io: the file system does not take O_DIRECT; writing through the page cache"
                    );
                }
                writer.observe(batch_metrics());
                Self::ArtdaqBinary {
                    writer,
                    batch_events: a.batch_events.max(1),
                }
            }
        })
    }

    /// Most events to hand [`write`](Self::write) at once. The HDF5 writer
    /// copies each event into its own column buffers, so it takes them one
    /// at a time and frees each buffer at once; the artdaq-binary writer
    /// writes a whole batch from the mapping with one `writev`.
    pub fn batch_limit(&self) -> usize {
        match self {
            Self::Hdf5(_) => 1,
            Self::ArtdaqBinary { batch_events, .. } => *batch_events,
        }
    }

    /// Writes events taken from the store, in order. The event number is
    /// the sequence id; every event is subrun 1.
    pub fn write(&mut self, run: u32, events: &[ReadGuard<'_>]) -> Result<(), OutputError> {
        match self {
            Self::Hdf5(w) => {
                for e in events {
                    append_hdf5(w, run, e.sequence_id(), e.complete(), e.data())?;
                }
                Ok(())
            }
            Self::ArtdaqBinary { writer, .. } => {
                Ok(writer.write_batch(events.iter().map(ReadGuard::data))?)
            }
        }
    }

    /// Events handed to [`write`](Self::write) that are not in a file yet
    /// (the HDF5 writer's buffered rows): lost if the writer fails now.
    pub fn events_pending(&self) -> u64 {
        match self {
            Self::Hdf5(w) => w.events_buffered(),
            Self::ArtdaqBinary { .. } => 0,
        }
    }

    /// What is in the files so far: (events, bytes), both moving once per
    /// batch that reached a file (see `Counters.events_written`).
    pub fn in_files(&self) -> (u64, u64) {
        match self {
            Self::Hdf5(w) => (w.events_in_files(), w.bytes_written()),
            Self::ArtdaqBinary { writer, .. } => (writer.events_written(), writer.bytes_written()),
        }
    }

    /// The files created so far, in order; the last may still be open.
    pub fn files(&self) -> &[std::path::PathBuf] {
        match self {
            Self::Hdf5(w) => w.files(),
            Self::ArtdaqBinary { writer, .. } => writer.files(),
        }
    }

    /// Flushes and closes the files. A failure says how many events are
    /// in the files all the same: a close that fails after its last flush
    /// (the end-of-run attributes, say) leaves every event readable, and
    /// those are written, not lost.
    pub fn close(self) -> Result<RunFiles, CloseFailed> {
        match self {
            Self::Hdf5(mut w) => {
                let failed = |w: &RunWriter, e: DataFileError| CloseFailed {
                    error: e.into(),
                    events_in_files: w.events_in_files(),
                };
                if let Err(e) = w.flush() {
                    return Err(failed(&w, e));
                }
                let in_files = w.events_in_files();
                w.close().map_err(|e| CloseFailed {
                    error: e.into(),
                    events_in_files: in_files,
                })
            }
            Self::ArtdaqBinary { writer, .. } => {
                let in_files = writer.events_written();
                writer.close().map_err(|e| CloseFailed {
                    error: e.into(),
                    events_in_files: in_files,
                })
            }
        }
    }
}

/// A close that failed, and the events that are in the files regardless.
#[derive(Debug)]
pub struct CloseFailed {
    pub error: OutputError,
    pub events_in_files: u64,
}

/// Every batch that reaches a file is timed in the data-path metrics.
fn batch_metrics() -> BatchObserver {
    Box::new(|batch| {
        daq_runtime::metrics::data_path()
            .write_batch_seconds
            .observe(batch.elapsed.as_secs_f64());
    })
}

/// Appends one event to the HDF5 writer, straight from its buffer.
fn append_hdf5(
    w: &mut RunWriter,
    run: u32,
    seq: u64,
    complete: bool,
    data: &[u8],
) -> Result<(), OutputError> {
    let mut fragments = Vec::with_capacity(4);
    for f in split_packed(data) {
        let f = f.map_err(|cause| OutputError::CorruptEvent { seq, cause })?;
        fragments.push(FragmentView {
            fragment_id: f.header.fragment_id,
            fragment_type: f.header.fragment_type,
            sequence_id: f.header.sequence_id,
            timestamp: f.header.timestamp,
            metadata: f.metadata(),
            payload: f.payload(),
        });
    }
    let view = EventView {
        run,
        subrun: 1,
        event: seq,
        sequence_id: seq,
        timestamp: fragments.first().map_or(0, |f| f.timestamp),
        complete,
        fragments: &fragments,
    };
    Ok(w.append(&view)?)
}
