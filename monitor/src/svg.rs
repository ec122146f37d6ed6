//! The run record's plots of a monitor, as plain SVG text: the ADC
//! histograms (one panel per board) and the event rate, skipped rate and
//! mean event size over the run. The live page draws the same plots in the
//! browser from `/monitor.json`.

use daq_format::monitor::{AdcHistogram, SeriesPoint};
use std::fmt::Write;

const W: f64 = 420.0;
const H: f64 = 220.0;
const L: f64 = 56.0;
const R: f64 = 10.0;
const T: f64 = 24.0;
const B: f64 = 30.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Panels side by side, two per row.
fn sheet(title: &str, panels: &[String]) -> String {
    let cols = panels.len().clamp(1, 2);
    let rows = panels.len().div_ceil(2).max(1);
    let (w, h) = (W * cols as f64, H * rows as f64 + 24.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\">\n<text x=\"8\" y=\"16\" font-size=\"13\">{}</text>\n",
        esc(title)
    );
    for (i, p) in panels.iter().enumerate() {
        let (x, y) = (W * (i % 2) as f64, 24.0 + H * (i / 2) as f64);
        let _ = writeln!(s, "<g transform=\"translate({x} {y})\">{p}</g>");
    }
    s.push_str("</svg>\n");
    s
}

fn frame(title: &str, xmax: f64, ymax: f64, xlabel: &str) -> String {
    format!(
        "<rect x=\"{L}\" y=\"{T}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\
         <text x=\"{}\" y=\"15\" font-size=\"11\" text-anchor=\"middle\">{}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">0</text>\
         <text x=\"{L}\" y=\"{}\" font-size=\"11\">0</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
        W - L - R,
        H - T - B,
        W / 2.0,
        esc(title),
        L - 4.0,
        T + 4.0,
        ymax.round(),
        L - 4.0,
        H - B,
        H - B + 14.0,
        W - R,
        H - B + 14.0,
        xmax.round(),
        (L + W - R) / 2.0,
        H - 4.0,
        esc(xlabel),
    )
}

/// The ADC histograms, one panel per board.
pub fn adc(process: &str, hists: &[AdcHistogram]) -> String {
    let panels: Vec<String> = hists
        .iter()
        .map(|h| {
            let max = h.bins.iter().copied().max().unwrap_or(0).max(1) as f64;
            let pw = (W - L - R) / h.bins.len().max(1) as f64;
            let ph = H - T - B;
            let mut d = format!("M{L} {}", H - B);
            for (i, &c) in h.bins.iter().enumerate() {
                let y = H - B - ph * c as f64 / max;
                let _ = write!(
                    d,
                    " L{:.1} {y:.1} L{:.1} {y:.1}",
                    L + i as f64 * pw,
                    L + (i + 1) as f64 * pw
                );
            }
            let _ = write!(d, " L{} {} Z", W - R, H - B);
            let title = format!(
                "board {} (serial {}, {}-bit): {} entries",
                h.board, h.serial, h.adc_bits, h.entries
            );
            format!(
                "<g class=\"adc-histogram\" data-board=\"{}\" data-entries=\"{}\"><path d=\"{d}\" fill=\"#7aa6d8\" stroke=\"#2b5d9b\" stroke-width=\"0.6\"/>{}</g>",
                h.board,
                h.entries,
                frame(
                    &title,
                    f64::from(h.bin_width) * h.bins.len() as f64,
                    max,
                    "ADC counts"
                )
            )
        })
        .collect();
    sheet(&format!("{process}: ADC values per board"), &panels)
}

/// Which figure of a point a panel plots.
type Value = fn(&SeriesPoint) -> f64;

/// Events read and skipped per second and the mean event size.
pub fn series(process: &str, points: &[SeriesPoint]) -> String {
    let pick: [(&str, &str, Value); 3] = [
        ("events read per second", "#2b5d9b", |p| p.events as f64),
        ("events skipped per second", "#b5651d", |p| p.skipped as f64),
        ("mean event size (bytes)", "#3a7d3a", |p| p.mean_event_bytes),
    ];
    let panels: Vec<String> = pick
        .iter()
        .map(|(title, color, f)| {
            let xmax = points.last().map_or(1.0, |p| p.t_s);
            let x0 = points.first().map_or(0.0, |p| p.t_s - 1.0);
            let ymax = points.iter().map(f).fold(1.0, f64::max);
            let (pw, ph) = (W - L - R, H - T - B);
            // One bar per second (a run of one second still shows its point).
            let span = (xmax - x0).max(1.0);
            let bw = pw * 0.8 / span;
            let bars: String = points
                .iter()
                .map(|p| {
                    let h = ph * f(p) / ymax;
                    format!(
                        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{h:.1}\" fill=\"{color}\"/>",
                        L + pw * (p.t_s - 1.0 - x0) / span + bw * 0.125,
                        H - B - h
                    )
                })
                .collect();
            format!("{bars}{}", frame(title, xmax, ymax, "seconds of the run"))
        })
        .collect();
    sheet(&format!("{process}: event rate and size"), &panels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_panels_carry_their_entries() {
        let mut h = AdcHistogram::new(1, 7, 12);
        h.bins[3] = 5;
        h.entries = 5;
        let s = adc("monitor-0", &[h]);
        assert!(s.starts_with("<svg"), "{s}");
        assert!(s.contains("data-board=\"1\" data-entries=\"5\""), "{s}");
        assert!(s.contains("12-bit"), "{s}");
        let s = series("monitor-0", &[]);
        assert!(s.contains("events skipped per second"), "{s}");
    }
}
