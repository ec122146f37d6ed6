//! Run control: booting, driving and recording systems. The commands
//! (`demo`, the session verbs boot ... shutdown in `session`, `status`,
//! `runs` for `daqctl run`, `soak`, `monitor`, `config` in `options`) and
//! what they share: the system and its processes (`system`), where they
//! are (`book`), one run driven (`drive`, with the soak's `progress` bar)
//! and the run record it leaves (`record`).

pub mod book;
pub mod demo;
pub mod drive;
pub mod monitor;
pub mod options;
pub mod progress;
pub mod record;
pub mod runs;
pub mod session;
pub mod soak;
pub mod status;
pub mod system;
