//! How daqctl prints a byte rate: decimal units that fit its size
//! (`2.8 kB/s`, `48.1 MB/s`, `481 MB/s`), one helper for every place that
//! prints one (the run summary, `status --watch`, report.html).

/// `bytes_per_s` with the unit (B, kB, MB, GB, TB per second) that puts
/// its value in [1, 1000): one decimal below 100, none above.
pub fn rate(bytes_per_s: f64) -> String {
    if !bytes_per_s.is_finite() || bytes_per_s <= 0.0 {
        return "0 B/s".into();
    }
    const UNITS: [&str; 5] = ["B/s", "kB/s", "MB/s", "GB/s", "TB/s"];
    let mut v = bytes_per_s;
    let mut unit = 0;
    // Rounded as printed, so 999.96 kB/s is 1.0 MB/s, not 1000.0 kB/s.
    while unit + 1 < UNITS.len() && round(v) >= 1000.0 {
        v /= 1000.0;
        unit += 1;
    }
    let u = UNITS.get(unit).copied().unwrap_or("B/s");
    if unit == 0 && v >= 1.0 {
        format!("{v:.0} {u}")
    } else if round(v) < 100.0 {
        format!("{v:.1} {u}")
    } else {
        format!("{v:.0} {u}")
    }
}

/// `v` as [`rate`] prints it (one decimal below 100, none above).
fn round(v: f64) -> f64 {
    if (v * 10.0).round() / 10.0 < 100.0 {
        (v * 10.0).round() / 10.0
    } else {
        v.round()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_have_units_that_fit_their_size() {
        assert_eq!(rate(2_800.0), "2.8 kB/s");
        assert_eq!(rate(481e6), "481 MB/s");
        assert_eq!(rate(48.14e6), "48.1 MB/s");
        assert_eq!(rate(999.96e3), "1.0 MB/s");
        assert_eq!(rate(512.0), "512 B/s");
        assert_eq!(rate(0.4), "0.4 B/s");
        assert_eq!(rate(0.0), "0 B/s");
        assert_eq!(rate(f64::NAN), "0 B/s");
        assert_eq!(rate(3.2e12), "3.2 TB/s");
        assert_eq!(rate(5e15), "5000 TB/s");
    }
}
