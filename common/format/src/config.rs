//! The system configuration: one TOML file describes a whole DAQ system.
//!
//! Every field has a default, so an empty file (or no file) is the 2x2x2 demo
//! on 127.0.0.1. Unknown fields are errors, and [`SystemConfig::validate`]
//! rejects impossible values with the field's name.

use crate::process::{Kind, ProcessId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config {origin}: {source}")]
    Parse {
        origin: String,
        source: Box<toml::de::Error>,
    },
    #[error("invalid config value {field} = {value}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("invalid config [addresses]: {reason}")]
    Addresses { reason: String },
}

/// A whole system: topology, generator, transfer, builder and writer settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemConfig {
    /// Partition number; keeps the resources of systems sharing a host apart.
    pub partition: u32,
    /// Address every process binds to (port 0: the OS picks, the process reports it).
    pub host: String,
    /// How many processes of each kind.
    pub topology: Topology,
    /// The boardreaders' fragment generator (ToySimulator).
    pub generator: GeneratorConfig,
    /// Batching, queueing and the end-of-data handshake on both hops.
    pub transfer: TransferConfig,
    /// The eventbuilders' shared-memory event store.
    pub eventbuilder: EventBuilderConfig,
    /// The aggregators' disk writer.
    pub aggregator: AggregatorConfig,
    /// Heap instrumentation of every process.
    pub heap: HeapConfig,
    /// Where each process of the topology already runs (`boardreader-0 =
    /// "10.77.0.11:7000"`), started by someone else (systemd, Kubernetes):
    /// daqctl then spawns nothing and connects. Absent (the default): daqctl
    /// spawns every process locally on `host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<BTreeMap<String, String>>,
    /// A leak of known size injected on purpose (calibrates the leak detector); off by default.
    pub leak: LeakConfig,
}

/// A leak injected on purpose: the processes of one kind orphan
/// `inject_bytes_per_event` bytes of heap per event they handle (real
/// allocations, never freed, in `daq_runtime::leak::inject_leak`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeakConfig {
    /// Bytes orphaned per event handled; 0 = no injected leak (the default).
    pub inject_bytes_per_event: u64,
    /// The processes that leak: boardreader, eventbuilder (the default) or aggregator.
    pub inject_in: Kind,
}

/// Largest injected leak per event: keeps a mistyped value from eating the host.
pub const MAX_INJECT_BYTES_PER_EVENT: u64 = 1 << 20;

impl Default for LeakConfig {
    fn default() -> Self {
        Self {
            inject_bytes_per_event: 0,
            inject_in: Kind::EventBuilder,
        }
    }
}

impl LeakConfig {
    /// Bytes a process of `kind` orphans per event handled (0: none).
    pub fn bytes_per_event_in(&self, kind: Kind) -> u64 {
        if kind == self.inject_in {
            self.inject_bytes_per_event
        } else {
            0
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeapConfig {
    /// Period of the heap sampler while running (rows in heap/<process>.csv); 0 = off.
    pub sample_interval_ms: u64,
}

impl Default for HeapConfig {
    fn default() -> Self {
        Self {
            sample_interval_ms: 1_000,
        }
    }
}

/// How aggregators deserialize events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMonInput {
    /// Owns what it deserializes (the corrected path).
    #[default]
    Fixed,
    /// Reproduces the original artdaq bug on purpose: per event the history
    /// is deserialized into its own heap allocation, a copy is kept and the
    /// original is orphaned (a real leak, for validating the instrumentation).
    Legacy,
}

impl NetMonInput {
    pub fn as_str(self) -> &'static str {
        match self {
            NetMonInput::Fixed => "fixed",
            NetMonInput::Legacy => "legacy",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topology {
    /// Boardreaders; each contributes one fragment (its fragment id = its rank) per event.
    pub boardreaders: u16,
    /// Eventbuilders; sequence id `s` goes to eventbuilder `s % eventbuilders`.
    pub eventbuilders: u16,
    /// Disk-writing aggregators; 0 makes the eventbuilders discard built events.
    pub aggregators: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToyFragmentType {
    /// 12-bit ADC samples.
    Toy1,
    /// 14-bit ADC samples.
    Toy2,
    /// Even boards TOY1, odd boards TOY2 (artdaq-demo's two-board demo).
    Alternate,
}

/// The aggregators' data-file format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// Columnar HDF5 (`*.h5`), read by h5py.
    #[default]
    Hdf5,
    /// artdaq's `BinaryFileOutput` layout (`*.artdaq.bin`): every fragment's
    /// bytes back to back, no file header.
    ArtdaqBinary,
}

impl DataFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DataFormat::Hdf5 => "hdf5",
            DataFormat::ArtdaqBinary => "artdaq-binary",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Uniform,
    Gaussian,
    Monotonic,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    /// TOY1 (12-bit ADC), TOY2 (14-bit ADC), or alternate (even boards TOY1, odd TOY2).
    pub fragment_type: ToyFragmentType,
    /// ADC samples per fragment.
    pub n_adc_counts: u32,
    /// Pause between events in microseconds; 100000 = 10 Hz, 0 = as fast as possible.
    pub throttle_us: u64,
    /// Shape of the ADC values.
    pub distribution: Distribution,
    /// Seed; boardreader `i` uses `random_seed + i`.
    pub random_seed: u64,
    /// First sequence id of a run.
    pub initial_sequence_id: u64,
    /// timestamp = sequence id x this factor.
    pub timestamp_scale_factor: u64,
    /// Stop generating after this many events in a run; 0 = no limit.
    pub max_events: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransferConfig {
    /// Largest batch of fragments or events in one gRPC message.
    pub batch_max_items: usize,
    /// A batch is sent once it holds this many bytes, so that a queue of
    /// `queue_batches` batches holds at most queue_batches x batch_max_bytes.
    pub batch_max_bytes: usize,
    /// A partial batch is sent after this long.
    pub batch_max_delay_ms: u64,
    /// Batches queued per destination before the producer blocks (backpressure: block, never drop).
    pub queue_batches: usize,
    /// At stop, a receiver gives up on a source that sent nothing for this long; the shortfall is an error.
    pub end_of_data_timeout_ms: u64,
    /// How long a sender tries to reach its destinations at start.
    pub connect_timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventBuilderConfig {
    /// Buffers in the shared-memory event store; one event is assembled per buffer.
    pub buffer_count: u32,
    /// Bytes per buffer: room for every fragment of one event.
    pub buffer_bytes: u64,
    /// A buffer untouched this long is released downstream as incomplete.
    pub stale_timeout_ms: u64,
    /// Largest fragment accepted; larger ones are rejected and counted. 0 = buffer_bytes / boardreaders.
    pub max_fragment_bytes: u64,
}

impl Default for EventBuilderConfig {
    fn default() -> Self {
        Self {
            buffer_count: 256,
            buffer_bytes: 64 * 1024,
            stale_timeout_ms: 5_000,
            max_fragment_bytes: 0,
        }
    }
}

impl SystemConfig {
    /// The largest fragment an eventbuilder accepts.
    pub fn max_fragment_bytes(&self) -> u64 {
        match self.eventbuilder.max_fragment_bytes {
            0 => self.eventbuilder.buffer_bytes / u64::from(self.topology.boardreaders.max(1)),
            n => n,
        }
    }

    /// Bytes of one ToySimulator fragment: header, one metadata word, an
    /// 8-byte header and the samples, padded to whole words.
    pub fn generator_fragment_bytes(&self) -> u64 {
        32 + 8 + (8 + 2 * u64::from(self.generator.n_adc_counts)).div_ceil(8) * 8
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorConfig {
    /// Write data files; false receives and discards.
    pub write_data: bool,
    /// Data-file format: "hdf5" (default) or "artdaq-binary" (artdaq's BinaryFileOutput layout).
    pub format: DataFormat,
    /// Event deserialization: "fixed" (default) or "legacy" (leaks on purpose).
    pub netmon_input: NetMonInput,
    /// Buffers in the shared-memory store events are copied into before writing.
    pub buffer_count: u32,
    /// Bytes per buffer: room for one event's fragments.
    pub buffer_bytes: u64,
    /// Diagnostic: the disk writer sleeps this long per event (to exercise backpressure); 0 = off.
    pub write_delay_us: u64,
    /// Deflate level for data files, 0 = uncompressed, 1-9.
    pub deflate_level: u8,
    /// Events per write: buffered before one append to the HDF5 datasets; at most this many per artdaq-binary write.
    pub batch_events: usize,
    /// Start a new file when one exceeds this many bytes; 0 = one file per run.
    pub max_file_bytes: u64,
}

impl Default for SystemConfig {
    fn default() -> Self {
        Self {
            partition: 0,
            host: "127.0.0.1".into(),
            topology: Topology::default(),
            generator: GeneratorConfig::default(),
            transfer: TransferConfig::default(),
            eventbuilder: EventBuilderConfig::default(),
            aggregator: AggregatorConfig::default(),
            heap: HeapConfig::default(),
            addresses: None,
            leak: LeakConfig::default(),
        }
    }
}

impl Topology {
    /// Every process of the topology, upstream first, in rank order.
    pub fn processes(&self) -> Vec<ProcessId> {
        let mut out = Vec::new();
        for (kind, n) in [
            (Kind::BoardReader, self.boardreaders),
            (Kind::EventBuilder, self.eventbuilders),
            (Kind::Aggregator, self.aggregators),
        ] {
            out.extend((0..n).map(|rank| ProcessId::new(kind, rank)));
        }
        out
    }

    /// How many processes of `kind`.
    pub fn count(&self, kind: Kind) -> u16 {
        match kind {
            Kind::BoardReader => self.boardreaders,
            Kind::EventBuilder => self.eventbuilders,
            Kind::Aggregator => self.aggregators,
        }
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            boardreaders: 2,
            eventbuilders: 2,
            aggregators: 2,
        }
    }
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            fragment_type: ToyFragmentType::Toy1,
            n_adc_counts: 40,
            throttle_us: 100_000,
            distribution: Distribution::Uniform,
            random_seed: 314_159,
            initial_sequence_id: 1,
            timestamp_scale_factor: 1,
            max_events: 0,
        }
    }
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            batch_max_items: 256,
            batch_max_bytes: 256 * 1024,
            batch_max_delay_ms: 20,
            queue_batches: 16,
            end_of_data_timeout_ms: 5_000,
            connect_timeout_ms: 5_000,
        }
    }
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            write_data: true,
            format: DataFormat::Hdf5,
            netmon_input: NetMonInput::Fixed,
            buffer_count: 256,
            buffer_bytes: 64 * 1024,
            write_delay_us: 0,
            deflate_level: 0,
            batch_events: 1_000,
            max_file_bytes: 1 << 30,
        }
    }
}

/// Largest `n_adc_counts`: keeps a fragment far below the gRPC message limit.
pub const MAX_ADC_COUNTS: u32 = 1 << 22;

impl SystemConfig {
    /// Parses TOML text; `origin` names it in errors (a path or "embedded").
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            source: Box::new(e),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    pub fn to_toml(&self) -> String {
        // Serializing plain structs of numbers, strings and enums cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Rejects values no system can run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad<T: ToString>(field: &'static str, value: T, reason: &'static str) -> ConfigError {
            ConfigError::Invalid {
                field,
                value: value.to_string(),
                reason,
            }
        }
        if self.host.parse::<std::net::IpAddr>().is_err() {
            return Err(bad("host", &self.host, "must be an IP address"));
        }
        let t = &self.topology;
        if t.boardreaders == 0 || t.boardreaders == crate::fragment::INVALID_FRAGMENT_ID {
            return Err(bad(
                "topology.boardreaders",
                t.boardreaders,
                "must be 1 to 65534",
            ));
        }
        if t.eventbuilders == 0 {
            return Err(bad(
                "topology.eventbuilders",
                t.eventbuilders,
                "must be at least 1",
            ));
        }
        let g = &self.generator;
        if g.n_adc_counts == 0 || g.n_adc_counts > MAX_ADC_COUNTS {
            return Err(bad(
                "generator.n_adc_counts",
                g.n_adc_counts,
                "must be 1 to 4194304",
            ));
        }
        if g.initial_sequence_id == 0 || g.initial_sequence_id >= crate::fragment::MAX_SEQUENCE_ID {
            return Err(bad(
                "generator.initial_sequence_id",
                g.initial_sequence_id,
                "must be 1 to 2^48-2",
            ));
        }
        if g.max_events > crate::fragment::MAX_SEQUENCE_ID - g.initial_sequence_id {
            return Err(bad(
                "generator.max_events",
                g.max_events,
                "runs past the largest sequence id (2^48-1)",
            ));
        }
        let x = &self.transfer;
        if x.batch_max_items == 0 {
            return Err(bad(
                "transfer.batch_max_items",
                x.batch_max_items,
                "must be at least 1",
            ));
        }
        if x.batch_max_bytes == 0 || x.batch_max_bytes > proto::MAX_MESSAGE_BYTES / 2 {
            return Err(bad(
                "transfer.batch_max_bytes",
                x.batch_max_bytes,
                "must be 1 to 32 MiB",
            ));
        }
        if x.queue_batches == 0 {
            return Err(bad(
                "transfer.queue_batches",
                x.queue_batches,
                "must be at least 1",
            ));
        }
        if x.end_of_data_timeout_ms == 0 {
            return Err(bad(
                "transfer.end_of_data_timeout_ms",
                x.end_of_data_timeout_ms,
                "must be at least 1",
            ));
        }
        let e = &self.eventbuilder;
        if e.buffer_count == 0 {
            return Err(bad(
                "eventbuilder.buffer_count",
                e.buffer_count,
                "must be at least 1",
            ));
        }
        if e.stale_timeout_ms == 0 {
            return Err(bad(
                "eventbuilder.stale_timeout_ms",
                e.stale_timeout_ms,
                "must be at least 1",
            ));
        }
        let event = self.generator_fragment_bytes() * u64::from(t.boardreaders);
        if e.buffer_bytes < event {
            return Err(bad(
                "eventbuilder.buffer_bytes",
                e.buffer_bytes,
                "too small for one event of the generator's fragments",
            ));
        }
        let a = &self.aggregator;
        if a.buffer_count == 0 {
            return Err(bad(
                "aggregator.buffer_count",
                a.buffer_count,
                "must be at least 1",
            ));
        }
        if a.buffer_bytes < event {
            return Err(bad(
                "aggregator.buffer_bytes",
                a.buffer_bytes,
                "too small for one event of the generator's fragments",
            ));
        }
        if a.deflate_level > 9 {
            return Err(bad(
                "aggregator.deflate_level",
                a.deflate_level,
                "must be 0 to 9",
            ));
        }
        if a.deflate_level != 0 && a.format == DataFormat::ArtdaqBinary {
            return Err(bad(
                "aggregator.deflate_level",
                a.deflate_level,
                "applies to hdf5 only: artdaq-binary files are uncompressed",
            ));
        }
        if a.batch_events == 0 {
            return Err(bad(
                "aggregator.batch_events",
                a.batch_events,
                "must be at least 1",
            ));
        }
        self.address_book()?;
        if self.leak.inject_bytes_per_event > MAX_INJECT_BYTES_PER_EVENT {
            return Err(bad(
                "leak.inject_bytes_per_event",
                self.leak.inject_bytes_per_event,
                "must be 0 to 1048576",
            ));
        }
        Ok(())
    }

    /// The `[addresses]` table as (process, `host:port`), upstream first;
    /// `None` when there is no table (processes are spawned locally). Every
    /// process of the topology must be named exactly once, with an address
    /// no other process has.
    pub fn address_book(&self) -> Result<Option<Vec<(ProcessId, String)>>, ConfigError> {
        let Some(table) = &self.addresses else {
            return Ok(None);
        };
        let bad = |reason: String| ConfigError::Addresses { reason };
        let mut by_id = BTreeMap::new();
        let mut by_addr: BTreeMap<String, ProcessId> = BTreeMap::new();
        let wanted = self.topology.processes();
        for (name, addr) in table {
            let id: ProcessId = name.parse().map_err(|e| bad(format!("{e}")))?;
            if !wanted.contains(&id) {
                let t = self.topology;
                return Err(bad(format!(
                    "{id} is not a process of the topology {}x{}x{}",
                    t.boardreaders, t.eventbuilders, t.aggregators
                )));
            }
            check_address(addr).map_err(|reason| bad(format!("{id} = {addr:?}: {reason}")))?;
            if let Some(other) = by_addr.insert(addr.to_ascii_lowercase(), id) {
                return Err(bad(format!(
                    "{other} and {id} both have the address {addr:?}"
                )));
            }
            if by_id.insert(id, addr.clone()).is_some() {
                // Two spellings of one name (toml rejects the same key twice).
                return Err(bad(format!("{id} is named twice")));
            }
        }
        let missing: Vec<String> = wanted
            .iter()
            .filter(|id| !by_id.contains_key(id))
            .map(ToString::to_string)
            .collect();
        if !missing.is_empty() {
            return Err(bad(format!(
                "no address for {} (every process of the topology needs one)",
                missing.join(", ")
            )));
        }
        Ok(Some(by_id.into_iter().collect()))
    }
}

/// `host:port` with a non-empty host (an IP address or a DNS name) and a
/// port 1 to 65535.
fn check_address(addr: &str) -> Result<(), String> {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return if addr.ends_with(":0") {
            Err("port 0 is not an address to connect to".into())
        } else {
            Ok(())
        };
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("expected host:port".into());
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !host_ok {
        return Err("expected host:port with a host name or IP address".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("the port must be 1 to 65535".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_2x2x2_demo_on_loopback() {
        let c = SystemConfig::from_toml("", "embedded").expect("valid");
        assert_eq!(c, SystemConfig::default());
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(
            c.topology,
            Topology {
                boardreaders: 2,
                eventbuilders: 2,
                aggregators: 2
            }
        );
        assert_eq!(c.generator.throttle_us, 100_000);
    }

    #[test]
    fn default_round_trips_through_toml() {
        let c = SystemConfig::default();
        assert_eq!(
            SystemConfig::from_toml(&c.to_toml(), "x").expect("valid"),
            c
        );
    }

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        let err = SystemConfig::from_toml("[generator]\nthrotle_us = 5\n", "t.toml")
            .expect_err("unknown field");
        let msg = err.to_string();
        assert!(
            msg.contains("throtle_us") && msg.contains("t.toml"),
            "{msg}"
        );
    }

    #[test]
    fn impossible_values_are_rejected_with_the_field() {
        for (text, field) in [
            ("[topology]\nboardreaders = 0", "topology.boardreaders"),
            ("[topology]\neventbuilders = 0", "topology.eventbuilders"),
            ("[generator]\nn_adc_counts = 0", "generator.n_adc_counts"),
            (
                "[generator]\ninitial_sequence_id = 0",
                "generator.initial_sequence_id",
            ),
            (
                "[transfer]\nbatch_max_items = 0",
                "transfer.batch_max_items",
            ),
            (
                "[aggregator]\ndeflate_level = 10",
                "aggregator.deflate_level",
            ),
            (
                "[aggregator]\nformat = \"artdaq-binary\"\ndeflate_level = 1",
                "aggregator.deflate_level",
            ),
            ("host = \"localhost:5\"", "host"),
            (
                "[eventbuilder]\nbuffer_bytes = 100",
                "eventbuilder.buffer_bytes",
            ),
            (
                "[eventbuilder]\nbuffer_count = 0",
                "eventbuilder.buffer_count",
            ),
            (
                "[generator]\nn_adc_counts = 100000",
                "eventbuilder.buffer_bytes",
            ),
            (
                "[leak]\ninject_bytes_per_event = 2000000",
                "leak.inject_bytes_per_event",
            ),
        ] {
            let err = SystemConfig::from_toml(text, "x").expect_err(text);
            assert!(err.to_string().contains(field), "{text}: {err}");
        }
        let err =
            SystemConfig::from_toml("[leak]\ninject_in = \"daqctl\"", "x").expect_err("bad kind");
        assert!(err.to_string().contains("daqctl"), "{err}");
        let err = SystemConfig::from_toml("[generator]\ndistribution = \"poisson\"", "x")
            .expect_err("bad enum");
        assert!(err.to_string().contains("poisson"), "{err}");
        let err =
            SystemConfig::from_toml("[aggregator]\nformat = \"root\"", "x").expect_err("bad enum");
        assert!(err.to_string().contains("root"), "{err}");
    }

    #[test]
    fn data_format_is_named_as_in_the_toml() {
        let c = SystemConfig::from_toml("[aggregator]\nformat = \"artdaq-binary\"", "x")
            .expect("valid");
        assert_eq!(c.aggregator.format, DataFormat::ArtdaqBinary);
        assert_eq!(c.aggregator.format.as_str(), "artdaq-binary");
        assert!(c.to_toml().contains("format = \"artdaq-binary\""));
        assert_eq!(SystemConfig::default().aggregator.format, DataFormat::Hdf5);
    }

    const ADDRESSES_2X1X1: &str =
        "[topology]\nboardreaders = 2\neventbuilders = 1\naggregators = 1\n";

    #[test]
    fn an_address_table_naming_every_process_once_is_the_address_book() {
        let text = format!(
            "{ADDRESSES_2X1X1}[addresses]\naggregator-0 = \"10.77.0.31:7000\"\n\
             boardreader-1 = \"br1.daq.svc:7000\"\nboardreader-0 = \"10.77.0.11:7000\"\n\
             eventbuilder-0 = \"[fd00::21]:7000\"\n"
        );
        let c = SystemConfig::from_toml(&text, "x").expect("valid");
        let book = c.address_book().expect("valid").expect("present");
        let names: Vec<String> = book.iter().map(|(id, a)| format!("{id}={a}")).collect();
        assert_eq!(
            names,
            [
                "boardreader-0=10.77.0.11:7000",
                "boardreader-1=br1.daq.svc:7000",
                "eventbuilder-0=[fd00::21]:7000",
                "aggregator-0=10.77.0.31:7000"
            ]
        );
        assert_eq!(
            SystemConfig::from_toml(&c.to_toml(), "y").expect("round trip"),
            c
        );
        assert_eq!(SystemConfig::default().address_book().expect("valid"), None);
    }

    #[test]
    fn a_bad_address_table_is_rejected_naming_the_process() {
        let all = "boardreader-0 = \"10.0.0.1:7000\"\nboardreader-1 = \"10.0.0.2:7000\"\n\
                   eventbuilder-0 = \"10.0.0.3:7000\"\naggregator-0 = \"10.0.0.4:7000\"\n";
        for (table, want) in [
            (
                all.replace("aggregator-0 = \"10.0.0.4:7000\"\n", ""),
                "no address for aggregator-0",
            ),
            (
                format!("{all}eventbuilder-1 = \"10.0.0.5:7000\"\n"),
                "eventbuilder-1 is not a process of the topology 2x1x1",
            ),
            (
                format!("{all}reader-3 = \"10.0.0.5:7000\"\n"),
                "\"reader-3\" is not a process name",
            ),
            (
                all.replace("10.0.0.4", "10.0.0.1"),
                "aggregator-0 and boardreader-0 both have the address \"10.0.0.1:7000\"",
            ),
            (
                format!("{all}boardreader-0 = \"10.0.0.9:7000\"\n"),
                "boardreader-0",
            ),
            (
                all.replace("10.0.0.3:7000", "10.0.0.3"),
                "eventbuilder-0 = \"10.0.0.3\": expected host:port",
            ),
            (
                all.replace("10.0.0.3:7000", "10.0.0.3:0"),
                "eventbuilder-0 = \"10.0.0.3:0\"",
            ),
        ] {
            let text = format!("{ADDRESSES_2X1X1}[addresses]\n{table}");
            let err = SystemConfig::from_toml(&text, "x").expect_err(&table);
            assert!(err.to_string().contains(want), "{table}: {err}");
        }
    }
}

#[cfg(test)]
mod leak_tests {
    use super::*;

    #[test]
    fn an_injected_leak_applies_to_its_kind_only() {
        let c = SystemConfig::from_toml(
            "[leak]\ninject_bytes_per_event = 64\ninject_in = \"aggregator\"",
            "x",
        )
        .expect("valid");
        assert_eq!(c.leak.bytes_per_event_in(Kind::Aggregator), 64);
        assert_eq!(c.leak.bytes_per_event_in(Kind::EventBuilder), 0);
        assert_eq!(c.leak.bytes_per_event_in(Kind::BoardReader), 0);
        assert_eq!(SystemConfig::default().leak.inject_bytes_per_event, 0);
        assert_eq!(SystemConfig::default().leak.inject_in, Kind::EventBuilder);
    }
}
