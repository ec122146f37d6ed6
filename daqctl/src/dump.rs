//! `daqctl dump`: prints the events and fragments of data files of either
//! format (HDF5 or artdaq-binary, told apart by their first bytes) the way an
//! artdaq user reads them, and with `--check` verifies them like
//! artdaq-core-demo's `fastVerify` plus a sequence-id census.

use crate::verdict::Exit;
use anyhow::{Context, Result, bail};
use daq_datafile::artdaq_binary::{self, FragmentWalker, HDF5_SIGNATURE, Step};
use daq_datafile::hdf5;
use daq_format::fragment::Fragment;
use daq_format::record::RunSummary;
use daq_format::toy::{self, ToyView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// Samples shown per toy fragment.
const SHOWN_SAMPLES: usize = 8;
/// Problems of one kind listed before the rest are only counted.
const LISTED_PROBLEMS: usize = 10;

/// `daqctl dump`'s arguments.
#[derive(clap::Args)]
pub struct DumpArgs {
    /// Data files, or run-record directories (runs/run_000001: all its data files).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print only the first N events.
    #[arg(long)]
    pub events: Option<u64>,
    /// Print every fragment: id, type, sequence id, timestamp and, for
    /// toy fragments, board, ADC bits, trigger number and the first samples.
    #[arg(long)]
    pub fragments: bool,
    /// Verify every toy sample fits its ADC width (artdaq-core-demo's
    /// fastVerify) and every sequence id from the lowest to the highest
    /// is present exactly once (give every file of the run).
    #[arg(long)]
    pub check: bool,
}

/// `daqctl dump`: exit 1 if a file is cut short or corrupt, or a `--check` fails.
pub fn command(args: &DumpArgs) -> Result<Exit> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let ok = run(args, &mut out)?;
    out.flush()?;
    Ok(Exit::ok_or_failed(ok))
}

/// The format of a data file, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Hdf5,
    ArtdaqBinary,
}

/// One fragment, whichever file it came from.
struct Frag<'a> {
    fragment_id: u16,
    type_code: u8,
    sequence_id: u64,
    timestamp: u64,
    metadata: &'a [u8],
    payload: &'a [u8],
}

impl<'a> From<&'a Fragment> for Frag<'a> {
    fn from(f: &'a Fragment) -> Self {
        Self {
            fragment_id: f.fragment_id(),
            type_code: f.header().fragment_type,
            sequence_id: f.sequence_id(),
            timestamp: f.timestamp(),
            metadata: f.metadata(),
            payload: f.payload(),
        }
    }
}

impl<'a> From<&'a hdf5::ReadFragment> for Frag<'a> {
    fn from(f: &'a hdf5::ReadFragment) -> Self {
        Self {
            fragment_id: f.fragment_id,
            type_code: f.fragment_type,
            sequence_id: f.sequence_id,
            timestamp: f.timestamp,
            metadata: &f.metadata,
            payload: &f.payload,
        }
    }
}

/// Problems of one kind: the first few in full, the rest counted.
#[derive(Default)]
struct Problems {
    listed: Vec<String>,
    total: u64,
}

impl Problems {
    fn push(&mut self, p: impl FnOnce() -> String) {
        self.total += 1;
        if self.listed.len() < LISTED_PROBLEMS {
            self.listed.push(p());
        }
    }
}

/// What the walk over every file found.
#[derive(Default)]
struct Census {
    events: u64,
    fragments: u64,
    by_type: BTreeMap<u8, u64>,
    toy_fragments: u64,
    samples: u64,
    /// Sequence id -> events seen with it.
    seen: HashMap<u64, u32>,
    /// Files cut short or corrupt: the data before is read, the rest is not.
    file_problems: Problems,
    sample_problems: Problems,
    layout_problems: Problems,
}

struct Dumper<'o> {
    out: &'o mut dyn Write,
    args: &'o DumpArgs,
    printed: u64,
    census: Census,
}

impl Dumper<'_> {
    /// Whether more events are wanted: to print, or to check.
    fn wants_more(&self) -> bool {
        self.args.check || self.args.events.is_none_or(|n| self.printed < n)
    }

    fn event(&mut self, seq: u64, complete: Option<bool>, frags: &[Frag<'_>]) -> Result<()> {
        let c = &mut self.census;
        c.events += 1;
        c.fragments += frags.len() as u64;
        *c.seen.entry(seq).or_default() += 1;
        for f in frags {
            *c.by_type.entry(f.type_code).or_default() += 1;
            if f.sequence_id != seq {
                c.layout_problems.push(|| {
                    format!(
                        "event {seq}: fragment {} carries sequence id {}",
                        f.fragment_id, f.sequence_id
                    )
                });
            }
            let Some(width) = toy::adc_bits_of(f.type_code) else {
                continue;
            };
            c.toy_fragments += 1;
            match ToyView::parse(f.metadata, f.payload) {
                Ok(v) => {
                    c.samples += v.samples().len() as u64;
                    if v.metadata.num_adc_bits != width {
                        c.layout_problems.push(|| {
                            format!(
                                "event {seq} fragment {}: {} with num_adc_bits {}, expected {width}",
                                f.fragment_id,
                                toy::type_name(f.type_code),
                                v.metadata.num_adc_bits
                            )
                        });
                    }
                    if let Some((i, value)) = v.first_bad_sample() {
                        c.sample_problems.push(|| {
                            format!(
                                "event {seq} fragment {}: sample {i} = {value} does not fit {} bits",
                                f.fragment_id, v.metadata.num_adc_bits
                            )
                        });
                    }
                }
                Err(e) => c.layout_problems.push(|| {
                    format!(
                        "event {seq} fragment {}: not a toy fragment: {e}",
                        f.fragment_id
                    )
                }),
            }
        }
        if self.args.events.is_some_and(|n| self.printed >= n) {
            return Ok(());
        }
        self.printed += 1;
        let types: Vec<String> = frags.iter().map(|f| toy::type_name(f.type_code)).collect();
        let ts = frags.first().map_or(0, |f| f.timestamp);
        let state = match complete {
            Some(false) => "  INCOMPLETE",
            _ => "",
        };
        writeln!(
            self.out,
            "event seq {seq}  fragments {}  types {}  timestamp {ts}{state}",
            frags.len(),
            types.join(",")
        )?;
        if self.args.fragments {
            for f in frags {
                writeln!(self.out, "  {}", fragment_line(f))?;
            }
        }
        Ok(())
    }
}

/// One fragment as an artdaq user reads it; toy fragments decoded.
fn fragment_line(f: &Frag<'_>) -> String {
    let head = format!(
        "fragment {}  {}  seq {}  timestamp {}",
        f.fragment_id,
        toy::type_name(f.type_code),
        f.sequence_id,
        f.timestamp
    );
    if toy::adc_bits_of(f.type_code).is_none() {
        return format!(
            "{head}  metadata {} B  payload {} B",
            f.metadata.len(),
            f.payload.len()
        );
    }
    match ToyView::parse(f.metadata, f.payload) {
        Ok(v) => {
            let n = v.samples().len();
            let shown: Vec<String> = v
                .samples()
                .take(SHOWN_SAMPLES)
                .map(|s| s.to_string())
                .collect();
            let more = if n > SHOWN_SAMPLES { " ..." } else { "" };
            format!(
                "{head}  board {}  adc_bits {}  trigger {}  distribution {}  samples {n}: {}{more}",
                v.metadata.board_serial_number,
                v.metadata.num_adc_bits,
                v.header.trigger_number,
                v.header.distribution_type,
                shown.join(" ")
            )
        }
        Err(e) => format!("{head}  (bad toy layout: {e})"),
    }
}

/// Data files named by the arguments: files as given, run directories as
/// their summary's `data_files`.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if !p.is_dir() {
            files.push(p.clone());
            continue;
        }
        let summary = p.join("summary.json");
        let text = std::fs::read_to_string(&summary).with_context(|| {
            format!(
                "{} is a directory but not a run record (no readable summary.json)",
                p.display()
            )
        })?;
        let s: RunSummary = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a run summary", summary.display()))?;
        files.extend(s.data_files.iter().map(|f| p.join(f)));
    }
    if files.is_empty() {
        bail!("no data files to dump");
    }
    Ok(files)
}

/// Tells the formats apart by the first bytes; refuses anything else,
/// saying what it found.
fn detect(path: &Path) -> Result<Format> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    let mut first = [0u8; 8];
    let n = first.len().min(len as usize);
    let (first, _) = first.split_at_mut(n);
    file.read_exact_at(first, 0)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if first[..] == HDF5_SIGNATURE[..] {
        return Ok(Format::Hdf5);
    }
    if n == 0 {
        // What an artdaq-binary file of a run without events is.
        return Ok(Format::ArtdaqBinary);
    }
    match artdaq_binary::not_artdaq_binary(first) {
        None => Ok(Format::ArtdaqBinary),
        Some(reason) => bail!(
            "{} is neither an HDF5 data file nor an artdaq-binary file: {reason}",
            path.display()
        ),
    }
}

fn dump_hdf5(d: &mut Dumper<'_>, path: &Path) -> Result<()> {
    let file = hdf5::read_file(path)?;
    writeln!(
        d.out,
        "== {}: HDF5 (daq-events), run {} subrun {}, {} events{}",
        path.display(),
        file.run,
        file.subrun,
        file.events.len(),
        if file.recorded_events.is_none() {
            " (not closed by its writer: the consistent prefix)"
        } else {
            ""
        }
    )?;
    for e in &file.events {
        if !d.wants_more() {
            break;
        }
        let frags: Vec<Frag<'_>> = e.fragments.iter().map(Frag::from).collect();
        d.event(e.sequence_id, Some(e.complete), &frags)?;
    }
    Ok(())
}

fn dump_binary(d: &mut Dumper<'_>, path: &Path) -> Result<()> {
    let mut walker = FragmentWalker::open(path)?;
    writeln!(
        d.out,
        "== {}: artdaq-binary, {} bytes",
        path.display(),
        walker.file_bytes()
    )?;
    // The fragments of the event being gathered (same sequence id).
    let mut pending: Vec<Fragment> = Vec::new();
    let flush = |d: &mut Dumper<'_>, pending: &mut Vec<Fragment>| -> Result<()> {
        if let Some(first) = pending.first() {
            let seq = first.sequence_id();
            let frags: Vec<Frag<'_>> = pending.iter().map(Frag::from).collect();
            d.event(seq, None, &frags)?;
        }
        pending.clear();
        Ok(())
    };
    loop {
        if !d.wants_more() {
            return Ok(());
        }
        match walker.step()? {
            Step::Fragment(f) => {
                if pending
                    .first()
                    .is_some_and(|p| p.sequence_id() != f.sequence_id())
                {
                    flush(d, &mut pending)?;
                }
                pending.push(f);
            }
            Step::End => return flush(d, &mut pending),
            Step::Stop(stop) => {
                flush(d, &mut pending)?;
                let line = format!("{}: {stop}", path.display());
                writeln!(d.out, "!! {line}")?;
                d.census.file_problems.push(|| line);
                return Ok(());
            }
        }
    }
}

/// Dumps the files, then the census (and with `--check` its verdict).
/// Returns whether everything read was whole and, with `--check`, correct.
pub fn run(args: &DumpArgs, out: &mut dyn Write) -> Result<bool> {
    let files = expand(&args.files)?;
    let formats: Vec<Format> = files.iter().map(|f| detect(f)).collect::<Result<_>>()?;
    let mut d = Dumper {
        out,
        args,
        printed: 0,
        census: Census::default(),
    };
    for (path, format) in files.iter().zip(&formats) {
        if !d.wants_more() {
            break;
        }
        match format {
            Format::Hdf5 => dump_hdf5(&mut d, path)?,
            Format::ArtdaqBinary => dump_binary(&mut d, path)?,
        }
    }
    let stopped_early = !args.check && args.events.is_some_and(|n| d.printed >= n);
    let Dumper { out, census, .. } = d;
    let c = census;
    if stopped_early {
        writeln!(out, "(stopped after {} events: --events)", c.events)?;
    }
    let types: Vec<String> = c
        .by_type
        .iter()
        .map(|(t, n)| format!("{} {n}", toy::type_name(*t)))
        .collect();
    let (lo, hi) = (c.seen.keys().min(), c.seen.keys().max());
    writeln!(
        out,
        "{} file{}, {} events, {} fragments ({}){}",
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        c.events,
        c.fragments,
        if types.is_empty() {
            "none".to_string()
        } else {
            types.join(", ")
        },
        match (lo, hi) {
            (Some(lo), Some(hi)) => format!(", sequence ids {lo}..={hi}"),
            _ => String::new(),
        }
    )?;
    let mut ok = c.file_problems.total == 0;
    let report = |out: &mut dyn Write, what: &str, p: &Problems| -> Result<()> {
        if p.total == 0 {
            return Ok(());
        }
        writeln!(out, "{what}: {}", p.total)?;
        for line in &p.listed {
            writeln!(out, "  {line}")?;
        }
        if p.total > p.listed.len() as u64 {
            writeln!(out, "  ... and {} more", p.total - p.listed.len() as u64)?;
        }
        Ok(())
    };
    report(out, "files cut short or corrupt", &c.file_problems)?;
    if !args.check {
        return Ok(ok);
    }
    let mut duplicated = Problems::default();
    let mut missing = Problems::default();
    if let (Some(&lo), Some(&hi)) = (lo, hi) {
        let mut ids: Vec<(&u64, &u32)> = c.seen.iter().filter(|(_, n)| **n > 1).collect();
        ids.sort();
        for (id, n) in ids {
            duplicated.push(|| format!("sequence id {id} in {n} events"));
        }
        for id in lo..=hi {
            if !c.seen.contains_key(&id) {
                missing.push(|| format!("sequence id {id}"));
            }
        }
    }
    report(
        out,
        "check: samples wider than their ADC",
        &c.sample_problems,
    )?;
    report(
        out,
        "check: fragments not as their type says",
        &c.layout_problems,
    )?;
    report(out, "check: sequence ids seen more than once", &duplicated)?;
    report(out, "check: sequence ids missing", &missing)?;
    let problems =
        c.sample_problems.total + c.layout_problems.total + duplicated.total + missing.total;
    if problems == 0 && c.file_problems.total == 0 {
        writeln!(
            out,
            "check OK: {} toy fragments, all {} samples fit their ADC width; {} sequence ids{}, each once",
            c.toy_fragments,
            c.samples,
            c.seen.len(),
            match (lo, hi) {
                (Some(lo), Some(hi)) => format!(" {lo}..={hi}"),
                _ => String::new(),
            }
        )?;
    } else {
        ok = false;
        writeln!(
            out,
            "check FAILED: {} problems",
            problems + c.file_problems.total
        )?;
    }
    Ok(ok)
}
