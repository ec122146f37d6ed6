//! Tests with files and processes: permissions and removal, live and dead
//! owners, a dead reader process, attach validation, and the multi-process
//! stress test, whose children are this test binary re-run for one test.

use super::*;

const ROLE_ENV: &str = "DAQ_SHM_TEST_ROLE";
const PATH_ENV: &str = "DAQ_SHM_TEST_PATH";

/// The libtest name of test `f` of this file (`tests::processes::f`): a
/// child is this binary re-run with `--exact` on it, so `f` must be a test
/// defined here, where `module_path!()` names this module.
fn test_name(f: &str) -> String {
    let mp = module_path!();
    let rest = mp.split_once("::").map_or(mp, |(_, r)| r);
    format!("{rest}::{f}")
}

/// The role this process plays, when it is a child of a test.
fn role() -> Option<(String, PathBuf)> {
    Some((
        std::env::var(ROLE_ENV).ok()?,
        PathBuf::from(std::env::var_os(PATH_ENV)?),
    ))
}

/// This test binary, re-run for exactly `test`, playing `role`.
fn child(test: &str, role: &str, path: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        test_name(test).as_str(),
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE_ENV, role)
    .env(PATH_ENV, path)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

/// A running child; lines it prints starting with `@@` are forwarded.
struct Proc {
    name: &'static str,
    child: Child,
    marks: mpsc::Receiver<String>,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
    exited: bool,
}

impl Proc {
    fn spawn(mut cmd: Command, name: &'static str) -> Self {
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, marks) = mpsc::channel();
        let out = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may print "test name ... " on the same line.
                if let Some(at) = line.find("@@") {
                    let _ = tx.send(line[at + 2..].to_string());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Self {
            name,
            child,
            marks,
            out: Some(out),
            err: Some(err),
            exited: false,
        }
    }

    fn mark(&self, deadline: Instant) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        self.marks
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("{}: no mark in time: {e}", self.name))
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for exit (killing it at the deadline); status and output.
    fn finish(&mut self, deadline: Instant) -> (ExitStatus, String) {
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        self.exited = true;
        let out = self
            .out
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        let err = self
            .err
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        let log = format!(
            "--- {} stdout:\n{out}--- {} stderr:\n{err}",
            self.name, self.name
        );
        (status, log)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------ files and processes

#[test]
#[cfg_attr(miri, ignore = "files and mmap")]
fn create_is_0600_and_drop_removes_the_file() {
    let dir = TestDir::new("mode");
    let path = dir.path("daq-p0-mode-events");
    let store = ShmStore::create(&path, spec(3, 100)).unwrap();
    assert!(!store.replaced_stale());
    assert_eq!(store.path(), path.as_path());
    assert_eq!(store.spec(), spec(3, 100));
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        meta.len(),
        Geometry::new(spec(3, 100)).unwrap().total as u64
    );
    assert_eq!(
        dir.entries(),
        vec!["daq-p0-mode-events".to_string()],
        "no temp files left"
    );
    let m = ShmMonitor::open(&path).unwrap();
    assert_eq!(m.header().owner_pid, std::process::id());
    drop(store);
    assert!(!path.exists());
    assert!(m.header().closed);
    assert!(dir.entries().is_empty());
}

#[test]
#[cfg_attr(miri, ignore = "files and mmap")]
fn create_over_a_live_owner_is_in_use() {
    let dir = TestDir::new("inuse");
    let path = dir.path("daq-p0-inuse-events");
    let mut a = ShmStore::create(&path, spec(2, 64)).unwrap();
    match ShmStore::create(&path, spec(2, 64)) {
        Err(ShmError::InUse { path: p, pid }) => {
            assert_eq!(p, path);
            assert_eq!(pid, std::process::id());
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    // The failed attempt left the live segment alone.
    assert_eq!(dir.entries(), vec!["daq-p0-inuse-events".to_string()]);
    publish_one(&mut a, 1, b"still mine");
    let r = ShmReader::attach(&path).unwrap();
    assert_eq!(r.take().unwrap().data(), b"still mine");
    drop(a);
    assert!(!path.exists());
}

#[test]
#[cfg_attr(miri, ignore = "files and mmap")]
fn create_replaces_a_hand_written_stale_segment() {
    let dir = TestDir::new("stale");
    let path = dir.path("daq-p0-stale-events");
    let dead = dead_pid();
    let mut hdr = vec![0u8; 128];
    hdr[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    hdr[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
    hdr[24..28].copy_from_slice(&dead.to_le_bytes());
    fs::write(&path, &hdr).unwrap();
    let store = ShmStore::create(&path, spec(2, 64)).unwrap();
    assert!(store.replaced_stale());
    let h = ShmMonitor::open(&path).unwrap().header();
    assert_eq!(h.owner_pid, std::process::id());
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(dir.entries().len(), 1);
}

#[test]
#[cfg_attr(miri, ignore = "files, mmap and processes")]
fn create_replaces_the_segment_of_a_crashed_owner() {
    if let Some((role, path)) = role() {
        assert_eq!(role, "crash-owner");
        let mut s = ShmStore::create(&path, spec(2, 64)).unwrap();
        publish_one(&mut s, 1, b"left behind");
        std::mem::forget(s); // crash: no Drop, no unlink
        std::process::exit(0);
    }
    let dir = TestDir::new("crash");
    let path = dir.path("daq-p0-crash-events");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut p = Proc::spawn(
        child(
            "create_replaces_the_segment_of_a_crashed_owner",
            "crash-owner",
            &path,
        ),
        "owner",
    );
    let owner = p.child.id();
    let (st, log) = p.finish(deadline);
    assert!(st.success(), "{log}");
    assert!(path.exists(), "the crashed owner left its segment");

    let mut old = ShmMonitor::open(&path).unwrap();
    let h = old.header();
    assert_eq!(
        (h.owner_pid, h.published_total, h.closed),
        (owner, 1, false)
    );

    let store = ShmStore::create(&path, spec(3, 128)).unwrap();
    assert!(store.replaced_stale());
    let h = ShmMonitor::open(&path).unwrap().header();
    assert_eq!(
        (h.owner_pid, h.published_total, h.buffer_count),
        (std::process::id(), 0, 3)
    );
    // A monitor of the old segment keeps its (now nameless) mapping.
    assert_eq!(old.header().owner_pid, owner);
    assert!(old.poll().is_empty());
    assert_eq!(dir.entries().len(), 1);
    drop(store);
    assert!(dir.entries().is_empty());
}

#[test]
#[cfg_attr(miri, ignore = "files, mmap and processes")]
fn a_dead_reader_process_loses_nothing() {
    if let Some((role, path)) = role() {
        assert_eq!(role, "take-and-die");
        let r = ShmReader::attach(&path).unwrap();
        let g = r.take().unwrap();
        assert_eq!((g.sequence_id(), g.data()), (10, &b"first"[..]));
        std::mem::forget(g); // die while holding it
        std::process::exit(0);
    }
    let dir = TestDir::new("deadreader");
    let path = dir.path("daq-p0-deadreader-events");
    let mut s = ShmStore::create(&path, spec(3, 64)).unwrap();
    publish_one(&mut s, 10, b"first");
    publish_one(&mut s, 11, b"second");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut p = Proc::spawn(
        child("a_dead_reader_process_loses_nothing", "take-and-die", &path),
        "reader",
    );
    let (st, log) = p.finish(deadline);
    assert!(st.success(), "{log}");
    assert_eq!((s.counts().reading, s.counts().full), (1, 1));

    let r = s.reader();
    assert_eq!(
        r.recover_stale_reading(Duration::from_secs(3600)),
        0,
        "too young"
    );
    assert_eq!(r.recover_stale_reading(Duration::ZERO), 1);
    assert_eq!(s.counts().full, 2);
    let g = r.take().unwrap();
    assert_eq!((g.sequence_id(), g.data()), (10, &b"first"[..]));
    assert!(g.release());
    let g = r.take().unwrap();
    assert_eq!((g.sequence_id(), g.data()), (11, &b"second"[..]));
}

#[test]
#[cfg_attr(miri, ignore = "files and mmap")]
fn attach_validates_the_segment() {
    let dir = TestDir::new("attach");
    let good = dir.path("daq-p0-good-events");
    let store = ShmStore::create(&good, spec(2, 64)).unwrap();
    let bytes = fs::read(&good).unwrap();
    let variant = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let p = dir.path(name);
        let mut b = bytes.clone();
        f(&mut b);
        fs::write(&p, &b).unwrap();
        p
    };
    assert!(matches!(
        ShmMonitor::open(&dir.path("missing")),
        Err(ShmError::Open { .. })
    ));
    let empty = variant("empty", &|b| b.clear());
    assert!(matches!(
        ShmMonitor::open(&empty),
        Err(ShmError::NotReady { .. })
    ));
    let magic = variant("magic", &|b| b[0] ^= 0xFF);
    assert!(matches!(
        ShmMonitor::open(&magic),
        Err(ShmError::BadMagic { .. })
    ));
    let version = variant("version", &|b| b[8] = 9);
    assert!(matches!(
        ShmMonitor::open(&version),
        Err(ShmError::VersionMismatch {
            found: 9,
            expected: 1,
            ..
        })
    ));
    let unready = variant("unready", &|b| b[28] = 0);
    assert!(matches!(
        ShmReader::attach(&unready),
        Err(ShmError::NotReady { .. })
    ));
    let longer = variant("longer", &|b| b.extend_from_slice(&[0; 64]));
    assert!(matches!(
        ShmMonitor::open(&longer),
        Err(ShmError::SizeMismatch { .. })
    ));
    let count = variant("count", &|b| b[12] = 0);
    assert!(matches!(
        ShmMonitor::open(&count),
        Err(ShmError::BadGeometry { .. })
    ));
    let m = ShmMonitor::open(&good).unwrap();
    assert_eq!(m.header().buffer_count, 2);
    assert_eq!(m.counts().empty, 2);
    drop(store);
}

/// Three processes on one segment: a writer publishing N events with
/// backpressure, a destructive reader taking all of them, a monitor
/// reading alongside. Synchronization: the parent waits for the segment
/// to open (ready), for the monitor's "attached" line, for children to
/// exit, and tells the writer to finish by closing its stdin.
#[test]
#[cfg_attr(miri, ignore = "files, mmap and processes")]
fn multi_process_stress() {
    const N: u64 = 20_000;
    const MAX: usize = 3000;
    const SPEC: StoreSpec = StoreSpec {
        buffer_count: 8,
        buffer_bytes: 3 * MAX as u64 + 1,
    };
    const TEST: &str = "multi_process_stress";
    let deadline = Instant::now() + Duration::from_secs(300);
    if let Some((role, path)) = role() {
        match role.as_str() {
            "writer" => {
                let mut store = ShmStore::create(&path, SPEC).unwrap();
                let waits = write_events(&mut store, 0..N, MAX, 4, deadline);
                println!("@@published {N} events, waited {waits} times for a buffer");
                // Stay alive (keeping the segment) until the parent closes stdin.
                let _ = std::io::stdin().read_to_end(&mut Vec::new());
                drop(store);
            }
            "reader" => {
                let r = ShmReader::attach(&path).unwrap();
                let taken = AtomicU64::new(0);
                let mut got = drain(&r, N, &taken, MAX, true, deadline);
                assert!(r.take().is_none(), "no event beyond N");
                got.sort_unstable();
                assert_eq!(got, (0..N).collect::<Vec<_>>(), "every seq exactly once");
                println!("@@took {} events", got.len());
            }
            "monitor" => {
                let mut m = ShmMonitor::open(&path).unwrap();
                println!("@@attached at {}", m.attached_at());
                watch(&mut m, N, MAX, deadline);
                println!(
                    "@@monitor attached at {}, seen {}, missed {} (torn {})",
                    m.attached_at(),
                    m.seen(),
                    m.missed(),
                    m.torn()
                );
            }
            other => panic!("unknown role {other}"),
        }
        return;
    }

    let started = Instant::now();
    let dir = TestDir::new("stress");
    let path = dir.path("daq-p0-stress-events");
    let mut wcmd = child(TEST, "writer", &path);
    wcmd.stdin(Stdio::piped());
    let mut writer = Proc::spawn(wcmd, "writer");

    // Ready: the segment only appears once initialized.
    let parent_mon = loop {
        match ShmMonitor::open(&path) {
            Ok(m) => break m,
            Err(ShmError::Open { .. } | ShmError::NotReady { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        if !writer.running() || Instant::now() > deadline {
            let (_, log) = writer.finish(deadline);
            panic!("writer never made the segment ready\n{log}");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    // A live owner in another process.
    match ShmStore::create(&path, SPEC) {
        Err(ShmError::InUse { pid, .. }) => assert_eq!(pid, writer.child.id()),
        other => panic!("expected InUse, got {other:?}"),
    }

    let mut monitor = Proc::spawn(child(TEST, "monitor", &path), "monitor");
    let attached = monitor.mark(deadline);
    let mut reader = Proc::spawn(child(TEST, "reader", &path), "reader");
    let (rst, rlog) = reader.finish(deadline);
    let (mst, mlog) = monitor.finish(deadline);
    drop(writer.child.stdin.take()); // let the writer finish
    let (wst, wlog) = writer.finish(deadline);
    assert!(rst.success(), "reader failed\n{rlog}\n{mlog}\n{wlog}");
    assert!(mst.success(), "monitor failed\n{mlog}\n{rlog}\n{wlog}");
    assert!(wst.success(), "writer failed\n{wlog}\n{rlog}\n{mlog}");
    assert!(rlog.contains(&format!("@@took {N} events")), "{rlog}");

    let h = parent_mon.header();
    assert_eq!(h.published_total, N);
    assert!(h.closed);
    assert!(!path.exists(), "the writer removed its segment");
    assert!(parent_mon.counts().empty == SPEC.buffer_count);
    for log in [&wlog, &rlog, &mlog] {
        for line in log.lines().filter_map(|l| l.find("@@").map(|at| &l[at..])) {
            println!("{line}");
        }
    }
    println!("monitor {attached}; total {:?}", started.elapsed());
}
