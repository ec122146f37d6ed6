//! The DAQ's formats, with no I/O of their own: artdaq header-v2 fragments,
//! event serialization between eventbuilders and aggregators, the system
//! configuration, the run-state machine and the run-record types.

pub mod config;
pub mod fragment;
pub mod netmon;
pub mod record;
pub mod state;
