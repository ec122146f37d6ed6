//! Helpers for the end-to-end tests: build the real binaries, run daqctl,
//! spawn single processes on ephemeral loopback ports, read a child's output
//! line by line, drive a process over gRPC, and check run records.

pub mod netns;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

/// Builds the process binaries and daqctl (same profile as this test) once,
/// and returns the directory that holds them.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build().unwrap_or_else(|e| panic!("building the binaries failed: {e:#}")))
}

fn build() -> Result<PathBuf> {
    // The test executable lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test executable path {}", exe.display()))?
        .to_path_buf();
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--bins"]);
    for p in [
        "boardreader",
        "eventbuilder",
        "aggregator",
        "monitor",
        "daqctl",
    ] {
        cmd.args(["-p", p]);
    }
    if profile == "release" {
        cmd.arg("--release");
    } else if profile != "debug" {
        cmd.args(["--profile", &profile]);
    }
    let status = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed: {status}");
    }
    Ok(dir)
}

/// A partition number no other system of this test run uses, so that tests
/// running side by side never share a shared-memory segment.
pub fn unique_partition() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    1000 + (std::process::id() % 100_000) * 100 + n
}

/// Runs `daqctl` with `args`, returning its output (stdout, stderr, status).
/// `demo` and `soak` get a `--partition` of their own unless one is given.
pub fn daqctl(args: &[&str]) -> Result<Output> {
    daqctl_command(args).output().context("running daqctl")
}

/// `daqctl args...` with stdin closed, not yet started; `demo` and `soak`
/// get a `--partition` of their own unless one is given.
pub fn daqctl_command(args: &[&str]) -> Command {
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if matches!(args.first().map(String::as_str), Some("demo" | "soak"))
        && args.get(1).map(String::as_str) != Some("analyse")
        && !args.iter().any(|a| a.starts_with("--partition"))
    {
        args.push(format!("--partition={}", unique_partition()));
    }
    let mut cmd = Command::new(bin_dir().join("daqctl"));
    cmd.args(&args).stdin(Stdio::null());
    cmd
}

/// `daqctl args...` (as [`daqctl_command`]) running in the background, its
/// stdout piped for the caller and its stderr read line by line.
pub fn spawn_daqctl(args: &[&str]) -> (Child, Lines) {
    let mut cmd = daqctl_command(args);
    cmd.stdout(Stdio::piped());
    spawn_lines(&mut cmd, Pipe::Stderr).unwrap_or_else(|e| panic!("daqctl {args:?}: {e:#}"))
}

/// Reads a run's summary.json.
pub fn summary(run_root: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(run_root.join("summary.json"))?;
    Ok(serde_json::from_str(&text)?)
}

/// A process binary started alone on an ephemeral loopback port.
pub struct Spawned {
    pub child: Child,
    pub addr: String,
    /// Its `/metrics` URL, from the readiness line.
    pub metrics_url: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary --rank <rank>` on 127.0.0.1:0 and waits for its readiness line.
pub fn spawn(binary: &str, rank: u16) -> Result<Spawned> {
    spawn_with(binary, rank, &[])
}

/// `spawn` with extra arguments.
pub fn spawn_with(binary: &str, rank: u16, args: &[&str]) -> Result<Spawned> {
    let mut cmd = Command::new(bin_dir().join(binary));
    cmd.args(["--rank", &rank.to_string(), "--listen", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::null());
    spawn_cmd(cmd, binary)
}

/// Starts `cmd` (a process binary, or a wrapper such as `ip netns exec`
/// around one) and waits for its readiness line. Its stderr is the caller's
/// choice; stdin is closed.
pub fn spawn_cmd(mut cmd: Command, what: &str) -> Result<Spawned> {
    cmd.stdin(Stdio::null());
    let (mut child, mut lines) =
        spawn_lines(&mut cmd, Pipe::Stdout).with_context(|| format!("starting {what}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(line) = lines.next_before(deadline) {
        if let Some(r) = daq_runtime::net::parse_ready_line(&line) {
            return Ok(Spawned {
                child,
                addr: r.addr.to_string(),
                metrics_url: r.metrics_url.unwrap_or_default(),
            });
        }
    }
    let _ = child.kill();
    let status = child.wait()?;
    bail!("{what} printed no readiness line (exit: {status})");
}

/// Which output of a child [`spawn_lines`] reads.
#[derive(Clone, Copy, Debug)]
pub enum Pipe {
    Stdout,
    Stderr,
}

/// Starts `cmd` with its `pipe` piped: a thread reads that output to its
/// end and hands each line, with when it came, to the returned [`Lines`].
/// Stdin and the other output are the caller's choice.
pub fn spawn_lines(cmd: &mut Command, pipe: Pipe) -> Result<(Child, Lines)> {
    match pipe {
        Pipe::Stdout => cmd.stdout(Stdio::piped()),
        Pipe::Stderr => cmd.stderr(Stdio::piped()),
    };
    let mut child = cmd.spawn().context("spawning")?;
    let out: Box<dyn Read + Send> = match pipe {
        Pipe::Stdout => Box::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?),
        Pipe::Stderr => Box::new(child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even when nobody listens any more: a closed pipe
        // would fail the child's next write.
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), line));
        }
    });
    Ok((
        child,
        Lines {
            rx,
            seen: Vec::new(),
        },
    ))
}

/// The lines of a child's output as they come (see [`spawn_lines`]).
pub struct Lines {
    rx: mpsc::Receiver<(Instant, String)>,
    /// Every line taken so far, with when it came.
    pub seen: Vec<(Instant, String)>,
}

impl Lines {
    /// The next line, kept in `seen`; `None` once `deadline` has passed
    /// or the output has ended.
    pub fn next_before(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        let (t, line) = self.rx.recv_timeout(left).ok()?;
        self.seen.push((t, line.clone()));
        Some(line)
    }

    /// Waits at most `limit` for a line containing `what` and returns when
    /// it came; panics with every line so far if none does.
    pub fn wait_for(&mut self, what: &str, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        while let Some(line) = self.next_before(deadline) {
            if line.contains(what) {
                return self.seen.last().map_or_else(Instant::now, |(t, _)| *t);
            }
        }
        panic!(
            "no line with {what:?} within {limit:?}; so far:\n{}",
            self.text()
        );
    }

    /// Takes the lines that have already come, without waiting.
    pub fn drain(&mut self) {
        self.seen.extend(self.rx.try_iter());
    }

    /// Takes every line to the end of the output (waits for it to close).
    pub fn finish(&mut self) {
        self.seen.extend(self.rx.iter());
    }

    /// The lines taken so far, one a line.
    pub fn text(&self) -> String {
        let lines: Vec<&str> = self.seen.iter().map(|(_, l)| l.as_str()).collect();
        lines.join("\n")
    }

    /// The pid daqctl printed for `process` (`  <process> pid <pid> ...`).
    pub fn pid(&self, process: &str) -> u32 {
        self.seen
            .iter()
            .find_map(
                |(_, l)| match l.split_whitespace().collect::<Vec<_>>()[..] {
                    [name, "pid", pid, ..] if name == process => pid.parse().ok(),
                    _ => None,
                },
            )
            .unwrap_or_else(|| panic!("no pid for {process} in:\n{}", self.text()))
    }
}

/// `kill <sig> <pid>`, which must succeed.
pub fn signal(sig: &str, pid: u32) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid}");
}

/// A process exists and is not a zombie (a zombie has exited: only its
/// status is left for its parent).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// Waits (polling /proc, at most `limit`) until `pid` has exited; returns
/// how long it took, `None` if it still runs.
pub fn wait_gone(pid: u32, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    loop {
        if !alive(pid) {
            return Some(t.elapsed());
        }
        if t.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child's status, stdout and stderr, for a failure message.
pub fn output_text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `out`, which must be a success; else a panic naming `what` with its
/// status, stdout and stderr.
pub fn succeeded(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what} failed: {}", output_text(&out));
    out
}

/// Runs `cmd` (stdin closed) to its end; it must succeed.
pub fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    succeeded(out, what)
}

/// `daqctl args...` (see [`daqctl`]), which must succeed; its stdout.
pub fn daqctl_ok(args: &[&str]) -> String {
    let out = daqctl(args).expect("daqctl runs");
    let out = succeeded(out, &format!("daqctl {args:?}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A count in a JSON record (`v[k]`), which must be there.
pub fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// The equalities of a run summary that lost nothing, exactly, for the
/// number of boardreaders its topology names: every fragment sent was
/// received, every event built has one from each boardreader and was
/// written, none is incomplete, and there is no error.
pub fn assert_nothing_lost(s: &Value) {
    let n_br = s["topology"]["boardreaders"].as_u64().expect("topology");
    assert_eq!(u(s, "fragments_sent"), u(s, "fragments_received"), "{s}");
    assert_eq!(u(s, "fragments_sent"), n_br * u(s, "events_built"), "{s}");
    assert_eq!(u(s, "events_written"), u(s, "events_built"), "{s}");
    assert_eq!(u(s, "events_incomplete"), 0, "{s}");
    assert!(u(s, "events_built") > 0, "{s}");
    assert_eq!(s["errors"], Value::Array(vec![]), "{s}");
}

/// [`assert_nothing_lost`], and no process named a problem either.
pub fn assert_nothing_lost_and_no_problems(s: &Value) {
    assert_nothing_lost(s);
    for (name, p) in s["processes"].as_object().expect("processes") {
        assert_eq!(p["problems"], Value::Array(vec![]), "{name}: {p}");
    }
}

/// Every fragment in the data files of the run at `root` carries the
/// payload `config`'s generator makes: its fragment bytes less the 40 of
/// header and metadata.
pub fn assert_generated_payload(root: &Path, config: &daq_format::config::SystemConfig) {
    let s = summary(root).expect("summary.json");
    assert_eq!(
        payload_sizes(root, &s),
        [(config.generator_fragment_bytes() - 40) as usize],
        "{}",
        root.display()
    );
}

/// A run's counts in one line, for the printed fault table.
pub fn tally(s: &Value) -> String {
    let n = |k: &str| s[k].as_u64().map_or_else(|| "?".into(), |n| n.to_string());
    format!(
        "sent {} received {} built {} incomplete {} written {}",
        n("fragments_sent"),
        n("fragments_received"),
        n("events_built"),
        n("events_incomplete"),
        n("events_written")
    )
}

/// The data files a run summary lists, as paths under the run's `root`.
pub fn data_files(root: &Path, s: &Value) -> Vec<PathBuf> {
    s["data_files"]
        .as_array()
        .expect("data_files")
        .iter()
        .map(|f| root.join(f.as_str().expect("path")))
        .collect()
}

/// The distinct payload sizes of every fragment in a run's (HDF5) data files.
pub fn payload_sizes(root: &Path, s: &Value) -> Vec<usize> {
    let mut sizes = std::collections::BTreeSet::new();
    for f in data_files(root, s) {
        let file = daq_datafile::hdf5::read_file(&f).expect("readable");
        for e in &file.events {
            sizes.extend(e.fragments.iter().map(|f| f.payload.len()));
        }
    }
    sizes.into_iter().collect()
}

/// Two fresh tokens in `dir` (see [`write_token`]): `token`, the one the
/// processes are given, and `wrong`, another.
pub fn token_and_wrong(dir: &Path) -> (PathBuf, PathBuf) {
    let token = write_token(dir, "token").expect("token");
    (token, write_token(dir, "wrong").expect("wrong token"))
}

/// Writes a fresh random token (32 hex digits, mode 0600) to `dir/name`.
pub fn write_token(dir: &Path, name: &str) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(f, "{token}")?;
    Ok(path)
}

/// A test certificate authority and one server certificate it signed,
/// written as PEM files (made with rcgen; nothing leaves the machine).
pub struct TestPki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    /// A CA and a server certificate for `names` (IP addresses become IP
    /// subject alternative names, anything else DNS names), in `dir`.
    pub fn new(dir: &Path, names: &[&str]) -> Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "daq test ca");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "daq test server");
        let cert = params.signed_by(&key, &ca)?;
        let out = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&out.ca, ca.pem())?;
        std::fs::write(&out.cert, cert.pem())?;
        std::fs::write(&out.key, key.serialize_pem())?;
        Ok(out)
    }
}

/// The Python interpreter with h5py for the interop checks: `DAQ_TEST_PYTHON`.
/// In CI (`CI` set) it is required; elsewhere the check is skipped without it.
pub fn h5py_python() -> Option<String> {
    match std::env::var("DAQ_TEST_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but DAQ_TEST_PYTHON (a python with h5py) is not")
        }
        Err(_) => {
            eprintln!("note: DAQ_TEST_PYTHON unset; h5py read-back skipped");
            None
        }
    }
}

/// What h5py reads in `files` (the JSON of tests/h5dump_events.py, which
/// must succeed), or `None` without a python with h5py (see [`h5py_python`]).
pub fn h5dump(files: &[PathBuf]) -> Option<Value> {
    let python = h5py_python()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("h5dump_events.py");
    let out = run_ok(
        Command::new(python).arg(script).args(files),
        &format!("h5dump_events.py {files:?}"),
    );
    Some(serde_json::from_slice(&out.stdout).expect("json"))
}

/// Whether `jeprof` (Debian libjemalloc-dev) is on PATH for the heap-profile
/// checks. In CI (`CI` set) it is required; elsewhere they are skipped without it.
pub fn jeprof_available() -> bool {
    tool_available("jeprof", "libjemalloc-dev")
}

/// The C++ compiler for the artdaq-binary reader check: `CXX`, else `g++`.
/// In CI (`CI` set) it is required; elsewhere the check is skipped without it.
pub fn cxx_compiler() -> Option<String> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    let found = Command::new(&cxx)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(cxx);
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but the C++ compiler {cxx} is not installed");
    }
    eprintln!("note: {cxx} not found; C++ reader check skipped");
    None
}

/// Path of a C++ source shipped with the tests (`tests/cpp/<name>`).
pub fn cpp_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cpp").join(name)
}

/// Whether the Debian package `name`'s program `program` is on PATH. In CI
/// (`CI` set) it is required; elsewhere the check is skipped without it.
pub fn tool_available(program: &str, package: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found && std::env::var_os("CI").is_some() {
        panic!("CI is set but {program} (Debian {package}) is not installed");
    }
    if !found {
        eprintln!("note: {program} (Debian {package}) not found; check skipped");
    }
    found
}

/// GET `url`: the status code and the body (any status, no error for 404).
pub fn http_get(url: &str) -> Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut r = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string()?;
    Ok((status, body))
}

/// The newest run record in `run_dir` (the one with the largest number).
pub fn latest_run(run_dir: &Path) -> PathBuf {
    std::fs::read_dir(run_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", run_dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("summary.json").exists())
        .max()
        .unwrap_or_else(|| panic!("no run record in {}", run_dir.display()))
}

/// A multi-threaded tokio runtime for tests that talk gRPC.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
}

/// A run-control client.
pub type Control = proto::run_control_client::RunControlClient<daq_runtime::net::Channel>;

/// A channel to a spawned process.
pub async fn connect(addr: &str) -> daq_runtime::net::Channel {
    daq_runtime::net::connect(addr, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
}

/// A run-control client for a spawned process.
pub async fn control(addr: &str) -> Control {
    proto::run_control_client::RunControlClient::new(connect(addr).await)
}

/// `Status`, which must answer.
pub async fn status(c: &mut Control) -> proto::StatusReply {
    c.status(proto::Empty {})
        .await
        .unwrap_or_else(|e| panic!("status: {e}"))
        .into_inner()
}

/// `Stop`, which must succeed.
pub async fn stop(c: &mut Control) -> proto::CommandReply {
    c.stop(proto::StopRequest::default())
        .await
        .unwrap_or_else(|e| panic!("stop: {e}"))
        .into_inner()
}

/// `Init` with `config` and no destinations, which must succeed.
pub async fn init(c: &mut Control, config: &daq_format::config::SystemConfig) {
    c.init(proto::InitRequest {
        config_toml: config.to_toml(),
        destinations: vec![],
    })
    .await
    .unwrap_or_else(|e| panic!("init: {e}"));
}

/// A `Start` of run `run` writing data (aggregators) into `data_dir`.
pub fn start_request(run: u32, data_dir: &Path) -> proto::StartRequest {
    proto::StartRequest {
        run,
        data_dir: data_dir.display().to_string(),
        record_dir: String::new(),
    }
}

/// A configuration of `eventbuilders` and `aggregators` for processes
/// spawned alone, on a partition of its own, ending a run 2 s after the
/// last stream.
pub fn test_config(eventbuilders: u16, aggregators: u16) -> daq_format::config::SystemConfig {
    let mut config = daq_format::config::SystemConfig {
        partition: unique_partition(),
        ..Default::default()
    };
    config.topology.eventbuilders = eventbuilders;
    config.topology.aggregators = aggregators;
    config.transfer.end_of_data_timeout_ms = 2_000;
    config.transfer.mode = transfer_mode();
    config
}

/// The transfer mode the suite runs in: `DAQ_TRANSFER` (which daqctl reads
/// too, so that every test, spawned by hand or through daqctl, uses it),
/// `auto` by default. `.ci/run` runs the end-to-end suite once per
/// mechanism.
pub fn transfer_mode() -> daq_format::config::TransferMode {
    std::env::var("DAQ_TRANSFER")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or_default()
}

/// The mechanism the suite's links use on one host: shared memory unless
/// the suite runs with `DAQ_TRANSFER=grpc`.
pub fn local_mechanism() -> &'static str {
    match transfer_mode() {
        daq_format::config::TransferMode::Grpc => "grpc",
        _ => "shm",
    }
}

/// One fragment stream of `batches` to a receiver (as boardreaders send);
/// what it answered.
pub async fn send_fragments(
    ch: &daq_runtime::net::Channel,
    batches: Vec<proto::FragmentBatch>,
) -> std::result::Result<proto::TransferSummary, tonic::Status> {
    proto::fragment_sink_client::FragmentSinkClient::new(ch.clone())
        .send(tokio_stream::iter(batches))
        .await
        .map(tonic::Response::into_inner)
}

/// One event stream of `batches` to an aggregator (as eventbuilders
/// send); what it answered.
pub async fn send_events(
    ch: &daq_runtime::net::Channel,
    batches: Vec<proto::EventBatch>,
) -> std::result::Result<proto::TransferSummary, tonic::Status> {
    let mut sink = proto::event_sink_client::EventSinkClient::new(ch.clone());
    let reply = sink.send(tokio_stream::iter(batches)).await?;
    Ok(reply.into_inner())
}

/// A batch of `fragments` from boardreader `source` for run `run`.
pub fn fragment_batch(source: u32, run: u32, fragments: Vec<bytes::Bytes>) -> proto::FragmentBatch {
    proto::FragmentBatch {
        source,
        run,
        fragments,
    }
}

/// `err` has `code` and says `says`.
pub fn assert_status(err: &tonic::Status, code: tonic::Code, says: &str) {
    assert_eq!(err.code(), code, "{err}");
    assert!(err.message().contains(says), "{}", err.message());
}

/// Some line of `lines` (a stop's problems) starts with `start`.
pub fn assert_any_starts_with(lines: &[String], start: &str) {
    assert!(
        lines.iter().any(|l| l.starts_with(start)),
        "none starts with {start:?}: {lines:?}"
    );
}

/// A user-type data fragment whose payload is `payload` bytes of its id.
pub fn data_fragment(seq: u64, id: u16, payload: usize) -> bytes::Bytes {
    use daq_format::fragment::{Fragment, FragmentSpec, FragmentType};
    let spec = FragmentSpec {
        timestamp: seq,
        sequence_id: seq,
        fragment_id: id,
        fragment_type: FragmentType::User(1),
    };
    let payload = vec![id as u8; payload];
    Fragment::build(spec, &[], &payload)
        .unwrap_or_else(|e| panic!("fragment: {e}"))
        .into_bytes()
}
/// A serialized event (NetMonOutput) of `fragments` user fragments of
/// `payload` bytes each, for run `run` and sequence id `seq`: what an
/// eventbuilder sends an aggregator.
pub fn netmon_event(run: u32, seq: u64, fragments: u16, payload: usize) -> bytes::Bytes {
    use daq_format::fragment::Fragment;
    use daq_format::netmon::{Event, EventAux, History, HistoryEntry};
    let aux = EventAux {
        sequence_id: seq,
        timestamp: seq,
        event: seq,
        subrun: 1,
        run,
        complete: true,
    };
    let entry = HistoryEntry {
        time_ns: 0,
        parameter_set_id: "0".repeat(32),
        release: "test".into(),
        process: "eventbuilder-0".into(),
    };
    let event = Event {
        aux,
        history: History {
            entries: vec![entry],
        },
        missing: vec![],
        fragments: (0..fragments)
            .map(|id| {
                Fragment::parse(data_fragment(seq, id, payload))
                    .unwrap_or_else(|e| panic!("fragment: {e}"))
            })
            .collect(),
    };
    daq_format::netmon::encode(&event).unwrap_or_else(|e| panic!("encode: {e}"))
}

/// Initializes and starts a spawned process for run `run` with `config`,
/// writing data (aggregators) into `data_dir`.
pub async fn init_and_start(
    c: &mut Control,
    config: &daq_format::config::SystemConfig,
    run: u32,
    data_dir: &Path,
) {
    init(c, config).await;
    c.start(start_request(run, data_dir))
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
}

/// Polls `Status` until `f` holds, for at most 30 s.
pub async fn wait_for_status(
    c: &mut Control,
    what: &str,
    f: impl Fn(&proto::StatusReply) -> bool,
) -> proto::StatusReply {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        let st = status(c).await;
        if f(&st) {
            return st;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}: {st:?}");
        }
    }
}

/// A daqctl demo held up after its run (`--hold`); released on drop.
pub struct Held {
    pub child: Child,
    /// (process, metrics URL) of every process.
    pub processes: Vec<(String, String)>,
    /// The run record it wrote (`DAQ-HOLD <dir>`).
    pub root: std::path::PathBuf,
    /// Its `--partition`.
    pub partition: u32,
}

impl Held {
    /// Starts `daqctl demo --hold --run-dir RUN_DIR ARGS` on a partition of
    /// its own and waits for its hold.
    pub fn start(run_dir: &Path, args: &[&str]) -> Self {
        let partition = unique_partition();
        let mut child = Command::new(bin_dir().join("daqctl"))
            .args(["demo", "--hold", "--run-dir"])
            .arg(run_dir)
            .arg(format!("--partition={partition}"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("daqctl starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut processes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let root = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("daqctl reached its hold");
            if let Some(r) = daq_runtime::net::parse_ready_line(&line) {
                processes.push((r.process, r.metrics_url.expect("metrics url")));
            } else if let Some(root) = line.strip_prefix("DAQ-HOLD ") {
                break std::path::PathBuf::from(root);
            }
        };
        Self {
            child,
            processes,
            root,
            partition,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.child.wait();
    }
}

/// The directory of a test that boots a system with `daqctl boot` (whose
/// processes outlive daqctl). Dropped while the test panics (it failed),
/// it SIGKILLs every process of the address books in it (`processes.json`
/// and `runs/processes.json`, SIGCONT first for a stopped one), then
/// removes the shared memory of its partition that no live process holds,
/// and keeps the directory for a look (its path is printed). Dropped at
/// the end of a passing test, it removes the directory.
pub struct SessionDir {
    path: PathBuf,
    partition: std::cell::Cell<Option<u32>>,
}

impl SessionDir {
    /// A fresh directory `daq-session-<name>-<pid>` under the temp dir.
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("daq-session-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("mkdir");
        Self {
            path,
            partition: std::cell::Cell::new(None),
        }
    }

    /// The partition the session's processes use: its segments go too.
    pub fn set_partition(&self, partition: u32) {
        self.partition.set(Some(partition));
    }

    /// Kills what the address books name and removes the partition's
    /// abandoned segments; returns (pids killed, segments removed).
    pub fn clean_up(&self) -> (Vec<u32>, usize) {
        let mut pids = Vec::new();
        for book in [
            self.path.join("processes.json"),
            self.path.join("runs/processes.json"),
        ] {
            let Ok(text) = std::fs::read_to_string(&book) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            for p in v["processes"].as_array().into_iter().flatten() {
                if let Some(pid) = p["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) {
                    pids.push(pid);
                }
            }
        }
        pids.retain(|&p| alive(p));
        for sig in ["-CONT", "-KILL"] {
            for pid in &pids {
                // Never an assert here: this may run while a test unwinds.
                let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
            }
        }
        for pid in &pids {
            let _ = wait_gone(*pid, Duration::from_secs(5));
        }
        let mut removed = 0;
        let Some(p) = self.partition.get() else {
            return (pids, removed);
        };
        let dir = daq_shm::shm_dir();
        let prefix = format!("daq-p{p}-");
        // A killed process's main thread may show as a zombie while its
        // other threads still hold the segment's lock: retry a while.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut left = 0;
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && !name.contains("-link-") {
                    match daq_shm::remove_abandoned(&entry.path()) {
                        Ok(true) => removed += 1,
                        _ => left += 1,
                    }
                }
            }
            removed += daq_shm::link::remove_abandoned_links(&dir, p);
            if left == 0 || Instant::now() > deadline {
                return (pids, removed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl std::ops::Deref for SessionDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for SessionDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for SessionDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let (pids, segments) = self.clean_up();
            eprintln!(
                "failed session test: killed {pids:?}, removed {segments} segments; its files stay in {}",
                self.path.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// An address on loopback where nothing listens, held for as long as this
/// lives: the port is the local end of a connection of ours, so a
/// connection to it is refused, and no other socket of this host (another
/// test's process binding port 0) can be given it meanwhile, as it could a
/// port that was bound and let go.
pub struct ClosedPort {
    _listener: std::net::TcpListener,
    _client: std::net::TcpStream,
    _server: std::net::TcpStream,
    pub addr: String,
}

impl ClosedPort {
    pub fn new() -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        let addr = client.local_addr()?.to_string();
        Ok(Self {
            _listener: listener,
            _client: client,
            _server: server,
            addr,
        })
    }
}
