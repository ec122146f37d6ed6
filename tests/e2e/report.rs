//! `daqctl report`: the run report page is one self-contained file with a
//! heap-over-time plot for every process of the run, as written and as
//! headless Chromium renders it.

use daq_tests::{daqctl_ok, latest_run, summary};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

/// Processes with a heap plot on the page: an `<svg class="heap-plot"
/// data-process="...">` holding at least one polyline of two points or more.
fn plotted(html: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for part in html.split("<svg").skip(1) {
        let Some(svg) = part.split("</svg>").next() else {
            continue;
        };
        let Some(name) = svg
            .split("data-process=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let lines = svg.split("<polyline points=\"").skip(1).filter(|p| {
            p.split('"')
                .next()
                .is_some_and(|pts| pts.split_whitespace().count() >= 2)
        });
        if svg.contains("class=\"heap-plot\"") && lines.count() > 0 {
            out.insert(name.to_string());
        }
    }
    out
}

/// The page rendered by headless Chromium (`--dump-dom`), when installed.
fn chromium_dom(page: &Path) -> Option<String> {
    let profile = tempfile::tempdir().ok()?;
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => panic!("chromium --dump-dom failed: {}", o.status),
        Err(_) => {
            eprintln!("note: chromium (Debian chromium) not found; rendered-page check skipped");
            None
        }
    }
}

#[test]
fn report_page_is_self_contained_with_a_heap_plot_for_every_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let run_dir = runs.to_str().expect("utf-8");
    daqctl_ok(&[
        "demo",
        "--run-dir",
        run_dir,
        "--duration",
        "2",
        "--throttle-us",
        "500",
        "--sample-interval",
        "0.1",
    ]);
    let root = latest_run(&runs);
    let out = daqctl_ok(&["report", root.to_str().expect("utf-8")]);
    let page = std::path::absolute(root.join("report.html")).expect("path");
    assert_eq!(out.trim(), root.join("report.html").display().to_string());
    let html = std::fs::read_to_string(&page).expect("report.html");

    let s = summary(&root).expect("summary.json");
    let processes: BTreeSet<String> = s["processes"]
        .as_object()
        .expect("processes")
        .keys()
        .cloned()
        .collect();
    assert_eq!(processes.len(), 6);
    assert_eq!(plotted(&html), processes);
    // Self-contained: nothing to fetch.
    for needle in [
        "http:", "https:", "<script", "src=", "href=", "@import", "url(",
    ] {
        assert!(!html.contains(needle), "report.html contains {needle:?}");
    }
    assert!(html.contains(&format!(
        "<td>events built</td><td>{}</td>",
        s["events_built"]
    )));
    assert!(html.contains("before_start"), "heap table missing");
    // The heap table is an HTML table like the page's others, a row per process.
    assert!(
        html.contains("<table class=\"heap\">"),
        "heap table not HTML"
    );
    assert!(
        !html.contains("<pre>"),
        "preformatted text left in the page"
    );
    for p in &processes {
        assert!(
            html.contains(&format!("<tr><td>{p}</td>")),
            "no heap row of {p}"
        );
    }

    if let Some(dom) = chromium_dom(&page) {
        assert_eq!(plotted(&dom), processes, "as rendered by chromium");
    }
}
