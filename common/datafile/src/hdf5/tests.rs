//! Tests of the data files: round trips through the writer and the reader, roll-over, crash prefixes, the column table against a written file, and the h5py dump.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use hdf5_pure::{AttrValue, File, FileBuilder, H5Element, MaxExtent};

use super::columns::{COLUMNS, Rows};
use super::*;

fn attributes(process: &str) -> FileAttributes {
    FileAttributes {
        run: 42,
        subrun: 3,
        process: process.to_owned(),
        config_toml:
            "[run]\nnumber = 42\nname = \"calibration \\\"α\\\"\"\n\n[boards]\nids = [1, 2, 7]\n"
                .to_owned(),
        software_version: "aggregator 0.3.1+g1234abc".to_owned(),
    }
}

fn byte(seed: u64, i: usize) -> u8 {
    // splitmix64 of (seed, i)
    let mut x = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i as u64);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) as u8
}

/// Deterministic events `first..first + n`; event `i` has `fragments_of(i)`
/// fragments with varied sizes, including empty metadata and payloads.
fn make_events(
    first: usize,
    n: usize,
    fragments_of: fn(usize) -> usize,
    compressible: bool,
) -> Vec<ReadEvent> {
    (first..first + n)
        .map(|i| {
            let fragments = (0..fragments_of(i))
                .map(|k| {
                    let meta_len = (i + 5 * k) % 24;
                    let payload_len = if (i + k) % 13 == 0 {
                        0
                    } else {
                        (i * 37 + k * 101) % 1500
                    };
                    let seed = (i as u64) << 8 | k as u64;
                    let content = |j: usize| {
                        if compressible {
                            (j % 7) as u8
                        } else {
                            byte(seed, j)
                        }
                    };
                    ReadFragment {
                        fragment_id: (k * 3 + 1) as u16,
                        fragment_type: (i % 4) as u8,
                        sequence_id: 1_000 + i as u64,
                        timestamp: 5_000_000_000 + 1_000 * i as u64 + k as u64,
                        metadata: (0..meta_len).map(|j| byte(!seed, j)).collect(),
                        payload: (0..payload_len).map(content).collect(),
                    }
                })
                .collect();
            ReadEvent {
                run: 42,
                subrun: 3,
                event: i as u64 + 1,
                sequence_id: 1_000 + i as u64,
                timestamp: 5_000_000_000 + 1_000 * i as u64,
                complete: i % 5 != 0,
                fragments,
            }
        })
        .collect()
}

fn two(_: usize) -> usize {
    2
}

fn write_events(writer: &mut RunWriter, events: &[ReadEvent]) {
    let mut views = Vec::new();
    for e in events {
        views.clear();
        views.extend(e.fragments.iter().map(|f| FragmentView {
            fragment_id: f.fragment_id,
            fragment_type: f.fragment_type,
            sequence_id: f.sequence_id,
            timestamp: f.timestamp,
            metadata: &f.metadata,
            payload: &f.payload,
        }));
        writer
            .append(&EventView {
                run: e.run,
                subrun: e.subrun,
                event: e.event,
                sequence_id: e.sequence_id,
                timestamp: e.timestamp,
                complete: e.complete,
                fragments: &views,
            })
            .unwrap();
    }
}

fn write_run(dir: &Path, options: WriterOptions, events: &[ReadEvent]) -> RunFiles {
    let mut writer = RunWriter::create(dir, attributes("eb01"), options).unwrap();
    write_events(&mut writer, events);
    assert_eq!(writer.events_written(), events.len() as u64);
    writer.close().unwrap()
}

fn assert_file_attributes(read: &ReadFile) {
    let expected = attributes("eb01");
    assert_eq!(read.run, 42);
    assert_eq!(read.subrun, 3);
    assert_eq!(read.process, "eb01");
    assert_eq!(read.config_toml, expected.config_toml);
    assert_eq!(read.software_version, "aggregator 0.3.1+g1234abc");
}

fn first_mismatch(actual: &[ReadEvent], expected: &[ReadEvent]) -> Option<usize> {
    actual.iter().zip(expected).position(|(a, e)| a != e)
}

#[test]
fn round_trip_preserves_every_event_fragment_and_attribute() {
    let dir = tempfile::tempdir().unwrap();
    let events = make_events(0, 2_500, two, false);
    let run = write_run(dir.path(), WriterOptions::default(), &events);

    let path = dir.path().join("run000042_eb01_000.h5");
    assert_eq!(run.files, vec![path.clone()]);
    assert_eq!(run.events, 2_500);
    assert_eq!(run.bytes_on_disk, std::fs::metadata(&path).unwrap().len());

    let read = read_file(&path).unwrap();
    assert_file_attributes(&read);
    assert_eq!(read.recorded_events, Some(2_500));
    assert_eq!(read.events.len(), 2_500);
    assert_eq!(first_mismatch(&read.events, &events), None);
    assert_eq!(read.events, events);
    // The generator really covers the edge cases.
    let all = || events.iter().flat_map(|e| &e.fragments);
    assert!(all().any(|f| f.metadata.is_empty()));
    assert!(all().any(|f| f.payload.is_empty()));
    assert!(all().any(|f| f.metadata.is_empty() && f.payload.is_empty()));
}

#[test]
fn varying_fragment_counts_including_none_round_trip_with_unaligned_batches() {
    let dir = tempfile::tempdir().unwrap();
    let events = make_events(0, 503, |i| i % 4, false);
    let options = WriterOptions {
        batch_events: 7,
        ..WriterOptions::default()
    };
    let run = write_run(dir.path(), options, &events);
    let read = read_file(&run.files[0]).unwrap();
    assert_eq!(read.events, events);
    assert_eq!(read.recorded_events, Some(503));
}

#[test]
fn deflate_round_trips_and_shrinks_compressible_data() {
    let events = make_events(0, 1_200, two, true);
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = write_run(plain_dir.path(), WriterOptions::default(), &events);
    let dir = tempfile::tempdir().unwrap();
    let options = WriterOptions {
        compression: Compression::Deflate(6),
        batch_events: 250,
        ..WriterOptions::default()
    };
    let packed = write_run(dir.path(), options, &events);

    let read = read_file(&packed.files[0]).unwrap();
    assert_file_attributes(&read);
    assert_eq!(read.events, events);
    assert_eq!(read.recorded_events, Some(1_200));
    assert!(
        packed.bytes_on_disk * 3 < plain.bytes_on_disk,
        "deflate {} vs plain {}",
        packed.bytes_on_disk,
        plain.bytes_on_disk
    );
    let file = File::open(&packed.files[0]).unwrap();
    assert_eq!(
        file.dataset("fragments/data").unwrap().filters(),
        vec![2, 1]
    );
    let file = File::open(&plain.files[0]).unwrap();
    assert!(file.dataset("fragments/data").unwrap().filters().is_empty());
}

#[test]
fn rollover_splits_the_run_into_ordered_named_files() {
    let dir = tempfile::tempdir().unwrap();
    let events = make_events(0, 2_000, two, false);
    let max = 400_000;
    let options = WriterOptions {
        batch_events: 100,
        max_file_bytes: max,
        ..WriterOptions::default()
    };
    let run = write_run(dir.path(), options, &events);
    assert!(run.files.len() >= 3, "{} files", run.files.len());
    assert_eq!(run.events, 2_000);

    let mut seen = Vec::new();
    let mut total_bytes = 0;
    for (index, path) in run.files.iter().enumerate() {
        let name = format!("run000042_eb01_{index:03}.h5");
        assert_eq!(path, &dir.path().join(name));
        let size = std::fs::metadata(path).unwrap().len();
        total_bytes += size;
        if index + 1 < run.files.len() {
            assert!(size > max, "file {index} rolled over at {size} bytes");
        }
        let read = read_file(path).unwrap();
        assert_file_attributes(&read);
        assert!(!read.events.is_empty(), "file {index} is empty");
        assert_eq!(read.recorded_events, Some(read.events.len() as u64));
        seen.extend(read.events);
    }
    assert_eq!(total_bytes, run.bytes_on_disk);
    assert_eq!(seen.len(), 2_000);
    assert_eq!(seen, events);
    // Nothing else was written to the directory.
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        run.files.len()
    );
}

#[test]
fn a_run_without_events_leaves_one_readable_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(dir.path(), WriterOptions::default(), &[]);
    assert_eq!(run.files.len(), 1);
    assert_eq!(run.events, 0);
    let read = read_file(&run.files[0]).unwrap();
    assert_file_attributes(&read);
    assert_eq!(read.recorded_events, Some(0));
    assert!(read.events.is_empty());
}

#[test]
fn flushed_events_are_readable_before_close_and_after_drop() {
    let dir = tempfile::tempdir().unwrap();
    let events = make_events(0, 30, two, false);
    let mut writer =
        RunWriter::create(dir.path(), attributes("eb01"), WriterOptions::default()).unwrap();
    write_events(&mut writer, &events[..20]);
    let path = writer.files()[0].clone();
    assert!(read_file(&path).unwrap().events.is_empty());
    writer.flush().unwrap();
    writer.sync().unwrap();
    let live = read_file(&path).unwrap();
    assert_eq!(live.recorded_events, None);
    assert_eq!(live.events, events[..20]);

    // Buffered but never flushed events are lost on drop; the file stays
    // readable without its end-of-run attribute.
    write_events(&mut writer, &events[20..]);
    assert_eq!(writer.events_written(), 30);
    drop(writer);
    let dropped = read_file(&path).unwrap();
    assert_eq!(dropped.recorded_events, None);
    assert_eq!(dropped.events, events[..20]);
}

fn push<T: H5Element>(file: &File, dataset: &str, values: &[T]) {
    file.dataset(dataset).unwrap().append(values).unwrap();
}

#[test]
fn columns_of_different_lengths_read_as_the_shortest_consistent_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let events = make_events(0, 50, |i| i % 3, false);
    let options = WriterOptions {
        batch_events: 10,
        ..WriterOptions::default()
    };
    let run = write_run(dir.path(), options, &events);
    let path = &run.files[0];
    let fragments: usize = events.iter().map(|e| e.fragments.len()).sum();
    let data_len = File::open(path)
        .unwrap()
        .dataset("fragments/data")
        .unwrap()
        .shape()
        .unwrap()[0];

    // A crash mid-flush: the data and some fragment columns of a new
    // fragment, and every event column but fragment_end.
    let file = File::open_rw(path).unwrap();
    push(&file, "fragments/data", &[7u8, 8, 9, 10]);
    push(&file, "fragments/fragment_id", &[99u16]);
    push(&file, "fragments/type", &[1u8]);
    push(&file, "events/run", &[42u32]);
    push(&file, "events/subrun", &[3u32]);
    push(&file, "events/event", &[51u64]);
    push(&file, "events/sequence_id", &[2_000u64]);
    push(&file, "events/timestamp", &[6_000u64]);
    push(&file, "events/complete", &[1u8]);
    file.close().unwrap();
    let read = read_file(path).unwrap();
    assert_eq!(read.recorded_events, Some(50));
    assert_eq!(read.events, events);

    // The fragment columns complete; the event still lacks fragment_end.
    let file = File::open_rw(path).unwrap();
    push(&file, "fragments/sequence_id", &[2_000u64]);
    push(&file, "fragments/timestamp", &[6_001u64]);
    push(&file, "fragments/metadata_bytes", &[1u32]);
    push(&file, "fragments/data_end", &[data_len + 4]);
    file.close().unwrap();
    assert_eq!(read_file(path).unwrap().events, events);

    // fragment_end, written last, publishes the event.
    let file = File::open_rw(path).unwrap();
    push(&file, "events/fragment_end", &[fragments as u64 + 1]);
    // A further complete event row whose fragments were never written.
    push(&file, "events/run", &[42u32]);
    push(&file, "events/subrun", &[3u32]);
    push(&file, "events/event", &[52u64]);
    push(&file, "events/sequence_id", &[2_001u64]);
    push(&file, "events/timestamp", &[6_002u64]);
    push(&file, "events/complete", &[0u8]);
    push(&file, "events/fragment_end", &[fragments as u64 + 3]);
    file.close().unwrap();
    let read = read_file(path).unwrap();
    assert_eq!(read.events.len(), 51);
    assert_eq!(read.events[..50], events[..]);
    assert_eq!(
        read.events[50],
        ReadEvent {
            run: 42,
            subrun: 3,
            event: 51,
            sequence_id: 2_000,
            timestamp: 6_000,
            complete: true,
            fragments: vec![ReadFragment {
                fragment_id: 99,
                fragment_type: 1,
                sequence_id: 2_000,
                timestamp: 6_001,
                metadata: vec![7],
                payload: vec![8, 9, 10],
            }],
        }
    );
}

#[test]
fn decreasing_offsets_are_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(
        dir.path(),
        WriterOptions::default(),
        &make_events(0, 5, two, false),
    );
    let path = &run.files[0];
    let file = File::open_rw(path).unwrap();
    push(&file, "fragments/data", &[1u8]);
    push(&file, "fragments/fragment_id", &[1u16]);
    push(&file, "fragments/type", &[1u8]);
    push(&file, "fragments/sequence_id", &[1u64]);
    push(&file, "fragments/timestamp", &[1u64]);
    push(&file, "fragments/metadata_bytes", &[0u32]);
    push(&file, "fragments/data_end", &[0u64]);
    file.close().unwrap();
    let err = read_file(path).unwrap_err();
    assert!(matches!(err, DataFileError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().starts_with("corrupt data in "), "{err}");
}

#[test]
fn reading_a_missing_or_foreign_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.h5");
    let err = read_file(&missing).unwrap_err();
    assert!(matches!(err, DataFileError::Open { .. }), "{err:?}");
    let message = err.to_string();
    let prefix = format!("failed to open data file {}: ", missing.display());
    assert!(message.starts_with(&prefix), "{message}");
    assert!(message.len() > prefix.len(), "{message}");

    let text = dir.path().join("notes.h5");
    std::fs::write(&text, "this is not an HDF5 file\n").unwrap();
    let err = read_file(&text).unwrap_err();
    assert!(matches!(err, DataFileError::Open { .. }), "{err:?}");

    let empty = dir.path().join("empty.h5");
    std::fs::write(&empty, "").unwrap();
    assert!(matches!(read_file(&empty), Err(DataFileError::Open { .. })));

    let foreign = dir.path().join("foreign.h5");
    let mut builder = FileBuilder::new();
    builder.create_dataset("x").with_u32_data(&[1, 2, 3]);
    builder.write(&foreign).unwrap();
    let err = read_file(&foreign).unwrap_err();
    assert!(matches!(err, DataFileError::NotDataFile { .. }), "{err:?}");

    // A later version, and version 1 (the toy bytes before they became
    // artdaq-core-demo's), are both refused.
    for version in [FORMAT_VERSION + 1, 1] {
        let other = dir.path().join(format!("version{version}.h5"));
        let mut builder = FileBuilder::new();
        builder.set_attr("format", AttrValue::VarLenString(FORMAT_NAME.into()));
        builder.set_attr("format_version", AttrValue::U32(version));
        builder.write(&other).unwrap();
        let err = read_file(&other).unwrap_err();
        assert!(
            matches!(err, DataFileError::UnsupportedVersion { version: v, .. } if v == u64::from(version)),
            "{err:?}"
        );
    }
}

#[test]
fn create_refuses_to_overwrite_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run000042_eb01_000.h5");
    std::fs::write(&path, "precious").unwrap();
    let err = RunWriter::create(dir.path(), attributes("eb01"), WriterOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, DataFileError::File(FileError::FileExists { .. })),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn invalid_options_and_process_names_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let create = |process: &str, options: WriterOptions| {
        RunWriter::create(dir.path(), attributes(process), options).err()
    };
    for level in [0, 10] {
        let options = WriterOptions {
            compression: Compression::Deflate(level),
            ..WriterOptions::default()
        };
        assert!(matches!(
            create("eb01", options),
            Some(DataFileError::InvalidOptions(_))
        ));
    }
    let options = WriterOptions {
        batch_events: 0,
        ..WriterOptions::default()
    };
    assert!(matches!(
        create("eb01", options),
        Some(DataFileError::InvalidOptions(_))
    ));
    for process in ["", "..", "a/b", "eb 01", "ä"] {
        assert!(
            matches!(
                create(process, WriterOptions::default()),
                Some(DataFileError::File(FileError::InvalidProcessName(_)))
            ),
            "{process:?}"
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn every_dataset_is_chunked_unlimited_and_typed_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let options = WriterOptions {
        batch_events: 100_000,
        ..WriterOptions::default()
    };
    let run = write_run(dir.path(), options, &make_events(0, 10, two, false));
    let file = File::open(&run.files[0]).unwrap();
    for column in COLUMNS {
        let ds = file.dataset(column.path).unwrap();
        assert_eq!(ds.maxshape().unwrap(), Some(vec![MaxExtent::Unlimited]));
        let chunk = ds.chunk_shape().unwrap().unwrap();
        assert_eq!(chunk, vec![32_768], "{}", column.path);
        assert_eq!(
            ds.element_size().unwrap(),
            column.kind.size(),
            "{}",
            column.path
        );
    }
}

#[test]
fn a_written_file_holds_exactly_the_column_table() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(
        dir.path(),
        WriterOptions::default(),
        &make_events(0, 10, two, false),
    );
    let file = File::open(&run.files[0]).unwrap();
    let mut groups = file.root().groups().unwrap();
    groups.sort_unstable();
    assert_eq!(groups, ["events", "fragments"]);
    let mut in_file: Vec<String> = Vec::new();
    for group in &groups {
        let datasets = file.group(group).unwrap().datasets().unwrap();
        in_file.extend(datasets.iter().map(|d| format!("{group}/{d}")));
    }
    in_file.sort_unstable();
    let mut in_table: Vec<&str> = COLUMNS.iter().map(|c| c.path).collect();
    in_table.sort_unstable();
    assert_eq!(in_file, in_table);
    assert_eq!(COLUMNS.len(), 14);
    for column in COLUMNS {
        assert_eq!(column.path, format!("{}/{}", column.group, column.name));
    }
    // The append order of the crash-consistency rules: the data bytes first,
    // then the fragment columns, then the event columns with fragment_end,
    // which publishes an event, last.
    let rows: Vec<Rows> = COLUMNS.iter().map(|c| c.rows).collect();
    assert!(rows.is_sorted_by_key(|r| *r as u8), "{rows:?}");
    assert_eq!(COLUMNS[0].path, "fragments/data");
    assert_eq!(COLUMNS[COLUMNS.len() - 1].path, "events/fragment_end");
    assert_eq!(
        COLUMNS.iter().filter(|c| c.rows == Rows::Bytes).count(),
        1,
        "one byte column"
    );
}

#[test]
fn errors_can_cross_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<DataFileError>();
    assert_send_sync::<RunWriter>();
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The document `tests/h5dump_events.py` should print for these files.
fn expected_dump(files: &[(&Path, ReadFile)]) -> String {
    let file_docs: Vec<String> = files
        .iter()
        .map(|(path, read)| {
            let events: Vec<String> = read
                .events
                .iter()
                .map(|e| {
                    let fragments: Vec<String> = e
                        .fragments
                        .iter()
                        .map(|f| {
                            format!(
                                "{{\"fragment_id\":{},\"type\":{},\"sequence_id\":{},\"timestamp\":{},\"metadata_hex\":\"{}\",\"payload_hex\":\"{}\"}}",
                                f.fragment_id,
                                f.fragment_type,
                                f.sequence_id,
                                f.timestamp,
                                hex(&f.metadata),
                                hex(&f.payload)
                            )
                        })
                        .collect();
                    format!(
                        "{{\"run\":{},\"subrun\":{},\"event\":{},\"sequence_id\":{},\"timestamp\":{},\"complete\":{},\"fragments\":[{}]}}",
                        e.run,
                        e.subrun,
                        e.event,
                        e.sequence_id,
                        e.timestamp,
                        e.complete,
                        fragments.join(",")
                    )
                })
                .collect();
            let recorded = read
                .recorded_events
                .map_or_else(|| "null".to_owned(), |n| n.to_string());
            format!(
                "{{\"path\":{},\"attrs\":{{\"run\":{},\"subrun\":{},\"process\":{},\"format_version\":{FORMAT_VERSION},\"events\":{recorded}}},\"events\":[{}]}}",
                json_string(&path.display().to_string()),
                read.run,
                read.subrun,
                json_string(&read.process),
                events.join(",")
            )
        })
        .collect();
    format!("{{\"files\":[{}]}}", file_docs.join(","))
}

/// Runs the dump script on the files, compares its output with the
/// expected document, and checks dtypes and chunking with h5py itself.
const H5PY_CHECK: &str = r#"
import json, subprocess, sys
import h5py
script, expected_path, types_json, *paths = sys.argv[1:]
out = subprocess.run([sys.executable, script, *paths], check=True, capture_output=True, text=True).stdout
actual = json.loads(out)
with open(expected_path) as f:
    expected = json.load(f)
if actual != expected:
    for fa, fe in zip(actual["files"], expected["files"]):
        if fa["attrs"] != fe["attrs"]:
            sys.exit(f"attrs differ: {fa['attrs']} != {fe['attrs']}")
        if len(fa["events"]) != len(fe["events"]):
            sys.exit(f"event counts differ: {len(fa['events'])} != {len(fe['events'])}")
        for i, (a, e) in enumerate(zip(fa["events"], fe["events"])):
            if a != e:
                sys.exit(f"event {i} differs: {a} != {e}")
    sys.exit("documents differ")
types = json.loads(types_json)
for p in paths:
    with h5py.File(p, "r", locking=False) as f:
        in_file = sorted(f"{g}/{d}" for g in f for d in f[g])
        assert in_file == sorted(types), (in_file, sorted(types))
        assert f.attrs["format"] == "daq-events", f.attrs["format"]
        assert isinstance(f.attrs["config"], str)
        for name, dtype in types.items():
            ds = f[name]
            assert str(ds.dtype) == dtype, (name, ds.dtype)
            assert ds.maxshape == (None,), (name, ds.maxshape)
            assert ds.chunks is not None and ds.chunks[0] <= 32768, (name, ds.chunks)
            ds[()]
print("ok")
"#;

fn python_with_h5py() -> Option<String> {
    let python = std::env::var("DAQ_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let ok = Command::new(&python)
        .args(["-c", "import h5py, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

#[test]
fn h5dump_script_agrees_with_read_file() {
    let Some(python) = python_with_h5py() else {
        eprintln!("skipped: no python with h5py (set DAQ_TEST_PYTHON)");
        return;
    };
    let script = std::env::var("DAQ_H5DUMP_SCRIPT").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/h5dump_events.py").to_owned()
    });
    let dir = tempfile::tempdir().unwrap();
    let events = make_events(0, 700, |i| 1 + i % 3, false);
    let options = WriterOptions {
        compression: Compression::Deflate(1),
        batch_events: 64,
        max_file_bytes: 600_000,
    };
    let run = write_run(dir.path(), options, &events);
    assert!(run.files.len() >= 2, "{run:?}");

    // A crashed file too: an event row without its fragments.
    let crashed = dir.path().join("crashed.h5");
    std::fs::copy(run.files.last().unwrap(), &crashed).unwrap();
    let file = File::open_rw(&crashed).unwrap();
    push(&file, "fragments/data", &[1u8, 2]);
    push(&file, "events/run", &[42u32]);
    push(&file, "events/subrun", &[3u32]);
    push(&file, "events/event", &[9_999u64]);
    push(&file, "events/sequence_id", &[1u64]);
    push(&file, "events/timestamp", &[1u64]);
    push(&file, "events/complete", &[1u8]);
    push(&file, "events/fragment_end", &[u64::MAX / 2]);
    file.root().remove_attr("events").unwrap();
    file.close().unwrap();

    let mut paths: Vec<&Path> = run.files.iter().map(PathBuf::as_path).collect();
    paths.push(&crashed);
    let reads: Vec<(&Path, ReadFile)> = paths.iter().map(|p| (*p, read_file(p).unwrap())).collect();
    assert_eq!(reads.last().unwrap().1.recorded_events, None);
    let expected = dir.path().join("expected.json");
    std::fs::write(&expected, expected_dump(&reads)).unwrap();
    // The column table as h5py should see it: {path: numpy dtype}.
    let types: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("\"{}\":\"{}\"", c.path, c.kind.numpy_dtype()))
        .collect();
    let types = format!("{{{}}}", types.join(","));

    let output = Command::new(&python)
        .arg("-c")
        .arg(H5PY_CHECK)
        .arg(&script)
        .arg(&expected)
        .arg(&types)
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "h5py check failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn events_and_bytes_in_files_move_together_once_per_flushed_batch() {
    let dir = tempfile::tempdir().unwrap();
    let events = make_events(0, 25, two, false);
    let options = WriterOptions {
        batch_events: 10,
        max_file_bytes: 40_000,
        ..WriterOptions::default()
    };
    let mut writer = RunWriter::create(dir.path(), attributes("eb01"), options).unwrap();
    let empty = writer.bytes_written();
    write_events(&mut writer, &events[..9]);
    // Buffered events are not in a file: neither count has moved.
    assert_eq!(
        (writer.events_in_files(), writer.bytes_written()),
        (0, empty)
    );
    let mut seen = Vec::new();
    for e in events[9..].chunks(1) {
        write_events(&mut writer, e);
        seen.push((writer.events_in_files(), writer.bytes_written()));
    }
    // One step per batch of 10 (events 10 and 20), bytes growing with it.
    let steps: Vec<_> = seen.windows(2).filter(|w| w[0] != w[1]).collect();
    assert_eq!(steps.len(), 1, "{seen:?}");
    assert_eq!(seen.first().map(|s| s.0), Some(10));
    assert_eq!(seen.last().map(|s| s.0), Some(20));
    assert!(seen.iter().all(|&(_, b)| b > empty));
    // The count is the files' size: once synced, what is on disk.
    writer.sync().unwrap();
    let on_disk: u64 = writer
        .files()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(writer.bytes_written(), on_disk);
    let files = writer.close().unwrap();
    assert_eq!(files.events, 25);
    assert!(files.bytes_on_disk >= on_disk);
}
