//! Processes killed mid-run: an eventbuilder, an aggregator, daqctl itself,
//! and SIGTERM to every kind of process whose downstream is already dead.
//! Each test measures how long the system took to stop or exit and prints it
//! (`cargo test -p daq-tests --test e2e faults:: -- --nocapture`).

use daq_tests::{
    Lines, Pipe, bin_dir, h5dump, latest_run, signal, spawn_cmd, spawn_lines, summary, u, wait_gone,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn counter(s: &Value, process: &str, k: &str) -> u64 {
    s["processes"][process]["counters"][k].as_u64().unwrap_or(0)
}

/// What is left in a test's own shared-memory directory.
fn shm_left(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A `daqctl demo` running in the background, with its stderr lines
/// arriving as they come, in its own shared-memory directory.
struct Demo {
    child: Child,
    lines: Lines,
    run_dir: PathBuf,
    shm: PathBuf,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start(config: &str, duration_s: u32) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("system.toml");
        std::fs::write(&cfg, config).expect("config");
        let shm = dir.path().join("shm");
        std::fs::create_dir_all(&shm).expect("shm dir");
        let run_dir = dir.path().join("runs");
        let (child, lines) = spawn_lines(
            Command::new(bin_dir().join("daqctl"))
                .args(["demo", "--duration", &duration_s.to_string(), "--config"])
                .arg(&cfg)
                .arg("--run-dir")
                .arg(&run_dir)
                .env(daq_shm::SHM_DIR_ENV, &shm)
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
            Pipe::Stderr,
        )
        .expect("daqctl starts");
        Self {
            child,
            lines,
            run_dir,
            shm,
            _dir: dir,
        }
    }

    /// Waits for a stderr line containing `what`.
    fn wait_line(&mut self, what: &str) {
        self.lines.wait_for(what, Duration::from_secs(60));
    }

    /// SIGKILLs `process` once data flows and waits for daqctl to exit 1,
    /// printing how long the stop took; the run's record and summary.
    fn kill_mid_run(&mut self, process: &str) -> (PathBuf, Value) {
        signal("-9", self.lines.pid(process));
        let killed = Instant::now();
        let status = self.child.wait().expect("daqctl exits");
        let exited = Instant::now();
        self.lines.drain();
        let stopping = self
            .lines
            .seen
            .iter()
            .find(|(_, l)| l.contains(": stopping"))
            .map_or(exited, |(t, _)| *t);
        println!(
            "{process} SIGKILLed: stop took {:.2} s, daqctl exited {:.2} s after the kill",
            (exited - stopping).as_secs_f64(),
            (exited - killed).as_secs_f64()
        );
        assert_eq!(status.code(), Some(1), "{}", self.lines.text());
        let root = latest_run(&self.run_dir);
        let s = summary(&root).expect("summary");
        let errors = s["errors"].to_string();
        assert!(
            errors.contains(&format!("{process} exited unexpectedly")),
            "{errors}"
        );
        (root, s)
    }
}

const FAST_FAULTS: &str = "[generator]\nthrottle_us = 2000\n[eventbuilder]\nstale_timeout_ms = 500\n[transfer]\nend_of_data_timeout_ms = 2000\n";

/// Sequence ids of every event in the files (complete or not).
fn sequence_ids_on_disk(root: &Path, files: &[Value]) -> Vec<u64> {
    let mut ids = Vec::new();
    for f in files {
        let path = root.join(f.as_str().expect("path"));
        let file = daq_datafile::hdf5::read_file(&path).expect("reads");
        ids.extend(file.events.iter().map(|e| e.sequence_id));
    }
    ids
}

fn expand(ranges: &Value) -> Vec<u64> {
    let mut ids = Vec::new();
    for r in ranges.as_array().expect("ranges") {
        let (first, last, step) = (u(r, "first"), u(r, "last"), u(r, "step").max(1));
        ids.extend((first..=last).step_by(step as usize));
    }
    ids
}

#[test]
fn killed_eventbuilder_is_named_with_its_lost_sequence_ids_and_every_other_event_is_on_disk() {
    let mut demo = Demo::start(FAST_FAULTS, 5);
    demo.wait_line("fragments sent");
    let (root, s) = demo.kill_mid_run("eventbuilder-1");
    // The boardreaders saw the broken stream and named it.
    for br in ["boardreader-0", "boardreader-1"] {
        let p = s["processes"][br]["problems"].to_string();
        assert!(
            p.contains("eventbuilder-1: stream closed during the run"),
            "{br}: {p}"
        );
        assert!(counter(&s, br, "undelivered") > 0, "{br}: {s}");
    }
    // The record names the dead process and the sequence ids lost with it.
    let lost = &s["lost"];
    assert_eq!(lost[0]["process"], "eventbuilder-1", "{s}");
    let lost_ids = expand(&lost[0]["sequence_ids"]);
    assert_eq!(lost_ids.len() as u64, u(&lost[0], "events"));
    assert!(!lost_ids.is_empty());
    assert!(lost_ids.iter().all(|s| s % 2 == 1), "{lost_ids:?}");
    // Every event built elsewhere is on disk, and the ids on disk and the
    // ids named lost are together exactly the run's, without overlap.
    let on_disk = sequence_ids_on_disk(&root, s["data_files"].as_array().expect("files"));
    assert_eq!(on_disk.len() as u64, u(&s, "events_written"));
    let last = counter(&s, "boardreader-0", "last_sequence_id").max(counter(
        &s,
        "boardreader-1",
        "last_sequence_id",
    ));
    let disk: BTreeSet<u64> = on_disk.iter().copied().collect();
    assert_eq!(disk.len(), on_disk.len(), "an event written twice");
    let named: BTreeSet<u64> = lost_ids.iter().copied().collect();
    assert!(disk.is_disjoint(&named));
    let all: BTreeSet<u64> = (1..=last).collect();
    let union: BTreeSet<u64> = disk.union(&named).copied().collect();
    assert_eq!(union, all, "ids neither on disk nor named lost");
    let eb0 = counter(&s, "eventbuilder-0", "events_built")
        + counter(&s, "eventbuilder-0", "events_incomplete");
    assert_eq!(disk.iter().filter(|s| *s % 2 == 0).count() as u64, eb0);
    println!(
        "lost with eventbuilder-1: {} events ({}); on disk {} of {last}",
        lost_ids.len(),
        lost[0]["sequence_ids"],
        disk.len()
    );
    // Its segment did not outlive the run; nothing of the run is left.
    assert_eq!(shm_left(&demo.shm), Vec::<String>::new());
}

/// The data files `process` wrote, in the order it wrote them.
fn files_of(data_dir: &Path, process: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .expect("data dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(&format!("_{process}_")) && n.ends_with(".h5"))
        })
        .collect();
    files.sort_by_key(|p| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.rsplit('_').next())
            .and_then(|i| i.parse::<u64>().ok())
            .unwrap_or(0)
    });
    files
}

#[test]
fn killed_aggregator_leaves_its_closed_files_intact_and_its_eventbuilders_count_what_they_could_not_deliver()
 {
    // Small files (roll-over every ~64 KiB) written in small batches, so the
    // dead aggregator has closed files and an open one with flushed events.
    let mut demo = Demo::start(
        &format!("{FAST_FAULTS}[aggregator]\nmax_file_bytes = 65536\nbatch_events = 16\n"),
        5,
    );
    demo.wait_line("fragments sent");
    demo.wait_line("fragments sent");
    let (root, s) = demo.kill_mid_run("aggregator-0");
    let mut undelivered = 0;
    for eb in ["eventbuilder-0", "eventbuilder-1"] {
        let p = s["processes"][eb]["problems"].to_string();
        assert!(
            p.contains("aggregator-0: stream closed during the run"),
            "{eb}: {p}"
        );
        let n = counter(&s, eb, "undelivered");
        assert!(n > 0, "{eb}: {s}");
        undelivered += n;
    }
    // The other aggregator's files are complete: all it received is on disk.
    let ag1_received = counter(&s, "aggregator-1", "events_received");
    assert_eq!(counter(&s, "aggregator-1", "events_written"), ag1_received);
    let data = root.join("data");
    let ag1_files = files_of(&data, "aggregator-1");
    let on_disk: usize = ag1_files
        .iter()
        .map(|f| {
            daq_datafile::hdf5::read_file(f)
                .expect("reads")
                .events
                .len()
        })
        .sum();
    assert_eq!(on_disk as u64, ag1_received);
    // The dead aggregator's files: every closed one whole (its event count
    // attribute written at close), the open one readable up to its last flush.
    let ag0_files = files_of(&data, "aggregator-0");
    assert!(
        ag0_files.len() >= 2,
        "no roll-over before the kill: {ag0_files:?}"
    );
    let mut ag0_events = 0;
    for (i, f) in ag0_files.iter().enumerate() {
        let file = daq_datafile::hdf5::read_file(f).expect("a dead aggregator's file reads");
        ag0_events += file.events.len();
        if i + 1 < ag0_files.len() {
            assert!(!file.events.is_empty(), "{}", f.display());
        }
    }
    if let Some(dump) = h5dump(&ag0_files) {
        let dumped = dump["files"].as_array().expect("files");
        let n = dumped.len();
        for (i, d) in dumped.iter().enumerate() {
            let events = d["events"].as_array().expect("events").len() as u64;
            if i + 1 < n {
                assert_eq!(
                    d["attrs"]["events"].as_u64(),
                    Some(events),
                    "closed file {i}"
                );
            }
        }
        let total: usize = dumped
            .iter()
            .map(|d| d["events"].as_array().map_or(0, Vec::len))
            .sum();
        assert_eq!(total, ag0_events, "h5py and the Rust reader disagree");
    }
    // Itemised: `lost` names aggregator-0 with the sequence ids routed to
    // it after it died (2 eventbuilders x 2 aggregators: s / 2 % 2 == 0),
    // as many as the eventbuilders counted undelivered, none of them in a
    // data file of either aggregator.
    let lost = s["lost"]
        .as_array()
        .expect("lost")
        .iter()
        .find(|l| l["process"] == "aggregator-0")
        .unwrap_or_else(|| panic!("aggregator-0 not in lost: {}", s["lost"]));
    assert_eq!(lost["events"].as_u64(), Some(undelivered), "{lost}");
    let mut ids = BTreeSet::new();
    for r in lost["sequence_ids"].as_array().expect("sequence_ids") {
        let (first, last, step) = (
            r["first"].as_u64().expect("first"),
            r["last"].as_u64().expect("last"),
            r["step"].as_u64().expect("step"),
        );
        assert_eq!(step, 4, "{r}");
        ids.extend((first..=last).step_by(4));
    }
    assert_eq!(ids.len() as u64, undelivered);
    assert!(ids.iter().all(|s| s / 2 % 2 == 0), "{ids:?}");
    for f in ag0_files.iter().chain(&ag1_files) {
        let file = daq_datafile::hdf5::read_file(f).expect("reads");
        assert!(
            file.events.iter().all(|e| !ids.contains(&e.sequence_id)),
            "{} holds an event said lost",
            f.display()
        );
    }
    let errors = s["errors"].to_string();
    assert!(
        errors.contains(&format!(
            "aggregator-0 died: {undelivered} events routed to it after that never left their eventbuilders"
        )),
        "{errors}"
    );
    println!(
        "lost with aggregator-0: {undelivered} events undelivered by the eventbuilders; \
         {ag0_events} events in its {} files ({} closed); aggregator-1 wrote {ag1_received}",
        ag0_files.len(),
        ag0_files.len() - 1
    );
    // The dead aggregator's segment was removed by daqctl at stop.
    assert_eq!(shm_left(&demo.shm), Vec::<String>::new());
}

#[test]
fn processes_of_a_killed_daqctl_shut_down_by_themselves_and_remove_their_segments() {
    let mut demo = Demo::start(FAST_FAULTS, 120);
    demo.wait_line("fragments sent");
    let names = [
        "boardreader-0",
        "boardreader-1",
        "eventbuilder-0",
        "eventbuilder-1",
        "aggregator-0",
        "aggregator-1",
    ];
    let pids: Vec<(&str, u32)> = names.iter().map(|n| (*n, demo.lines.pid(n))).collect();
    assert!(!shm_left(&demo.shm).is_empty(), "the run holds segments");
    let killed = Instant::now();
    demo.child.kill().expect("SIGKILL daqctl");
    demo.child.wait().expect("daqctl reaped");
    for (name, pid) in pids {
        wait_gone(pid, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{name} still runs 10 s after daqctl died"));
        println!(
            "daqctl SIGKILLed: {name} gone {:.2} s after the kill",
            killed.elapsed().as_secs_f64()
        );
    }
    assert_eq!(shm_left(&demo.shm), Vec::<String>::new());
}

/// A process spawned by hand (no parent watch), in `shm`.
fn spawn_in(binary: &str, rank: u16, shm: &Path) -> daq_tests::Spawned {
    let mut cmd = Command::new(bin_dir().join(binary));
    cmd.args(["--rank", &rank.to_string(), "--listen", "127.0.0.1:0"])
        .env(daq_shm::SHM_DIR_ENV, shm)
        .stderr(Stdio::null());
    spawn_cmd(cmd, binary).expect("spawns")
}

/// Inits and starts a BxExA system of hand-spawned processes.
fn start_system(
    brs: &[daq_tests::Spawned],
    ebs: &[daq_tests::Spawned],
    ags: &[daq_tests::Spawned],
    data_dir: &Path,
) {
    start_system_with(
        brs,
        ebs,
        ags,
        data_dir,
        daq_format::config::SystemConfig::default(),
    );
}

/// [`start_system`] with `config` (its topology, throttle and transfer
/// mode set here).
fn start_system_with(
    brs: &[daq_tests::Spawned],
    ebs: &[daq_tests::Spawned],
    ags: &[daq_tests::Spawned],
    data_dir: &Path,
    mut config: daq_format::config::SystemConfig,
) {
    config.topology.boardreaders = brs.len() as u16;
    config.topology.eventbuilders = ebs.len() as u16;
    config.topology.aggregators = ags.len() as u16;
    config.generator.throttle_us = 2000;
    config.transfer.mode = daq_tests::transfer_mode();
    let toml = config.to_toml();
    let addrs = |ps: &[daq_tests::Spawned]| ps.iter().map(|p| p.addr.clone()).collect::<Vec<_>>();
    daq_tests::runtime().block_on(async {
        for (tier, dest) in [(ags, vec![]), (ebs, addrs(ags)), (brs, addrs(ebs))] {
            for p in tier {
                daq_tests::control(&p.addr)
                    .await
                    .init(proto::InitRequest {
                        config_toml: toml.clone(),
                        destinations: dest.clone(),
                    })
                    .await
                    .expect("init");
            }
        }
        for tier in [ags, ebs, brs] {
            for p in tier {
                daq_tests::control(&p.addr)
                    .await
                    .start(daq_tests::start_request(1, data_dir))
                    .await
                    .expect("start");
            }
        }
        // Running once the boardreaders have sent something.
        let mut c = daq_tests::control(&brs[0].addr).await;
        daq_tests::wait_for_status(&mut c, "fragments sent", |st| {
            st.counters.as_ref().is_some_and(|k| k.fragments_sent > 0)
        })
        .await;
    });
}

/// SIGTERM to `p`: it must exit (successfully) within a few seconds.
fn terminate(name: &str, p: &mut daq_tests::Spawned) -> Duration {
    signal("-TERM", p.child.id());
    let t = Instant::now();
    loop {
        if let Some(status) = p.child.try_wait().expect("wait") {
            let took = t.elapsed();
            println!(
                "SIGTERM to {name}: exited ({status}) in {:.2} s",
                took.as_secs_f64()
            );
            assert!(status.success(), "{name}: {status}");
            return took;
        }
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "{name} ignored SIGTERM for 8 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(p: &mut daq_tests::Spawned) {
    p.child.kill().expect("SIGKILL");
    p.child.wait().expect("reaped");
}

#[test]
fn sigterm_ends_every_kind_of_process_whose_downstream_is_dead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shm = dir.path().join("shm");
    std::fs::create_dir_all(&shm).expect("shm");
    let data = dir.path().join("data");
    // A 2x2x2 system: the aggregators die, then the eventbuilders get
    // SIGTERM, then the boardreaders (whose eventbuilders are gone by then).
    let mut brs: Vec<_> = (0..2).map(|r| spawn_in("boardreader", r, &shm)).collect();
    let mut ebs: Vec<_> = (0..2).map(|r| spawn_in("eventbuilder", r, &shm)).collect();
    let mut ags: Vec<_> = (0..2).map(|r| spawn_in("aggregator", r, &shm)).collect();
    start_system(&brs, &ebs, &ags, &data);
    ags.iter_mut().for_each(kill9);
    for (r, p) in ebs.iter_mut().enumerate() {
        // Its boardreaders are still sending: their streams are cut after
        // a quarter second, not waited for (this took 3-4 s before).
        let took = terminate(&format!("eventbuilder-{r} (aggregators dead)"), p);
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    for (r, p) in brs.iter_mut().enumerate() {
        let took = terminate(&format!("boardreader-{r} (eventbuilders dead)"), p);
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    // Only the SIGKILLed aggregators' segments are left; the next start
    // replaces them (their locks are free).
    let mut left = shm_left(&shm);
    left.sort();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|n| n.contains("aggregator")), "{left:?}");
    for n in &left {
        assert_eq!(daq_shm::remove_abandoned(&shm.join(n)).ok(), Some(true));
    }
    // A 1x1x1 system: the eventbuilder dies; the aggregator (nothing
    // upstream any more) gets SIGTERM, closes its file and leaves.
    let mut br = vec![spawn_in("boardreader", 0, &shm)];
    let mut eb = vec![spawn_in("eventbuilder", 0, &shm)];
    let mut ag = vec![spawn_in("aggregator", 0, &shm)];
    let data1 = dir.path().join("data1");
    start_system(&br, &eb, &ag, &data1);
    kill9(&mut eb[0]);
    let took = terminate("aggregator-0 (eventbuilder dead)", &mut ag[0]);
    assert!(took < Duration::from_secs(3), "{took:?}");
    let took = terminate("boardreader-0 (eventbuilder dead)", &mut br[0]);
    assert!(took < Duration::from_secs(3), "{took:?}");
    for f in files_of(&data1, "aggregator-0") {
        daq_datafile::hdf5::read_file(&f).expect("the terminated aggregator's file reads");
    }
    let left = shm_left(&shm);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].contains("eventbuilder-0"), "{left:?}");
}

/// A healthy 2x2x2 system mid-run, ended the way systemd or an operator
/// ends a host's units: SIGTERM to every process in data order
/// (boardreaders, eventbuilders, aggregators), each once the one before
/// has exited. Every one exits successfully and fast (the figures are
/// printed for the closing note; the bound asserted is generous for a
/// loaded machine), every segment is removed and every data file closed
/// (it reads whole, with every event the aggregators received).
#[test]
fn sigterm_in_order_ends_every_kind_fast_with_files_closed_and_segments_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shm = dir.path().join("shm");
    std::fs::create_dir_all(&shm).expect("shm");
    let data = dir.path().join("data");
    let mut brs: Vec<_> = (0..2).map(|r| spawn_in("boardreader", r, &shm)).collect();
    let mut ebs: Vec<_> = (0..2).map(|r| spawn_in("eventbuilder", r, &shm)).collect();
    let mut ags: Vec<_> = (0..2).map(|r| spawn_in("aggregator", r, &shm)).collect();
    start_system(&brs, &ebs, &ags, &data);
    let mut worst = Duration::ZERO;
    for (kind, tier) in [
        ("boardreader", &mut brs),
        ("eventbuilder", &mut ebs),
        ("aggregator", &mut ags),
    ] {
        for (r, p) in tier.iter_mut().enumerate() {
            let took = terminate(&format!("{kind}-{r} (in order)"), p);
            worst = worst.max(took);
        }
    }
    println!(
        "SIGTERM in order: slowest exit {:.2} s",
        worst.as_secs_f64()
    );
    assert!(
        worst < Duration::from_secs(3),
        "slowest SIGTERM exit {worst:?}"
    );
    assert!(shm_left(&shm).is_empty(), "{:?}", shm_left(&shm));
    let mut events = 0;
    for r in 0..2 {
        for f in files_of(&data, &format!("aggregator-{r}")) {
            events += daq_datafile::hdf5::read_file(&f)
                .expect("a terminated aggregator's file reads")
                .events
                .len();
        }
    }
    assert!(events > 0, "no event in the files");
}

/// `[transfer] keepalive_*` is what finds a hung receiver: with 200 ms /
/// 800 ms, an eventbuilder whose aggregator is SIGSTOPped counts the
/// aggregator lost (its events undelivered) well before the built-in 4 s
/// timeout could, over either mechanism (gRPC: the channel's HTTP/2 ping;
/// shared memory: the link's heartbeat).
#[test]
fn a_configured_keepalive_finds_a_hung_aggregator_in_its_own_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shm = dir.path().join("shm");
    std::fs::create_dir_all(&shm).expect("shm");
    let br = vec![spawn_in("boardreader", 0, &shm)];
    let eb = vec![spawn_in("eventbuilder", 0, &shm)];
    let ag = vec![spawn_in("aggregator", 0, &shm)];
    let mut config = daq_format::config::SystemConfig::default();
    config.transfer.keepalive_interval_ms = 200;
    config.transfer.keepalive_timeout_ms = 800;
    start_system_with(&br, &eb, &ag, &dir.path().join("data"), config);
    signal("-STOP", ag[0].child.id());
    let hung = Instant::now();
    let found = daq_tests::runtime().block_on(async {
        let mut c = daq_tests::control(&eb[0].addr).await;
        daq_tests::wait_for_status(&mut c, "aggregator-0 lost", |st| {
            st.counters.as_ref().is_some_and(|k| k.undelivered > 0)
        })
        .await;
        hung.elapsed()
    });
    signal("-CONT", ag[0].child.id());
    println!(
        "keep-alive 200/800 ms ({}): hung aggregator found after {:.2} s",
        daq_tests::local_mechanism(),
        found.as_secs_f64()
    );
    assert!(
        found < Duration::from_millis(3500),
        "found after {found:?}: the configured 800 ms keep-alive was not used"
    );
}
