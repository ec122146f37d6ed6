//! artdaq's `directIO` option for the artdaq-binary writer: the file is
//! opened with `O_DIRECT` and written from one page-aligned buffer, so the
//! kernel moves the bytes to the device without the page cache.
//!
//! Why: on this project's machines a buffered write costs the writing thread
//! about 2.7 CPU-seconds per GB in the kernel (the copy into the page cache
//! and its bookkeeping: `dd bs=1M` spent 5.4 s of system time on 2 GB),
//! while `O_DIRECT` costs 0.2. One copy into the aligned buffer (memcpy
//! speed, about 0.1 s/GB) buys that back many times.
//!
//! Every batch leaves the file exactly as long as the bytes it holds, as the
//! buffered writer does: the batch's whole blocks are written, then its last
//! partial block padded with zeros, and the file is cut back to its true
//! length. The partial block stays at the head of the buffer and is written
//! again, completed, with the next batch. So `bytes` is the file's size after
//! every batch, a batch's events are whole in the file, and a crash leaves
//! what the crash contract of the buffered writer leaves.
//!
//! A batch under [`SMALL_BATCH`] goes through the page cache instead (the
//! same file, a second descriptor without `O_DIRECT`), and into the buffer
//! too, which keeps the file's last partial block: with small events a
//! synchronous block write and a cut per batch cost more than the copy
//! they save (2x2x2 at 128 B: 394k events/s to disk with every batch
//! direct, 498k through the page cache). The kernel writes back and drops
//! the cached block before a later direct write covers it.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// The alignment `O_DIRECT` asks of offsets, lengths and memory: the
/// largest logical block size of the devices this runs on.
pub(crate) const BLOCK: usize = 4096;
/// Bytes handed to the kernel per write, at most.
const CHUNK: usize = 4 << 20;
/// Batches of fewer bytes are written through the page cache.
pub(crate) const SMALL_BATCH: usize = 256 << 10;

/// The aligned buffer and where it sits in the file.
///
/// Indexing: every range below lies in the window (`fill <= CHUNK`, and
/// `CHUNK` is a multiple of `BLOCK`, so a padded `fill` too), and the window
/// lies in `raw` (`start < BLOCK`).
pub(crate) struct DirectBuffer {
    /// `CHUNK + BLOCK` bytes; the aligned window is `start..start + CHUNK`.
    raw: Vec<u8>,
    start: usize,
    /// Bytes of the window in use (a partial block between batches).
    fill: usize,
    /// File offset of the window's first byte (a multiple of `BLOCK`).
    base: u64,
}

#[allow(clippy::indexing_slicing)]
impl DirectBuffer {
    pub(crate) fn new() -> Self {
        let raw = vec![0u8; CHUNK + BLOCK];
        let start = raw.as_ptr().align_offset(BLOCK);
        Self {
            raw,
            start: if start < BLOCK { start } else { 0 },
            fill: 0,
            base: 0,
        }
    }

    fn window(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + CHUNK]
    }

    /// Appends `data` to the file, writing every full window on the way.
    pub(crate) fn append(&mut self, file: &File, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let fill = self.fill;
            let n = (CHUNK - fill).min(data.len());
            let (now, rest) = data.split_at(n);
            self.window()[fill..fill + n].copy_from_slice(now);
            self.fill += n;
            data = rest;
            if self.fill == CHUNK {
                let base = self.base;
                file.write_all_at(self.window(), base)?;
                self.base += CHUNK as u64;
                self.fill = 0;
            }
        }
        Ok(())
    }

    /// Ends a batch once the file holds it (written by `end_batch`, or
    /// elsewhere through the page cache): keeps only the window's last
    /// partial block.
    pub(crate) fn keep_partial_block(&mut self) {
        let fill = self.fill;
        let keep = fill % BLOCK;
        let whole = fill - keep;
        self.window().copy_within(whole..fill, 0);
        self.base += whole as u64;
        self.fill = keep;
    }

    /// Ends a batch: writes what the window holds (its last block padded
    /// with zeros), cuts the file to its true length and keeps the partial
    /// block at the head of the window for the next batch. Returns the
    /// file's length.
    pub(crate) fn end_batch(&mut self, file: &File) -> std::io::Result<u64> {
        let fill = self.fill;
        let end = self.base + fill as u64;
        if fill > 0 {
            let padded = fill.div_ceil(BLOCK) * BLOCK;
            let base = self.base;
            let window = self.window();
            window[fill..padded].fill(0);
            file.write_all_at(&window[..padded], base)?;
            if padded != fill {
                file.set_len(end)?;
            }
            self.keep_partial_block();
        }
        Ok(end)
    }
}

/// Opens `path`, a file just created, again for direct I/O. `Ok(None)`
/// when its file system does not take `O_DIRECT` (`EINVAL`): the caller then
/// writes through the page cache. (Created first and opened again, so that a
/// refusal leaves nothing in the way of the plain handle.)
pub(crate) fn reopen_direct(path: &std::path::Path) -> std::io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}
