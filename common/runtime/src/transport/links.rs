//! The mechanism of each data link of this process's current run, for its
//! status ("eventbuilder-0 shm") and through it the run record. One table
//! per process: a process runs one stage, whose outbound side fills it at
//! start and whose inbound side as streams and links arrive; the stage
//! clears it at every start.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// How one link carries its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Grpc,
    Shm,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Grpc => "grpc",
            Mechanism::Shm => "shm",
        }
    }
}

static LINKS: Mutex<BTreeMap<String, Mechanism>> = Mutex::new(BTreeMap::new());

/// Records that the link with `peer` uses `mechanism`.
pub fn set(peer: &str, mechanism: Mechanism) {
    LINKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(peer.to_string(), mechanism);
}

/// Forgets every link (a new run starts).
pub fn clear() {
    LINKS.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// One line per link, by peer: "eventbuilder-0 shm".
pub fn lines() -> Vec<String> {
    LINKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(peer, m)| format!("{peer} {}", m.as_str()))
        .collect()
}
