//! Prometheus metrics end to end: every process serves `/metrics` in every
//! state, refuses other paths, fails clearly on a taken address, and a real
//! Prometheus server scraping a 2x2x2 run sees the run record's counts.

use daq_tests::{
    Held, Pipe, bin_dir, control, http_get, runtime, spawn, spawn_lines, summary, test_config,
    tool_available,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The value of the sample `name{labels}` in an exposition (exact label text).
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub(crate) fn scrape(url: &str) -> String {
    let (status, body) = http_get(url).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(status, 200, "{url}: {body}");
    assert!(body.ends_with("# EOF\n"), "not OpenMetrics text: {body}");
    body
}

#[test]
fn metrics_answer_in_booted_ready_running_and_paused_and_unknown_paths_are_404() {
    let p = spawn("eventbuilder", 0).expect("spawns");
    assert!(
        p.metrics_url.starts_with("http://127.0.0.1:"),
        "{}",
        p.metrics_url
    );
    let in_state = |state: &str| {
        let body = scrape(&p.metrics_url);
        let series = format!("daq_run_state{{process=\"eventbuilder-0\",state=\"{state}\"}}");
        assert_eq!(sample(&body, &series), Some(1.0), "{state}: {body}");
        assert!(
            sample(
                &body,
                "daq_heap_allocated_bytes{process=\"eventbuilder-0\"}"
            )
            .is_some_and(|v| v > 0.0),
            "{body}"
        );
        assert!(!body.contains("daq_heap_events"), "events are not memory");
        body
    };
    in_state("booted");
    let base = p.metrics_url.trim_end_matches("/metrics");
    for path in ["/", "/metric", "/metrics/x", "/favicon.ico"] {
        let (status, _) = http_get(&format!("{base}{path}")).expect("answers");
        assert_eq!(status, 404, "{path}");
    }
    runtime().block_on(async {
        let mut c = control(&p.addr).await;
        let status = daq_tests::status(&mut c).await;
        assert_eq!(status.metrics_url, p.metrics_url);
        let mut config = test_config(1, 0);
        config.transfer.end_of_data_timeout_ms = 200;
        daq_tests::init(&mut c, &config).await;
        in_state("ready");
        c.start(daq_tests::start_request(12, Path::new("")))
            .await
            .expect("start");
        let body = in_state("running");
        assert_eq!(
            sample(&body, "daq_run_number{process=\"eventbuilder-0\"}"),
            Some(12.0)
        );
        assert_eq!(
            sample(
                &body,
                "daq_fragments_received_total{process=\"eventbuilder-0\",run=\"12\"}"
            ),
            Some(0.0)
        );
        let buffers = config.eventbuilder.buffer_count as f64;
        assert_eq!(
            sample(
                &body,
                "daq_shm_buffers{process=\"eventbuilder-0\",state=\"empty\"}"
            ),
            Some(buffers),
            "{body}"
        );
        assert!(body.contains("# TYPE daq_event_build_seconds histogram"));
        c.pause(proto::Empty {}).await.expect("pause");
        in_state("paused");
        c.resume(proto::Empty {}).await.expect("resume");
        daq_tests::stop(&mut c).await;
        in_state("ready");
        c.shutdown(proto::Empty {}).await.expect("shutdown");
    });
}

#[test]
fn a_metrics_address_in_use_fails_at_start_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(bin_dir().join("boardreader"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", &addr])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot bind the metrics address {addr}")),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("DAQ-READY"));
}

/// A Prometheus server on 127.0.0.1 with its own data directory.
pub(crate) struct Prometheus {
    child: Child,
    api: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every 200 ms; waits until it
    /// serves its API (the port it bound is read from its log).
    pub(crate) fn start(dir: &Path, targets: &[(String, String)]) -> Self {
        let mut config = String::from(
            "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\nscrape_configs:\n",
        );
        for (process, url) in targets {
            let hostport = url
                .trim_start_matches("http://")
                .trim_end_matches("/metrics");
            config.push_str(&format!(
                "  - job_name: {process}\n    static_configs:\n      - targets: ['{hostport}']\n"
            ));
        }
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).expect("writes config");
        // Prometheus 2.42 has once stalled at start-up (nothing logged after
        // its build context for 60 s, under a loaded CI): the launch of the
        // external server gets one retry, saying so.
        let mut attempt = 0;
        let (child, addr) = loop {
            attempt += 1;
            match Self::launch(&file, &dir.join(format!("data{attempt}"))) {
                Ok(started) => break started,
                Err(printed) if attempt < 2 => eprintln!(
                    "prometheus did not become ready within 30 s; starting it again. It printed:\n{printed}"
                ),
                Err(printed) => panic!(
                    "prometheus did not become ready within 30 s, twice; it printed:\n{printed}"
                ),
            }
        };
        Self {
            child,
            api: format!("http://{addr}/api/v1/query"),
        }
    }

    /// Starts one Prometheus; its child and API address once it serves,
    /// or what it printed if it did not within 30 s (it is killed then).
    fn launch(config: &Path, data: &Path) -> Result<(Child, String), String> {
        let (mut child, mut lines) = spawn_lines(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg("--web.listen-address=127.0.0.1:0")
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
            Pipe::Stderr,
        )
        .expect("prometheus starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut listening = None;
        loop {
            let Some(line) = lines.next_before(deadline) else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(lines.text());
            };
            if line.contains("msg=\"Listening on\"") {
                listening = line
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("address="))
                    .map(str::to_string);
            }
            if line.contains("Server is ready to receive web requests")
                && let Some(a) = listening.take()
            {
                return Ok((child, a));
            }
        }
    }

    /// The result vector of an instant query.
    pub(crate) fn query(&self, q: &str) -> Vec<Value> {
        let url = format!(
            "{}?query={}",
            self.api,
            q.bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        );
        let (status, body) = http_get(&url).expect("prometheus answers");
        assert_eq!(status, 200, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a query returning one sample.
    pub(crate) fn scalar(&self, q: &str) -> Option<f64> {
        self.query(q)
            .first()
            .and_then(|r| r["value"][1].as_str()?.parse().ok())
    }

    /// Polls `q` until it equals `want` or `timeout` passes.
    pub(crate) fn wait_for(&self, q: &str, want: f64, timeout: Duration) -> Option<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.scalar(q);
            if got == Some(want) || Instant::now() >= deadline {
                return got;
            }
            // Polling interval of a wait with a deadline, not synchronization.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn prometheus_scrapes_a_2x2x2_run_and_its_sums_equal_the_run_record() {
    if !tool_available("prometheus", "prometheus") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let held = Held::start(
        &dir.path().join("runs"),
        &["--events", "400", "--throttle-us", "200"],
    );
    let s = summary(&held.root).expect("summary.json");
    assert_eq!(s["errors"], Value::Array(vec![]), "{s}");
    let names: BTreeSet<String> = held.processes.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(names.len(), 6, "{names:?}");
    let prom = Prometheus::start(dir.path(), &held.processes);
    let timeout = Duration::from_secs(60);
    let sent = s["fragments_sent"].as_f64().expect("fragments_sent");
    let received = s["fragments_received"]
        .as_f64()
        .expect("fragments_received");
    assert_eq!(sent, 800.0);
    let q = "sum(daq_fragments_sent_total{process=~\"boardreader-.*\"})";
    assert_eq!(prom.wait_for(q, sent, timeout), Some(sent), "{q}");
    let q = "sum(daq_fragments_received_total{process=~\"eventbuilder-.*\"})";
    assert_eq!(prom.wait_for(q, received, timeout), Some(received), "{q}");
    let q = "count(daq_heap_allocated_bytes > 0)";
    assert_eq!(prom.wait_for(q, 6.0, timeout), Some(6.0), "{q}");
    let with_heap: BTreeSet<String> = prom
        .query("daq_heap_rss_anon_bytes")
        .iter()
        .filter_map(|r| Some(r["metric"]["process"].as_str()?.to_string()))
        .collect();
    assert_eq!(with_heap, names);
    let run = s["run"].as_u64().expect("run");
    let q = format!("count(daq_events_built_total{{run=\"{run}\"}})");
    assert_eq!(prom.scalar(&q), Some(6.0), "{q}");

    // Every metric the Grafana dashboard plots exists (the shared-memory
    // buffers are reported only while a run holds its store: see the
    // per-state test).
    let dashboard = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/daq.json");
    let text = std::fs::read_to_string(&dashboard).expect("dashboard");
    let _: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let names: BTreeSet<&str> = text
        .match_indices("daq_")
        .map(|(i, _)| {
            let rest = &text[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|n| n.len() > "daq_".len() && *n != "daq_shm_buffers")
        .collect();
    assert!(names.len() > 20, "{names:?}");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/prometheus.yml");
    let check = Command::new("promtool")
        .args(["check", "config", "--syntax-only"])
        .arg(&example)
        .output()
        .expect("promtool (Debian prometheus) runs");
    assert!(check.status.success(), "{check:?}");
    for name in names {
        assert!(
            !prom.query(name).is_empty(),
            "dashboard metric {name} not scraped"
        );
    }
}
