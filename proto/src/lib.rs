//! Generated protobuf and gRPC types of the DAQ wire protocol (`daq.v1`).
//!
//! Two messages are also the run-record types, with serde derived in
//! `build.rs`: [`Counters`] (a process's counters in `summary.json`) and
//! [`HeapSnapshot`] (a heap reading in `summary.json` and the heap CSV).

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("daq.v1");

/// Largest gRPC message any DAQ endpoint accepts or sends (64 MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// HTTP/2 stream and connection window for the data path (16 MiB).
pub const WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// HTTP/2 max frame size for the data path (1 MiB less one byte is the
/// largest HTTP/2 allows below 16 MiB; 1 MiB is the measured sweet spot).
pub const MAX_FRAME_BYTES: u32 = 1024 * 1024;
