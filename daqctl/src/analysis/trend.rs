//! The robust trend every heap verdict is fitted with (Theil-Sen) and the
//! leak thresholds at the run scale (`heap compare`, across runs) and the
//! soak scale, with why they are what they are.

/// Run scale (`heap compare`, `heap::across::across_runs`): smallest per-event growth
/// of what is left after stop called a leak: one allocation of jemalloc's
/// smallest size class (8 bytes) per event.
pub const LEAK_BYTES_PER_EVENT: f64 = 8.0;
/// Run scale: smallest growth left after stop that counts (below it: stable).
pub const LEAK_MIN_BYTES: f64 = 1024.0 * 1024.0;
/// Soak trend: smallest per-event slope called a leak.
pub const SOAK_BYTES_PER_EVENT: f64 = 8.0;
/// Soak trend: smallest growth over the analysed window called a leak;
/// below it the growth is within what the allocator's caches and the
/// in-flight buffers move by.
pub const SOAK_MIN_GROWTH_BYTES: f64 = 256.0 * 1024.0;
/// The thresholds in words (soak.json `threshold.why`).
pub const THRESHOLD_WHY: &str = "leak = the Theil-Sen trend of jemalloc allocated bytes after the warm-up grows by at least 256 KiB over the window AND by at least 8 bytes per event handled, over the whole window and over each of its halves; the median of pairwise slopes ignores the allocator's sawtooth, the 256 KiB floor is 1.6x the largest growth of a clean process in the 60 s campaign (163 KiB, an aggregator's HDF5 batch filling at 10 Hz), and the halves keep a one-time step (bounded queues filling during backpressure, 375 KiB once) from being called a leak; README 'How sensitive the soak verdict is'";

/// Per call site (soak, from the timed heap profiles): smallest per-event
/// slope of a site's live bytes called a leak, over the window and each half.
pub const SITE_BYTES_PER_EVENT: f64 = 8.0;
/// Per call site: smallest growth of a site's live bytes over the window
/// called a leak (16 samples at the 4 KiB sampling period).
pub const SITE_MIN_GROWTH_BYTES: f64 = 64.0 * 1024.0;
/// The per-site thresholds in words (soak.json `site_threshold.why`).
pub const SITE_THRESHOLD_WHY: &str = "a call site leaks when the Theil-Sen trend of its live bytes (jemalloc's sampled heap profiles on the sampler's timer, unsampled) against the events handled, after the warm-up, grows by at least 64 KiB over the window AND by at least 8 bytes per event, over the whole window and over each of its halves; a process leaks when any of its sites does; README 'How sensitive the soak verdict is'";

/// Theil-Sen slope: the median of the pairwise slopes, robust to outliers
/// and to the allocator's sawtooth. `None` with fewer than two distinct x.
pub fn theil_sen(points: &[(f64, f64)]) -> Option<f64> {
    // Subsample to bound the O(n^2) pairs on long soaks (15 h at 1 s = 54k points).
    const MAX_POINTS: usize = 2000;
    let step = points.len().div_ceil(MAX_POINTS).max(1);
    let pts: Vec<(f64, f64)> = points.iter().step_by(step).copied().collect();
    let mut slopes = Vec::with_capacity(pts.len() * pts.len() / 2);
    for (i, a) in pts.iter().enumerate() {
        for b in pts.iter().skip(i + 1) {
            let dx = b.0 - a.0;
            if dx != 0.0 {
                slopes.push((b.1 - a.1) / dx);
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    let mid = slopes.len() / 2;
    let (_, m, _) = slopes.select_nth_unstable_by(mid, f64::total_cmp);
    Some(*m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn theil_sen_ignores_a_sawtooth_and_outliers() {
        // 100 B/s growth plus a 1 MB sawtooth every 10 points and two spikes.
        let mut pts: Vec<(f64, f64)> = (0..200)
            .map(|i| {
                let x = i as f64;
                (x, 100.0 * x + if i % 10 < 5 { 0.0 } else { 1e6 })
            })
            .collect();
        pts[50].1 = 1e9;
        pts[150].1 = -1e9;
        let s = theil_sen(&pts).expect("slope");
        assert!((s - 100.0).abs() < 1.0, "{s}");
        assert_eq!(theil_sen(&[(1.0, 1.0), (1.0, 5.0)]), None);
        assert_eq!(theil_sen(&[(0.0, 0.0), (2.0, 6.0)]), Some(3.0));
    }
}
