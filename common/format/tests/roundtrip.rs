//! Property tests of the codecs: fragments (every header field at its
//! limits, metadata and payload sizes, packed fragments, truncation) and
//! events (NetMonOutput encode -> NetMonInput decode), plus the fuzz seed
//! corpora under `fuzz/corpus/`, which these tests generate and check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use daq_format::config::SystemConfig;
use daq_format::fragment::{
    Fragment, FragmentError, FragmentHeader, FragmentSpec, FragmentType, HEADER_BYTES,
    HEADER_VERSION, MAX_ATIME_NS, MAX_SEQUENCE_ID, WORD_BYTES, split_packed,
};
use daq_format::netmon::{Event, EventAux, History, HistoryEntry, NetMonError, decode, encode};
use proptest::prelude::*;
use std::path::PathBuf;
// The tests run on the production allocator, as every binary does.
use daq_alloc as _;

/// A value drawn mostly from the edges of `0..=max`: 0, 1, max-1, max.
fn edgy_u64(max: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1.min(max)),
        Just(max.saturating_sub(1)),
        Just(max),
        0..=max,
    ]
}

fn header() -> impl Strategy<Value = FragmentHeader> {
    (
        (
            edgy_u64(u64::from(u32::MAX)),
            edgy_u64(u64::from(u16::MAX)),
            edgy_u64(u64::from(u8::MAX)),
            edgy_u64(u64::from(u8::MAX)),
        ),
        (
            edgy_u64(MAX_SEQUENCE_ID),
            edgy_u64(u64::from(u16::MAX)),
            edgy_u64(u64::MAX),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            edgy_u64(u64::from(MAX_ATIME_NS)),
            edgy_u64(u64::from(u32::MAX)),
        ),
    )
        .prop_map(
            |((wc, v, t, m), (seq, id, ts), (valid, complete, ns, s))| FragmentHeader {
                word_count: wc as u32,
                version: v as u16,
                fragment_type: t as u8,
                metadata_word_count: m as u8,
                sequence_id: seq,
                fragment_id: id as u16,
                timestamp: ts,
                valid,
                complete,
                atime_ns: ns as u32,
                atime_s: s as u32,
            },
        )
}

fn spec() -> impl Strategy<Value = FragmentSpec> {
    (
        edgy_u64(u64::from(u8::MAX)),
        edgy_u64(MAX_SEQUENCE_ID),
        edgy_u64(u64::from(u16::MAX)),
        edgy_u64(u64::MAX),
    )
        .prop_map(|(t, seq, id, ts)| FragmentSpec {
            fragment_type: FragmentType::from_u8(t as u8),
            sequence_id: seq,
            fragment_id: id as u16,
            timestamp: ts,
        })
}

/// Metadata of 0..=255 words (255 is the field's limit) and a payload of
/// any length, not necessarily whole words.
fn fragment() -> impl Strategy<Value = (FragmentSpec, Vec<u8>, Vec<u8>)> {
    let metadata_words = prop_oneof![Just(0usize), Just(255), 0usize..=255];
    (
        spec(),
        metadata_words.prop_flat_map(|w| proptest::collection::vec(any::<u8>(), w * WORD_BYTES)),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
}

fn built(f: &(FragmentSpec, Vec<u8>, Vec<u8>)) -> Fragment {
    Fragment::build(f.0, &f.1, &f.2).expect("valid fragment")
}

fn history_string() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), ".{0,40}"]
}

fn event() -> impl Strategy<Value = Event> {
    (
        (
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
        ),
        proptest::collection::vec(
            (
                history_string(),
                history_string(),
                history_string(),
                any::<u64>(),
            ),
            0..4,
        ),
        proptest::collection::vec(any::<u16>(), 0..20),
        proptest::collection::vec(fragment(), 0..5),
    )
        .prop_map(
            |((run, subrun, event, sequence_id, timestamp, complete), h, missing, frags)| Event {
                aux: EventAux {
                    run,
                    subrun,
                    event,
                    sequence_id,
                    timestamp,
                    complete,
                },
                history: History {
                    entries: h
                        .into_iter()
                        .map(
                            |(process, release, parameter_set_id, time_ns)| HistoryEntry {
                                process,
                                release,
                                parameter_set_id,
                                time_ns,
                            },
                        )
                        .collect(),
                },
                missing,
                fragments: frags.iter().map(built).collect(),
            },
        )
}

proptest! {
    // Failures are printed with their minimal input; no regression files.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn header_words_round_trip_at_every_field_limit(h in header()) {
        prop_assert_eq!(FragmentHeader::decode(h.encode().unwrap()), h);
    }

    #[test]
    fn built_fragments_parse_back_exactly(f in fragment()) {
        let frag = built(&f);
        let (spec, metadata, payload) = &f;
        let words = 4 + metadata.len() / WORD_BYTES + payload.len().div_ceil(WORD_BYTES);
        prop_assert_eq!(frag.header().word_count as usize, words);
        prop_assert_eq!(frag.len(), words * WORD_BYTES);
        prop_assert_eq!(frag.header().version, HEADER_VERSION);
        let parsed = Fragment::parse(frag.bytes().clone()).unwrap();
        prop_assert_eq!(&parsed, &frag);
        prop_assert_eq!(parsed.kind(), spec.fragment_type);
        prop_assert_eq!(parsed.sequence_id(), spec.sequence_id);
        prop_assert_eq!(parsed.fragment_id(), spec.fragment_id);
        prop_assert_eq!(parsed.timestamp(), spec.timestamp);
        prop_assert_eq!(parsed.metadata(), &metadata[..]);
        prop_assert_eq!(&parsed.payload()[..payload.len()], &payload[..]);
        prop_assert!(parsed.payload()[payload.len()..].iter().all(|&b| b == 0));
        prop_assert_eq!(Fragment::peek_len(frag.bytes()), Some(frag.len()));
    }

    #[test]
    fn every_header_with_a_matching_buffer_parses_back(h in header(), extra in 0usize..64) {
        // word_count and metadata_word_count made consistent with the buffer.
        let mut h = h;
        h.version = HEADER_VERSION;
        let metadata_words = usize::from(h.metadata_word_count);
        let words = 4 + metadata_words + extra;
        h.word_count = words as u32;
        let metadata = vec![0x5A; metadata_words * WORD_BYTES];
        let payload = vec![0xA5; extra * WORD_BYTES];
        let f = Fragment::with_header(h, &metadata, &payload).unwrap();
        let parsed = Fragment::parse(f.bytes().clone()).unwrap();
        prop_assert_eq!(*parsed.header(), h);
        prop_assert_eq!(parsed.metadata().len(), metadata.len());
        prop_assert_eq!(parsed.payload().len(), payload.len());
    }

    #[test]
    fn packed_fragments_split_back_and_a_cut_is_one_error(
        frags in proptest::collection::vec(fragment(), 1..6),
        cut_seed in any::<usize>(),
    ) {
        let frags: Vec<Fragment> = frags.iter().map(built).collect();
        let packed: Vec<u8> = frags.iter().flat_map(|f| f.bytes().to_vec()).collect();
        let got: Vec<_> = split_packed(&packed).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(got.len(), frags.len());
        for (g, f) in got.iter().zip(&frags) {
            prop_assert_eq!(g.header, *f.header());
            prop_assert_eq!(g.bytes, &f.bytes()[..]);
        }
        // Cut anywhere inside the last fragment: the others, then one error.
        let last = frags.last().unwrap().len();
        let cut = packed.len() - last + 1 + cut_seed % (last - 1);
        let r: Vec<_> = split_packed(&packed[..cut]).collect();
        prop_assert_eq!(r.len(), frags.len());
        prop_assert!(r[..frags.len() - 1].iter().all(Result::is_ok));
        prop_assert!(r[frags.len() - 1].is_err());
    }

    #[test]
    fn events_round_trip_through_netmon(e in event()) {
        let b = encode(&e).unwrap();
        prop_assert_eq!(b.len(), e.encoded_len());
        prop_assert_eq!(decode(b.clone()).unwrap(), e);
        // Every strict prefix is an error, never a panic or a short event.
        for cut in [0, b.len() / 2, b.len() - 1] {
            prop_assert!(decode(b.slice(..cut)).is_err());
        }
    }
}

#[test]
fn a_huge_word_count_is_rejected_without_allocating_it() {
    let mut h = FragmentHeader::decode([0; 4]);
    h.version = HEADER_VERSION;
    h.word_count = u32::MAX;
    let f = Fragment::with_header(h, &[], &[]).unwrap();
    assert_eq!(Fragment::peek_len(f.bytes()), Some(u32::MAX as usize * 8));
    assert_eq!(
        Fragment::parse(f.bytes().clone()),
        Err(FragmentError::WordCountMismatch {
            word_count: u32::MAX,
            buffer_words: 4
        })
    );
    let r: Vec<_> = split_packed(f.bytes()).collect();
    assert_eq!(
        r,
        vec![Err(FragmentError::TooShort {
            bytes: HEADER_BYTES,
            expected: u32::MAX as usize * 8
        })]
    );
    // An event that says it carries 2^32-1 fragments of 2^32-1 words.
    let mut e = encode(&sample_event()).unwrap().to_vec();
    let n = e.len() - sample_event().fragment_bytes() - 4;
    e[n..n + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    e[n + 4..n + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode(Bytes::from(e)),
        Err(NetMonError::Truncated {
            field: "fragment",
            needed: u32::MAX as usize * 8,
            left: sample_event().fragment_bytes()
        })
    );
}

#[test]
fn history_strings_and_counts_at_their_16_bit_limits() {
    let mut e = sample_event();
    e.history.entries[0].process = "p".repeat(usize::from(u16::MAX));
    e.missing = (0..u16::MAX).collect();
    let b = encode(&e).unwrap();
    assert_eq!(b.len(), e.encoded_len());
    assert_eq!(decode(b).unwrap(), e);
    e.history.entries[0].process.push('p');
    assert_eq!(
        encode(&e),
        Err(NetMonError::TooMany {
            what: "bytes in a history string",
            count: 65536
        })
    );
    e.history.entries[0].process.clear();
    e.missing.push(0);
    assert_eq!(
        encode(&e),
        Err(NetMonError::TooMany {
            what: "missing fragments",
            count: 65536
        })
    );
}

fn sample_fragment(id: u16, payload: usize) -> Fragment {
    Fragment::build(
        FragmentSpec {
            fragment_type: FragmentType::User(1),
            sequence_id: 7,
            fragment_id: id,
            timestamp: 70,
        },
        &[1; 8],
        &vec![id as u8; payload],
    )
    .unwrap()
}

fn sample_event() -> Event {
    Event {
        aux: EventAux {
            run: 1,
            subrun: 1,
            event: 7,
            sequence_id: 7,
            timestamp: 70,
            complete: true,
        },
        history: History {
            entries: vec![HistoryEntry {
                process: "eventbuilder-0".into(),
                release: "daq 0.1.0".into(),
                parameter_set_id: "0123456789abcdef".into(),
                time_ns: 1_700_000_000_000_000_000,
            }],
        },
        missing: vec![],
        fragments: vec![sample_fragment(0, 40), sample_fragment(1, 3)],
    }
}

// ------------------------------------------------------ fuzz seed corpora

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../fuzz/corpus/{target}"))
}

/// The seeds: a handful of valid inputs per target, each a few hundred bytes.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let meta_limit = Fragment::build(
        FragmentSpec {
            fragment_type: FragmentType::Error,
            sequence_id: MAX_SEQUENCE_ID,
            fragment_id: u16::MAX - 1,
            timestamp: u64::MAX,
        },
        &[0xEE; 255 * WORD_BYTES],
        &[],
    )
    .unwrap();
    let empty = Fragment::build(
        FragmentSpec {
            fragment_type: FragmentType::Empty,
            sequence_id: 0,
            fragment_id: 0,
            timestamp: 0,
        },
        &[],
        &[],
    )
    .unwrap();
    let eod = Fragment::end_of_data(1, 9, 1000).unwrap();
    let mut packed = sample_fragment(0, 40).bytes().to_vec();
    packed.extend_from_slice(eod.bytes());
    let mut incomplete = sample_event();
    incomplete.aux.complete = false;
    incomplete.missing = vec![1, 3];
    incomplete.fragments.truncate(1);
    let bare = Event {
        history: History::default(),
        fragments: vec![],
        ..sample_event()
    };
    let mut small = SystemConfig::default();
    small.topology.boardreaders = 3;
    small.generator.n_adc_counts = 16;
    small.eventbuilder.buffer_count = 4;
    vec![
        ("fragment", "user", sample_fragment(2, 40).bytes().to_vec()),
        ("fragment", "end_of_data", eod.bytes().to_vec()),
        ("fragment", "header_only", empty.bytes().to_vec()),
        ("fragment", "metadata_limit", meta_limit.bytes().to_vec()),
        ("fragment", "packed", packed),
        (
            "netmon",
            "complete",
            encode(&sample_event()).unwrap().to_vec(),
        ),
        (
            "netmon",
            "incomplete",
            encode(&incomplete).unwrap().to_vec(),
        ),
        ("netmon", "bare", encode(&bare).unwrap().to_vec()),
        ("config", "empty", Vec::new()),
        (
            "config",
            "default",
            SystemConfig::default().to_toml().into_bytes(),
        ),
        ("config", "small", small.to_toml().into_bytes()),
    ]
}

/// `DAQ_WRITE_FUZZ_SEEDS=1 cargo test -p daq-format --test roundtrip`
/// rewrites the committed seeds; every run checks them.
#[test]
fn fuzz_seed_corpora_are_valid_inputs() {
    let write = std::env::var_os("DAQ_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let path = corpus_dir(target).join(name);
        if write {
            std::fs::create_dir_all(corpus_dir(target)).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (set DAQ_WRITE_FUZZ_SEEDS=1)", path.display()));
        assert_eq!(committed, bytes, "{} is stale", path.display());
        match target {
            "fragment" => {
                let frags: Vec<_> = split_packed(&committed).collect::<Result<_, _>>().unwrap();
                assert!(!frags.is_empty());
            }
            "netmon" => {
                decode(Bytes::from(committed)).unwrap();
            }
            _ => {
                SystemConfig::from_toml(std::str::from_utf8(&committed).unwrap(), name).unwrap();
            }
        }
    }
}
