//! `daqctl status`: the session's processes as a table (process, host:port,
//! pid, state, run, counters), once or refreshed every second (`--watch`:
//! rates, bytes/s, incomplete events, backpressure, heap allocated and its
//! slope) until Ctrl-C.

use crate::analysis::trend::theil_sen;
use crate::control::book::find;
use crate::control::options::SessionArgs;
use crate::control::record::kind_of;
use crate::control::system::System;
use crate::units;
use crate::verdict::Exit;
use anyhow::Result;
use daq_format::process::{Kind, ProcessId};
use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// `daqctl status`'s flags.
#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// Refresh every second (rate, bytes/s, incomplete, backpressure, heap and its slope) until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: stop after this many refreshes.
    #[arg(long, requires = "watch")]
    pub count: Option<u64>,
}

/// `daqctl status`: the table once (exit 1 when a process does not
/// answer), or refreshed every second with `--watch`.
pub async fn command(a: &StatusArgs) -> Result<Exit> {
    let c = a.session.config()?;
    if a.watch {
        let mut system = System::attach(&find(&c, &a.session.run_dir).await?).await?;
        watch(&mut system, a.count).await?;
        return Ok(Exit::Clean);
    }
    let book = find(&c, &a.session.run_dir).await?;
    let (table, all) = once(&book).await;
    print!("{table}");
    Ok(Exit::ok_or_failed(all))
}

/// `daqctl status`: the table, with a row for every process of the address
/// book that does not answer. Returns whether all answered.
pub async fn once(book: &[(ProcessId, String)]) -> (String, bool) {
    let (mut system, silent) = System::attach_answering(book).await;
    let mut out = table(&mut system).await;
    for (id, addr, why) in &silent {
        out.push_str(&format!(
            "  {:<16} {addr:<22} {:>8}  {:<8} {:>5}  {why}\n",
            id.to_string(),
            "-",
            "no answer",
            "-"
        ));
    }
    (out, silent.is_empty())
}

/// The one-shot table.
pub async fn table(system: &mut System) -> String {
    let (statuses, errors) = system.status().await;
    let mut out = format!(
        "  {:<16} {:<22} {:>8}  {:<8} {:>5}  counters\n",
        "process", "host:port", "pid", "state", "run"
    );
    for p in &system.procs {
        let name = p.name();
        let Some(s) = statuses.iter().find(|s| s.process == name) else {
            out.push_str(&format!(
                "  {name:<16} {:<22} {:>8}  {:<8} {:>5}  -\n",
                p.addr, p.pid, "no answer", "-"
            ));
            continue;
        };
        let c = s.counters.clone().unwrap_or_default();
        let counters = match p.id.kind {
            Kind::BoardReader => format!(
                "fragments sent {}  last sequence id {}",
                c.fragments_sent, c.last_sequence_id
            ),
            Kind::EventBuilder => format!(
                "fragments received {}  events built {}  incomplete {}",
                c.fragments_received, c.events_built, c.events_incomplete
            ),
            Kind::Aggregator => format!(
                "events received {}  written {}  bytes written {}",
                c.events_received, c.events_written, c.bytes_written
            ),
            Kind::Monitor => format!(
                "events read {}  skipped {}  integrity failures {}",
                c.events_monitored,
                c.events_skipped,
                c.integrity_failures.values().sum::<u64>()
            ),
        };
        out.push_str(&format!(
            "  {name:<16} {:<22} {:>8}  {:<8} {:>5}  {counters}\n",
            p.addr, s.pid, s.state, s.run
        ));
        if !s.links.is_empty() {
            out.push_str(&format!("  {:<16} links: {}\n", "", s.links.join(", ")));
        }
    }
    for e in errors {
        out.push_str(&format!("  error: {e}\n"));
    }
    out
}

/// Events and bytes a process handles: what its rate and bytes/s count.
fn work(kind: Kind, c: &proto::Counters) -> (u64, u64) {
    match kind {
        Kind::BoardReader => (c.fragments_sent, c.bytes_sent),
        Kind::EventBuilder => (c.events_built, c.bytes_received),
        Kind::Aggregator => (c.events_received, c.bytes_written),
        Kind::Monitor => (c.events_monitored, c.bytes_received),
    }
}

/// How much history the heap slope is fitted over.
const SLOPE_WINDOW: usize = 60;

#[derive(Default)]
struct History {
    /// (seconds since watch began, events, bytes) of the last refresh.
    last: Option<(f64, u64, u64, u32)>,
    /// (seconds, allocated bytes), the last SLOPE_WINDOW refreshes.
    heap: VecDeque<(f64, f64)>,
}

/// `daqctl status --watch`: refreshes every second until Ctrl-C (or after
/// `count` refreshes).
pub async fn watch(system: &mut System, count: Option<u64>) -> Result<()> {
    let tty = std::io::stdout().is_terminal();
    let began = Instant::now();
    let mut history: BTreeMap<String, History> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut shown = 0u64;
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tick.tick() => {}
        }
        let (statuses, mut errors) = system.status().await;
        let (heaps, e) = system.heap().await;
        errors.extend(e);
        let t = began.elapsed().as_secs_f64();
        let mut out = String::new();
        if tty {
            // Home and clear: redraw in place.
            out.push_str("\x1b[H\x1b[2J");
        }
        out.push_str(&format!(
            "  {:<16} {:<8} {:>5} {:>11} {:>10} {:>10} {:>13} {:>13} {:>13}\n",
            "process",
            "state",
            "run",
            "rate /s",
            "bytes/s",
            "incomplete",
            "backpress ms",
            "heap MiB",
            "slope KiB/s"
        ));
        for s in &statuses {
            let Some(kind) = kind_of(&s.process) else {
                continue;
            };
            let c = s.counters.clone().unwrap_or_default();
            let (events, bytes) = work(kind, &c);
            let h = history.entry(s.process.clone()).or_default();
            let (rate, bytes_per_s) = match h.last {
                // A new run resets the counters: no rate across it.
                Some((t0, e0, b0, run0)) if t > t0 && run0 == s.run && events >= e0 => (
                    (events - e0) as f64 / (t - t0),
                    bytes.saturating_sub(b0) as f64 / (t - t0),
                ),
                _ => (0.0, 0.0),
            };
            h.last = Some((t, events, bytes, s.run));
            let allocated = heaps
                .iter()
                .find(|(n, _)| n == &s.process)
                .and_then(|(_, r)| r.current.as_ref())
                .map(|c| c.allocated);
            if let Some(a) = allocated {
                h.heap.push_back((t, a as f64));
                if h.heap.len() > SLOPE_WINDOW {
                    h.heap.pop_front();
                }
            }
            let pts: Vec<(f64, f64)> = h.heap.iter().copied().collect();
            let slope = theil_sen(&pts)
                .map(|b| format!("{:+.1}", b / 1024.0))
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "  {:<16} {:<8} {:>5} {:>11.1} {:>10} {:>10} {:>13} {:>13} {:>13}\n",
                s.process,
                s.state,
                s.run,
                rate,
                units::rate(bytes_per_s),
                c.events_incomplete,
                c.backpressure_wait_ms,
                allocated.map_or("-".into(), |a| format!("{:.1}", a as f64 / 1048576.0)),
                slope
            ));
        }
        for e in errors {
            out.push_str(&format!("  error: {e}\n"));
        }
        if !tty {
            out.push('\n');
        }
        print!("{out}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        shown += 1;
        if count.is_some_and(|n| shown >= n) {
            break;
        }
    }
    Ok(())
}
