//! Hostile bytes on the wire: garbage, a valid HTTP/2 preface followed by
//! junk, a connection cut mid-frame and plain HTTP/1.1, sent to every port
//! of a running 2x2x2 system. Each connection is closed by the process, the
//! processes keep serving, and the run's counts are exactly as without them.

use daq_tests::{
    assert_nothing_lost_and_no_problems, control, latest_run, runtime, spawn_daqctl, summary,
};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long a process may take to close a hostile connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
const GOAWAY: u8 = 0x7;
/// HTTP/2 error code for a frame longer than the peer allows.
const FRAME_SIZE_ERROR: u32 = 0x6;

/// What the process sent back before it closed the connection.
struct Closed {
    /// Error code of the GOAWAY frame it sent, if it sent one.
    goaway: Option<u32>,
    bytes: usize,
}

/// Writes `bytes` (then shuts down our write side if `cut`), reads until
/// the process closes the connection, and returns what came back. Panics if
/// the connection is still open after [`CLOSE_TIMEOUT`].
fn send_hostile(addr: &str, what: &str, bytes: &[u8], cut: bool) -> Closed {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(CLOSE_TIMEOUT)).expect("timeout");
    // The process may close before taking everything: a failed write is
    // the connection being closed, which is what we wait for below.
    let _ = s.write_all(bytes);
    if cut {
        let _ = s.shutdown(Shutdown::Write);
    }
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "{addr} {what}: connection still open after {:?}: {e}",
                started.elapsed()
            ),
        }
    }
    Closed {
        goaway: goaway_code(&got),
        bytes: got.len(),
    }
}

/// The error code of the first GOAWAY frame among HTTP/2 frames in `b`.
fn goaway_code(mut b: &[u8]) -> Option<u32> {
    while b.len() >= 9 {
        let len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
        let kind = b[3];
        let payload = b.get(9..9 + len)?;
        if kind == GOAWAY && payload.len() >= 8 {
            return Some(u32::from_be_bytes([
                payload[4], payload[5], payload[6], payload[7],
            ]));
        }
        b = &b[9 + len..];
    }
    None
}

/// Deterministic pseudo-random bytes (xorshift), never an HTTP/2 preface.
fn garbage(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An HTTP/2 frame header: 24-bit length, type, flags, stream id.
fn frame_header(len: u32, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
    let mut h = len.to_be_bytes()[1..].to_vec();
    h.extend_from_slice(&[kind, flags]);
    h.extend_from_slice(&stream.to_be_bytes());
    h
}

/// Every hostile input: a name, the bytes, whether we cut our side after.
fn hostile_inputs() -> Vec<(&'static str, Vec<u8>, bool)> {
    // Preface, then a frame of an unknown type far beyond the frame size limit.
    let mut junk_after_preface = PREFACE.to_vec();
    junk_after_preface.extend_from_slice(&frame_header(0xFF_FFFF, 0xEE, 0xFF, 0x7FFF_FFFF));
    junk_after_preface.extend_from_slice(&garbage(512, 7));
    // Preface, an empty SETTINGS, then a HEADERS frame that says 1000 bytes
    // and carries 10 before the connection is cut.
    let mut cut_mid_frame = PREFACE.to_vec();
    cut_mid_frame.extend_from_slice(&frame_header(0, 0x4, 0, 0));
    cut_mid_frame.extend_from_slice(&frame_header(1000, 0x1, 0x4, 1));
    cut_mid_frame.extend_from_slice(&garbage(10, 11));
    // The preface itself cut in half.
    let cut_preface = PREFACE[..12].to_vec();
    let http1 = b"GET /daq.RunControl/Status HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    vec![
        ("garbage", garbage(4096, 3), false),
        ("junk after preface", junk_after_preface, false),
        ("cut mid-frame", cut_mid_frame, true),
        ("cut preface", cut_preface, true),
        ("plain HTTP/1.1", http1, false),
    ]
}

#[test]
fn hostile_bytes_on_every_port_close_the_connection_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().join("runs");
    let run = run_dir.to_str().expect("utf-8");
    let (child, mut lines) = spawn_daqctl(&["demo", "--duration", "8", "--run-dir", run]);
    // daqctl lists every process as "  <name> pid <pid> <addr> <metrics url>"
    // (from its readiness line), then says "run N: running".
    let mut ports: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines
            .next_before(deadline)
            .unwrap_or_else(|| panic!("daqctl never said running; ports {ports:?}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [name, "pid", _, addr, ..] = words.as_slice() {
            ports.push((name.to_string(), addr.to_string()));
        }
        if line.starts_with("run ") && line.ends_with(": running") {
            break;
        }
    }
    assert_eq!(ports.len(), 6, "a 2x2x2 system: {ports:?}");

    let mut report = Vec::new();
    for (name, addr) in &ports {
        for (what, bytes, cut) in hostile_inputs() {
            let closed = send_hostile(addr, what, &bytes, cut);
            // Where the process answered in HTTP/2 at all, it said why it
            // closed: a GOAWAY with an error code, never NO_ERROR.
            if let Some(code) = closed.goaway {
                assert_ne!(code, 0, "{name} {what}: GOAWAY without an error");
            }
            if what == "junk after preface" {
                assert_eq!(closed.goaway, Some(FRAME_SIZE_ERROR), "{name} {what}");
            }
            report.push(format!(
                "{name} {what}: closed after {} bytes, GOAWAY {:?}",
                closed.bytes, closed.goaway
            ));
        }
        // After all of that, the process still answers a real request.
        let st = runtime().block_on(async {
            let mut c = control(addr).await;
            c.status(proto::Empty {}).await
        });
        let st = st.unwrap_or_else(|e| panic!("{name} stopped serving: {e}"));
        assert_eq!(st.into_inner().state, "running", "{name}");
    }
    eprintln!("{}", report.join("\n"));
    // Every attack ran while the run was going: daqctl had not begun to stop.
    let attacked = lines.seen.len();
    lines.drain();
    let early = &lines.seen[attacked..];
    assert!(
        !early.iter().any(|(_, l)| l.ends_with(": stopping")),
        "the run stopped before the attacks ended: {early:?}"
    );
    let out = child.wait_with_output().expect("daqctl exits");
    lines.finish();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        lines.text()
    );
    assert!(stdout.contains("OK: nothing lost"), "{stdout}");
    let s = summary(&latest_run(&run_dir)).expect("summary.json");
    assert_eq!(s["topology"]["boardreaders"], 2, "{s}");
    assert_nothing_lost_and_no_problems(&s);
}
