//! Owns the HDF5 file format of the data files: the on-disk contract below, the file name, the file attributes, and the initial empty layout a file is created with.
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
//! # Layout (format version 2)
//!
//! Version 2 (the toy fragments became artdaq-core-demo's: `TOY1` = 2,
//! `TOY2` = 3, metadata word with the board in bits 0-15 and the ADC bits in
//! 16-23) has the datasets of version 1; the version says which toy bytes
//! are inside. Readers of this version refuse version 1 files.
//!
//! File (root group) attributes:
//!
//! | name               | type                     | meaning                                        |
//! |--------------------|--------------------------|------------------------------------------------|
//! | `format`           | variable-length string   | always `"daq-events"`                          |
//! | `format_version`   | u32                      | `2`                                            |
//! | `run`, `subrun`    | u32                      | run and subrun numbers                         |
//! | `process`          | variable-length string   | name of the writing process                    |
//! | `software_version` | variable-length string   | version of the writing software                |
//! | `config`           | variable-length string   | the run configuration, TOML text               |
//! | `events`           | u64                      | events in this file; written by close only, so |
//! |                    |                          | its absence means the writer did not finish    |
//!
//! Two groups, `/fragments` (one row per fragment, in event order, plus the
//! byte column `data`) and `/events` (one row per event), hold the datasets
//! listed, with their element types and meanings, in the column table of
//! `columns.rs` (the one list the writer, the reader and
//! `tests/h5dump_events.py` follow). Every dataset is one-dimensional, chunked
//! and unlimited (`maxshape=(None,)`). Row `i` of all columns of a group
//! describes the same fragment or event.
//!
//! Fragment `j` occupies `data[start..data_end[j]]` with `start = data_end[j-1]`
//! (0 for `j == 0`); its metadata is the first `metadata_bytes[j]` of those
//! bytes and its payload the rest.
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
//! columns, the event columns, and `events/fragment_end` last. An append
//! survives a crash of the writing process as a valid prefix of what it
//! added (`hdf5-pure` commits an append atomically in whole-chunk batches of
//! about 1 MiB, so a large `data` append may be cut between two of them), so
//! after a crash the columns may differ in length but each holds a valid
//! prefix. Readers take the
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

use hdf5_pure::{AttrValue, DatasetBuilder, FileBuilder, MaxExtent};

use super::columns::{self, COLUMNS, Kind, Rows};
use super::{Compression, FileAttributes, WriterOptions};
#[cfg(doc)]
use super::{DataFileError, RunWriter, read_file};

/// Value of the `format` file attribute.
pub const FORMAT_NAME: &str = "daq-events";
/// Value of the `format_version` file attribute written by this module.
pub const FORMAT_VERSION: u32 = 2;

/// Largest chunk dimension used for any dataset (see the module docs).
const MAX_CHUNK_ELEMENTS: u64 = 32_768;
/// Chunk dimension of `fragments/data`, in bytes.
const DATA_CHUNK_BYTES: u64 = 32_768;

/// File-name suffix of HDF5 data files (after the index).
pub const EXTENSION: &str = "h5";

/// The file name of file `index` of a run of a process.
pub fn file_name(run: u32, process: &str, index: u32) -> String {
    crate::rolling::file_name(run, process, index, EXTENSION)
}

/// The initial, empty file: attributes, groups and datasets.
pub(super) fn layout(attrs: &FileAttributes, options: &WriterOptions) -> FileBuilder {
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
    for group_name in columns::groups() {
        let mut group = builder.create_group(group_name);
        for column in COLUMNS.iter().filter(|c| c.group == group_name) {
            let chunk = match column.rows {
                Rows::Bytes => DATA_CHUNK_BYTES,
                Rows::Fragment | Rows::Event => column_chunk,
            };
            configure(
                group.create_dataset(column.name),
                column.kind,
                chunk,
                options,
            );
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
