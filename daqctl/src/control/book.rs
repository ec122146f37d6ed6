//! Where the processes of a session are: the config's `[addresses]` table
//! or, for a locally booted system, the address book `processes.json`
//! (written by `daqctl boot` into the run dir, and by `demo`, `soak` and
//! `run` next to their records); and connecting to them.

use crate::control::system::System;
use anyhow::{Context, Result, bail};
use daq_format::config::SystemConfig;
use daq_format::process::ProcessId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The address book of a locally booted system, in the run dir.
pub const PROCESSES_FILE: &str = "processes.json";

/// `processes.json`: where each process of a booted system answers. An
/// address book only: liveness is always asked of the processes.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProcessesFile {
    pub processes: Vec<ProcessEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProcessEntry {
    pub name: ProcessId,
    /// `host:port` of run control and the data sink.
    pub address: String,
    pub pid: u32,
    /// Prometheus metrics, when the process serves them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metrics_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// Writes the address book of `system` (with each process's metrics URL,
/// asked of the process) to `path`.
pub async fn write_processes(path: &Path, system: &mut System) -> Result<()> {
    let (statuses, _) = system.status().await;
    let file = ProcessesFile {
        processes: system
            .procs
            .iter()
            .map(|p| ProcessEntry {
                name: p.id,
                address: p.addr.clone(),
                pid: p.pid,
                metrics_url: statuses
                    .iter()
                    .find(|s| s.process == p.name())
                    .map(|s| s.metrics_url.clone())
                    .unwrap_or_default(),
                log: p.log.as_ref().map(|l| l.display().to_string()),
            })
            .collect(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&file)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads an address book; `None` when there is none at `path`.
pub fn read_processes(path: &Path) -> Result<Option<ProcessesFile>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("{} is not a processes file", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The (name, address) pairs of an address book.
fn entries(f: ProcessesFile) -> Vec<(ProcessId, String)> {
    f.processes
        .into_iter()
        .map(|e| (e.name, e.address))
        .collect()
}

fn not_booted(run_dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "no system booted in {}: run `daqctl boot` first (or name the processes in the config's [addresses])",
        run_dir.display()
    )
}

/// Where the processes are: the config's `[addresses]`, else the
/// processes.json a local `daqctl boot` wrote into `run_dir`.
pub fn address_book(config: &SystemConfig, run_dir: &Path) -> Result<Vec<(ProcessId, String)>> {
    if let Some(book) = config.address_book()? {
        return Ok(book);
    }
    match read_processes(&run_dir.join(PROCESSES_FILE))? {
        Some(f) => Ok(entries(f)),
        None => Err(not_booted(run_dir)),
    }
}

/// The address books that `demo`, `soak` and `run` write next to their
/// records (`<run-dir>/run_*/processes.json`, `<run-dir>/session_*/...`),
/// newest first (by when they were written, then by name).
fn nested_books(run_dir: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut books: Vec<(std::time::SystemTime, PathBuf)> = dir
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("run_") || name.starts_with("session_")
        })
        .map(|e| e.path().join(PROCESSES_FILE))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    books.sort_by(|a, b| b.cmp(a));
    books.into_iter().map(|(_, p)| p).collect()
}

/// Like [`address_book`], and when `run_dir` has no processes.json of its
/// own (no `daqctl boot` there), the system a `demo`, `soak` or `run`
/// is running from `run_dir`: the newest address book of a record or
/// session under it with a process that answers (for `status`, `stop`,
/// `monitor`). Says on stderr which one it took; when none answers, the
/// error names the newest.
pub async fn find(config: &SystemConfig, run_dir: &Path) -> Result<Vec<(ProcessId, String)>> {
    if config.address_book()?.is_some() || run_dir.join(PROCESSES_FILE).exists() {
        return address_book(config, run_dir);
    }
    let books = nested_books(run_dir);
    for path in &books {
        // One being rewritten or cut short is skipped like a stale one.
        let Ok(Some(f)) = read_processes(path) else {
            continue;
        };
        let book = entries(f);
        let (system, _) = System::attach_answering(&book).await;
        if !system.procs.is_empty() {
            eprintln!(
                "daqctl: the system running from {} (address book {})",
                run_dir.display(),
                path.display()
            );
            return Ok(book);
        }
    }
    match books.first() {
        None => Err(not_booted(run_dir)),
        Some(newest) => bail!(
            "no system running from {}: no `daqctl boot` there, and no process of the {} address books of its records answers (newest {}); give --run-dir the directory of a running system's processes.json",
            run_dir.display(),
            books.len(),
            newest.display()
        ),
    }
}

/// Connects to the processes of the session, checking each one's identity.
pub async fn connect(config: &SystemConfig, run_dir: &Path) -> Result<System> {
    System::attach(&address_book(config, run_dir)?).await
}
