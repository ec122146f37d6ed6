//! Each stage of the data path alone, fed from memory on one thread: the
//! boardreader's generator (per distribution), the fragment codec, the
//! event serializer (daq-format's NetMonOutput/NetMonInput) and the
//! aggregator's data-file writers (HDF5 and artdaq-binary). Rates are per
//! core: payload bytes over the thread's CPU time.

use super::cpu::Measured;
use super::cpu::thread_cpu;
use anyhow::{Context, Result, anyhow};
use bytes::BytesMut;
use daq_datafile::artdaq_binary::BinaryWriter;
use daq_datafile::hdf5::{EventView, FileAttributes, FragmentView, RunWriter, WriterOptions};
use daq_format::config::{Distribution, GeneratorConfig};
use daq_format::fragment::{Fragment, FragmentSpec, FragmentType, split_packed};
use daq_format::generator::{ARENA_BYTES, ToySimulator};
use daq_format::netmon::{self, Event, EventAux, History, HistoryEntry};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

/// Fragments per event in the serializer and writer stages: the demo's two
/// boardreaders.
pub const BOARDS: u16 = 2;
/// The pool of distinct events fed to the serializer and the writers holds
/// at most this many bytes (and at most `MAX_POOL_EVENTS` events): larger
/// than the caches, small enough to make in a moment.
const POOL_BYTES: u64 = 8 << 20;
const MAX_POOL_EVENTS: u64 = 4096;

/// One stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Generator(Distribution),
    /// `Fragment::build`: header, metadata and payload into one buffer.
    FragmentEncode,
    /// `Fragment::parse`: validation of a received fragment (no copy).
    FragmentParse,
    /// `netmon::encode`: an event of two fragments into one buffer.
    EventEncode,
    /// `netmon::decode`: the event back (fragments slice the buffer).
    EventDecode,
    /// The aggregator's HDF5 writer, one event at a time, closed (fsync) at the end.
    WriterHdf5,
    /// The aggregator's artdaq-binary writer, batches of 256 events, closed (fsync) at the end.
    WriterArtdaqBinary,
    /// The same with `aggregator.direct_io` (O_DIRECT from an aligned buffer).
    WriterArtdaqBinaryDirect,
}

impl Stage {
    pub const ALL: [Stage; 10] = [
        Stage::Generator(Distribution::Uniform),
        Stage::Generator(Distribution::Gaussian),
        Stage::Generator(Distribution::Monotonic),
        Stage::FragmentEncode,
        Stage::FragmentParse,
        Stage::EventEncode,
        Stage::EventDecode,
        Stage::WriterHdf5,
        Stage::WriterArtdaqBinary,
        Stage::WriterArtdaqBinaryDirect,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Generator(Distribution::Uniform) => "generator uniform",
            Stage::Generator(Distribution::Gaussian) => "generator gaussian",
            Stage::Generator(Distribution::Monotonic) => "generator monotonic",
            Stage::FragmentEncode => "fragment encode",
            Stage::FragmentParse => "fragment parse",
            Stage::EventEncode => "event serialize",
            Stage::EventDecode => "event deserialize",
            Stage::WriterHdf5 => "writer hdf5",
            Stage::WriterArtdaqBinary => "writer artdaq-binary",
            Stage::WriterArtdaqBinaryDirect => "writer artdaq-binary direct",
        }
    }

    /// What one item is: a fragment or an event of [`BOARDS`] fragments.
    pub fn item(self) -> &'static str {
        match self {
            Stage::Generator(_) | Stage::FragmentEncode | Stage::FragmentParse => "fragments",
            _ => "events",
        }
    }

    /// Runs the stage on fragments of `n_adc_counts` samples for about
    /// `duration`; the writers write into a new directory under `dir`,
    /// removed afterwards.
    pub fn measure(self, n_adc_counts: u32, duration: Duration, dir: &Path) -> Result<Measured> {
        match self {
            Stage::Generator(d) => generator(n_adc_counts, d, duration),
            Stage::FragmentEncode => fragment_encode(n_adc_counts, duration),
            Stage::FragmentParse => fragment_parse(n_adc_counts, duration),
            Stage::EventEncode => event_encode(n_adc_counts, duration),
            Stage::EventDecode => event_decode(n_adc_counts, duration),
            Stage::WriterHdf5 => writer_hdf5(n_adc_counts, duration, dir),
            Stage::WriterArtdaqBinary => writer_binary(n_adc_counts, duration, dir, false),
            Stage::WriterArtdaqBinaryDirect => writer_binary(n_adc_counts, duration, dir, true),
        }
    }
}

fn generator_config(n_adc_counts: u32, distribution: Distribution) -> GeneratorConfig {
    GeneratorConfig {
        n_adc_counts,
        distribution,
        throttle_us: 0,
        ..GeneratorConfig::default()
    }
}

/// When a stage's measurement started, on the wall and on this thread's
/// CPU clock.
struct Clock {
    wall: Instant,
    cpu: Duration,
}

impl Clock {
    fn start() -> Self {
        Self {
            wall: Instant::now(),
            cpu: thread_cpu(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.wall.elapsed()
    }

    /// `bytes` and `items` handled since the start.
    fn measured(&self, bytes: u64, items: u64) -> Measured {
        Measured {
            bytes,
            items,
            wall: self.wall.elapsed(),
            cpu: Some(thread_cpu().saturating_sub(self.cpu)),
        }
    }
}

/// Times `step` (which returns the payload bytes it handled) until
/// `duration` has passed, at least once.
fn timed(duration: Duration, mut step: impl FnMut(u64) -> Result<u64>) -> Result<Measured> {
    let clock = Clock::start();
    let (mut bytes, mut items) = (0u64, 0u64);
    while items == 0 || clock.elapsed() < duration {
        bytes += step(items)?;
        items += 1;
    }
    Ok(clock.measured(bytes, items))
}

fn generator(n_adc_counts: u32, d: Distribution, duration: Duration) -> Result<Measured> {
    // What the boardreader's loop does: whole fragments carved out of an
    // arena, generated in place.
    let g = ToySimulator::new(0, &generator_config(n_adc_counts, d));
    let mut arena = BytesMut::new();
    timed(duration, |i| {
        let f = g
            .fragment_bytes_in(i + 1, &mut arena, ARENA_BYTES)
            .context("generating a fragment")?;
        Ok(black_box(f).len() as u64)
    })
}

/// A fragment of board `board` for `seq`, from the uniform generator.
fn toy_fragment(n_adc_counts: u32, board: u16, seq: u64) -> Result<Fragment> {
    ToySimulator::new(
        board,
        &generator_config(n_adc_counts, Distribution::Uniform),
    )
    .fragment(seq)
    .context("generating a fragment")
}

fn fragment_encode(n_adc_counts: u32, duration: Duration) -> Result<Measured> {
    let f = toy_fragment(n_adc_counts, 0, 1)?;
    let (metadata, payload) = (f.metadata().to_vec(), f.payload().to_vec());
    timed(duration, |i| {
        let spec = FragmentSpec {
            fragment_type: FragmentType::User(2),
            sequence_id: i + 1,
            fragment_id: 0,
            timestamp: i + 1,
        };
        let built = Fragment::build(spec, &metadata, &payload).context("building a fragment")?;
        Ok(black_box(built).len() as u64)
    })
}

fn fragment_parse(n_adc_counts: u32, duration: Duration) -> Result<Measured> {
    let bytes = toy_fragment(n_adc_counts, 0, 1)?.into_bytes();
    timed(duration, |_| {
        let f = Fragment::parse(black_box(bytes.clone())).context("parsing a fragment")?;
        Ok(f.len() as u64)
    })
}

/// Distinct events of [`BOARDS`] toy fragments each, as many as fit
/// [`POOL_BYTES`] (at least one). Monotonic samples: the fastest to make,
/// and the codec and the writers do not look at them.
fn pool(n_adc_counts: u32) -> Result<Vec<Event>> {
    let one = toy_fragment(n_adc_counts, 0, 1)?.len() as u64 * u64::from(BOARDS);
    let n = (POOL_BYTES / one.max(1)).clamp(1, MAX_POOL_EVENTS);
    let mut gens: Vec<ToySimulator> = (0..BOARDS)
        .map(|b| ToySimulator::new(b, &generator_config(n_adc_counts, Distribution::Monotonic)))
        .collect();
    (1..=n)
        .map(|seq| {
            let fragments = gens
                .iter_mut()
                .map(|g| g.fragment(seq))
                .collect::<Result<Vec<_>, _>>()
                .context("generating a fragment")?;
            Ok(Event {
                aux: EventAux {
                    run: 1,
                    subrun: 1,
                    event: seq,
                    sequence_id: seq,
                    timestamp: seq,
                    complete: true,
                },
                history: History {
                    entries: vec![HistoryEntry {
                        process: "eventbuilder-0".into(),
                        release: env!("CARGO_PKG_VERSION").into(),
                        parameter_set_id: "bench".into(),
                        time_ns: 0,
                    }],
                },
                missing: vec![],
                fragments,
            })
        })
        .collect()
}

fn event_encode(n_adc_counts: u32, duration: Duration) -> Result<Measured> {
    let events = pool(n_adc_counts)?;
    let mut next = events.iter().cycle();
    timed(duration, |_| {
        let e = next
            .next()
            .ok_or_else(|| anyhow!("no event to serialize"))?;
        let b = netmon::encode(e).context("serializing an event")?;
        black_box(b);
        Ok(e.fragment_bytes() as u64)
    })
}

fn event_decode(n_adc_counts: u32, duration: Duration) -> Result<Measured> {
    let encoded = pool(n_adc_counts)?
        .iter()
        .map(|e| Ok((netmon::encode(e)?, e.fragment_bytes() as u64)))
        .collect::<Result<Vec<_>, netmon::NetMonError>>()
        .context("serializing an event")?;
    let mut next = encoded.iter().cycle();
    timed(duration, |_| {
        let (b, bytes) = next
            .next()
            .ok_or_else(|| anyhow!("no event to deserialize"))?;
        let e = netmon::decode(b.clone()).context("deserializing an event")?;
        black_box(e);
        Ok(*bytes)
    })
}

/// The pool's events as they sit in a shared-memory buffer: fragments back to back.
fn packed_pool(n_adc_counts: u32) -> Result<Vec<Vec<u8>>> {
    Ok(pool(n_adc_counts)?
        .into_iter()
        .map(|e| {
            e.fragments
                .iter()
                .flat_map(|f| f.bytes().iter().copied())
                .collect()
        })
        .collect())
}

/// A fresh directory for one writer measurement.
fn scratch(dir: &Path, what: &str) -> Result<std::path::PathBuf> {
    let d = dir.join(format!("{what}-{}", std::process::id()));
    if d.exists() {
        std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
    }
    Ok(d)
}

fn writer_hdf5(n_adc_counts: u32, duration: Duration, dir: &Path) -> Result<Measured> {
    let events = packed_pool(n_adc_counts)?;
    let dir = scratch(dir, "writer-hdf5")?;
    let attrs = FileAttributes {
        run: 1,
        subrun: 1,
        process: "bench".into(),
        config_toml: String::new(),
        software_version: env!("CARGO_PKG_VERSION").into(),
    };
    let clock = Clock::start();
    let mut w = RunWriter::create(&dir, attrs, WriterOptions::default())
        .context("creating the hdf5 writer")?;
    let mut frags = Vec::with_capacity(usize::from(BOARDS));
    let (mut bytes, mut items) = (0u64, 0u64);
    let mut next = events.iter().cycle();
    while items == 0 || clock.elapsed() < duration {
        let e = next.next().ok_or_else(|| anyhow!("no event to write"))?;
        frags.clear();
        for f in split_packed(e) {
            let f = f.context("splitting an event")?;
            frags.push(FragmentView {
                fragment_id: f.header.fragment_id,
                fragment_type: f.header.fragment_type,
                sequence_id: items + 1,
                timestamp: items + 1,
                metadata: f.metadata(),
                payload: f.payload(),
            });
        }
        let seq = items + 1;
        let view = EventView {
            run: 1,
            subrun: 1,
            event: seq,
            sequence_id: seq,
            timestamp: seq,
            complete: true,
            fragments: &frags,
        };
        w.append(&view).context("appending to the hdf5 file")?;
        bytes += e.len() as u64;
        items += 1;
    }
    w.close().context("closing the hdf5 file")?;
    let m = clock.measured(bytes, items);
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(m)
}

fn writer_binary(
    n_adc_counts: u32,
    duration: Duration,
    dir: &Path,
    direct_io: bool,
) -> Result<Measured> {
    const BATCH: usize = 256;
    let events = packed_pool(n_adc_counts)?;
    let dir = scratch(dir, "writer-binary")?;
    let clock = Clock::start();
    let mut w = BinaryWriter::create_with(&dir, 1, "bench", 1 << 30, direct_io)
        .context("creating the binary writer")?;
    let (mut bytes, mut items) = (0u64, 0u64);
    let mut batches = events.chunks(BATCH).cycle();
    while items == 0 || clock.elapsed() < duration {
        let batch = batches.next().ok_or_else(|| anyhow!("no event to write"))?;
        w.write_batch(batch.iter().map(Vec::as_slice))
            .context("writing an artdaq-binary batch")?;
        bytes += batch.iter().map(|e| e.len() as u64).sum::<u64>();
        items += batch.len() as u64;
    }
    let files = w.close().context("closing the binary file")?;
    if files.events != items {
        return Err(anyhow!(
            "the binary writer wrote {} events of {items}",
            files.events
        ));
    }
    let m = clock.measured(bytes, items);
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(m)
}
