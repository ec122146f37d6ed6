//! Shared types of the DAQ processes: fragment format, configuration,
//! run-state machine, event serialization, run-control glue and run records.

pub mod config;
pub mod control;
pub mod fragment;
pub mod heap;
pub mod net;
pub mod netmon;
pub mod process;
pub mod record;
pub mod sampler;
pub mod shm;
pub mod sources;
pub mod state;
