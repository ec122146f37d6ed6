//! artdaq interoperability, end to end: the artdaq-binary files of a real
//! 2x2x2 run are read by a C++ reader written from artdaq's published
//! layouts (compiled here with the machine's g++) and by the README's numpy
//! walker, and the same deterministic run written once per format holds the
//! same events, event by event.

use daq_datafile::{artdaq_binary, hdf5};
use daq_tests::{
    cpp_source, cxx_compiler, daqctl_ok, data_files, h5py_python, latest_run, run_ok, summary, u,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One fragment as both formats store it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Frag {
    fragment_id: u16,
    fragment_type: u8,
    sequence_id: u64,
    timestamp: u64,
    metadata: Vec<u8>,
    payload: Vec<u8>,
}

/// Events of one file in file order: (sequence id, fragments).
type Events = Vec<(u64, Vec<Frag>)>;

/// Runs `daqctl demo` with a config file of `config` and `args`; asserts a
/// run that lost nothing and returns its record directory, summary and data
/// files.
fn demo(dir: &Path, config: &str, args: &[&str]) -> (PathBuf, Value, Vec<PathBuf>) {
    std::fs::create_dir_all(dir).expect("run dir");
    let cfg = dir.join("system.toml");
    std::fs::write(&cfg, config).expect("config");
    let mut all = vec![
        "demo",
        "--config",
        cfg.to_str().expect("utf-8"),
        "--run-dir",
        dir.to_str().expect("utf-8"),
    ];
    all.extend_from_slice(args);
    let stdout = daqctl_ok(&all);
    assert!(stdout.contains("OK: nothing lost"), "{stdout}");
    let root = latest_run(dir);
    let s = summary(&root).expect("summary.json");
    assert_eq!(u(&s, "events_incomplete"), 0, "{s}");
    assert_eq!(u(&s, "events_written"), u(&s, "events_built"), "{s}");
    let files = data_files(&root, &s);
    (root, s, files)
}

/// The aggregator that wrote a data file, from its name.
fn process_of(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).expect("name");
    name.split('_')
        .nth(1)
        .expect("run<N>_<process>_<I>")
        .to_string()
}

fn read_hdf5(path: &Path) -> Events {
    let f = hdf5::read_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(f.recorded_events, Some(f.events.len() as u64));
    f.events
        .into_iter()
        .map(|e| {
            assert!(e.complete);
            let frags = e
                .fragments
                .into_iter()
                .map(|f| Frag {
                    fragment_id: f.fragment_id,
                    fragment_type: f.fragment_type,
                    sequence_id: f.sequence_id,
                    timestamp: f.timestamp,
                    metadata: f.metadata,
                    payload: f.payload,
                })
                .collect();
            (e.sequence_id, frags)
        })
        .collect()
}

fn read_binary(path: &Path) -> Events {
    let f = artdaq_binary::read_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(f.stop, None, "{}", path.display());
    f.events()
        .map(|e| {
            let frags = e
                .iter()
                .inspect(|f| {
                    // Stamped when made, as artdaq's Fragment::touch():
                    // a wall-clock time of this decade, not zero.
                    let h = f.header();
                    assert!(h.atime_s > 1_700_000_000, "atime of {h:?}");
                })
                .map(|f| Frag {
                    fragment_id: f.fragment_id(),
                    fragment_type: f.header().fragment_type,
                    sequence_id: f.sequence_id(),
                    timestamp: f.timestamp(),
                    metadata: f.metadata().to_vec(),
                    payload: f.payload().to_vec(),
                })
                .collect();
            (e[0].sequence_id(), frags)
        })
        .collect()
}

/// Every event of a run's files, by aggregator (files in order).
fn by_process(files: &[PathBuf], read: fn(&Path) -> Events) -> BTreeMap<String, Events> {
    let mut m: BTreeMap<String, Events> = BTreeMap::new();
    for f in files {
        m.entry(process_of(f)).or_default().extend(read(f));
    }
    m
}

const TOY_MIX: &str = "[generator]\nfragment_type = \"alternate\"\n";

#[test]
fn cpp_reader_walks_the_artdaq_binary_files_of_a_2x2x2_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!("{TOY_MIX}[aggregator]\nformat = \"artdaq-binary\"\n");
    let (_, s, files) = demo(
        dir.path(),
        &config,
        &["--events", "2000", "--throttle-us", "0"],
    );
    assert_eq!(u(&s, "events_built"), 2000);
    assert_eq!(files.len(), 2);
    for f in &files {
        assert!(f.to_string_lossy().ends_with("_000.artdaq.bin"), "{f:?}");
    }
    // 2000 events x 2 fragments x 16 words.
    assert_eq!(u(&s, "bytes_written"), 2000 * 2 * 128);
    let Some(cxx) = cxx_compiler() else { return };
    let exe = dir.path().join("artdaq_binary_reader");
    run_ok(
        Command::new(&cxx)
            .args(["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&exe)
            .arg(cpp_source("artdaq_binary_reader.cpp")),
        &cxx,
    );
    let out = run_ok(
        Command::new(&exe).args(["2", "1", "2000"]).args(&files),
        "C++ reader",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "fragments 4000 events 2000 toy1 2000 toy2 2000 samples 160000\n"
    );
}

/// Runs the README's numpy walker on `files` and returns, per file, its
/// fragments as (sequence id, fragment id, type, timestamp, adc bits,
/// samples).
fn readme_walker(python: &str, files: &[PathBuf]) -> Value {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let walker = readme
        .split("```python\n")
        .skip(1)
        .map(|b| &b[..b.find("```").expect("closed block")])
        .find(|b| b.contains("def fragments(path)"))
        .expect("the README's artdaq-binary walker");
    let script = format!(
        "{walker}\nimport json, sys\nprint(json.dumps([[[f['sequence_id'], f['fragment_id'], f['type'], f['timestamp'], (int(f['metadata'][0]) >> 16) & 0xFF, f['payload'].view('<u2')[4:].tolist()] for f in fragments(p)] for p in sys.argv[1:]]))\n"
    );
    let out = run_ok(
        Command::new(python).arg("-c").arg(&script).args(files),
        "README walker",
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn the_same_run_written_in_both_formats_holds_the_same_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small files, so both formats roll over within the run.
    let base =
        format!("{TOY_MIX}distribution = \"gaussian\"\n[aggregator]\nmax_file_bytes = 65536\n");
    let args = ["--events", "1500", "--throttle-us", "0"];
    let (h5_root, h5_s, h5_files) = demo(&dir.path().join("hdf5"), &base, &args);
    let (bin_root, bin_s, bin_files) = demo(
        &dir.path().join("binary"),
        &format!("{base}format = \"artdaq-binary\"\n"),
        &args,
    );
    assert!(
        h5_files
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "h5"))
    );
    assert!(
        bin_files
            .iter()
            .all(|f| f.to_string_lossy().ends_with(".artdaq.bin"))
    );
    // 1500 x 256 bytes over two aggregators, 64 KiB at most per file (+ a batch).
    assert!(bin_files.len() >= 4, "{bin_files:?}");
    assert_eq!(u(&bin_s, "bytes_written"), 1500 * 256);
    assert_eq!(u(&h5_s, "events_written"), 1500);
    assert_eq!(u(&bin_s, "events_written"), 1500);

    let h5 = by_process(&h5_files, read_hdf5);
    let bin = by_process(&bin_files, read_binary);
    assert_eq!(
        h5.keys().collect::<Vec<_>>(),
        vec!["aggregator-0", "aggregator-1"]
    );
    assert_eq!(
        h5.keys().collect::<Vec<_>>(),
        bin.keys().collect::<Vec<_>>()
    );
    let mut all = BTreeSet::new();
    for (process, h5_events) in &h5 {
        // Each aggregator gets the same events in both runs (routing is by
        // sequence id); the order within a file is the order they arrived.
        let h5_by_seq: BTreeMap<u64, &Vec<Frag>> = h5_events.iter().map(|(s, f)| (*s, f)).collect();
        let bin_by_seq: BTreeMap<u64, &Vec<Frag>> =
            bin[process].iter().map(|(s, f)| (*s, f)).collect();
        assert_eq!(
            h5_by_seq.len(),
            h5_events.len(),
            "{process}: a sequence id twice"
        );
        assert_eq!(
            bin_by_seq.len(),
            bin[process].len(),
            "{process}: a sequence id twice"
        );
        assert_eq!(
            h5_by_seq.keys().collect::<Vec<_>>(),
            bin_by_seq.keys().collect::<Vec<_>>(),
            "{process}"
        );
        for (seq, h5_frags) in &h5_by_seq {
            let bin_frags = bin_by_seq[seq];
            assert_eq!(h5_frags.len(), 2, "event {seq}");
            assert_eq!(*h5_frags, bin_frags, "{process} event {seq}");
            assert!(all.insert(*seq));
        }
    }
    assert_eq!(all, (1..=1500).collect::<BTreeSet<u64>>());

    // daqctl dump reads both runs alike.
    for root in [&h5_root, &bin_root] {
        let stdout = daqctl_ok(&["dump", root.to_str().expect("utf-8"), "--check"]);
        assert!(
            stdout.contains(
                "1500 events, 3000 fragments (TOY1 1500, TOY2 1500), sequence ids 1..=1500\n"
            ),
            "{stdout}"
        );
        assert!(
            stdout.contains("check OK: 3000 toy fragments, all 120000 samples fit their ADC width; 1500 sequence ids 1..=1500, each once\n"),
            "{stdout}"
        );
    }

    // The README's numpy walker reads the artdaq-binary files as Rust does.
    let Some(python) = h5py_python() else { return };
    let walked = readme_walker(&python, &bin_files);
    let walked = walked.as_array().expect("files");
    assert_eq!(walked.len(), bin_files.len());
    for (path, frags) in bin_files.iter().zip(walked) {
        let rust: Vec<Frag> = read_binary(path).into_iter().flat_map(|(_, f)| f).collect();
        let frags = frags.as_array().expect("fragments");
        assert_eq!(frags.len(), rust.len(), "{}", path.display());
        for (r, p) in rust.iter().zip(frags) {
            let toy = daq_format::toy::ToyView::parse(&r.metadata, &r.payload).expect("toy");
            let want = serde_json::json!([
                r.sequence_id,
                r.fragment_id,
                r.fragment_type,
                r.timestamp,
                toy.metadata.num_adc_bits,
                toy.samples().collect::<Vec<u16>>(),
            ]);
            assert_eq!(*p, want, "{}", path.display());
        }
    }
}
