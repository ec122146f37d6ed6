//! The online monitor (`--monitors`): it reads every event the aggregator
//! published or counts it skipped, its histograms hold exactly the samples of
//! the events it read, a clean run passes the integrity check, and its live
//! page and the run's report.html show the same figures in a real browser
//! (headless Chromium, Debian's `chromium`; skipped without it, failed in
//! CI). Screenshots are kept under `target/browser/`.

use daq_format::config::SystemConfig;
use daq_format::monitor::MonitorRecord;
use daq_tests::{Held, assert_nothing_lost_and_no_problems, daqctl_ok, http_get, summary, u};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ARGS: [&str; 8] = [
    "--topology",
    "2x2x1",
    "--monitors",
    "1",
    "--events",
    "2000",
    "--throttle-us",
    "0",
];

fn record(root: &Path) -> MonitorRecord {
    let path = root.join("monitor/monitor-0.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("monitor-0.json is a monitor record")
}

/// The page URL of monitor-0 (its metrics port, `/`).
fn page_url(held: &Held) -> String {
    let (_, metrics) = held
        .processes
        .iter()
        .find(|(p, _)| p == "monitor-0")
        .expect("monitor-0 is a process of the system");
    metrics
        .strip_suffix("metrics")
        .expect("a /metrics URL")
        .to_string()
}

/// What the seed's system must show: every event written, read + skipped =
/// written, entries = read x boards x samples, no integrity failure.
fn check_record(root: &Path) -> MonitorRecord {
    let s = summary(root).expect("summary.json");
    assert_nothing_lost_and_no_problems(&s);
    let written = u(&s, "events_written");
    assert_eq!(written, 2000, "every event written");
    let config = SystemConfig::from_file(&root.join("config.toml")).expect("config.toml");
    let m = record(root);
    assert!(m.finished, "{m:?}");
    assert_eq!(
        (m.process.as_str(), m.source.as_str()),
        ("monitor-0", "aggregator-0")
    );
    assert_eq!(
        m.events_read + m.events_skipped,
        written,
        "read {} + skipped {} is every event written",
        m.events_read,
        m.events_skipped
    );
    assert!(m.events_read > 0, "{m:?}");
    let boards = u64::from(config.topology.boardreaders);
    let samples = u64::from(config.generator.n_adc_counts);
    assert_eq!(m.adc.len() as u64, boards);
    let entries: u64 = m.adc.iter().map(|h| h.entries).sum();
    assert_eq!(entries, m.events_read * boards * samples);
    for h in &m.adc {
        assert_eq!(h.bins.iter().sum::<u64>(), h.entries);
        assert_eq!(h.fragments, m.events_read);
        assert_eq!(h.adc_bits, 12, "TOY1 by default");
    }
    assert_eq!(m.integrity.events_checked, m.events_read);
    assert_eq!(m.integrity.events_failed, 0, "{:?}", m.integrity);
    assert!(m.integrity.by_reason.is_empty());
    // Its counters say the same (summary.json, from the Status reply).
    let c = &s["processes"]["monitor-0"]["counters"];
    assert_eq!(u(c, "events_monitored"), m.events_read, "{c}");
    assert_eq!(u(c, "events_skipped"), m.events_skipped, "{c}");
    for svg in ["monitor-0-adc.svg", "monitor-0-rate.svg"] {
        let text = std::fs::read_to_string(root.join("monitor").join(svg)).expect(svg);
        assert!(text.starts_with("<svg"), "{svg}");
    }
    m
}

#[test]
fn monitor_reads_or_skips_every_event_and_serves_its_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let held = Held::start(dir.path(), &ARGS);
    let m = check_record(&held.root);
    let url = page_url(&held);
    // The live figures (the run is over: the same as the record's).
    let (status, body) = http_get(&format!("{url}monitor.json")).expect("GET /monitor.json");
    assert_eq!(status, 200, "{body}");
    let live: MonitorRecord = serde_json::from_str(&body).expect("a monitor record");
    assert_eq!(live, m);
    // The page: one self-contained file, fetching nothing but monitor.json.
    let (status, page) = http_get(&url).expect("GET /");
    assert_eq!(status, 200);
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.contains("fetch(\"monitor.json\""), "{page}");
    let rest = page.replace("http://www.w3.org/2000/svg", "");
    for fetch in ["http://", "https://", "src=", "href=", "@import", "url("] {
        assert!(!rest.contains(fetch), "the page fetches {fetch}");
    }
    // The report has a section of its own.
    let report = PathBuf::from(daqctl_ok(&["report", held.root.to_str().expect("utf-8")]).trim());
    let html = std::fs::read_to_string(&report).expect("report.html");
    assert!(
        html.contains("<h2 id=\"monitors\">Online monitors</h2>"),
        "{html}"
    );
    let cells = report_entries(&html);
    let want: Vec<(u16, u64)> = m.adc.iter().map(|h| (h.board, h.entries)).collect();
    assert_eq!(cells, want);
}

/// `(board, entries)` of every element of class `class` (its `data-board`
/// and `data-entries` attributes), in document order.
fn histogram_totals(dom: &str, class: &str) -> Vec<(u16, u64)> {
    dom.split('<')
        .filter(|tag| {
            let tag = tag.split('>').next().unwrap_or_default();
            tag.contains(&format!("class=\"{class}\""))
        })
        .map(|tag| {
            let tag = tag.split('>').next().unwrap_or_default();
            let board = attr(tag, "data-board").parse().expect("data-board");
            let entries = attr(tag, "data-entries").parse().expect("data-entries");
            (board, entries)
        })
        .collect()
}

fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    let start = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in <{tag}>"))
        + key.len();
    let len = tag[start..].find('"').expect("closed attribute");
    &tag[start..start + len]
}

/// The report's ADC entries cells: `(board, the cell's number)`.
fn report_entries(html: &str) -> Vec<(u16, u64)> {
    html.split("<td class=\"adc-entries\"")
        .skip(1)
        .map(|cell| {
            let (tag, rest) = cell.split_once('>').expect("a cell");
            let text = rest.split('<').next().unwrap_or_default();
            (
                attr(tag, "data-board").parse().expect("data-board"),
                text.trim().parse().expect("entries"),
            )
        })
        .collect()
}

/// Runs headless Chromium with a fresh profile (bounded by `limit`);
/// returns its stdout.
fn chromium(args: &[String], limit: Duration) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait().expect("wait for chromium") {
            Some(status) => {
                assert!(status.success(), "chromium {args:?}: {status}");
                break;
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium {args:?} did not finish within {limit:?}");
            }
            None => {
                // Polling a child's exit (no pipe to wait on): not a sleep
                // standing in for a state.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    reader.join().expect("stdout reader")
}

/// The DOM after the page's script ran (virtual time lets its timers and
/// its fetch of monitor.json complete), and a screenshot into `png`.
fn load(url: &str, png: &Path, height: u32) -> String {
    let limit = Duration::from_secs(90);
    let common = [
        "--virtual-time-budget=5000".to_string(),
        format!("--window-size=1300,{height}"),
    ];
    let mut shot = common.to_vec();
    shot.extend([format!("--screenshot={}", png.display()), url.to_string()]);
    chromium(&shot, limit);
    assert!(
        std::fs::metadata(png).is_ok_and(|m| m.len() > 1000),
        "no screenshot {}",
        png.display()
    );
    let mut dump = common.to_vec();
    dump.extend(["--dump-dom".to_string(), url.to_string()]);
    chromium(&dump, limit)
}

/// Where the browser test keeps its screenshots (test artefacts).
fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser");
    std::fs::create_dir_all(&dir).expect("target/browser");
    dir
}

#[test]
fn browser_shows_the_histogram_totals_of_the_monitors_json() {
    if !daq_tests::tool_available("chromium", "chromium") {
        eprintln!("note: chromium (Debian chromium) not found: the browser test is skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let held = Held::start(dir.path(), &ARGS);
    let m = check_record(&held.root);
    let want: Vec<(u16, u64)> = m.adc.iter().map(|h| (h.board, h.entries)).collect();
    let out = artefacts();

    // The running monitor's live page, drawn by its script.
    let dom = load(&page_url(&held), &out.join("monitor-page.png"), 1100);
    assert!(
        dom.contains(&format!("data-drawn=\"{}\"", m.events_read)),
        "the page's script did not draw the monitor's figures:\n{dom}"
    );
    assert_eq!(histogram_totals(&dom, "adc-histogram"), want, "{dom}");
    assert!(dom.contains("data-failed=\"0\""), "{dom}");
    assert!(
        dom.contains(&format!("id=\"events-skipped\">{}<", m.events_skipped)),
        "{dom}"
    );

    // The finished run's report.html: the table and the inline plots.
    let report = PathBuf::from(daqctl_ok(&["report", held.root.to_str().expect("utf-8")]).trim());
    let report = std::path::absolute(report).expect("absolute");
    let dom = load(
        &format!("file://{}", report.display()),
        &out.join("report.png"),
        3400,
    );
    assert_eq!(report_entries(&dom), want, "{dom}");
    assert_eq!(histogram_totals(&dom, "adc-histogram"), want, "{dom}");
    eprintln!(
        "screenshots: {} and {}",
        out.join("monitor-page.png").display(),
        out.join("report.png").display()
    );
}
