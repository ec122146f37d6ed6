//! A session that outlives a run: `daqctl boot`, `init`, `start`, `stop`,
//! `shutdown` as separate invocations. daqctl keeps no state between them
//! beyond the run dir: the address book is the config's `[addresses]` table
//! or, for a locally booted system, `<run-dir>/processes.json`; everything
//! else (state, config in force, the run in progress and its record
//! directory) is asked of the processes.

use crate::control::book::{
    PROCESSES_FILE, address_book, connect, find, read_processes, write_processes,
};
use crate::control::options::{SessionArgs, SystemArgs, resolve};
use crate::control::record::{self as run_record, Outcome};
use crate::control::system::{Lifetime, System};
use crate::verdict::Exit;
use anyhow::{Context, Result, bail};
use daq_format::config::SystemConfig;
use daq_format::process::ProcessId;
use daq_format::record::{self, RunPaths};
use daq_format::state::State;
use std::path::Path;

/// Environment that turns jemalloc heap profiling on in a process
/// (sampling on average every 2^12 bytes allocated).
pub const HEAP_PROFILE_ENV: (&str, &str) = (
    "_RJEM_MALLOC_CONF",
    "prof:true,prof_active:true,lg_prof_sample:12",
);

/// Environment that turns jemalloc heap profiling on in spawned processes.
pub fn profile_env(on: bool) -> Vec<(String, String)> {
    if on {
        let (k, v) = HEAP_PROFILE_ENV;
        vec![(k.into(), v.into())]
    } else {
        vec![]
    }
}

/// Boots `config`'s system: attaches to the `[addresses]` table if there is
/// one, else spawns every process locally. Returns the system and whether
/// daqctl spawned it.
pub async fn boot(
    config: &SystemConfig,
    logs: &Path,
    env: &[(String, String)],
    lifetime: Lifetime,
) -> Result<(System, bool)> {
    match config.address_book()? {
        Some(book) => Ok((System::attach(&book).await?, false)),
        None => Ok((System::spawn(config, logs, env, lifetime).await?, true)),
    }
}

/// Connects to the processes of the session that answer, for the commands
/// that must go on without a hung or dead one (`stop`, `shutdown`): each
/// one that does not is printed and returned as an error naming it.
async fn connect_answering(
    book: &[(ProcessId, String)],
) -> Result<(System, Vec<String>, Vec<ProcessId>)> {
    let (system, silent) = System::attach_answering(book).await;
    let mut errors = Vec::new();
    let mut hung = Vec::new();
    for (id, addr, why) in &silent {
        // Gone (its port refused the connection: killed, crashed) is
        // reported as dead, with what was lost with it; anything else (a
        // timeout) means hung or unreachable.
        if system.gone.contains(id) {
            eprintln!("daqctl: {id} at {addr} is gone (connection refused)");
        } else {
            eprintln!("daqctl: {id} at {addr} does not answer: {why}");
            errors.push(format!(
                "{id} never answered ({why}): the command did not reach it"
            ));
            hung.push(*id);
        }
    }
    if system.procs.is_empty() {
        bail!("no process answers: {}", errors.join("; "));
    }
    Ok((system, errors, hung))
}

/// Init (configure, or reconfigure in Ready) every process, downstream
/// first. The config must describe the processes there are.
pub async fn init(system: &mut System, config: &SystemConfig) -> Result<()> {
    let have: Vec<ProcessId> = system.procs.iter().map(|p| p.id).collect();
    let want = config.topology.processes();
    if have != want {
        let t = config.topology;
        let names = |v: &[ProcessId]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        bail!(
            "the config's topology {}x{}x{} ({}) is not the booted system ({}): shut down and boot again to change the topology",
            t.boardreaders,
            t.eventbuilders,
            t.aggregators,
            names(&want),
            names(&have)
        );
    }
    system.init(config).await
}

/// The next run number: past every run record in `run_dir` and past every
/// run the processes have seen.
pub fn next_run(run_dir: &Path, statuses: &[proto::StatusReply]) -> Result<u32> {
    let from_dir = record::next_run_number(run_dir)
        .with_context(|| format!("cannot read run dir {}", run_dir.display()))?;
    let from_procs = statuses.iter().map(|s| s.run).max().unwrap_or(0) + 1;
    Ok(from_dir.max(from_procs))
}

/// Start run `run`, downstream first, with its record in `paths` (created
/// once the processes started, with the effective config.toml).
///
/// daqctl creates no directory for another process: each aggregator
/// creates the run's `data/` on its own host, as its own user (so a daqctl
/// run as root never leaves a root-owned directory the aggregators cannot
/// write). If a process refuses to start, the ones that had started are
/// stopped again, so that every process is Ready and `daqctl start` can be
/// retried once the cause is fixed.
pub async fn start(
    system: &mut System,
    config: &SystemConfig,
    run: u32,
    paths: &RunPaths,
) -> Result<()> {
    let data_dir = std::path::absolute(paths.data())?;
    let record_dir = std::path::absolute(&paths.root)?;
    if let Err(e) = system.start(run, &data_dir, &record_dir).await {
        let (_, errors) = system.stop().await;
        let undone: Vec<&String> = errors
            .iter()
            .filter(|e| !e.contains("illegal in state ready"))
            .collect();
        if undone.is_empty() {
            bail!(
                "{e:#}; the processes that had started were stopped: every process is Ready, \
                 fix the cause and run `daqctl start` again"
            );
        }
        bail!(
            "{e:#}; stopping the processes that had started failed too: {}",
            undone
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    std::fs::create_dir_all(&paths.root)
        .with_context(|| format!("cannot create {}", paths.root.display()))?;
    std::fs::write(paths.config(), config.to_toml())
        .with_context(|| format!("cannot write {}", paths.config().display()))?;
    Ok(())
}

/// `daqctl boot`: spawns the system detached (no `[addresses]`) and writes
/// processes.json, or checks that every process of the table answers.
pub async fn boot_cmd(config: &SystemConfig, run_dir: &Path, heap_profile: bool) -> Result<()> {
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create run dir {}", run_dir.display()))?;
    let book_path = run_dir.join(PROCESSES_FILE);
    if config.addresses.is_none()
        && let Some(f) = read_processes(&book_path)?
    {
        let book: Vec<_> = f
            .processes
            .into_iter()
            .map(|e| (e.name, e.address))
            .collect();
        if System::attach(&book).await.is_ok() {
            bail!(
                "a system is already booted in {} (its processes answer): `daqctl shutdown` it first",
                run_dir.display()
            );
        }
    }
    let env = profile_env(heap_profile);
    let (mut system, spawned) =
        boot(config, &run_dir.join("logs"), &env, Lifetime::Detached).await?;
    // The address book, also for attached processes: a person or a script
    // finds every process (and its metrics URL) in one place.
    write_processes(&book_path, &mut system).await?;
    if spawned {
        println!(
            "booted {} processes (address book {})",
            system.procs.len(),
            book_path.display()
        );
    } else {
        println!(
            "every process of [addresses] answers ({} processes; address book {})",
            system.procs.len(),
            book_path.display()
        );
    }
    print!("{}", crate::control::status::table(&mut system).await);
    Ok(())
}

/// `daqctl init`.
pub async fn init_cmd(config: &SystemConfig, run_dir: &Path) -> Result<()> {
    let mut system = connect(config, run_dir).await?;
    init(&mut system, config).await?;
    println!("initialized {} processes", system.procs.len());
    Ok(())
}

/// Whether a process reported `state`.
fn is(s: &proto::StatusReply, state: State) -> bool {
    s.state == state.to_string()
}

/// The configuration every process holds (they must agree).
fn config_in_force(statuses: &[proto::StatusReply]) -> Result<SystemConfig> {
    let Some(first) = statuses.first() else {
        bail!("no process answered");
    };
    if let Some(other) = statuses.iter().find(|s| s.config_toml != first.config_toml) {
        bail!(
            "{} and {} hold different configurations: run `daqctl init` again",
            first.process,
            other.process
        );
    }
    Ok(SystemConfig::from_toml(
        &first.config_toml,
        &format!("the configuration of {}", first.process),
    )?)
}

/// `daqctl start`: starts the next run in `run_dir`, leaves it running.
pub async fn start_cmd(config: &SystemConfig, run_dir: &Path) -> Result<u32> {
    let mut system = connect(config, run_dir).await?;
    let (statuses, errors) = system.status().await;
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    let not_ready: Vec<String> = statuses
        .iter()
        .filter(|s| !is(s, State::Ready))
        .map(|s| format!("{} is {}", s.process, s.state))
        .collect();
    if !not_ready.is_empty() {
        let hint = if statuses.iter().any(|s| is(s, State::Booted)) {
            "run `daqctl init` first"
        } else {
            "a run is in progress: `daqctl stop` it first"
        };
        bail!("cannot start: {} ({hint})", not_ready.join(", "));
    }
    let in_force = config_in_force(&statuses)?;
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create run dir {}", run_dir.display()))?;
    let run = next_run(run_dir, &statuses)?;
    let paths = RunPaths::new(run_dir, run);
    start(&mut system, &in_force, run, &paths).await?;
    println!("run {run} started; record in {}", paths.root.display());
    Ok(run)
}

/// `daqctl stop`: stops the run in progress (found by asking the
/// processes) and writes its record. Returns it.
pub async fn stop_cmd(config: &SystemConfig, run_dir: &Path) -> Result<Outcome> {
    // A hung or dead process must not keep the others running: the ones
    // that answer are stopped, the others are named in the record.
    let (mut system, mut silent, _) = connect_answering(&find(config, run_dir).await?).await?;
    let (statuses, errors) = system.status().await;
    if statuses.is_empty() {
        bail!("no process answers: {}", errors.join("; "));
    }
    // One that stopped answering since it was attached is named, and the
    // others are stopped all the same; one found gone is named with what
    // was lost with it (`lost`).
    silent.extend(errors);
    silent.extend(
        system
            .gone
            .iter()
            .map(|id| format!("{id} is gone: its port refuses connections")),
    );
    let running: Vec<&proto::StatusReply> = statuses
        .iter()
        .filter(|s| {
            [State::Running, State::Paused, State::Error]
                .iter()
                .any(|&st| is(s, st))
        })
        .collect();
    let Some(first) = running.first() else {
        bail!("no run in progress: every process is Ready or Booted");
    };
    if let Some(other) = running.iter().find(|s| s.run != first.run) {
        bail!(
            "{} is in run {} but {} in run {}",
            first.process,
            first.run,
            other.process,
            other.run
        );
    }
    let run = first.run;
    // One that answers as Booted while the others are in a run was
    // restarted by its supervisor (systemd's Restart=, a pod's restart):
    // the run it held is gone with its old process. It is named with what
    // was lost, like a dead one, and left out of the stop and the record;
    // `daqctl init` configures it again with the others.
    let restarted: Vec<ProcessId> = statuses
        .iter()
        .filter(|s| is(s, State::Booted))
        .filter_map(|s| s.process.parse().ok())
        .collect();
    for id in &restarted {
        eprintln!(
            "daqctl: {id} was restarted during run {run}: it answers as Booted, with nothing of the run"
        );
        system.set_aside(*id);
        silent.push(format!(
            "{id} was restarted during run {run} (it answers as Booted): what it held of the run is lost (see `lost`); `daqctl init` configures it again"
        ));
    }
    let configured: Vec<proto::StatusReply> = statuses
        .iter()
        .filter(|s| !is(s, State::Booted))
        .cloned()
        .collect();
    let in_force = config_in_force(&configured)?;
    let paths = match first.record_dir.as_str() {
        "" => RunPaths::new(run_dir, run),
        dir => RunPaths { root: dir.into() },
    };
    let (replies, mut errors) = system.stop().await;
    errors.extend(silent);
    run_record::finish_run(&mut system, &in_force, run, &paths, replies, errors).await
}

/// `daqctl shutdown`: every process exits; processes.json goes with them.
pub async fn shutdown_cmd(config: &SystemConfig, run_dir: &Path) -> Result<bool> {
    // The processes that answer exit; one that does not is named, and the
    // address book stays so that a later shutdown can still reach it.
    let (system, silent, hung) = connect_answering(&address_book(config, run_dir)?).await?;
    let n = system.procs.len();
    let mut errors = system.shutdown().await;
    let path = run_dir.join(PROCESSES_FILE);
    if errors.is_empty() && !hung.is_empty() {
        // Only the processes that did not answer stay in the book, so a
        // later shutdown (after SIGCONT, or once the host is back) reaches
        // them and nothing else.
        if let Some(mut book) = read_processes(&path)? {
            book.processes.retain(|e| hung.contains(&e.name));
            std::fs::write(&path, serde_json::to_string_pretty(&book)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    // A process already gone (printed above) is what shutdown wants: only
    // the ones that did not answer are errors.
    errors.extend(silent);
    if errors.is_empty() {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    println!("shut down {n} processes");
    Ok(errors.is_empty())
}

/// `daqctl boot`.
pub async fn boot_command(a: &SystemArgs) -> Result<Exit> {
    boot_cmd(&resolve(a, false)?, &a.run_dir, a.heap_profile).await?;
    Ok(Exit::Clean)
}

/// `daqctl init`.
pub async fn init_command(a: &SystemArgs) -> Result<Exit> {
    init_cmd(&resolve(a, false)?, &a.run_dir).await?;
    Ok(Exit::Clean)
}

/// `daqctl start`.
pub async fn start_command(a: &SessionArgs) -> Result<Exit> {
    start_cmd(&a.config()?, &a.run_dir).await?;
    Ok(Exit::Clean)
}

/// `daqctl stop`: prints the record's summary; exit 1 if anything was lost.
pub async fn stop_command(a: &SessionArgs) -> Result<Exit> {
    let o = stop_cmd(&a.config()?, &a.run_dir).await?;
    print!("{}", run_record::render(&o));
    Ok(Exit::ok_or_failed(o.summary.errors.is_empty()))
}

/// `daqctl shutdown`: exit 1 if a process did not answer.
pub async fn shutdown_command(a: &SessionArgs) -> Result<Exit> {
    let all = shutdown_cmd(&a.config()?, &a.run_dir).await?;
    Ok(Exit::ok_or_failed(all))
}
