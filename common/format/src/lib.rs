//! The DAQ's formats, with no I/O of their own: artdaq header-v2 fragments,
//! event serialization between eventbuilders and aggregators, the system
//! configuration, process identities, the run-state machine and the
//! run-record types.

pub mod config;
pub mod fragment;
pub mod netmon;
pub mod process;
pub mod record;
pub mod state;
