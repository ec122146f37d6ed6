//! End-to-end: a session that outlives a run. `daqctl boot`, `init`,
//! `start`, `stop`, `status`, `shutdown` as separate invocations against
//! the real binaries, locally booted or attached through an `[addresses]`
//! table; `daqctl run --runs N`; and bad input that changes nothing.

use daq_format::config::SystemConfig;
use daq_tests::{
    Held, Pipe, SessionDir, assert_generated_payload, assert_nothing_lost, bin_dir, control,
    daqctl, output_text as text, runtime, signal, spawn, spawn_lines, summary, u, unique_partition,
    wait_gone,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `daqctl <verb> --run-dir D [--config C] args...`, which must succeed.
fn ok(verb: &str, run_dir: &Path, config: Option<&Path>, args: &[&str]) -> String {
    let out = run(verb, run_dir, config, args);
    assert!(
        out.status.success(),
        "daqctl {verb} {args:?}: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `daqctl <verb> ...`, which must fail with exit status 2 (bad input,
/// nothing done); returns stderr.
fn refused(verb: &str, run_dir: &Path, config: Option<&Path>, args: &[&str]) -> String {
    let out = run(verb, run_dir, config, args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "daqctl {verb} {args:?}: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run(verb: &str, run_dir: &Path, config: Option<&Path>, args: &[&str]) -> Output {
    let mut all = vec![verb, "--run-dir", run_dir.to_str().expect("utf-8 path")];
    if let Some(c) = config {
        all.extend(["--config", c.to_str().expect("utf-8 path")]);
    }
    all.extend_from_slice(args);
    daqctl(&all).expect("daqctl runs")
}

/// A session test's directory: a failing test's processes and segments
/// are cleaned up with it ([`SessionDir`]).
fn fresh_dir(name: &str) -> SessionDir {
    SessionDir::new(name)
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

/// (name, address, pid) of every process, from `daqctl boot`'s processes.json.
fn address_book(run_dir: &Path) -> Vec<(String, String, u32)> {
    let text = std::fs::read_to_string(run_dir.join("processes.json")).expect("processes.json");
    let v: Value = serde_json::from_str(&text).expect("json");
    v["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("name").to_string(),
                p["address"].as_str().expect("address").to_string(),
                p["pid"]
                    .as_u64()
                    .and_then(|p| p.try_into().ok())
                    .expect("pid"),
            )
        })
        .collect()
}

/// Status of every process, asked over gRPC.
fn statuses(book: &[(String, String, u32)]) -> Vec<proto::StatusReply> {
    runtime().block_on(async {
        let mut out = Vec::new();
        for (_, addr, _) in book {
            out.push(daq_tests::status(&mut control(addr).await).await);
        }
        out
    })
}

/// Waits (polling the processes' state, with a timeout) until every
/// boardreader has sent at least `n` fragments in the current run.
fn wait_for_fragments(book: &[(String, String, u32)], n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sent: Vec<u64> = statuses(book)
            .iter()
            .filter(|s| s.process.starts_with("boardreader"))
            .map(|s| s.counters.as_ref().map_or(0, |c| c.fragments_sent))
            .collect();
        if sent.iter().all(|&s| s >= n) {
            return;
        }
        assert!(Instant::now() < deadline, "boardreaders sent only {sent:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A session booted with a 2x2x2 config of its own, initialized and
/// started, data flowing: its directory, run directory, partition and
/// address book.
fn running_session(name: &str) -> (SessionDir, PathBuf, u32, Vec<(String, String, u32)>) {
    let dir = fresh_dir(name);
    let runs = dir.join("runs");
    let partition = unique_partition();
    dir.set_partition(partition);
    let config = write_config(
        &dir,
        &format!("{name}.toml"),
        &format!("partition = {partition}\n[generator]\nthrottle_us = 2000\n"),
    );
    ok("boot", &runs, Some(&config), &[]);
    let book = address_book(&runs);
    ok("init", &runs, Some(&config), &[]);
    ok("start", &runs, None, &[]);
    wait_for_fragments(&book, 20);
    (dir, runs, partition, book)
}

/// The pid of `name` in `book`.
fn pid_of(book: &[(String, String, u32)], name: &str) -> u32 {
    book.iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in {book:?}"))
        .2
}

/// `daqctl stop` of a run that lost `process`: it must exit 1 with
/// `process` and `why` on stderr. How long it took, and the run's summary.
fn stop_without(runs: &Path, process: &str, why: &str) -> (Duration, Value) {
    let t = Instant::now();
    let out = run("stop", runs, None, &[]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(process) && stderr.contains(why),
        "{}",
        text(&out)
    );
    let s = summary(&daq_tests::latest_run(runs)).expect("summary.json");
    (took, s)
}

/// `daqctl shutdown`: every process of `book` exits, the address book goes.
fn shut_down(runs: &Path, book: &[(String, String, u32)]) {
    ok("shutdown", runs, None, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    for (name, _, pid) in book {
        assert!(
            wait_gone(*pid, deadline.saturating_duration_since(Instant::now())).is_some(),
            "{name} still running after shutdown"
        );
    }
    assert!(!runs.join("processes.json").exists());
}

#[test]
fn local_session_runs_three_times_reconfigures_and_never_restarts_a_process() {
    let dir = fresh_dir("local");
    let runs = dir.join("runs");
    let partition = unique_partition();
    dir.set_partition(partition);
    let base = format!("partition = {partition}\n[generator]\nthrottle_us = 2000\n");
    let first = write_config(&dir, "first.toml", &base);
    let second = write_config(&dir, "second.toml", &format!("{base}n_adc_counts = 100\n"));

    let out = ok("boot", &runs, Some(&first), &[]);
    assert!(out.contains("booted 6 processes"), "{out}");
    let book = address_book(&runs);
    assert_eq!(
        book.iter().map(|(n, _, _)| n.as_str()).collect::<Vec<_>>(),
        [
            "boardreader-0",
            "boardreader-1",
            "eventbuilder-0",
            "eventbuilder-1",
            "aggregator-0",
            "aggregator-1"
        ]
    );
    let pids: Vec<u32> = book.iter().map(|(_, _, p)| *p).collect();
    // The processes outlived `daqctl boot`: they answer, Booted.
    assert!(statuses(&book).iter().all(|s| s.state == "booted"));

    // Start before init is refused and starts nothing.
    let err = refused("start", &runs, None, &[]);
    assert!(
        err.contains("cannot start: boardreader-0 is booted") && err.contains("daqctl init"),
        "{err}"
    );
    assert!(!runs.join("run_000001").exists());

    ok("init", &runs, Some(&first), &[]);
    let mut numbers = Vec::new();
    let mut last_root = PathBuf::new();
    for round in 0..4 {
        if round == 3 {
            // Reconfigure while Ready: an invalid config is refused and the
            // old one stays in force; a valid one replaces it.
            let bad = write_config(&dir, "bad.toml", &format!("{base}n_adc_counts = 0\n"));
            let err = refused("init", &runs, Some(&bad), &[]);
            assert!(err.contains("generator.n_adc_counts"), "{err}");
            let in_force = SystemConfig::from_toml(&statuses(&book)[0].config_toml, "status")
                .expect("config in force");
            assert_eq!(in_force.generator.n_adc_counts, 40);
            ok("init", &runs, Some(&second), &[]);
        }
        let out = ok("start", &runs, None, &[]);
        assert!(out.contains("started"), "{out}");
        wait_for_fragments(&book, 20);
        let table = ok("status", &runs, None, &[]);
        assert_eq!(table.matches(" running ").count(), 6, "{table}");
        let out = ok("stop", &runs, None, &[]);
        assert!(out.contains("OK: nothing lost"), "{out}");
        let root = daq_tests::latest_run(&runs);
        let s = summary(&root).expect("summary.json");
        assert_nothing_lost(&s);
        numbers.push(u(&s, "run"));
        // The record is complete without files written by the processes:
        // heap samples came over gRPC.
        for (name, _, _) in &book {
            let csv = std::fs::read_to_string(root.join("heap").join(format!("{name}.csv")))
                .expect("heap samples");
            assert!(csv.lines().count() >= 3, "{name}: {csv}");
        }
        let locations = s["data_file_locations"].as_array().expect("locations");
        assert_eq!(locations.len(), 2, "{s}");
        assert!(locations.iter().all(|l| l["host"] == "127.0.0.1"), "{s}");
        // Nothing restarted.
        let now: Vec<u32> = statuses(&book).iter().map(|s| s.pid).collect();
        assert_eq!(now, pids);
        last_root = root;
    }
    assert_eq!(numbers, [1, 2, 3, 4]);
    let new = SystemConfig::from_file(&second).expect("second config");
    assert_generated_payload(&last_root, &new);
    let old = last_root.with_file_name("run_000003");
    assert_generated_payload(&old, &SystemConfig::default());

    // status --watch refreshes until Ctrl-C and then exits cleanly.
    let (mut watch, mut lines) = spawn_lines(
        Command::new(bin_dir().join("daqctl"))
            .args(["status", "--watch", "--run-dir"])
            .arg(&runs)
            .stdin(Stdio::null())
            .stderr(Stdio::null()),
        Pipe::Stdout,
    )
    .expect("status --watch");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < 2 {
        let line = lines
            .next_before(deadline)
            .unwrap_or_else(|| panic!("status --watch refreshed {seen} times: {}", lines.text()));
        if line.trim_start().starts_with("aggregator-1") {
            assert!(line.contains("ready"), "{line}");
            seen += 1;
        }
    }
    signal("-INT", watch.id());
    let status = watch.wait().expect("wait");
    assert!(status.success(), "status --watch after Ctrl-C: {status}");

    let out = ok("shutdown", &runs, None, &[]);
    assert!(out.contains("shut down 6 processes"), "{out}");
    assert!(!runs.join("processes.json").exists());
    let err = refused("status", &runs, None, &[]);
    assert!(err.contains("no system booted"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 1x1x1 system started by hand (as systemd would), and its config.
struct Attached {
    _procs: Vec<daq_tests::Spawned>,
    addrs: [String; 3],
    header: String,
}

fn attached() -> Attached {
    let br = spawn("boardreader", 0).expect("boardreader");
    let eb = spawn("eventbuilder", 0).expect("eventbuilder");
    let ag = spawn("aggregator", 0).expect("aggregator");
    let addrs = [br.addr.clone(), eb.addr.clone(), ag.addr.clone()];
    let header = format!(
        "partition = {}\n[topology]\nboardreaders = 1\neventbuilders = 1\naggregators = 1\n[generator]\nthrottle_us = 2000\n",
        unique_partition()
    );
    Attached {
        _procs: vec![br, eb, ag],
        addrs,
        header,
    }
}

impl Attached {
    /// `dir/<name>.toml`: the system's config with an `[addresses]` table
    /// of `rows` (name, address).
    fn config(&self, dir: &Path, name: &str, rows: &[(&str, &str)]) -> PathBuf {
        let mut text = format!("{}[addresses]\n", self.header);
        for (process, addr) in rows {
            text.push_str(&format!("{process} = \"{addr}\"\n"));
        }
        write_config(dir, &format!("{name}.toml"), &text)
    }
}

#[test]
fn attached_processes_are_checked_then_driven_and_bad_tables_change_nothing() {
    let dir = fresh_dir("attached");
    let runs = dir.join("runs");
    let sys = attached();
    let [br, eb, ag] = [&sys.addrs[0], &sys.addrs[1], &sys.addrs[2]];
    let book: Vec<(String, String, u32)> = sys
        .addrs
        .iter()
        .map(|a| (String::new(), a.clone(), 0))
        .collect();

    // The right table, one address a process.
    let every: [(&str, &str); 3] = [
        ("boardreader-0", br),
        ("eventbuilder-0", eb),
        ("aggregator-0", ag),
    ];

    // A table that misses a process, or names one twice: config errors.
    let missing = sys.config(
        &dir,
        "missing",
        &[("boardreader-0", br), ("eventbuilder-0", eb)],
    );
    let err = refused("boot", &runs, Some(&missing), &[]);
    assert!(err.contains("no address for aggregator-0"), "{err}");
    let twice = sys.config(
        &dir,
        "twice",
        &[
            ("boardreader-0", br),
            ("eventbuilder-0", eb),
            ("aggregator-0", ag),
            ("boardreader-0", ag),
        ],
    );
    let err = refused("boot", &runs, Some(&twice), &[]);
    assert!(err.contains("boardreader-0"), "{err}");

    // An address where nobody answers is named with its process.
    let closed = daq_tests::ClosedPort::new().expect("a port nobody listens on");
    let nobody = closed.addr.clone();
    let silent = sys.config(
        &dir,
        "silent",
        &[
            ("boardreader-0", br),
            ("eventbuilder-0", eb),
            ("aggregator-0", &nobody),
        ],
    );
    let err = refused("boot", &runs, Some(&silent), &[]);
    assert!(
        err.contains(&format!("aggregator-0 at {nobody} does not answer")),
        "{err}"
    );

    // A process that is not who the table says.
    let mut rows = every;
    (rows[0].1, rows[1].1) = (eb.as_str(), br.as_str());
    let swapped = sys.config(&dir, "swapped", &rows);
    let err = refused("boot", &runs, Some(&swapped), &[]);
    assert!(
        err.contains(&format!("{eb} is \"eventbuilder-0\", not boardreader-0")),
        "{err}"
    );
    assert!(statuses(&book).iter().all(|s| s.state == "booted"));

    // The right table: boot checks, start before init is refused.
    let good = sys.config(&dir, "good", &every);
    let out = ok("boot", &runs, Some(&good), &[]);
    assert!(
        out.contains("every process of [addresses] answers"),
        "{out}"
    );
    let err = refused("start", &runs, Some(&good), &[]);
    assert!(err.contains("is booted"), "{err}");
    assert!(statuses(&book).iter().all(|s| s.state == "booted"));

    // Init, then an init whose topology is not the booted system: refused,
    // the old config in force.
    ok("init", &runs, Some(&good), &[]);
    let err = refused("init", &runs, Some(&good), &["--topology", "2x1x1"]);
    assert!(
        err.contains("is not the booted system") || err.contains("no address for boardreader-1"),
        "{err}"
    );
    let in_force =
        SystemConfig::from_toml(&statuses(&book)[0].config_toml, "status").expect("config");
    assert_eq!(in_force.topology.boardreaders, 1);

    ok("start", &runs, Some(&good), &[]);
    let err = refused("start", &runs, Some(&good), &[]);
    assert!(err.contains("a run is in progress"), "{err}");
    wait_for_fragments(&book, 20);
    let out = ok("stop", &runs, Some(&good), &[]);
    assert!(out.contains("OK: nothing lost"), "{out}");
    let s = summary(&runs.join("run_000001")).expect("summary");
    assert_nothing_lost(&s);
    let err = refused("stop", &runs, Some(&good), &[]);
    assert!(err.contains("no run in progress"), "{err}");
    ok("shutdown", &runs, Some(&good), &[]);
    assert!(!runs.join("processes.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn consecutive_runs_in_one_boot_each_have_a_record_and_a_verdict_across_runs() {
    let dir = fresh_dir("runs");
    let runs = dir.join("runs");
    let out = run(
        "run",
        &runs,
        None,
        &[
            "--runs",
            "3",
            "--events",
            "200",
            "--partition",
            &unique_partition().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("3 of 3 runs with every equality exact"),
        "{stdout}"
    );
    let session: Value = serde_json::from_str(
        &std::fs::read_to_string(runs.join("session_000001").join("session.json"))
            .expect("session.json"),
    )
    .expect("json");
    let lines = session["runs"].as_array().expect("runs");
    assert_eq!(
        lines.iter().map(|l| u(l, "run")).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for l in lines {
        assert_eq!(u(l, "events_built"), 200, "{l}");
        assert_eq!(u(l, "fragments_sent"), 400, "{l}");
        assert_eq!(u(l, "fragments_received"), 400, "{l}");
        assert_eq!(u(l, "events_written"), 200, "{l}");
        assert_eq!(l["ok"], true, "{l}");
    }
    let procs = session["processes"].as_object().expect("processes");
    assert_eq!(procs.len(), 6);
    for (name, p) in procs {
        assert_eq!(
            p["after_stop_allocated"].as_array().map(Vec::len),
            Some(3),
            "{name}"
        );
        assert_eq!(p["verdict"], "stable", "{name}: {p}");
    }
    for n in 1..=3 {
        assert_nothing_lost(&summary(&runs.join(format!("run_{n:06}"))).expect("summary"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn session_stop_and_shutdown_go_on_without_a_hung_boardreader() {
    let (_dir, runs, _, book) = running_session("hung");

    // Hang boardreader-1 (artdaq's "hang" fault): `daqctl stop` must not
    // wait for it, must stop the other five and name it.
    let hung = pid_of(&book, "boardreader-1");
    signal("-STOP", hung);
    let (took, s) = stop_without(&runs, "boardreader-1", "does not answer");
    eprintln!("FAULT boardreader-1 SIGSTOPped: daqctl stop took {took:.1?}");
    // The events that wait for its fragments are released as soon as its
    // stream is found dead, not each after its own stale timeout.
    let stale = Duration::from_millis(SystemConfig::default().eventbuilder.stale_timeout_ms);
    assert!(
        took < stale + Duration::from_secs(5),
        "stop took {took:?}, over stale_timeout_ms + 5 s"
    );
    let errors = s["errors"].to_string();
    assert!(errors.contains("boardreader-1 never answered"), "{s}");
    let others: Vec<_> = book.iter().filter(|p| p.2 != hung).cloned().collect();
    for st in statuses(&others) {
        assert_eq!(st.state, "ready", "{} after stop", st.process);
    }

    // Resumed, it is shut down cleanly with the rest: every process exits
    // and the address book goes.
    signal("-CONT", hung);
    shut_down(&runs, &book);
}

#[test]
fn session_stop_names_a_killed_eventbuilder_with_what_was_lost_and_shutdown_finishes() {
    let (_dir, runs, partition, book) = running_session("gone");
    let dead = pid_of(&book, "eventbuilder-1");
    signal("-KILL", dead);
    assert!(
        wait_gone(dead, Duration::from_secs(20)).is_some(),
        "eventbuilder-1 still alive"
    );

    // `daqctl stop` (attached, not its parent) finds it gone: the rest stop,
    // the record names it with the sequence ids lost with it, exit 1.
    let (_, s) = stop_without(&runs, "eventbuilder-1", "is gone");
    assert!(
        s["errors"].to_string().contains("eventbuilder-1 is gone"),
        "{s}"
    );
    let lost = s["lost"].as_array().expect("lost");
    assert_eq!(lost.len(), 1, "{s}");
    assert_eq!(lost[0]["process"], "eventbuilder-1", "{s}");
    assert!(lost[0]["events"].as_u64().is_some_and(|n| n > 0), "{s}");
    // Its segment went with the run (its lock was free).
    let segment = daq_shm::segment_path(partition, "eventbuilder-1");
    assert!(!segment.exists(), "{} left behind", segment.display());

    // Shutdown of the others succeeds: a process already gone is no error.
    shut_down(&runs, &book);
}

/// Starts `eventbuilder --rank 1` on `addr` as a supervisor restarts a
/// failed unit (systemd's `Restart=on-failure`): again while it fails to
/// bind. The test system's ports are ephemeral ones (port 0 at boot), so in
/// the moment between the kill and the restart another socket of this busy
/// host may take the freed port for a while; a deployment's fixed ports lie
/// outside that range. Any other failure fails the test with the process's
/// stderr.
fn restart_on(addr: &str, log: &Path) -> daq_tests::Spawned {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stderr = std::fs::File::create(log).expect("stderr log");
        let mut cmd = Command::new(bin_dir().join("eventbuilder"));
        cmd.args(["--rank", "1", "--listen", addr]).stderr(stderr);
        match daq_tests::spawn_cmd(cmd, "restarted eventbuilder-1") {
            Ok(fresh) => return fresh,
            Err(e) => {
                let said = std::fs::read_to_string(log).unwrap_or_default();
                assert!(
                    said.contains("cannot bind the run-control address")
                        && Instant::now() < deadline,
                    "{e:#}; its stderr:\n{said}"
                );
                eprintln!("restart on {addr} failed to bind, again in 0.5 s: {said}");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

#[test]
fn a_run_whose_eventbuilder_was_restarted_is_stopped_and_recorded_and_init_works_again() {
    let (dir, runs, _, book) = running_session("restarted");
    let config = dir.join("restarted.toml");
    let (_, addr, old) = book
        .iter()
        .find(|p| p.0 == "eventbuilder-1")
        .cloned()
        .expect("eventbuilder-1");
    signal("-KILL", old);
    assert!(
        wait_gone(old, Duration::from_secs(20)).is_some(),
        "eventbuilder-1 still alive"
    );
    // Its supervisor starts a fresh one on the same address: Booted, with
    // no configuration and nothing of the run.
    let mut fresh = restart_on(&addr, &dir.join("restarted-eventbuilder-1.log"));
    let st = statuses(&book);
    assert!(
        st.iter()
            .any(|s| s.process == "eventbuilder-1" && s.state == "booted"),
        "{st:?}"
    );

    // The run stops and is recorded: the restarted process is named with
    // what was lost with its old self, and daqctl exits 1.
    let (took, s) = stop_without(&runs, "eventbuilder-1", "was restarted");
    eprintln!("FAULT eventbuilder-1 restarted mid-run: daqctl stop took {took:.1?}");
    let errors = s["errors"].to_string();
    assert!(
        errors.contains("eventbuilder-1 was restarted during run 1"),
        "{s}"
    );
    let lost = s["lost"].as_array().expect("lost");
    assert_eq!(lost.len(), 1, "{s}");
    assert_eq!(lost[0]["process"], "eventbuilder-1", "{s}");
    assert!(lost[0]["events"].as_u64().is_some_and(|n| n > 0), "{s}");
    let procs = s["processes"].as_object().expect("processes");
    assert_eq!(procs.len(), 5, "{s}");
    assert!(!procs.contains_key("eventbuilder-1"), "{s}");

    // One process Booted, the others Ready: start refuses and says how to
    // recover; nothing is started.
    let out = run("start", &runs, None, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("eventbuilder-1 is booted") && said.contains("run `daqctl init` first"),
        "{said}"
    );
    // `init` on the whole system works again, without restarting anything,
    // and the next run loses nothing.
    ok("init", &runs, Some(&config), &[]);
    ok("start", &runs, None, &[]);
    wait_for_fragments(&book, 20);
    let out = run("stop", &runs, None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = summary(&daq_tests::latest_run(&runs)).expect("summary.json");
    assert_eq!(s["processes"].as_object().map(|p| p.len()), Some(6), "{s}");
    daq_tests::assert_nothing_lost(&s);

    ok("shutdown", &runs, None, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if fresh.child.try_wait().expect("try_wait").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted eventbuilder-1 did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, _, pid) in &book {
        assert!(
            wait_gone(*pid, deadline.saturating_duration_since(Instant::now())).is_some(),
            "{name} still running after shutdown"
        );
    }
}

#[test]
fn status_stop_and_monitor_find_the_system_a_demo_runs_from_the_run_dir() {
    let dir = fresh_dir("found");
    let runs = dir.join("runs");
    {
        // The demo's address book is runs/run_000001/processes.json, not
        // runs/processes.json (no `daqctl boot` there).
        let held = Held::start(&runs, &["--duration", "1", "--topology", "1x1x1"]);
        let out = run("status", &runs, None, &[]);
        assert!(out.status.success(), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        for (p, _) in &held.processes {
            assert!(
                stdout
                    .lines()
                    .any(|l| l.contains(p.as_str()) && l.contains("ready")),
                "{p}: {stdout}"
            );
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("run_000001/{}", "processes.json")),
            "{stderr}"
        );
        // stop reaches the same processes: their run is over.
        let err = refused("stop", &runs, None, &[]);
        assert!(err.contains("no run in progress"), "{err}");
        // monitor takes the partition of the system it found.
        let err = refused(
            "monitor",
            &runs,
            None,
            &["--process", "aggregator-0", "--wait", "0"],
        );
        assert!(
            err.contains(&format!("in partition {}", held.partition)),
            "{err}"
        );
    }
    // The demo has ended: its address book is stale, and the error names it.
    let err = refused("status", &runs, None, &[]);
    assert!(
        err.contains("no system running from") && err.contains("run_000001"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The guard of the tests above: a session test that fails (panics) with
/// its system booted, one process SIGSTOPped, leaves no process and no
/// segment of its partition behind.
#[test]
fn a_failing_session_test_leaves_no_process_and_no_segment_behind() {
    let partition = unique_partition();
    let (pids, runs) = {
        let dir = fresh_dir("guard");
        dir.set_partition(partition);
        let runs = dir.join("runs");
        let config = write_config(
            &dir,
            "guard.toml",
            &format!(
                "partition = {partition}\n[topology]\nboardreaders = 1\neventbuilders = 1\naggregators = 1\n"
            ),
        );
        ok("boot", &runs, Some(&config), &[]);
        ok("init", &runs, Some(&config), &[]);
        ok("start", &runs, None, &[]);
        let book = address_book(&runs);
        wait_for_fragments(&book, 1);
        let pids: Vec<u32> = book.iter().map(|(_, _, p)| *p).collect();
        signal("-STOP", pid_of(&book, "eventbuilder-0"));
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _dir = dir;
            panic!("a session test fails here");
        }));
        assert!(failed.is_err());
        (pids, runs)
    };
    for pid in &pids {
        assert!(!daq_tests::alive(*pid), "pid {pid} left running");
    }
    let prefix = format!("daq-p{partition}-");
    let left: Vec<String> = std::fs::read_dir(daq_shm::shm_dir())
        .expect("shm dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The failed test's files stay for a look.
    assert!(runs.join("processes.json").exists());
    let _ = std::fs::remove_dir_all(runs.parent().expect("session dir"));
}
