//! Where the process binaries are (boardreader, eventbuilder, aggregator):
//! daqctl's own directory, `DAQ_BIN_DIR`, or what `daqctl bench --bin-dir`
//! set; for spawning them and for jeprof reading their symbols.

use anyhow::{Context, Result, anyhow};
use std::path::{Path, PathBuf};

/// Where `daqctl bench --bin-dir` points process spawning (one build's
/// binaries after another's, in one daqctl); `None`: [`bin_dir`]'s default.
static BIN_DIR_OVERRIDE: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Spawn the process binaries from `dir` from now on (`None`: the default).
pub fn set_bin_dir(dir: Option<PathBuf>) {
    let mut o = BIN_DIR_OVERRIDE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *o = dir;
}

/// Directory holding the process binaries: the one set by [`set_bin_dir`],
/// else `DAQ_BIN_DIR`, else daqctl's own.
pub fn bin_dir() -> Result<PathBuf> {
    let set = BIN_DIR_OVERRIDE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(d) = set {
        return Ok(d);
    }
    if let Some(d) = std::env::var_os("DAQ_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().context("cannot locate the daqctl executable")?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("daqctl executable has no parent directory"))
}
