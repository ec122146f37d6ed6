//! Reading, writing and validating a [`SystemConfig`]: TOML in and out,
//! and every check that rejects an impossible value with the field's name.

use super::*;

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
        if t.monitors > 0 && t.aggregators == 0 {
            return Err(bad(
                "topology.monitors",
                t.monitors,
                "needs at least one aggregator (a monitor reads an aggregator's store)",
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
        if x.link_bytes != 0
            && (!x.link_bytes.is_power_of_two() || !(1 << 16..=1 << 34).contains(&x.link_bytes))
        {
            return Err(bad(
                "transfer.link_bytes",
                x.link_bytes,
                "must be 0 (derived) or a power of two from 64 KiB to 16 GiB",
            ));
        }
        if x.queue_batches == 0 {
            return Err(bad(
                "transfer.queue_batches",
                x.queue_batches,
                "must be at least 1",
            ));
        }
        if x.keepalive_interval_ms == 0 {
            return Err(bad(
                "transfer.keepalive_interval_ms",
                x.keepalive_interval_ms,
                "must be at least 1",
            ));
        }
        if x.keepalive_timeout_ms < 2 * x.keepalive_interval_ms {
            return Err(bad(
                "transfer.keepalive_timeout_ms",
                x.keepalive_timeout_ms,
                "must be at least twice transfer.keepalive_interval_ms (a beat may come late by up to an interval)",
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
        if a.direct_io && a.format != DataFormat::ArtdaqBinary {
            return Err(bad(
                "aggregator.direct_io",
                a.direct_io,
                "applies to artdaq-binary only: the hdf5 writer writes through the page cache",
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
