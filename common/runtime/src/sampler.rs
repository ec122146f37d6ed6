//! The periodic heap sampler: while a process runs, it appends one CSV row
//! per interval to `<record>/heap/<process>.csv` with the heap snapshot and
//! the number of events the process has handled.
//!
//! The CSV has a header line, then rows of
//! `elapsed_s,unix_ms,events,` followed by [`heap::FIELDS`](daq_alloc::FIELDS).

use daq_alloc::{self as heap, FIELDS, HeapSnapshot};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

/// One row of a heap CSV.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub elapsed_s: f64,
    pub events: u64,
    pub snapshot: HeapSnapshot,
}

/// Counts the events a process has handled (for the CSV's `events` column).
pub type EventCount = Arc<dyn Fn() -> u64 + Send + Sync>;

pub struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn header() -> String {
    format!("elapsed_s,unix_ms,events,{}\n", FIELDS.join(","))
}

fn row(elapsed: Duration, events: u64, s: &HeapSnapshot) -> String {
    let mut line = format!("{:.3},{},{events}", elapsed.as_secs_f64(), s.unix_ms);
    for v in s.values() {
        line.push(',');
        line.push_str(&v.to_string());
    }
    line.push('\n');
    line
}

impl Sampler {
    /// Starts sampling into `path` (appending; the header is written when
    /// the file is new) every `interval`, the first row at once.
    pub fn start(path: PathBuf, interval: Duration, events: EventCount) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        if file.metadata()?.len() == 0 {
            file.write_all(header().as_bytes())?;
        }
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first row at once, then one per interval, the last at stop.
            let mut first = true;
            loop {
                let last = if std::mem::take(&mut first) {
                    false
                } else {
                    tokio::select! {
                        biased;
                        _ = stopped.wait_for(|s| *s) => true,
                        _ = tick.tick() => false,
                    }
                };
                let line = row(started.elapsed(), events(), &heap::snapshot());
                if let Err(e) = file.write_all(line.as_bytes()) {
                    warn!(path = %path.display(), error = %e, "heap sample not written; sampling ends");
                    return;
                }
                if last {
                    return;
                }
            }
        });
        Ok(Self { stop, task })
    }

    /// Writes a last row and ends the sampler.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("cannot read heap samples {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Bad {
        path: String,
        line: usize,
        reason: String,
    },
}

/// Reads a heap CSV written by [`Sampler`].
pub fn read_csv(path: &Path) -> Result<Vec<Sample>, CsvError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CsvError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 || line.starts_with("elapsed_s") || line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| CsvError::Bad {
            path: shown.clone(),
            line: i + 1,
            reason,
        };
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() != 3 + FIELDS.len() {
            return Err(bad(format!(
                "{} columns, expected {}",
                cols.len(),
                3 + FIELDS.len()
            )));
        }
        let elapsed_s: f64 = cols[0]
            .parse()
            .map_err(|_| bad(format!("bad elapsed_s {:?}", cols[0])))?;
        let mut nums = [0u64; 12];
        for (k, c) in cols[1..].iter().enumerate() {
            nums[k] = c.parse().map_err(|_| bad(format!("bad number {c:?}")))?;
        }
        out.push(Sample {
            elapsed_s,
            events: nums[1],
            snapshot: HeapSnapshot {
                unix_ms: nums[0],
                allocated: nums[2],
                active: nums[3],
                resident: nums[4],
                mapped: nums[5],
                retained: nums[6],
                metadata: nums[7],
                rss_anon: nums[8],
                vm_rss: nums[9],
                live_allocations: nums[10],
                vm_hwm: nums[11],
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn sampler_writes_rows_that_read_back() {
        let dir = std::env::temp_dir().join(format!("daq-sampler-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("heap").join("p.csv");
        let n = Arc::new(AtomicU64::new(0));
        let n2 = n.clone();
        let s = Sampler::start(
            path.clone(),
            Duration::from_secs(3600),
            Arc::new(move || n2.fetch_add(5, Ordering::Relaxed) + 5),
        )
        .expect("starts");
        s.stop().await;
        let rows = read_csv(&path).expect("reads");
        // The first row is written at once; stop writes the last.
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].events, rows[1].events), (5, 10));
        assert!(rows[1].snapshot.allocated > 0);
        let text = std::fs::read_to_string(&path).expect("text");
        assert!(text.starts_with("elapsed_s,unix_ms,events,allocated,active,"));
        std::fs::write(&path, format!("{}1.0,2,3\n", header())).expect("write");
        let err = read_csv(&path).expect_err("short row");
        assert!(err.to_string().contains(":2: 3 columns"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
