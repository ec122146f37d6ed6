//! A data disk that fails under a running aggregator: full (a small tmpfs
//! the test mounts), read-only at start, or its directory removed mid-run.
//! The aggregator enters Error naming the file and the errno, the files it
//! closed before stay readable, stop succeeds (its time is printed), and
//! every event received is written or counted `events_unwritten`, exactly.
//! Both data formats. Mounting needs root: without it the tests say so and
//! pass, except in CI (`CI` set), where they fail.

use daq_format::config::{DataFormat, SystemConfig};
use daq_tests::{
    Control, control, h5dump, init_and_start, netmon_event, runtime, spawn, start_request,
    test_config, wait_for_status,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs of `size` mounted on a fresh directory; unmounted (lazily, so
/// files still open do not stop it) and removed on drop, also when the
/// test fails.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (and a note) where mounting is not allowed, outside CI.
    fn mount(size: &str, read_only: bool) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut opts = format!("size={size}");
        if read_only {
            opts.push_str(",ro");
        }
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Some(Self { dir }),
            other => {
                if std::env::var_os("CI").is_some() {
                    panic!(
                        "CI is set but mounting a tmpfs failed ({other:?}): the disk tests need root"
                    );
                }
                eprintln!("note: cannot mount a tmpfs ({other:?}; needs root): disk test skipped");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn config(format: DataFormat) -> SystemConfig {
    let mut c = test_config(1, 1);
    c.transfer.end_of_data_timeout_ms = 5_000;
    c.aggregator.format = format;
    // Small batches and files: several files close before the disk fails.
    c.aggregator.batch_events = 10;
    c.aggregator.max_file_bytes = 1 << 20;
    c
}

/// Events of two 16 KiB fragments each (about 32 KiB).
const PAYLOAD: usize = 16 * 1024;

/// Sends events `first..first + n` of run `run` as eventbuilder 0, in
/// batches of 20, ending with end-of-data `eod` when given.
async fn send(
    addr: &str,
    run: u32,
    first: u64,
    n: u64,
    eod: Option<u64>,
) -> proto::TransferSummary {
    let ch = daq_tests::connect(addr).await;
    let seqs: Vec<u64> = (first..first + n).collect();
    let mut batches: Vec<proto::EventBatch> = seqs
        .chunks(20)
        .map(|c| proto::EventBatch {
            source: 0,
            run,
            events: c
                .iter()
                .map(|&s| netmon_event(run, s, 2, PAYLOAD))
                .collect(),
            end_of_data: None,
        })
        .collect();
    if let Some(last) = batches.last_mut() {
        last.end_of_data = eod;
    }
    daq_tests::send_events(&ch, batches)
        .await
        .expect("the stream is served to its end")
}

/// Stops the run, printing how long it took.
async fn stop(c: &mut Control, what: &str) -> proto::CommandReply {
    let t = Instant::now();
    let reply = daq_tests::stop(c).await;
    let took = t.elapsed();
    eprintln!("{what}: stop took {} ms", took.as_millis());
    assert!(took < Duration::from_secs(15), "{what}: stop took {took:?}");
    assert_eq!(reply.state, "ready");
    reply
}

/// Events readable in each file (the Rust readers: HDF5's consistent
/// prefix, artdaq-binary's whole fragments), and whether each was closed.
fn readable(format: DataFormat, files: &[PathBuf]) -> Vec<(u64, bool)> {
    files
        .iter()
        .map(|f| match format {
            DataFormat::Hdf5 => {
                let r = daq_datafile::hdf5::read_file(f)
                    .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                (r.events.len() as u64, r.recorded_events.is_some())
            }
            DataFormat::ArtdaqBinary => {
                let r = daq_datafile::artdaq_binary::read_file(f)
                    .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                (r.events().count() as u64, r.stop.is_none())
            }
        })
        .collect()
}

/// h5py reads every closed file whole (its `events` attribute present and
/// equal to the events it holds).
fn h5py_reads_closed(files: &[PathBuf]) {
    let Some(dump) = h5dump(files) else { return };
    for f in dump["files"].as_array().expect("files") {
        let n = f["events"].as_array().expect("events").len() as u64;
        assert_eq!(f["attrs"]["events"].as_u64(), Some(n), "{}", f["path"]);
    }
}

fn disk_full(format: DataFormat) {
    let Some(disk) = Tmpfs::mount("8m", false) else {
        return;
    };
    let what = format!("disk full ({})", format.as_str());
    let p = spawn("aggregator", 0).expect("spawns");
    let data = disk.path().join("run_000001");
    // 600 events of 32 KiB: 19 MB into 8 MiB.
    const SENT: u64 = 600;
    runtime().block_on(async {
        let mut c = control(&p.addr).await;
        init_and_start(&mut c, &config(format), 1, &data).await;
        let summary = send(&p.addr, 1, 1, SENT, Some(SENT)).await;
        // The stream ends cleanly: a full disk does not stall the senders.
        assert_eq!((summary.received, summary.announced), (SENT, Some(SENT)));
        let st = wait_for_status(&mut c, "error state", |s| s.state == "error").await;
        eprintln!("{what}: status error: {}", st.error);
        assert!(
            st.error.contains(&data.display().to_string()),
            "{}",
            st.error
        );
        assert!(
            st.error.contains("No space left on device (os error 28)"),
            "{}",
            st.error
        );
        assert_eq!(st.legal_commands, ["stop", "shutdown"]);
        let reply = stop(&mut c, &what).await;
        let k = reply.counters.expect("counters");
        eprintln!(
            "{what}: received {} written {} unwritten {} files {}",
            k.events_received,
            k.events_written,
            k.events_unwritten,
            k.data_files.len()
        );
        assert_eq!(k.events_received, SENT);
        assert_eq!(k.events_written + k.events_unwritten, SENT);
        assert!(k.events_unwritten > 0 && k.events_written > 0, "{k:?}");
        assert!(
            reply.problems.iter().any(|p| p.contains("os error 28")),
            "{:?}",
            reply.problems
        );
        assert!(
            reply.problems.contains(&format!(
                "{} events received but not written: the data files had failed",
                k.events_unwritten
            )),
            "{:?}",
            reply.problems
        );
        // Every event counted written is in the files, read back; every
        // file but the last was closed whole before the disk filled.
        let files: Vec<PathBuf> = k.data_files.iter().map(PathBuf::from).collect();
        assert!(files.len() >= 3, "{files:?}");
        let read = readable(format, &files);
        eprintln!("{what}: events per file, closed: {read:?}");
        assert_eq!(read.iter().map(|r| r.0).sum::<u64>(), k.events_written);
        let closed = &files[..files.len() - 1];
        assert!(read[..closed.len()].iter().all(|r| r.1), "{read:?}");
        if format == DataFormat::Hdf5 {
            h5py_reads_closed(closed);
        }
        // The process is usable again: a new run writes elsewhere.
        let other = tempfile::tempdir().expect("tempdir");
        c.start(start_request(2, other.path()))
            .await
            .expect("a new run starts");
        let s = send(&p.addr, 2, 1, 5, Some(5)).await;
        assert_eq!(s.received, 5);
        let k = stop(&mut c, &format!("{what}, next run"))
            .await
            .counters
            .expect("counters");
        assert_eq!((k.events_written, k.events_unwritten), (5, 0));
    });
}

#[test]
fn a_full_disk_puts_the_hdf5_aggregator_in_error_and_counts_every_event_not_written() {
    disk_full(DataFormat::Hdf5);
}

#[test]
fn a_full_disk_puts_the_artdaq_binary_aggregator_in_error_and_counts_every_event_not_written() {
    disk_full(DataFormat::ArtdaqBinary);
}

#[test]
fn a_read_only_data_dir_fails_start_naming_the_dir_and_errno_and_start_can_be_retried() {
    let Some(disk) = Tmpfs::mount("1m", true) else {
        return;
    };
    for format in [DataFormat::Hdf5, DataFormat::ArtdaqBinary] {
        let what = format!("read-only data dir ({})", format.as_str());
        let p = spawn("aggregator", 0).expect("spawns");
        let data = disk.path().join("run_000001");
        runtime().block_on(async {
            let mut c = control(&p.addr).await;
            daq_tests::init(&mut c, &config(format)).await;
            let err = c
                .start(start_request(1, &data))
                .await
                .expect_err("start fails");
            eprintln!("{what}: start refused: {}", err.message());
            assert_eq!(
                err.message(),
                format!(
                    "aggregator-0: start failed: cannot create data dir {}: Read-only file system (os error 30)",
                    data.display()
                )
            );
            // A start that fails started nothing: the process stays Ready
            // and the same start is retried once the directory is fixed.
            let st = daq_tests::status(&mut c).await;
            assert_eq!((st.state.as_str(), st.error.as_str()), ("ready", ""));
            let other = tempfile::tempdir().expect("tempdir");
            c.start(start_request(1, other.path()))
                .await
                .expect("start is retried");
            let reply = stop(&mut c, &what).await;
            let k = reply.counters.expect("counters");
            assert_eq!((k.events_received, k.events_written), (0, 0));
        });
    }
}

fn vanishing_dir(format: DataFormat) {
    let what = format!("data dir removed mid-run ({})", format.as_str());
    let p = spawn("aggregator", 0).expect("spawns");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("run_000001");
    runtime().block_on(async {
        let mut c = control(&p.addr).await;
        init_and_start(&mut c, &config(format), 1, &data).await;
        // 20 events go into the first file, then the directory goes.
        let s = send(&p.addr, 1, 1, 20, None).await;
        assert_eq!(s.received, 20);
        wait_for_status(&mut c, "20 events written", |s| {
            s.counters.as_ref().is_some_and(|k| k.events_written == 20)
        })
        .await;
        std::fs::remove_dir_all(&data).expect("removes the data dir");
        // 200 more (6 MB): the first file fills, the next cannot be created.
        let s = send(&p.addr, 1, 21, 200, Some(220)).await;
        assert_eq!(s.received, 200);
        let st = wait_for_status(&mut c, "error state", |s| s.state == "error").await;
        eprintln!("{what}: status error: {}", st.error);
        assert!(
            st.error
                .contains(&format!("failed to create data file {}", data.display())),
            "{}",
            st.error
        );
        assert!(
            st.error.contains("No such file or directory (os error 2)"),
            "{}",
            st.error
        );
        let reply = stop(&mut c, &what).await;
        let k = reply.counters.expect("counters");
        eprintln!(
            "{what}: received {} written {} unwritten {} problems {:?}",
            k.events_received, k.events_written, k.events_unwritten, reply.problems
        );
        assert_eq!(k.events_received, 220);
        assert_eq!(k.events_written + k.events_unwritten, 220);
        assert!(k.events_unwritten > 0, "{k:?}");
        // What was written went with the directory: the stop says so.
        let first = k.data_files.first().expect("a file");
        assert!(
            reply.problems.contains(&format!(
                "data file {first} is gone: removed during the run, its events with it"
            )),
            "{:?}",
            reply.problems
        );
        assert_eq!(k.bytes_written, 0);
    });
}

#[test]
fn a_data_dir_removed_mid_run_puts_the_hdf5_aggregator_in_error_and_stop_names_the_lost_files() {
    vanishing_dir(DataFormat::Hdf5);
}

#[test]
fn a_data_dir_removed_mid_run_puts_the_artdaq_binary_aggregator_in_error_and_stop_names_the_lost_files()
 {
    vanishing_dir(DataFormat::ArtdaqBinary);
}

/// A close that fails only at its last step counts exactly: the data dir
/// goes while the last 5 events wait in the HDF5 writer's buffer; at stop
/// they are flushed into the (unlinked) open file, then measuring the
/// files fails. Those 5 are in a file: written, not unwritten (they were
/// counted unwritten before), and the stop names the file as gone.
#[test]
fn a_close_that_fails_after_its_last_flush_counts_every_flushed_event_written() {
    let what = "close fails after the last flush";
    let p = spawn("aggregator", 0).expect("spawns");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("run_000001");
    runtime().block_on(async {
        let mut c = control(&p.addr).await;
        init_and_start(&mut c, &config(DataFormat::Hdf5), 1, &data).await;
        let s = send(&p.addr, 1, 1, 20, None).await;
        assert_eq!(s.received, 20);
        wait_for_status(&mut c, "20 events written", |s| {
            s.counters.as_ref().is_some_and(|k| k.events_written == 20)
        })
        .await;
        std::fs::remove_dir_all(&data).expect("removes the data dir");
        // Fewer than a batch (10): they stay buffered until stop.
        let s = send(&p.addr, 1, 21, 5, Some(25)).await;
        assert_eq!(s.received, 5);
        let reply = stop(&mut c, what).await;
        let k = reply.counters.expect("counters");
        eprintln!(
            "{what}: received {} written {} unwritten {} problems {:?}",
            k.events_received, k.events_written, k.events_unwritten, reply.problems
        );
        assert_eq!(k.events_received, 25);
        assert_eq!((k.events_written, k.events_unwritten), (25, 0), "{k:?}");
        assert!(
            reply
                .problems
                .iter()
                .any(|p| p.starts_with("closing data files failed")),
            "{:?}",
            reply.problems
        );
        let first = k.data_files.first().expect("a file");
        assert!(
            reply.problems.contains(&format!(
                "data file {first} is gone: removed during the run, its events with it"
            )),
            "{:?}",
            reply.problems
        );
    });
}

#[test]
fn daqctl_refuses_a_read_only_run_dir_before_starting_anything() {
    let Some(disk) = Tmpfs::mount("1m", true) else {
        return;
    };
    let partition = daq_tests::unique_partition();
    let runs = disk.path().join("runs");
    let out = daq_tests::daqctl(&[
        "demo",
        "--run-dir",
        runs.to_str().expect("utf-8"),
        "--events",
        "100",
        &format!("--partition={partition}"),
    ])
    .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot create run dir {}: Read-only file system (os error 30)",
            runs.display()
        )),
        "{stderr}"
    );
    let leftovers: Vec<_> = std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("daq-p{partition}-"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_run_dir_removed_mid_run_is_recorded_again_with_every_event_not_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("system.toml");
    // Small files: new ones are created while the run goes on.
    std::fs::write(&config, "[aggregator]\nmax_file_bytes = 262144\n").expect("write");
    let runs = dir.path().join("runs");
    let data = runs.join("run_000001").join("data");
    let daqctl = daq_tests::bin_dir().join("daqctl");
    let started = Instant::now();
    let mut cmd = Command::new(daqctl);
    cmd.args(["demo", "--config"])
        .arg(&config)
        .arg("--run-dir")
        .arg(&runs)
        .args(["--duration", "4", "--throttle-us", "0"])
        .arg(format!("--partition={}", daq_tests::unique_partition()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    let (child, mut lines) =
        daq_tests::spawn_lines(&mut cmd, daq_tests::Pipe::Stderr).expect("daqctl starts");
    // Once the run is running (daqctl says so on stderr: every process
    // has started, both aggregators have their first file open) and both
    // write, the whole run directory goes. A file that exists is not yet an open one: the
    // HDF5 writer creates its file, then opens it again for appending, and
    // a directory removed in between failed that aggregator's start.
    lines.wait_for("run 1: running", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    let writing = |a: &str| {
        std::fs::read_dir(&data).is_ok_and(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().contains(&format!("_{a}_")))
        })
    };
    while !(writing("aggregator-0") && writing("aggregator-1")) {
        assert!(
            Instant::now() < deadline,
            "no data files in {}",
            data.display()
        );
        std::thread::yield_now();
    }
    std::fs::remove_dir_all(&runs).expect("removes the run dir");
    let removed = started.elapsed();
    let out = child.wait_with_output().expect("daqctl ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "run dir removed at {:.1} s; daqctl ended {:.1} s later",
        removed.as_secs_f64(),
        (started.elapsed() - removed).as_secs_f64()
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    // The record is written again where it was, and accounts for it all.
    let s = daq_tests::summary(&runs.join("run_000001")).expect("summary.json");
    let u = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k}: {s}"));
    eprintln!(
        "built {} written {} unwritten {}",
        u("events_built"),
        u("events_written"),
        u("events_unwritten")
    );
    assert!(u("events_unwritten") > 0, "{s}\n{stdout}");
    assert_eq!(
        u("events_written") + u("events_unwritten"),
        u("events_built") + u("events_incomplete"),
        "{s}"
    );
    assert_eq!(s["drops"]["events_unwritten"], s["events_unwritten"]);
    let errors: Vec<&str> = s["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    let has = |p: &dyn Fn(&&str) -> bool| errors.iter().any(p);
    for a in ["aggregator-0", "aggregator-1"] {
        let failed = format!("{a}: data file write failed");
        let enoent = "No such file or directory (os error 2)";
        assert!(
            has(&|e| e.starts_with(&failed) && e.contains(enoent)),
            "{errors:?}"
        );
        let file = format!("{a}: data file ");
        let gone = "is gone: removed during the run, its events with it";
        assert!(
            has(&|e| e.starts_with(&file) && e.ends_with(gone)),
            "{errors:?}"
        );
    }
}

/// The aggregator as another user (`nobody`) under a run dir that root
/// made (0755): the failing start names the directory, the user and the
/// fix, leaves the process Ready, and once the fix is applied the same
/// start works in the same process (no restart). Needs root to switch
/// user; skipped elsewhere.
#[test]
fn a_data_dir_the_aggregator_user_cannot_write_names_path_user_and_fix_and_start_is_retried() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let is_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !is_root {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but this test does not run as root"
        );
        eprintln!("skipped: needs root to run the aggregator as another user");
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    // The binary must be reachable by `nobody`; the runs dir is root's.
    let runs = root.path().join("runs");
    std::fs::create_dir(&runs).expect("mkdir");
    for d in [root.path(), runs.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let data = runs.join("run_000001").join("data");
    let mut cmd = Command::new(daq_tests::bin_dir().join("aggregator"));
    cmd.args(["--rank", "0", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::null())
        .uid(65534)
        .gid(65534);
    let p = daq_tests::spawn_cmd(cmd, "aggregator as nobody").expect("spawns");
    runtime().block_on(async {
        let mut c = control(&p.addr).await;
        daq_tests::init(&mut c, &config(DataFormat::Hdf5)).await;
        let err = c
            .start(start_request(1, &data))
            .await
            .expect_err("start fails");
        let msg = err.message();
        eprintln!("permission: start refused: {msg}");
        for says in [
            format!("cannot create data dir {}", data.display()),
            "Permission denied".to_string(),
            "runs as user nobody".to_string(),
            format!("`chown nobody {}`", runs.display()),
            "stays Ready".to_string(),
        ] {
            assert!(msg.contains(&says), "{says:?} not in {msg}");
        }
        let st = daq_tests::status(&mut c).await;
        assert_eq!((st.state.as_str(), st.error.as_str()), ("ready", ""));
        // The fix the message names, then the same start in the same process.
        std::os::unix::fs::chown(&runs, Some(65534), Some(65534)).expect("chown");
        c.start(start_request(1, &data))
            .await
            .expect("start works once the dir is writable");
        let s = send(&p.addr, 1, 1, 5, Some(5)).await;
        assert_eq!(s.received, 5);
        let k = stop(&mut c, "permission fixed")
            .await
            .counters
            .expect("counters");
        assert_eq!((k.events_written, k.events_unwritten), (5, 0));
        let owner = std::fs::metadata(runs.join("run_000001"))
            .expect("made")
            .uid();
        assert_eq!(owner, 65534, "the run dir is the aggregator's");
    });
}
