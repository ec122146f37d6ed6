//! The functions under which a process's heap grew between two run-state
//! boundaries, from a run's jemalloc heap profiles diffed by jeprof
//! (`daqctl heap sites`), and how to ask for them (`profile_help`).

use anyhow::{Context, Result, bail};
use daq_format::record::RunSummary;
use serde::Serialize;
use std::path::Path;

/// The binary of a process (`aggregator-1` -> `<bin dir>/aggregator`).
fn binary_of(process: &str) -> Result<std::path::PathBuf> {
    let kind = process.rsplit_once('-').map_or(process, |(k, _)| k);
    Ok(crate::bins::bin_dir()?.join(kind))
}

/// The jeprof arguments that diff a process's profiles between two boundaries.
fn jeprof_args(root: &Path, process: &str, from: &str, to: &str) -> Result<Vec<String>> {
    let heap = root.join("heap");
    Ok(vec![
        "--text".into(),
        "--cum".into(),
        format!(
            "--base={}",
            heap.join(format!("{process}.{from}.heap")).display()
        ),
        binary_of(process)?.display().to_string(),
        heap.join(format!("{process}.{to}.heap"))
            .display()
            .to_string(),
    ])
}

/// How to diff the heap profiles of a run, by process.
pub fn profile_help(s: &RunSummary, root: &Path) -> String {
    let mut out = String::from(
        "  profiles   growth by call site, before start -> after stop (needs jeprof, Debian libjemalloc-dev):\n",
    );
    for (name, p) in &s.processes {
        if p.profiles.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "             daqctl heap sites {} --process {name}\n",
            root.display()
        ));
    }
    if let Some((name, _)) = s.processes.iter().find(|(_, p)| !p.profiles.is_empty())
        && let Ok(args) = jeprof_args(root, name, "before_start", "after_stop")
    {
        out.push_str(&format!("             (raw: jeprof {})\n", args.join(" ")));
    }
    out
}

/// One growing call site of a heap-profile diff.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Site {
    pub function: String,
    /// Bytes allocated under this function (cumulative) that grew between the profiles.
    pub bytes: f64,
    pub percent: f64,
}

/// This project's crates, whose functions count as call sites (the
/// runtime, the allocator and the standard library are the stack around
/// them, not the cause), with where each one's sources are: a frame whose
/// DWARF gives only a bare name (an inlined function in a release build's
/// line tables: `inject_leak`) is qualified from its source file.
pub(crate) const OWN_SOURCES: [(&str, &str); 8] = [
    ("common/format/src/", "daq_format"),
    ("common/runtime/src/", "daq_runtime"),
    ("common/shm/src/", "daq_shm"),
    ("common/datafile/src/", "daq_datafile"),
    ("aggregator/src/", "aggregator"),
    ("eventbuilder/src/", "eventbuilder"),
    ("boardreader/src/", "boardreader"),
    ("monitor/src/", "monitor"),
];

/// Whether `f` is a function of one of this project's crates.
pub(crate) fn is_own(f: &str) -> bool {
    OWN_SOURCES.iter().any(|(_, krate)| {
        f.strip_prefix(krate)
            .is_some_and(|rest| rest.starts_with("::"))
    })
}

/// Parses `jeprof --text --cum` output into this project's functions,
/// largest cumulative growth first. jeprof sometimes names a real
/// (non-inlined) frame by its bare name (`inject_leak`) and gives the
/// qualified name only on an `(inline)` line; such a bare name is
/// qualified from that line when it names a function of this project.
pub fn parse_sites(jeprof_text: &str) -> Vec<Site> {
    let rows: Vec<(f64, f64, String, bool)> = jeprof_text
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() < 6 {
                return None;
            }
            let cum_mb: f64 = cols.get(3)?.parse().ok()?;
            let pct: f64 = cols.get(4)?.trim_end_matches('%').parse().ok()?;
            let inline = cols.last() == Some(&"(inline)");
            let end = if inline { cols.len() - 1 } else { cols.len() };
            Some((cum_mb, pct, cols.get(5..end)?.join(" "), inline))
        })
        .collect();
    let qualified: std::collections::HashMap<&str, &str> = rows
        .iter()
        .filter(|(_, _, f, inline)| *inline && is_own(f))
        .filter_map(|(_, _, f, _)| Some((f.rsplit_once("::")?.1, f.as_str())))
        .collect();
    let mut sites: Vec<Site> = rows
        .iter()
        .filter(|(_, _, _, inline)| !inline)
        .filter_map(|(cum_mb, pct, f, _)| {
            let function = match qualified.get(f.as_str()) {
                Some(q) if !f.contains("::") => q.to_string(),
                _ => f.clone(),
            };
            is_own(&function).then_some(Site {
                function,
                bytes: cum_mb * 1024.0 * 1024.0,
                percent: *pct,
            })
        })
        .collect();
    sites.sort_by(|a, b| b.bytes.total_cmp(&a.bytes));
    let mut seen = std::collections::HashSet::new();
    sites.retain(|s| seen.insert(s.function.clone()));
    // A caller's cumulative growth is at least its callee's, so the generic
    // loops every item passes through (the transport, run control) tie with
    // or just top the function that really allocates. Among sites within 2%
    // of each other, the one outside that plumbing ranks first; plumbing
    // that grows on its own (nothing under it ties) still ranks by bytes.
    let plumbing = |s: &Site| PLUMBING.iter().any(|p| s.function.starts_with(p));
    if let Some(first) = sites.first().filter(|s| plumbing(s)) {
        let floor = first.bytes * 0.98;
        if let Some(i) = sites
            .iter()
            .take_while(|s| s.bytes >= floor)
            .position(|s| !plumbing(s))
        {
            let cause = sites.remove(i);
            sites.insert(0, cause);
        }
    }
    sites
}

/// Generic code every event or command passes through: a site there that
/// ties with one of its callees is the stack around the cause, not the cause.
const PLUMBING: [&str; 2] = ["daq_runtime::transport::", "daq_runtime::control::"];

/// `daqctl heap sites RUN --process P`: the project's functions under which
/// the heap grew between two boundaries, from the run's heap profiles.
pub fn sites(root: &Path, process: &str, from: &str, to: &str) -> Result<Vec<Site>> {
    let heap = root.join("heap");
    for label in [from, to] {
        let p = heap.join(format!("{process}.{label}.heap"));
        if !p.exists() {
            bail!(
                "{} not found: run with --heap-profile to dump heap profiles",
                p.display()
            );
        }
    }
    let out = std::process::Command::new("jeprof")
        .args(jeprof_args(root, process, from, to)?)
        .output()
        .context("cannot run jeprof (Debian: apt-get install libjemalloc-dev)")?;
    if !out.status.success() {
        bail!(
            "jeprof failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(parse_sites(&String::from_utf8_lossy(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jeprof_output_is_reduced_to_this_projects_functions() {
        let text = "Total: 8.3 MB
     8.3 100.0% 100.0%      8.3 100.0% prof_backtrace_impl
     0.0   0.0% 100.0%      8.3  99.9% tokio::runtime::scheduler::multi_thread::worker::run
     0.0   0.0% 100.0%      8.2  99.4% daq_format::netmon::decode_legacy
     0.0   0.0% 100.0%      3.0  36.7% daq_format::netmon::decode_history
     0.0   0.0% 100.0%      3.7  44.7% decode_history
     0.0   0.0% 100.0%      0.1   1.0% aggregator::core::write_loop (inline)
";
        let s = parse_sites(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].function, "daq_format::netmon::decode_legacy");
        assert_eq!(s[0].percent, 99.4);
        assert_eq!(s[1].function, "daq_format::netmon::decode_history");
    }

    #[test]
    fn the_function_under_the_generic_receive_loop_is_named_before_it() {
        // The loop's cumulative growth includes the decoder's and a little more.
        let text = "Total: 1.6 MB
     0.0   0.0% 100.0%      1.6  98.9% daq_runtime::transport::inbound::serve::{{closure}}
     0.0   0.0% 100.0%      1.6  98.7% daq_format::netmon::decode_legacy
     0.0   0.0% 100.0%      1.3  78.8% daq_format::netmon::decode_history
";
        let s = parse_sites(text);
        assert_eq!(s[0].function, "daq_format::netmon::decode_legacy");
        assert_eq!(
            s[1].function,
            "daq_runtime::transport::inbound::serve::{{closure}}"
        );
        // Plumbing that grows with nothing of ours under it keeps its rank.
        let alone = "Total: 2.0 MB
     0.0   0.0% 100.0%      2.0  99.0% daq_runtime::transport::inbound::serve::{{closure}}
     0.0   0.0% 100.0%      0.2   9.0% daq_format::netmon::decode_history
";
        let s = parse_sites(alone);
        assert_eq!(
            s[0].function,
            "daq_runtime::transport::inbound::serve::{{closure}}"
        );
    }

    #[test]
    fn a_bare_frame_name_is_qualified_from_its_inline_line() {
        let text = "Total: 0.3 MB
     0.0   0.0% 100.0%      0.3 100.0% _rjem_je_prof_backtrace
     0.0   0.0% 100.0%      0.3  98.5% eventbuilder::core::Builder::place_parked
     0.0   0.0% 100.0%      0.3  98.5% inject_leak
     0.0   0.0% 100.0%      0.0   6.0% daq_runtime::leak::inject_leak (inline)
     0.0   0.0% 100.0%      0.3  98.5% from_elem (inline)
";
        let s = parse_sites(text);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].function, "eventbuilder::core::Builder::place_parked");
        assert_eq!(s[1].function, "daq_runtime::leak::inject_leak");
        assert_eq!(s[1].percent, 98.5);
    }
}
