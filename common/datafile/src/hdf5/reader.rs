//! Owns reading an HDF5 data file back: its attributes and the shortest consistent prefix of its events.

use std::path::Path;

use hdf5_pure::{AttrValue, File};

use super::DataFileError;
use super::columns::{COLUMNS, ColumnSource, Columns, Element};
use super::format::{FORMAT_NAME, FORMAT_VERSION};

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

/// Reads a whole data file, taking the shortest consistent prefix of its
/// events if the columns differ in length (a file whose writer crashed).
#[allow(
    clippy::indexing_slicing,
    reason = "rows stay below fragment_rows()/event_rows(), the shortest column of their table, and byte ranges are checked against data.len() before slicing"
)]
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

    let mut c = Columns::read_from(&mut FileColumns { file: &file, path })?;

    let corrupt = |reason: String| DataFileError::Corrupt {
        path: path.to_owned(),
        reason,
    };

    // Fragments: the prefix present in every fragment column whose bytes are
    // all within `data`.
    let fragment_rows = c.fragment_rows();
    let mut fragments = Vec::with_capacity(fragment_rows);
    let mut start = 0usize;
    for j in 0..fragment_rows {
        let end = usize::try_from(c.data_end[j])
            .map_err(|_| corrupt(format!("fragment {j} data_end {} overflows", c.data_end[j])))?;
        if end < start {
            return Err(corrupt(format!(
                "fragment {j} data_end {end} is before the previous {start}"
            )));
        }
        if end > c.data.len() {
            break;
        }
        let meta = c.metadata_bytes[j] as usize;
        if meta > end - start {
            return Err(corrupt(format!(
                "fragment {j} has {meta} bytes of metadata but only {} bytes of data",
                end - start
            )));
        }
        let split = start + meta;
        fragments.push(ReadFragment {
            fragment_id: c.fragment_id[j],
            fragment_type: c.fragment_type[j],
            sequence_id: c.fragment_sequence_id[j],
            timestamp: c.fragment_timestamp[j],
            metadata: c.data[start..split].to_vec(),
            payload: c.data[split..end].to_vec(),
        });
        start = end;
    }
    // Free the bytes before building the events.
    drop(std::mem::take(&mut c.data));

    // Events: the prefix present in every event column whose fragments are
    // all in the fragment prefix.
    let event_rows = c.event_rows();
    let mut events = Vec::with_capacity(event_rows);
    let mut fragments = fragments.into_iter();
    let mut first = 0usize;
    for i in 0..event_rows {
        let end = usize::try_from(c.fragment_end[i]).map_err(|_| {
            corrupt(format!(
                "event row {i} fragment_end {} overflows",
                c.fragment_end[i]
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
            run: c.run[i],
            subrun: c.subrun[i],
            event: c.event[i],
            sequence_id: c.sequence_id[i],
            timestamp: c.timestamp[i],
            complete: c.complete[i] != 0,
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

/// Reads the columns of an open file.
struct FileColumns<'a> {
    file: &'a File,
    path: &'a Path,
}

#[allow(
    clippy::indexing_slicing,
    reason = "`column` is an index into the static COLUMNS table, never data"
)]
impl ColumnSource for FileColumns<'_> {
    fn read<T: Element>(&mut self, column: usize) -> Result<Vec<T>, DataFileError> {
        let dataset = COLUMNS[column].path;
        let fail = |cause| DataFileError::Read {
            path: self.path.to_owned(),
            dataset,
            cause,
        };
        self.file
            .dataset(dataset)
            .map_err(fail)?
            .read::<T>()
            .map_err(fail)
    }
}
