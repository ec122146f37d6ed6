//! The data files of a run, in both formats the aggregator writes, with
//! their readers: [`hdf5`] (this project's HDF5 layout, read by h5py) and
//! [`artdaq_binary`] (artdaq's `BinaryFileOutput` layout, read by artdaq's
//! own tools). Both writers roll over by size, name their files alike and
//! refuse to overwrite, through the one skeleton in `rolling`; each
//! returns the [`RunFiles`] that the run record lists.
//!
//! Nothing here knows about processes, gRPC or shared memory: the
//! aggregator writes through it, `daqctl dump` and `daqctl bench` read and
//! measure it, and the tests check data files with it.

pub mod artdaq_binary;
pub mod hdf5;
mod rolling;

pub use rolling::{FileError, RunFiles};

/// The signature every HDF5 file starts with (at offset 0 for ours).
pub const HDF5_SIGNATURE: [u8; 8] = [0x89, b'H', b'D', b'F', b'\r', b'\n', 0x1a, b'\n'];
