//! Owns writing a run's HDF5 data files: buffering events column-wise, appending them in the crash-consistent order, and rolling over to a new file by size.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use hdf5_pure::{AttrValue, Dataset, File, FileAccessProperties, SyncPolicy};

use super::columns::{COLUMNS, ColumnSink, Columns, Element};
use super::format::{EXTENSION, layout};
use super::{Compression, DataFileError, EventView, FileAttributes, RunFiles, WriterOptions};
use crate::rolling::{BatchObserver, FileError, Rolling, Segment, create_new};

/// A batch is flushed early once its fragment data reaches this many bytes,
/// bounding the writer's memory whatever the event size. Measured on
/// 512 KiB events (interleaved, writer CPU time): 64 MiB batches cost about
/// 30% more CPU per byte than 4-16 MiB ones (the batch no longer stays in
/// cache between our copy and `hdf5-pure`'s); 16 MiB keeps the partial-chunk
/// overhead of a flush (see "Space overhead" in the format docs) under 1%.
const MAX_BUFFERED_DATA_BYTES: usize = 16 * 1024 * 1024;

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
        path: &Path,
        attrs: &FileAttributes,
        options: &WriterOptions,
    ) -> Result<Self, DataFileError> {
        let path = path.to_owned();
        let bytes =
            layout(attrs, options)
                .finish()
                .map_err(|cause| DataFileError::BuildLayout {
                    path: path.clone(),
                    cause,
                })?;
        let mut out = create_new(&path)?;
        out.write_all(&bytes)
            .and_then(|()| out.flush())
            .map_err(|cause| FileError::CreateFile {
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
        for column in COLUMNS {
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

    /// Appends one batch in the crash-consistent order of the format docs
    /// (the column table's order).
    fn write_batch(&mut self, b: &Columns) -> Result<(), DataFileError> {
        b.append_to(self)?;
        self.events += b.event_rows() as u64;
        self.fragments += b.fragment_rows() as u64;
        self.data_bytes += b.data.len() as u64;
        Ok(())
    }

    fn sync(&self) -> Result<(), DataFileError> {
        self.file.sync().map_err(|cause| DataFileError::Sync {
            path: self.path.clone(),
            cause,
        })
    }
}

impl Segment for OpenFile {
    type Error = DataFileError;

    fn bytes(&self) -> u64 {
        self.file.file_size()
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

#[allow(
    clippy::indexing_slicing,
    reason = "`column` is an index into the static COLUMNS table, never data; `datasets` has one entry per column"
)]
impl ColumnSink for OpenFile {
    fn append<T: Element>(&mut self, column: usize, values: &[T]) -> Result<(), DataFileError> {
        if values.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        T::append_to(&mut self.datasets[column], values).map_err(|cause| DataFileError::Append {
            path: path.clone(),
            dataset: COLUMNS[column].path,
            cause,
        })
    }
}

fn validate(options: &WriterOptions) -> Result<(), DataFileError> {
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
    Ok(())
}

/// Writes the events of one run of one process into one or more files
/// `<dir>/run<RUN:06>_<process>_<INDEX:03>.h5` (index from 0), rolling over by size.
///
/// Events are buffered column-wise and appended once per `batch_events`
/// events (or 16 MiB of fragment data). Call [`close`](Self::close) to flush
/// the last batch and mark the files complete; dropping the writer instead
/// loses the buffered events and leaves the current file without its `events`
/// attribute (still readable).
///
/// After a failed flush the file may hold part of the batch (readers drop it
/// as an inconsistent tail); the writer then refuses further work with
/// [`DataFileError::WriterFailed`].
pub struct RunWriter {
    attrs: FileAttributes,
    options: WriterOptions,
    buffers: Columns,
    files: Rolling<OpenFile>,
    /// Events appended, buffered ones included.
    events_written: u64,
}

impl RunWriter {
    /// Validates the options and creates the first file (creating `dir` if
    /// needed). Fails if the file already exists.
    pub fn create(
        dir: &Path,
        attrs: FileAttributes,
        options: WriterOptions,
    ) -> Result<Self, DataFileError> {
        validate(&options)?;
        let files = Rolling::create(
            dir,
            attrs.run,
            &attrs.process,
            EXTENSION,
            options.max_file_bytes,
            |path, _| OpenFile::create(path, &attrs, &options),
        )?;
        let mut buffers = Columns::default();
        buffers.reserve_events(options.batch_events);
        Ok(Self {
            attrs,
            options,
            buffers,
            files,
            events_written: 0,
        })
    }

    /// Copies the event into the column buffers; flushes when `batch_events`
    /// events (or 16 MiB of fragment data) are buffered.
    pub fn append(&mut self, event: &EventView<'_>) -> Result<(), DataFileError> {
        self.files.usable()?;
        for f in event.fragments {
            if u32::try_from(f.metadata.len()).is_err() {
                return Err(DataFileError::MetadataTooLarge {
                    event: event.event,
                    fragment_id: f.fragment_id,
                    len: f.metadata.len(),
                });
            }
        }
        let (data_base, fragment_base) = match self.files.current() {
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
        if b.event_rows() >= self.options.batch_events || b.data.len() >= MAX_BUFFERED_DATA_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends the buffered events to the current file (creating the next file
    /// first after a rollover), then rolls over if the file exceeds
    /// `max_file_bytes`.
    pub fn flush(&mut self) -> Result<(), DataFileError> {
        self.files.usable()?;
        let events = self.buffers.event_rows() as u64;
        if events == 0 {
            return Ok(());
        }
        let (attrs, options, buffers) = (&self.attrs, &self.options, &mut self.buffers);
        self.files.write_batch(
            events,
            |path, _| OpenFile::create(path, attrs, options),
            |open| open.write_batch(buffers),
        )?;
        buffers.clear();
        Ok(())
    }

    /// Tells `observer` of every batch that reaches a file.
    pub fn observe(&mut self, observer: BatchObserver) {
        self.files.observe(observer);
    }

    /// The files' sizes so far (see [`Rolling`]'s rule: the end-of-file
    /// attributes come at close).
    pub fn bytes_written(&self) -> u64 {
        self.files.bytes()
    }

    /// Events in the files: every batch flushed so far (the buffered
    /// events are not).
    pub fn events_in_files(&self) -> u64 {
        self.files.events()
    }

    /// Forces everything flushed so far to stable storage (fsync). Buffered
    /// events are not written; call [`flush`](Self::flush) first for that.
    pub fn sync(&self) -> Result<(), DataFileError> {
        match self.files.current() {
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
        self.files.files()
    }

    /// Events appended but not yet in a file: lost if the next flush fails
    /// (after a failed flush, the events that flush lost).
    pub fn events_buffered(&self) -> u64 {
        self.buffers.event_rows() as u64
    }

    /// Flushes, writes the end-of-run attributes (the events count of the
    /// current file) and closes it.
    pub fn close(mut self) -> Result<RunFiles, DataFileError> {
        self.flush()?;
        self.files.close(self.events_written)
    }
}
