//! The end-to-end suite: one test binary (one link of tonic and the whole
//! workspace instead of one per file) whose modules spawn the real
//! binaries. Shared helpers live in the `daq_tests` library (`tests/src`).
//! One module: `cargo test -p daq-tests --test e2e faults:: -- --nocapture`.

mod access;
mod bad_input;
mod bench;
mod disk;
mod docs;
mod drops;
mod exit_codes;
mod faults;
mod hang;
mod hostile;
mod hosts;
mod interop;
mod leak;
mod link;
mod live;
mod metrics;
mod monitor;
mod pipeline;
mod report;
mod session;
mod shm;
mod transfer;
