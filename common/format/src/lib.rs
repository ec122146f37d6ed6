//! The DAQ's formats, with no I/O of their own: artdaq header-v2 fragments,
//! event serialization between eventbuilders and aggregators, the system
//! configuration, process identities, the run-state machine, the
//! run-record types, artdaq-core-demo's toy fragment overlay and the
//! ToySimulator that generates it (a pure function of seed, board and
//! sequence id).

pub mod config;
pub mod fragment;
pub mod generator;
pub mod monitor;
pub mod netmon;
pub mod process;
pub mod record;
pub mod seqranges;
pub mod state;
pub mod toy;
