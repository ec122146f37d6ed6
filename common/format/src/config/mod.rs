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
    /// Online monitors; `monitor-i` reads `aggregator-(i % aggregators)`'s
    /// shared-memory store read-only, on its host (needs aggregators).
    pub monitors: u16,
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
    /// The data plane between two processes: "auto" (default) uses shared
    /// memory when both are on one host and can map one segment, gRPC
    /// otherwise; "grpc" always streams; "shm" refuses at start where shared
    /// memory cannot be used.
    pub mode: TransferMode,
    /// Bytes of each shared-memory link's ring (a power of two); 0 = twice
    /// queue_batches x batch_max_bytes, rounded up.
    pub link_bytes: u64,
    /// How often a data stream's sender pings its receiver (HTTP/2 ping on
    /// a gRPC channel, a heartbeat on a shared-memory link).
    pub keepalive_interval_ms: u64,
    /// How long a ping (or the other end's heartbeat) may be missing
    /// before the peer is taken as hung or cut off and its stream breaks.
    pub keepalive_timeout_ms: u64,
}

/// How data moves between two processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferMode {
    /// Shared memory where the pair shares a host and a segment, else gRPC.
    #[default]
    Auto,
    /// A gRPC stream, always.
    Grpc,
    /// Shared memory, or an error at start.
    Shm,
}

impl TransferMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferMode::Auto => "auto",
            TransferMode::Grpc => "grpc",
            TransferMode::Shm => "shm",
        }
    }
}

impl std::str::FromStr for TransferMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "grpc" => Ok(Self::Grpc),
            "shm" => Ok(Self::Shm),
            other => Err(format!(
                "transfer mode {other:?}: expected auto, grpc or shm"
            )),
        }
    }
}

impl TransferConfig {
    /// The ring size of a shared-memory link.
    pub fn link_capacity(&self) -> usize {
        if self.link_bytes > 0 {
            return usize::try_from(self.link_bytes).unwrap_or(usize::MAX);
        }
        (2 * self.queue_batches.max(1) * self.batch_max_bytes)
            .max(1 << 20)
            .checked_next_power_of_two()
            .unwrap_or(1 << 34)
            .min(1 << 34)
    }
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
    /// artdaq's `directIO`: write artdaq-binary files with O_DIRECT from an
    /// aligned buffer, past the page cache (where the file system allows).
    pub direct_io: bool,
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
            (Kind::Monitor, self.monitors),
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
            Kind::Monitor => self.monitors,
        }
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            boardreaders: 2,
            eventbuilders: 2,
            aggregators: 2,
            monitors: 0,
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
            keepalive_interval_ms: 1_000,
            keepalive_timeout_ms: 4_000,
            mode: TransferMode::Auto,
            link_bytes: 0,
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
            direct_io: false,
        }
    }
}

/// Largest `n_adc_counts`: keeps a fragment far below the gRPC message limit.
pub const MAX_ADC_COUNTS: u32 = 1 << 22;

mod load;
#[cfg(test)]
mod tests;
