//! Process identity: the kind of a process and its rank, written
//! `boardreader-0`, `eventbuilder-1`, `aggregator-0`, `monitor-0` (one spelling for names
//! in records, logs, address tables and `Status` replies).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The kinds of process, in pipeline order (upstream first; a monitor
/// reads an aggregator's store, so it comes after the aggregators);
/// serialized as their names (`"eventbuilder"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    BoardReader,
    EventBuilder,
    Aggregator,
    /// Online monitor: reads an aggregator's shared-memory store, read-only.
    Monitor,
}

impl Kind {
    /// Upstream first: the order of pause, stop and shutdown.
    pub const ALL: [Kind; 4] = [
        Kind::BoardReader,
        Kind::EventBuilder,
        Kind::Aggregator,
        Kind::Monitor,
    ];

    /// The name of the kind, which is also its binary's name.
    /// The kind a process of this kind sends its data to (`None`: the
    /// aggregators, the last stage, and the monitors, which receive nothing
    /// over the network).
    pub fn downstream(self) -> Option<Kind> {
        match self {
            Kind::BoardReader => Some(Kind::EventBuilder),
            Kind::EventBuilder => Some(Kind::Aggregator),
            Kind::Aggregator | Kind::Monitor => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::BoardReader => "boardreader",
            Kind::EventBuilder => "eventbuilder",
            Kind::Aggregator => "aggregator",
            Kind::Monitor => "monitor",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A process name that is not `<kind>-<rank>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessIdError {
    #[error(
        "{name:?} is not a process name: expected boardreader-N, eventbuilder-N, aggregator-N or monitor-N"
    )]
    UnknownKind { name: String },
    #[error("{name:?} is not a process name: the rank after the kind must be a number 0 to 65535")]
    BadRank { name: String },
}

impl FromStr for Kind {
    type Err = ProcessIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ProcessIdError::UnknownKind { name: s.into() })
    }
}

/// One process of a system: `boardreader-0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessId {
    pub kind: Kind,
    pub rank: u16,
}

impl ProcessId {
    pub fn new(kind: Kind, rank: u16) -> Self {
        Self { kind, rank }
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.kind, self.rank)
    }
}

impl FromStr for ProcessId {
    type Err = ProcessIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, rank) = s
            .rsplit_once('-')
            .ok_or_else(|| ProcessIdError::UnknownKind { name: s.into() })?;
        let kind = kind
            .parse::<Kind>()
            .map_err(|_| ProcessIdError::UnknownKind { name: s.into() })?;
        // Digits only: "+1" or " 1" would parse as u16 but are not a spelling
        // of the name.
        if rank.is_empty() || !rank.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProcessIdError::BadRank { name: s.into() });
        }
        let rank = rank
            .parse::<u16>()
            .map_err(|_| ProcessIdError::BadRank { name: s.into() })?;
        Ok(Self { kind, rank })
    }
}

impl Serialize for ProcessId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProcessId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_upstream_first() {
        for (name, id) in [
            ("boardreader-0", ProcessId::new(Kind::BoardReader, 0)),
            ("eventbuilder-12", ProcessId::new(Kind::EventBuilder, 12)),
            ("aggregator-65535", ProcessId::new(Kind::Aggregator, 65535)),
            ("monitor-1", ProcessId::new(Kind::Monitor, 1)),
        ] {
            assert_eq!(name.parse::<ProcessId>(), Ok(id));
            assert_eq!(id.to_string(), name);
        }
        assert!(ProcessId::new(Kind::BoardReader, 9) < ProcessId::new(Kind::EventBuilder, 0));
        assert!(ProcessId::new(Kind::Aggregator, 9) < ProcessId::new(Kind::Monitor, 0));
    }

    #[test]
    fn malformed_names_are_rejected_with_the_name() {
        for bad in [
            "boardreader",
            "boardreader-",
            "boardreader-x",
            "boardreader-+1",
            "boardreader-65536",
            "reader-0",
            "",
        ] {
            let err = bad.parse::<ProcessId>().expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
