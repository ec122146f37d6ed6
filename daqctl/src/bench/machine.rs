//! This machine's limits, measured the same way in every round: one
//! loopback TCP stream (1 MiB writes), sequential writes into the bench's
//! directory (page cache only, and with `fdatasync` at the end, as `dd`
//! and `dd conv=fdatasync` do) and memory copy bandwidth.

use super::cpu::Measured;
use anyhow::{Context, Result, anyhow};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Size of every write (TCP and disk), as the reference figures.
const BLOCK_BYTES: usize = 1 << 20;
/// A disk measurement stops after this much even if its time is not up.
const MAX_DISK_BYTES: u64 = 1 << 30;
/// The memory copied back and forth: far larger than any cache.
const MEMCPY_BYTES: usize = 64 << 20;

/// Which limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Tcp,
    Disk,
    DiskFdatasync,
    Memcpy,
}

impl Limit {
    pub const ALL: [Limit; 4] = [Limit::Tcp, Limit::Disk, Limit::DiskFdatasync, Limit::Memcpy];

    pub fn name(self) -> &'static str {
        match self {
            Limit::Tcp => "tcp loopback",
            Limit::Disk => "disk write",
            Limit::DiskFdatasync => "disk write + fdatasync",
            Limit::Memcpy => "memcpy",
        }
    }

    /// Measures for about `duration`; `dir` is where the disk test writes.
    pub fn measure(self, duration: Duration, dir: &Path) -> Result<Measured> {
        match self {
            Limit::Tcp => tcp(duration),
            Limit::Disk => disk(duration, dir, false),
            Limit::DiskFdatasync => disk(duration, dir, true),
            Limit::Memcpy => Ok(memcpy(duration)),
        }
    }
}

/// One TCP stream over 127.0.0.1: a thread writes 1 MiB blocks for
/// `duration`, this thread reads them; the rate is what arrived over the
/// time until the end of the stream.
fn tcp(duration: Duration) -> Result<Measured> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut s = TcpStream::connect(addr)?;
        let block = vec![0x5au8; BLOCK_BYTES];
        let start = Instant::now();
        while start.elapsed() < duration {
            s.write_all(&block)?;
        }
        s.shutdown(Shutdown::Write)
    });
    let (mut s, _) = listener.accept().context("accepting the loopback stream")?;
    let mut buf = vec![0u8; BLOCK_BYTES];
    let start = Instant::now();
    let mut bytes = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the loopback stream"),
        }
    }
    let wall = start.elapsed();
    writer
        .join()
        .map_err(|_| anyhow!("the loopback writer thread panicked"))?
        .context("writing the loopback stream")?;
    Ok(Measured {
        bytes,
        items: bytes.div_ceil(BLOCK_BYTES as u64),
        wall,
        cpu: None,
    })
}

/// Sequential 1 MiB writes into a new file in `dir` for `duration` (at most
/// 1 GiB), then close (and first `fdatasync` if `sync`); the file is removed.
fn disk(duration: Duration, dir: &Path, sync: bool) -> Result<Measured> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("disk-probe-{}.tmp", std::process::id()));
    let block = vec![0xa5u8; BLOCK_BYTES];
    let start = Instant::now();
    let mut f = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut bytes = 0u64;
    while bytes < BLOCK_BYTES as u64 || (start.elapsed() < duration && bytes < MAX_DISK_BYTES) {
        f.write_all(&block)
            .with_context(|| format!("writing {}", path.display()))?;
        bytes += BLOCK_BYTES as u64;
    }
    if sync {
        f.sync_data()
            .with_context(|| format!("fdatasync of {}", path.display()))?;
    }
    drop(f);
    let wall = start.elapsed();
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(Measured {
        bytes,
        items: bytes / BLOCK_BYTES as u64,
        wall,
        cpu: None,
    })
}

/// Copies 64 MiB from one buffer to another for `duration`; the rate is
/// bytes copied (each read once and written once) per second.
fn memcpy(duration: Duration) -> Measured {
    let src = vec![0x3cu8; MEMCPY_BYTES];
    let mut dst = vec![0u8; MEMCPY_BYTES];
    // Touch the destination once so page faults are not measured.
    dst.copy_from_slice(&src);
    let start = Instant::now();
    let mut copies = 0u64;
    while copies == 0 || start.elapsed() < duration {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        copies += 1;
    }
    Measured {
        bytes: copies * MEMCPY_BYTES as u64,
        items: copies,
        wall: start.elapsed(),
        cpu: None,
    }
}
