//! jemalloc heap profiles read and symbolized in Rust, so that a per-site
//! verdict needs no jeprof: [`parse`] reads the `heap_v2` format (the
//! sampled live objects and bytes of every stack, and the
//! `MAPPED_LIBRARIES` section, a copy of the process's /proc/self/maps),
//! [`Symbolizer`] turns a stack's return addresses into function names
//! (inlined frames included) from the binaries those maps name, with the
//! `addr2line` and `object` crates, and [`site_series`] reduces a run's
//! timed profiles (`heap/<process>.timed/<unix_ms>-<events>.heap`) to live
//! bytes per call site over the run.
//!
//! A call site is the innermost frame of this project's crates on the
//! allocating stack (the allocator, the standard library and the
//! dependencies around it are the means, not the cause); its chain is that
//! frame and this project's callers outward. A stack with no frame of ours
//! is named by its innermost frame outside the allocator.
//!
//! Live bytes are unsampled as jeprof does: jemalloc samples an allocation
//! of `s` bytes with probability `1 - exp(-s / period)`, so a stack's
//! sampled bytes are scaled by `1 / (1 - exp(-(bytes/objects) / period))`.

use crate::analysis::heap::sites::{OWN_SOURCES, is_own};
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// `heap/<process>.timed/`: the profiles a process dumped on its sampler's timer.
pub const TIMED_DIR: &str = "timed";

/// One mapping of `MAPPED_LIBRARIES`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub executable: bool,
    pub path: String,
}

/// One stack of a profile: return addresses innermost first, and its
/// sampled live objects and bytes (`t*`).
#[derive(Clone, Debug, PartialEq)]
pub struct Stack {
    pub addrs: Vec<u64>,
    pub objects: u64,
    pub bytes: u64,
}

/// A parsed `heap_v2` profile.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Mean bytes between samples (`2^lg_prof_sample`).
    pub period: u64,
    pub stacks: Vec<Stack>,
    pub mappings: Vec<Mapping>,
}

impl Stack {
    /// Estimated live bytes of the stack, unsampled.
    pub fn live_bytes(&self, period: u64) -> f64 {
        if self.objects == 0 || self.bytes == 0 || period == 0 {
            return self.bytes as f64;
        }
        let ratio = (self.bytes as f64 / self.objects as f64) / period as f64;
        if ratio < 1e-20 {
            return self.bytes as f64;
        }
        self.bytes as f64 / (1.0 - (-ratio).exp())
    }
}

/// `N: M` of a `t*:` line's counts.
fn counts(s: &str) -> Option<(u64, u64)> {
    let (n, b) = s.split_once(':')?;
    Some((n.trim().parse().ok()?, b.trim().parse().ok()?))
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// Parses a jemalloc `heap_v2` profile. A malformed line is an error
/// naming it; a profile cut short (no `MAPPED_LIBRARIES`) is an error too,
/// since its addresses could not be symbolized.
pub fn parse(text: &str) -> Result<Profile> {
    let mut lines = text.lines().enumerate();
    let period = match lines.next() {
        Some((_, l)) if l.starts_with("heap_v2/") => l
            .trim_start_matches("heap_v2/")
            .trim()
            .parse()
            .with_context(|| format!("bad sample period in {l:?}"))?,
        other => bail!(
            "not a jemalloc heap_v2 profile (first line {:?})",
            other.map(|(_, l)| l)
        ),
    };
    let mut stacks: Vec<Stack> = Vec::new();
    let mut mappings = Vec::new();
    let mut in_maps = false;
    let mut saw_maps = false;
    for (i, line) in lines {
        let n = i + 1;
        if in_maps {
            if let Some(m) = mapping(line) {
                mappings.push(m);
            }
            continue;
        }
        if line.starts_with("MAPPED_LIBRARIES:") {
            in_maps = true;
            saw_maps = true;
        } else if let Some(rest) = line.strip_prefix('@') {
            let addrs = rest
                .split_whitespace()
                .map(|a| hex(a).with_context(|| format!("line {n}: bad address {a:?}")))
                .collect::<Result<Vec<u64>>>()?;
            stacks.push(Stack {
                addrs,
                objects: 0,
                bytes: 0,
            });
        } else if let Some(rest) = line.trim_start().strip_prefix("t*:") {
            // The process total comes before the first stack; a stack's
            // total right after its `@` line.
            let live = rest.split('[').next().unwrap_or_default();
            let (objects, bytes) =
                counts(live).with_context(|| format!("line {n}: bad counts {line:?}"))?;
            if let Some(s) = stacks.last_mut() {
                s.objects = objects;
                s.bytes = bytes;
            }
        } else if !(line.trim().is_empty() || line.trim_start().starts_with('t')) {
            bail!("line {n}: not a heap_v2 line: {line:?}");
        }
    }
    if !saw_maps {
        bail!("the profile has no MAPPED_LIBRARIES section (cut short?)");
    }
    Ok(Profile {
        period,
        stacks,
        mappings,
    })
}

/// One /proc/<pid>/maps line with a file.
fn mapping(line: &str) -> Option<Mapping> {
    let mut cols = line.split_whitespace();
    let (start, end) = cols.next()?.split_once('-')?;
    let perms = cols.next()?;
    let offset = hex(cols.next()?)?;
    let (_dev, _inode) = (cols.next()?, cols.next()?);
    let path: Vec<&str> = cols.collect();
    let path = path.join(" ");
    path.starts_with('/').then_some(Mapping {
        start: hex(start)?,
        end: hex(end)?,
        offset,
        executable: perms.contains('x'),
        path,
    })
}

/// One binary opened for symbolization: its DWARF and symbol table, and
/// its loadable segments (file offset, size, virtual address).
struct Binary {
    loader: addr2line::Loader,
    segments: Vec<(u64, u64, u64)>,
}

impl Binary {
    fn open(path: &Path) -> Result<Self> {
        use object::{Object, ObjectSegment};
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let file =
            object::File::parse(&*data).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let segments = file
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (off, size, s.address())
            })
            .collect();
        let loader =
            addr2line::Loader::new(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Self { loader, segments })
    }

    /// The binary's own address of a file offset.
    fn svma(&self, file_offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(off, size, _)| (*off..off + size).contains(&file_offset))
            .map(|(off, _, vaddr)| file_offset - off + vaddr)
    }

    /// Function names at `svma`, innermost (inlined) first.
    fn frames(&self, svma: u64) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(mut frames) = self.loader.find_frames(svma) {
            while let Ok(Some(f)) = frames.next() {
                if let Some(name) = f.function.as_ref().and_then(|n| n.demangle().ok()) {
                    let file = f.location.as_ref().and_then(|l| l.file);
                    out.push(qualified(&name, file));
                }
            }
        }
        if out.is_empty()
            && let Some(sym) = self.loader.find_symbol(svma)
        {
            out.push(addr2line::demangle_auto(sym.into(), None).into_owned());
        }
        out
    }
}

/// A function's name, qualified from its source `file` when DWARF gave only
/// its bare name and the file is one of this project's: a release build's
/// line tables name an inlined function by its bare name (`inject_leak`),
/// which is `daq_runtime::leak::inject_leak` from
/// `.../common/runtime/src/leak.rs`. (A method keeps no type: `Type::f`
/// reads `module::f`.) Other names are returned as they are.
fn qualified(name: &str, file: Option<&str>) -> String {
    let path = name.split('<').next().unwrap_or(name);
    // A bare closure (`{closure#0}`) folds into the function that holds
    // it, the next frame out: it is left unqualified, so it is not a site.
    let bare = !path.contains("::") && !path.starts_with('{');
    let Some(file) = file.filter(|_| bare) else {
        return name.to_string();
    };
    let Some((rest, krate)) = OWN_SOURCES
        .iter()
        .find_map(|(dir, krate)| Some((file.rsplit_once(dir)?.1, *krate)))
    else {
        return name.to_string();
    };
    let module = rest.strip_suffix(".rs").unwrap_or(rest);
    let module = module.strip_suffix("/mod").unwrap_or(module);
    let mut q = krate.to_string();
    if !matches!(module, "lib" | "main") {
        for part in module.split('/') {
            q.push_str("::");
            q.push_str(part);
        }
    }
    q.push_str("::");
    q.push_str(name);
    q
}

/// Maps the path of a binary on a process's host to a local copy.
pub type Fallback = Box<dyn Fn(&str) -> Option<PathBuf>>;

/// Symbolizes profile addresses from the binaries their mappings name,
/// each opened once; `fallback` maps the path a process ran (on its own
/// host) to a local binary when that path does not exist here.
pub struct Symbolizer {
    binaries: HashMap<String, Option<Binary>>,
    cache: HashMap<(String, u64), Vec<String>>,
    fallback: Fallback,
    /// Binaries that could not be opened, for the report.
    pub missing: Vec<String>,
}

impl Symbolizer {
    pub fn new(fallback: Fallback) -> Self {
        Self {
            binaries: HashMap::new(),
            cache: HashMap::new(),
            fallback,
            missing: Vec::new(),
        }
    }

    /// The function names of a return address (looked up one byte back,
    /// inside the call), innermost first; empty when unknown.
    pub fn frames(&mut self, maps: &[Mapping], addr: u64) -> Vec<String> {
        let Some(m) = maps
            .iter()
            .find(|m| m.executable && (m.start..m.end).contains(&addr))
        else {
            return vec![];
        };
        let file_offset = addr.saturating_sub(1) - m.start + m.offset;
        let key = (m.path.clone(), file_offset);
        if let Some(f) = self.cache.get(&key) {
            return f.clone();
        }
        if !self.binaries.contains_key(&m.path) {
            let local = Path::new(&m.path);
            let path = match local.exists() {
                true => Some(local.to_path_buf()),
                false => (self.fallback)(&m.path),
            };
            let bin = match path.map(|p| Binary::open(&p)) {
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => {
                    self.missing.push(format!("{e:#}"));
                    None
                }
                None => {
                    self.missing.push(format!("{} not found", m.path));
                    None
                }
            };
            self.binaries.insert(m.path.clone(), bin);
        }
        let frames = match self.binaries.get(&m.path) {
            Some(Some(b)) => b.svma(file_offset).map(|a| b.frames(a)).unwrap_or_default(),
            _ => vec![],
        };
        self.cache.insert(key, frames.clone());
        frames
    }

    /// A stack's frames, innermost first, inlined frames expanded.
    pub fn stack(&mut self, maps: &[Mapping], addrs: &[u64]) -> Vec<String> {
        addrs.iter().flat_map(|&a| self.frames(maps, a)).collect()
    }
}

/// Whether a frame is the allocator or the standard library's allocation
/// wrappers (never the name of a site): a C function of jemalloc (no `::`),
/// or Rust's `alloc`, `core` or `std` (also as `<T as alloc::...>`).
fn allocator_frame(f: &str) -> bool {
    let path = f.trim_start_matches('<');
    let path = path
        .split_once(" as ")
        .map_or(path, |(_, trait_path)| trait_path);
    !f.contains("::")
        || ["alloc::", "core::", "std::", "daq_alloc::", "tikv_jemalloc"]
            .iter()
            .any(|p| path.starts_with(p))
}

/// A function's closures fold into it: `f::{{closure}}::{{closure}}` (the
/// symbol table's form) and `f::{closure#0}` (DWARF's) are `f`.
fn without_closures(f: &str) -> &str {
    let mut f = f;
    loop {
        if let Some(outer) = f.strip_suffix("::{{closure}}") {
            f = outer;
        } else if let Some((outer, last)) = f.rsplit_once("::{closure#")
            && last.ends_with('}')
            && last
                .trim_end_matches('}')
                .bytes()
                .all(|b| b.is_ascii_digit())
        {
            f = outer;
        } else {
            return f;
        }
    }
}

/// The call site of a symbolized stack and its chain (this project's
/// frames from the site outward, closures folded into their functions, at
/// most 6).
pub fn site_of(frames: &[String]) -> (String, Vec<String>) {
    let own = |f: &String| is_own(f);
    if frames.iter().any(own) {
        let mut chain: Vec<String> = Vec::new();
        for f in frames.iter().filter(|f| own(f)) {
            let f = without_closures(f);
            if chain.last().map(String::as_str) != Some(f) {
                chain.push(f.to_string());
            }
            if chain.len() == 6 {
                break;
            }
        }
        let site = chain.first().cloned().unwrap_or_default();
        return (site, chain);
    }
    let name = frames
        .iter()
        .find(|f| !allocator_frame(f))
        .or(frames.first())
        .cloned()
        .unwrap_or_else(|| "(unsymbolized)".into());
    (name.clone(), vec![name])
}

/// One timed profile of a run record: when, after how many events.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedFile {
    pub unix_ms: u64,
    pub events: u64,
    pub path: PathBuf,
}

/// The timed profiles of `process` in a record's heap directory, in time
/// order (none when the soak ran without profiling).
pub fn timed_files(heap_dir: &Path, process: &str) -> Result<Vec<TimedFile>> {
    let dir = heap_dir.join(format!("{process}.{TIMED_DIR}"));
    if !dir.exists() {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e?.path();
        let Some((t, ev)) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".heap"))
            .and_then(|n| n.split_once('-'))
        else {
            continue;
        };
        let (Ok(unix_ms), Ok(events)) = (t.parse(), ev.parse()) else {
            continue;
        };
        out.push(TimedFile {
            unix_ms,
            events,
            path,
        });
    }
    out.sort_by_key(|f| f.unix_ms);
    Ok(out)
}

/// Live bytes of one site in one profile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SitePoint {
    pub unix_ms: u64,
    pub events: u64,
    pub bytes: f64,
}

/// One call site over a run.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteSeries {
    /// Its chain at its largest stack in the last profile (innermost first).
    pub chain: Vec<String>,
    /// One point per profile (0 bytes where the site had none).
    pub points: Vec<SitePoint>,
}

/// A timed profile: (unix ms, events handled, the profile).
pub type Timed = (u64, u64, Profile);

/// Live bytes per call site over a run's profiles (in time order).
pub fn site_series(
    profiles: &[(u64, u64, Profile)],
    sym: &mut Symbolizer,
) -> BTreeMap<String, SiteSeries> {
    let mut out: BTreeMap<String, SiteSeries> = BTreeMap::new();
    let mut best: HashMap<String, f64> = HashMap::new();
    for (i, (unix_ms, events, p)) in profiles.iter().enumerate() {
        let mut here: HashMap<String, f64> = HashMap::new();
        for s in &p.stacks {
            let frames = sym.stack(&p.mappings, &s.addrs);
            let (site, chain) = site_of(&frames);
            let bytes = s.live_bytes(p.period);
            *here.entry(site.clone()).or_default() += bytes;
            let e = out.entry(site.clone()).or_insert_with(|| SiteSeries {
                chain: chain.clone(),
                points: Vec::new(),
            });
            // The chain of the site's largest stack, latest profile first.
            let last = i + 1 == profiles.len();
            let b = best.entry(site).or_insert(f64::MIN);
            if bytes > *b || (last && bytes > 0.0 && *b < 0.0) {
                *b = bytes;
                e.chain = chain;
            }
        }
        for (site, series) in out.iter_mut() {
            series.points.push(SitePoint {
                unix_ms: *unix_ms,
                events: *events,
                bytes: here.get(site).copied().unwrap_or(0.0),
            });
        }
    }
    // A site first seen in a later profile had 0 bytes in the earlier ones.
    let n = profiles.len();
    for series in out.values_mut() {
        let missing = n - series.points.len();
        if missing > 0 {
            let zeros = profiles.iter().take(missing).map(|(t, e, _)| SitePoint {
                unix_ms: *t,
                events: *e,
                bytes: 0.0,
            });
            let mut pts: Vec<SitePoint> = zeros.collect();
            pts.append(&mut series.points);
            series.points = pts;
        }
    }
    out
}

/// Reads and parses the timed profiles of `process` (a profile that does
/// not parse, cut short by a crash, is left out and counted).
pub fn load_timed(heap_dir: &Path, process: &str) -> Result<(Vec<Timed>, usize)> {
    let mut out = Vec::new();
    let mut bad = 0;
    for f in timed_files(heap_dir, process)? {
        let text = std::fs::read_to_string(&f.path)
            .with_context(|| format!("reading {}", f.path.display()))?;
        match parse(&text) {
            Ok(p) => out.push((f.unix_ms, f.events, p)),
            Err(_) => bad += 1,
        }
    }
    Ok((out, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("testdata/aggregator-leak.heap");

    #[test]
    fn a_real_dump_parses() {
        let p = parse(FIXTURE).expect("parses");
        assert_eq!(p.period, 4096);
        assert!(p.stacks.len() > 10, "{}", p.stacks.len());
        assert!(p.stacks.iter().all(|s| !s.addrs.is_empty()));
        assert!(p.stacks.iter().any(|s| s.bytes > 0));
        let exe: Vec<&Mapping> = p
            .mappings
            .iter()
            .filter(|m| m.executable && m.path.ends_with("/aggregator"))
            .collect();
        assert_eq!(exe.len(), 1, "{:?}", p.mappings);
        assert!(exe[0].offset > 0);
    }

    #[test]
    fn malformed_and_cut_short_profiles_are_errors() {
        assert!(parse("hello\n").is_err());
        let cut = FIXTURE.split("MAPPED_LIBRARIES:").next().expect("head");
        let e = parse(cut).expect_err("cut short");
        assert!(e.to_string().contains("MAPPED_LIBRARIES"), "{e}");
        let bad = FIXTURE.replacen("@ 0x", "@ 0xzz", 1);
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn unsampling_scales_small_objects_up_and_large_ones_not() {
        // 10 sampled 64-byte objects at a 4 KiB period stand for ~64x more.
        let small = Stack {
            addrs: vec![],
            objects: 10,
            bytes: 640,
        };
        let est = small.live_bytes(4096);
        assert!((est / 640.0 - 64.5).abs() < 1.0, "{est}");
        // A 1 MiB object is always sampled.
        let big = Stack {
            addrs: vec![],
            objects: 1,
            bytes: 1 << 20,
        };
        assert!((big.live_bytes(4096) - (1u64 << 20) as f64).abs() < 1.0);
    }

    #[test]
    fn a_bare_inlined_name_is_qualified_from_its_source_file() {
        let q = |n, f| qualified(n, Some(f));
        assert_eq!(
            q("inject_leak", "/work/main/common/runtime/src/leak.rs"),
            "daq_runtime::leak::inject_leak"
        );
        assert_eq!(
            q("decode_legacy", "common/format/src/netmon.rs"),
            "daq_format::netmon::decode_legacy"
        );
        assert_eq!(
            q("serve<R>", "/x/common/runtime/src/transport/inbound.rs"),
            "daq_runtime::transport::inbound::serve<R>"
        );
        assert_eq!(
            q("send", "/x/common/runtime/src/transport/mod.rs"),
            "daq_runtime::transport::send"
        );
        assert_eq!(q("main", "/x/aggregator/src/main.rs"), "aggregator::main");
        // Qualified already, or not ours: as it is.
        assert_eq!(
            q("daq_shm::link::f", "/x/common/shm/src/link.rs"),
            "daq_shm::link::f"
        );
        assert_eq!(
            q(
                "try_allocate_in<alloc::alloc::Global>",
                "/rustc/abc/library/alloc/src/raw_vec/mod.rs"
            ),
            "try_allocate_in<alloc::alloc::Global>"
        );
        assert_eq!(qualified("f", None), "f");
        assert_eq!(
            q("{closure#0}", "/x/common/format/src/netmon.rs"),
            "{closure#0}"
        );
        assert_eq!(
            without_closures("daq_format::netmon::decode_history::{closure#0}::{closure#12}"),
            "daq_format::netmon::decode_history"
        );
        assert_eq!(without_closures("a::f::{{closure}}"), "a::f");
    }

    #[test]
    fn the_site_is_the_innermost_frame_of_ours_with_its_callers() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (site, chain) = site_of(&f(&[
            "_rjem_je_prof_backtrace",
            "alloc::raw_vec::RawVec<T>::allocate_in",
            "daq_runtime::leak::inject_leak",
            "aggregator::core::ingest::{{closure}}",
            "aggregator::core::ingest",
            "tokio::runtime::task::harness",
            "daq_runtime::stage::main",
        ]));
        assert_eq!(site, "daq_runtime::leak::inject_leak");
        assert_eq!(
            chain,
            f(&[
                "daq_runtime::leak::inject_leak",
                "aggregator::core::ingest",
                "daq_runtime::stage::main"
            ])
        );
        let (site, _) = site_of(&f(&[
            "_rjem_malloc",
            "irallocx_prof",
            "alloc::alloc",
            "<T as alloc::slice::<impl [T]>::to_vec_in::ConvertVec>::to_vec",
            "tokio::io::Buf::new",
        ]));
        assert_eq!(site, "tokio::io::Buf::new");
    }

    #[inline(never)]
    fn marker_function_for_the_symbolizer() -> usize {
        std::hint::black_box(7)
    }

    #[test]
    fn an_address_of_this_test_binary_symbolizes_to_its_function() {
        // The maps of this very process, as a profile's MAPPED_LIBRARIES.
        let maps_text = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let maps: Vec<Mapping> = maps_text.lines().filter_map(mapping).collect();
        assert_eq!(marker_function_for_the_symbolizer(), 7);
        let addr = marker_function_for_the_symbolizer as *const () as usize as u64;
        let mut sym = Symbolizer::new(Box::new(|_| None));
        // A return address one past a byte of the function.
        let frames = sym.frames(&maps, addr + 2);
        assert!(
            frames
                .iter()
                .any(|f| f.ends_with("tests::marker_function_for_the_symbolizer")),
            "{frames:?} {:?}",
            sym.missing
        );
        // Cached: the same answer again; an address in no mapping: nothing.
        assert_eq!(sym.frames(&maps, addr + 2), frames);
        assert!(sym.frames(&maps, 8).is_empty());
    }
}
