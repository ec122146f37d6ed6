//! Memory-over-time plots as SVG: one small panel per process (allocated and
//! RssAnon against elapsed time), in the style of Ganglia's host graphs.
//! Plain SVG text, viewable in any browser; no font or system library needed.

use crate::verdict::Verdict;
use daq_runtime::sampler::Sample;
use proto::HeapSnapshot;
use std::collections::BTreeMap;
use std::fmt::Write;

const PANEL_W: f64 = 460.0;
const PANEL_H: f64 = 230.0;
pub const MARGIN_L: f64 = 64.0;
pub const MARGIN_R: f64 = 12.0;
pub const MARGIN_T: f64 = 28.0;
pub const MARGIN_B: f64 = 34.0;
const COLUMNS: usize = 2;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" tick step for a range (1, 2 or 5 times a power of ten).
fn step(range: f64, ticks: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / ticks;
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    p * if m < 1.5 {
        1.0
    } else if m < 3.5 {
        2.0
    } else if m < 7.5 {
        5.0
    } else {
        10.0
    }
}

/// The width of a tick label at font-size 10, generously (sans-serif
/// digits and lower-case letters are at most about 6 px wide).
fn label_width(label: &str) -> f64 {
    6.0 * label.chars().count() as f64
}

fn panel(
    out: &mut String,
    x0: f64,
    y0: f64,
    name: &str,
    verdict: Option<Verdict>,
    samples: &[Sample],
    warmup_s: f64,
) {
    let pw = PANEL_W - MARGIN_L - MARGIN_R;
    let ph = PANEL_H - MARGIN_T - MARGIN_B;
    let mib = |v: u64| v as f64 / 1048576.0;
    let t_max = samples.last().map_or(1.0, |s| s.elapsed_s).max(1.0);
    let (hours, unit) = if t_max > 7200.0 {
        (3600.0, "h")
    } else if t_max > 120.0 {
        (60.0, "min")
    } else {
        (1.0, "s")
    };
    let y_max = samples
        .iter()
        .map(|s| mib(s.snapshot.allocated).max(mib(s.snapshot.rss_anon)))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.1;
    let sx = |t: f64| x0 + MARGIN_L + t / t_max * pw;
    let sy = |v: f64| y0 + MARGIN_T + ph - v / y_max * ph;
    let color = if verdict == Some(Verdict::Leak) {
        "#b00020"
    } else {
        "#1b5e20"
    };
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="#fafafa" stroke="#ccc"/>
<text x="{}" y="{}" font-size="13" font-family="sans-serif">{} <tspan fill="{color}" font-weight="bold">{}</tspan></text>"##,
        x0 + MARGIN_L,
        y0 + 18.0,
        esc(name),
        verdict.map_or("", Verdict::as_str)
    );
    // Grid and ticks.
    let ys = step(y_max, 4.0);
    let mut v = 0.0;
    while v <= y_max {
        let _ = writeln!(
            out,
            r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#e0e0e0"/><text x="{}" y="{}" font-size="10" text-anchor="end" font-family="sans-serif">{v:.1} MiB</text>"##,
            x0 + MARGIN_L,
            x0 + MARGIN_L + pw,
            x0 + MARGIN_L - 4.0,
            sy(v) + 3.0,
            y = sy(v)
        );
        v += ys;
    }
    let xs = step(t_max / hours, 5.0) * hours;
    let mut t = 0.0;
    while t <= t_max {
        let label = format!("{}{unit}", (t / hours * 100.0).round() / 100.0);
        let x = sx(t);
        // A label centred on a tick near the panel's right edge would be
        // cut off there (`60mi`): it ends at its tick instead.
        let anchor = if x + label_width(&label) / 2.0 > x0 + PANEL_W - 2.0 {
            "end"
        } else {
            "middle"
        };
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#e0e0e0"/><text x="{x}" y="{}" font-size="10" text-anchor="{anchor}" font-family="sans-serif">{label}</text>"##,
            y0 + MARGIN_T,
            y0 + MARGIN_T + ph,
            y0 + MARGIN_T + ph + 13.0,
        );
        t += xs;
    }
    // The warm-up, excluded from the trend.
    let _ = writeln!(
        out,
        r##"<rect x="{}" y="{}" width="{}" height="{ph}" fill="#000" fill-opacity="0.05"/>"##,
        sx(0.0),
        y0 + MARGIN_T,
        sx(warmup_s.min(t_max)) - sx(0.0)
    );
    type Field = fn(&HeapSnapshot) -> u64;
    let lines: [(Field, &str); 2] = [(|h| h.allocated, "#1f77b4"), (|h| h.rss_anon, "#ff7f0e")];
    for (field, stroke) in lines {
        let mut pts = String::new();
        for s in samples {
            let v = field(&s.snapshot);
            let _ = write!(pts, "{:.1},{:.1} ", sx(s.elapsed_s), sy(mib(v)));
        }
        let _ = writeln!(
            out,
            r##"<polyline points="{pts}" fill="none" stroke="{stroke}" stroke-width="1.5"/>"##
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" font-size="10" font-family="sans-serif"><tspan fill="#1f77b4">allocated</tspan>  <tspan fill="#ff7f0e">RssAnon</tspan>  (shaded: warm-up)</text>"##,
        x0 + MARGIN_L,
        y0 + PANEL_H - 6.0
    );
}

/// One process's panel as an SVG element of its own (`class="heap-plot"`,
/// `data-process="<name>"`), to inline in an HTML page.
pub fn process_svg(
    name: &str,
    verdict: Option<Verdict>,
    samples: &[Sample],
    warmup_s: f64,
) -> String {
    let mut out = format!(
        r##"<svg class="heap-plot" data-process="{}" width="{PANEL_W}" height="{PANEL_H}" viewBox="0 0 {PANEL_W} {PANEL_H}" role="img">
"##,
        esc(name)
    );
    panel(&mut out, 0.0, 0.0, name, verdict, samples, warmup_s);
    out.push_str("</svg>\n");
    out
}

/// What the whole figure shows besides the samples: the run (its title),
/// the warm-up and each process's verdict (a soak's, from `soak.json`).
pub struct Figure<'a> {
    pub run: u32,
    pub topology: &'a str,
    pub netmon_input: &'a str,
    pub warmup_s: f64,
    pub verdicts: BTreeMap<&'a str, Verdict>,
}

/// The whole figure.
pub fn svg(samples: &BTreeMap<String, Vec<Sample>>, report: &Figure) -> String {
    let rows = samples.len().div_ceil(COLUMNS).max(1);
    let w = PANEL_W * COLUMNS as f64;
    let h = PANEL_H * rows as f64 + 30.0;
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="15" font-family="sans-serif">run {} ({}, netmon {}): memory over time per process</text>
"##,
        report.run,
        esc(report.topology),
        esc(report.netmon_input)
    );
    for (i, (name, s)) in samples.iter().enumerate() {
        let verdict = report.verdicts.get(name.as_str()).copied();
        let x0 = (i % COLUMNS) as f64 * PANEL_W;
        let y0 = 30.0 + (i / COLUMNS) as f64 * PANEL_H;
        panel(&mut out, x0, y0, name, verdict, s, report.warmup_s);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_time_label_fits_in_its_panel() {
        let samples: Vec<Sample> = (0..=60)
            .map(|i| Sample {
                elapsed_s: f64::from(i) * 60.0,
                snapshot: HeapSnapshot::default(),
            })
            .collect();
        let svg = process_svg("aggregator-0", None, &samples, 0.0);
        // The 60 min tick sits on the right edge of the plot: its label
        // ends there instead of being centred past the panel's edge.
        assert!(
            svg.contains(r#"text-anchor="end" font-family="sans-serif">60min</text>"#),
            "{svg}"
        );
        assert!(svg.contains(r#"text-anchor="middle" font-family="sans-serif">0min</text>"#));
        for t in svg.split("<text x=\"").skip(1) {
            let x: f64 = t.split('"').next().and_then(|x| x.parse().ok()).expect("x");
            let anchor_end = t.contains(r#"text-anchor="end""#);
            let label = t
                .split('>')
                .nth(1)
                .and_then(|l| l.split('<').next())
                .unwrap_or("");
            let right = if anchor_end {
                x
            } else {
                x + label_width(label) / 2.0
            };
            assert!(right <= PANEL_W, "{label} at {x} passes the panel's edge");
        }
    }

    #[test]
    fn tick_steps_are_round() {
        assert_eq!(step(10.0, 5.0), 2.0);
        assert_eq!(step(37.0, 4.0), 10.0);
        assert_eq!(step(0.3, 3.0), 0.1);
        assert_eq!(step(0.0, 3.0), 1.0);
    }
}
