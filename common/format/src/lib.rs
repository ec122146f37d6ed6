//! The DAQ's formats, with no I/O of their own: artdaq header-v2 fragments,
//! event serialization between eventbuilders and aggregators, the system
//! configuration, process identities, the run-state machine, the
//! run-record types, and artdaq-core-demo's toy fragment overlay.

pub mod config;
pub mod fragment;
pub mod netmon;
pub mod process;
pub mod record;
pub mod seqranges;
pub mod state;
pub mod toy;
