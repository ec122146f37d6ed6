//! What every DAQ process runs around its own work: the `RunControl` service
//! (state machine, heap snapshots, sampler) wrapped around an `App`, the
//! end-of-data bookkeeping of inbound streams, the data path's transport
//! for both hops, the injected leak that calibrates the leak detector, the
//! tuned gRPC setup, its access control (token, TLS) and the
//! serve-until-shutdown loop.

pub mod auth;
pub mod control;
pub mod counters;
pub mod leak;
pub mod metrics;
pub mod net;
pub mod process;
pub mod sampler;
pub mod sources;
pub mod stage;
pub mod transport;
