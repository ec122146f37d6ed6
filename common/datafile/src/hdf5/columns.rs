//! Owns the column table of the HDF5 data file: the one list of its 14 datasets (path, element type, meaning, append order) that the layout, the writer, the reader and the tests follow.
//!
//! The `columns!` invocation below is the only place the columns are listed.
//! From it come [`COLUMNS`] (one [`Column`] descriptor per dataset, used to
//! create the datasets and to name them in errors) and [`Columns`] (one `Vec`
//! per dataset: the writer's batch buffers and the reader's loaded columns),
//! whose `append_to`/`read_from` visit every column in table order.
//! `tests/h5dump_events.py` walks the datasets of each group rather than
//! naming them, and a test checks that a written file holds exactly the
//! table's datasets, so the h5py dump follows this table too.
//!
//! Adding a column: add a line to the table (in its group's section), fill
//! it in `RunWriter::append`, read it in `read_file`, and bump
//! `FORMAT_VERSION` if old readers would misread the file.

use hdf5_pure::{Dataset, H5Element};

use super::DataFileError;

/// The element type of a column, as stored in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    U8,
    U16,
    U32,
    U64,
}

impl Kind {
    /// Bytes per element.
    #[cfg(test)]
    pub(super) fn size(self) -> u64 {
        match self {
            Kind::U8 => 1,
            Kind::U16 => 2,
            Kind::U32 => 4,
            Kind::U64 => 8,
        }
    }

    /// The numpy dtype name h5py reports for the column.
    #[cfg(test)]
    pub(super) fn numpy_dtype(self) -> &'static str {
        match self {
            Kind::U8 => "uint8",
            Kind::U16 => "uint16",
            Kind::U32 => "uint32",
            Kind::U64 => "uint64",
        }
    }
}

/// A Rust element type of a column.
pub(super) trait Element: H5Element {
    const KIND: Kind;

    /// Appends `values` to `dataset` (typed: `hdf5-pure` serializes each
    /// value little-endian, one element at a time).
    fn append_to(dataset: &mut Dataset, values: &[Self]) -> Result<(), hdf5_pure::Error> {
        dataset.append(values)
    }
}

impl Element for u8 {
    const KIND: Kind = Kind::U8;

    /// Bytes are their own little-endian form, so they go in with one copy
    /// instead of `hdf5-pure`'s element-by-element typed append, which was
    /// most of the writer's CPU for `fragments/data`.
    fn append_to(dataset: &mut Dataset, values: &[Self]) -> Result<(), hdf5_pure::Error> {
        dataset.append_raw(values)
    }
}
impl Element for u16 {
    const KIND: Kind = Kind::U16;
}
impl Element for u32 {
    const KIND: Kind = Kind::U32;
}
impl Element for u64 {
    const KIND: Kind = Kind::U64;
}

/// What a row of a column describes, which decides its chunking and how the
/// reader finds the consistent prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rows {
    /// One byte of fragment data (`fragments/data`): chunks of
    /// `DATA_CHUNK_BYTES`, indexed by `fragments/data_end`.
    Bytes,
    /// One fragment: chunks of `batch_events` elements.
    Fragment,
    /// One event: chunks of `batch_events` elements.
    Event,
}

/// One dataset of the layout.
#[derive(Debug)]
pub(super) struct Column {
    /// The group the dataset is in: `fragments` or `events`.
    pub group: &'static str,
    /// The dataset's name in its group.
    pub name: &'static str,
    /// `group/name`.
    pub path: &'static str,
    pub kind: Kind,
    pub rows: Rows,
}

/// Receives every column of a [`Columns`] in table order.
pub(super) trait ColumnSink {
    /// `column` is the index into [`COLUMNS`].
    fn append<T: Element>(&mut self, column: usize, values: &[T]) -> Result<(), DataFileError>;
}

/// Supplies every column of a [`Columns`] in table order.
pub(super) trait ColumnSource {
    /// `column` is the index into [`COLUMNS`].
    fn read<T: Element>(&mut self, column: usize) -> Result<Vec<T>, DataFileError>;
}

/// Generates [`COLUMNS`] and [`Columns`] from the table. Sections are in
/// append order (see "Crash consistency" in the format docs): the data bytes
/// first, then the fragment columns, then the event columns with
/// `fragment_end`, which publishes an event, last.
macro_rules! columns {
    (
        $group_b:literal bytes { $( $field_b:ident : $ty_b:ty = $name_b:literal, $meaning_b:literal; )* }
        $group_f:literal fragment rows { $( $field_f:ident : $ty_f:ty = $name_f:literal, $meaning_f:literal; )* }
        $group_e:literal event rows { $( $field_e:ident : $ty_e:ty = $name_e:literal, $meaning_e:literal; )* }
    ) => {
        /// Every dataset of the file, in append order.
        pub(super) const COLUMNS: &[Column] = &[
            $( columns!(@column $group_b, $name_b, $ty_b, Rows::Bytes), )*
            $( columns!(@column $group_f, $name_f, $ty_f, Rows::Fragment), )*
            $( columns!(@column $group_e, $name_e, $ty_e, Rows::Event), )*
        ];

        /// The values of every column, one `Vec` per dataset (field names
        /// are the table's).
        #[derive(Default)]
        pub(super) struct Columns {
            $( #[doc = $meaning_b] pub $field_b: Vec<$ty_b>, )*
            $( #[doc = $meaning_f] pub $field_f: Vec<$ty_f>, )*
            $( #[doc = $meaning_e] pub $field_e: Vec<$ty_e>, )*
        }

        impl Columns {
            /// Empties every column, keeping the allocations.
            pub(super) fn clear(&mut self) {
                $( self.$field_b.clear(); )*
                $( self.$field_f.clear(); )*
                $( self.$field_e.clear(); )*
            }

            /// Reserves room for `events` rows in every event column.
            pub(super) fn reserve_events(&mut self, events: usize) {
                $( self.$field_e.reserve_exact(events); )*
            }

            /// Fragment rows present in every fragment column.
            pub(super) fn fragment_rows(&self) -> usize {
                [$( self.$field_f.len() ),*].into_iter().min().unwrap_or(0)
            }

            /// Event rows present in every event column.
            pub(super) fn event_rows(&self) -> usize {
                [$( self.$field_e.len() ),*].into_iter().min().unwrap_or(0)
            }

            /// Hands every column to `sink`, in table (append) order.
            pub(super) fn append_to(&self, sink: &mut impl ColumnSink) -> Result<(), DataFileError> {
                let mut column = 0;
                $( sink.append(column, &self.$field_b)?; column += 1; )*
                $( sink.append(column, &self.$field_f)?; column += 1; )*
                $( sink.append(column, &self.$field_e)?; column += 1; )*
                debug_assert_eq!(column, COLUMNS.len());
                Ok(())
            }

            /// Reads every column from `source`, in table order.
            pub(super) fn read_from(source: &mut impl ColumnSource) -> Result<Self, DataFileError> {
                let mut column = 0;
                let mut next = || {
                    column += 1;
                    column - 1
                };
                Ok(Self {
                    $( $field_b: source.read(next())?, )*
                    $( $field_f: source.read(next())?, )*
                    $( $field_e: source.read(next())?, )*
                })
            }
        }
    };
    (@column $group:literal, $name:literal, $ty:ty, $rows:expr) => {
        Column {
            group: $group,
            name: $name,
            path: concat!($group, "/", $name),
            kind: <$ty as Element>::KIND,
            rows: $rows,
        }
    };
}

// The table. Row `i` of every column of a group describes the same fragment
// or event; fragment `j` occupies `data[data_end[j-1]..data_end[j]]`, and event
// `i` owns fragment rows `fragment_end[i-1]..fragment_end[i]` (from 0).
columns! {
    "fragments" bytes {
        data:                 u8  = "data",           "each fragment's metadata then payload, back to back";
    }
    "fragments" fragment rows {
        fragment_id:          u16 = "fragment_id",    "fragment (board) id";
        fragment_type:        u8  = "type",           "fragment type";
        fragment_sequence_id: u64 = "sequence_id",    "sequence id carried by the fragment";
        fragment_timestamp:   u64 = "timestamp",      "timestamp carried by the fragment";
        metadata_bytes:       u32 = "metadata_bytes", "size of the metadata at the start of the fragment's data";
        data_end:             u64 = "data_end",       "cumulative end offset of the fragment's bytes in `data`";
    }
    "events" event rows {
        run:                  u32 = "run",            "run number";
        subrun:               u32 = "subrun",         "subrun number";
        event:                u64 = "event",          "event number";
        sequence_id:          u64 = "sequence_id",    "sequence id the event was built for";
        timestamp:            u64 = "timestamp",      "event timestamp";
        complete:             u8  = "complete",       "1 if all expected fragments arrived, else 0";
        fragment_end:         u64 = "fragment_end",   "cumulative end index into the `/fragments` columns";
    }
}

/// The groups of the file, in the order of their first column.
pub(super) fn groups() -> Vec<&'static str> {
    let mut groups = Vec::new();
    for column in COLUMNS {
        if !groups.contains(&column.group) {
            groups.push(column.group);
        }
    }
    groups
}
