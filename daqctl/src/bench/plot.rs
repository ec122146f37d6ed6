//! `bench.svg`: MB/s and events/s against fragment size (log-log), a line
//! per build x topology x disk writing, with the machine's TCP and disk
//! limits as dashed lines; drawn like daqctl's heap plots (`crate::analysis::plot`).

use super::report::{BenchReport, bytes_name};
use crate::analysis::plot::{MARGIN_B, MARGIN_L, MARGIN_R, MARGIN_T, esc};
use std::collections::BTreeMap;
use std::fmt::Write;

const W: f64 = 620.0;
const H: f64 = 400.0;
const LEGEND_W: f64 = 190.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// One line of a panel.
struct Series {
    label: String,
    color: &'static str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// Decades covering `lo..=hi` (both > 0).
fn decades(lo: f64, hi: f64) -> (f64, f64) {
    let lo = 10f64.powf(lo.max(1e-9).log10().floor());
    let mut hi = 10f64.powf(hi.max(1e-9).log10().ceil());
    if hi <= lo {
        hi = lo * 10.0;
    }
    (lo, hi)
}

fn panel(
    out: &mut String,
    x0: f64,
    title: &str,
    unit: &str,
    series: &[Series],
    limits: &[(String, f64)],
) {
    let pw = W - MARGIN_L - MARGIN_R;
    let ph = H - MARGIN_T - MARGIN_B;
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(limits.iter().map(|l| l.1))
        .filter(|v| *v > 0.0);
    let (xlo, xhi) = xs.fold((f64::MAX, 0.0f64), |(a, b), x| (a.min(x), b.max(x)));
    let (ylo, yhi) = ys.fold((f64::MAX, 0.0f64), |(a, b), y| (a.min(y), b.max(y)));
    let (xlo, xhi) = if xhi > 0.0 {
        (xlo / 1.5, xhi * 1.5)
    } else {
        (100.0, 1e6)
    };
    let (ylo, yhi) = if yhi > 0.0 {
        decades(ylo, yhi)
    } else {
        (1.0, 10.0)
    };
    let sx = |x: f64| x0 + MARGIN_L + (x.ln() - xlo.ln()) / (xhi.ln() - xlo.ln()) * pw;
    let sy = |y: f64| {
        let y = y.max(ylo);
        MARGIN_T + ph - (y.ln() - ylo.ln()) / (yhi.ln() - ylo.ln()) * ph
    };
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="0" width="{W}" height="{H}" fill="#fafafa" stroke="#ccc"/>
<text x="{}" y="18" font-size="13" font-family="sans-serif">{}</text>"##,
        x0 + MARGIN_L,
        esc(title)
    );
    // y: a line per decade, labelled.
    let mut y = ylo;
    while y <= yhi * 1.0001 {
        let _ = writeln!(
            out,
            r##"<line x1="{}" y1="{v}" x2="{}" y2="{v}" stroke="#e0e0e0"/><text x="{}" y="{}" font-size="10" text-anchor="end" font-family="sans-serif">{} {unit}</text>"##,
            x0 + MARGIN_L,
            x0 + MARGIN_L + pw,
            x0 + MARGIN_L - 4.0,
            sy(y) + 3.0,
            if y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y}")
            },
            v = sy(y)
        );
        y *= 10.0;
    }
    // x: a tick per fragment size measured.
    let mut sizes: Vec<u64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0 as u64))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    for s in sizes {
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{MARGIN_T}" x2="{x}" y2="{}" stroke="#e0e0e0"/><text x="{x}" y="{}" font-size="10" text-anchor="middle" font-family="sans-serif">{}</text>"##,
            MARGIN_T + ph,
            MARGIN_T + ph + 13.0,
            bytes_name(s),
            x = sx(s as f64)
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" font-size="11" text-anchor="middle" font-family="sans-serif">fragment size</text>"##,
        x0 + MARGIN_L + pw / 2.0,
        H - 6.0
    );
    for (name, v) in limits {
        let _ = writeln!(
            out,
            r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#555" stroke-dasharray="6,4"/><text x="{}" y="{}" font-size="10" text-anchor="end" font-family="sans-serif" fill="#555">{} {:.0} {unit}</text>"##,
            x0 + MARGIN_L,
            x0 + MARGIN_L + pw,
            x0 + MARGIN_L + pw - 2.0,
            sy(*v) - 3.0,
            esc(name),
            v,
            y = sy(*v)
        );
    }
    for s in series {
        let pts: String = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1} ", sx(x), sy(y)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="3,3""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r##"<polyline points="{pts}" fill="none" stroke="{}" stroke-width="1.8"{dash}/>"##,
            s.color
        );
        for &(x, y) in &s.points {
            let _ = writeln!(
                out,
                r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"##,
                sx(x),
                sy(y),
                s.color
            );
        }
    }
}

/// A line of the picture: build, topology, disk writing.
type SeriesKey = (usize, String, bool);
/// A point: fragment bytes, MB/s, events/s.
type Point = (f64, f64, f64);

/// The whole picture.
pub fn svg(r: &BenchReport) -> String {
    // A series per build x topology x disk writing, points in size order.
    let mut by: BTreeMap<SeriesKey, Vec<Point>> = BTreeMap::new();
    for p in &r.pipeline {
        by.entry((p.build, p.topology.clone(), p.disk_writing))
            .or_default()
            .push((
                p.fragment_bytes as f64,
                p.payload_mb_s.median,
                p.events_per_s.median,
            ));
    }
    let builds = r.options.bin_dirs.len();
    let mut mb = Vec::new();
    let mut ev = Vec::new();
    // A colour per topology x disk writing, the same in every build.
    let mut cases: Vec<(String, bool)> = by.keys().map(|(_, t, d)| (t.clone(), *d)).collect();
    cases.sort();
    cases.dedup();
    for ((build, topo, disk), mut pts) in by {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let i = cases
            .iter()
            .position(|(t, d)| *t == topo && *d == disk)
            .unwrap_or(0);
        let disk = match (topo.matches('x').count(), disk) {
            (1, _) => "",
            (_, true) => " disk on",
            (_, false) => " disk off",
        };
        let label = if builds > 1 {
            format!("build {build}: {topo}{disk}")
        } else {
            format!("{topo}{disk}")
        };
        let color = COLORS.get(i % COLORS.len()).copied().unwrap_or("#000");
        // Later builds dashed: before/after side by side.
        let dashed = build > 0;
        mb.push(Series {
            label: label.clone(),
            color,
            dashed,
            points: pts.iter().map(|p| (p.0, p.1)).collect(),
        });
        ev.push(Series {
            label,
            color,
            dashed,
            points: pts.iter().map(|p| (p.0, p.2)).collect(),
        });
    }
    let limit = |name: &str| {
        r.machine
            .iter()
            .find(|l| l.limit == name)
            .map(|l| l.mb_s.median)
            .filter(|v| *v > 0.0)
    };
    let mut limits = Vec::new();
    if let Some(v) = limit("tcp loopback") {
        limits.push(("TCP".to_string(), v));
    }
    if let Some(v) = limit("disk write + fdatasync") {
        limits.push(("disk+fdatasync".to_string(), v));
    }
    let width = 2.0 * W + LEGEND_W;
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{H}" viewBox="0 0 {width} {H}">
<rect width="100%" height="100%" fill="white"/>
"##
    );
    panel(
        &mut out,
        0.0,
        "payload through the system (throttle 0)",
        "MB/s",
        &mb,
        &limits,
    );
    panel(&mut out, W, "events built", "/s", &ev, &[]);
    for (i, s) in mb.iter().enumerate() {
        let y = MARGIN_T + 14.0 * i as f64;
        let x = 2.0 * W + 10.0;
        let dash = if s.dashed {
            r#" stroke-dasharray="3,3""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}" font-size="11" font-family="sans-serif">{}</text>"##,
            y - 4.0,
            x + 18.0,
            y - 4.0,
            s.color,
            x + 22.0,
            y,
            esc(&s.label)
        );
    }
    out.push_str("</svg>\n");
    out
}
