//! The toy fragment of artdaq-core-demo, bit for bit: its type codes, its
//! metadata word, its payload header and its samples (encode and decode).
//!
//! These facts come from artdaq-core-demo's public headers (`FragmentType`,
//! `ToyFragment`); an artdaq overlay reads the bytes written here as they are.
//! A toy fragment is an artdaq header-v2 fragment ([`crate::fragment`]) with
//! one metadata word and a payload of a 2-word header and u16 samples:
//!
//! ```text
//! metadata word (u64, little endian), ToyFragment::Metadata:
//!   bits  0-15  board_serial_number   (16)
//!   bits 16-23  num_adc_bits          (8)   12 for TOY1, 14 for TOY2
//!   bits 24-63  unused, zero          (40)
//! payload, ToyFragment::Header (two u32 words, little endian):
//!   word 0 bits  0-27  event_size         (28) 32-bit words, header included
//!   word 0 bits 28-31  distribution_type  (4)  0 uniform, 1 gaussian, 2 monotonic
//!   word 1             trigger_number     (32)
//! then the ADC samples, u16 little endian, zero-padded to a whole 64-bit word
//! ```
//!
//! `event_size` counts the samples' 32-bit words rounded up, so an odd sample
//! count includes its padding half-word.

use crate::fragment::{FragmentType, WORD_BYTES};

/// artdaq-core-demo's `MISSED` (its `FirstUserFragmentType`).
pub const MISSED: u8 = 1;
/// artdaq-core-demo's `TOY1`: 12-bit ADC samples.
pub const TOY1: u8 = 2;
/// artdaq-core-demo's `TOY2`: 14-bit ADC samples.
pub const TOY2: u8 = 3;
/// artdaq-core-demo's `ASCII`.
pub const ASCII: u8 = 4;
/// artdaq-core-demo's `UDP`.
pub const UDP: u8 = 5;

/// Bytes of the payload header (`ToyFragment::Header`).
pub const HEADER_BYTES: usize = 8;
/// 32-bit words of the payload header, counted in `event_size`.
pub const HEADER_WORDS32: u32 = 2;
/// Largest `event_size` (28 bits).
pub const MAX_EVENT_SIZE: u32 = (1 << 28) - 1;

/// Distribution codes of artdaq-demo's ToySimulator (`DistributionType`).
pub const DISTRIBUTION_UNIFORM: u8 = 0;
pub const DISTRIBUTION_GAUSSIAN: u8 = 1;
pub const DISTRIBUTION_MONOTONIC: u8 = 2;

/// ADC width of a toy type code, or `None` for other types.
pub fn adc_bits_of(type_code: u8) -> Option<u8> {
    match type_code {
        TOY1 => Some(12),
        TOY2 => Some(14),
        _ => None,
    }
}

/// The name an artdaq user knows a fragment type by: artdaq-core-demo's user
/// types, artdaq's system types, `User(n)` for other user types.
pub fn type_name(type_code: u8) -> String {
    let fixed = match type_code {
        MISSED => "MISSED",
        TOY1 => "TOY1",
        TOY2 => "TOY2",
        ASCII => "ASCII",
        UDP => "UDP",
        _ => "",
    };
    if !fixed.is_empty() {
        return fixed.to_string();
    }
    match FragmentType::from_u8(type_code) {
        FragmentType::User(n) => format!("User({n})"),
        FragmentType::Reserved(n) => format!("Reserved({n})"),
        other => format!("{other:?}"),
    }
}

/// Every way a toy fragment's metadata or payload can be malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ToyError {
    #[error("toy metadata is {bytes} bytes, expected one 8-byte word")]
    BadMetadata { bytes: usize },
    #[error("toy payload of {bytes} bytes is shorter than its {HEADER_BYTES}-byte header")]
    PayloadTooShort { bytes: usize },
    #[error("toy event_size of {words} 32-bit words exceeds the payload's {available}")]
    EventSizeTooLarge { words: u32, available: usize },
    #[error("toy event_size of {words} 32-bit words is smaller than the header")]
    EventSizeTooSmall { words: u32 },
}

/// `ToyFragment::Metadata`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToyMetadata {
    pub board_serial_number: u16,
    pub num_adc_bits: u8,
}

impl ToyMetadata {
    pub fn encode(self) -> [u8; WORD_BYTES] {
        let w = u64::from(self.board_serial_number) | u64::from(self.num_adc_bits) << 16;
        w.to_le_bytes()
    }

    /// Decodes the single metadata word; the unused bits are ignored.
    pub fn decode(metadata: &[u8]) -> Result<Self, ToyError> {
        let word: [u8; WORD_BYTES] = metadata.try_into().map_err(|_| ToyError::BadMetadata {
            bytes: metadata.len(),
        })?;
        let w = u64::from_le_bytes(word);
        Ok(Self {
            board_serial_number: w as u16,
            num_adc_bits: (w >> 16) as u8,
        })
    }
}

/// `ToyFragment::Header`, the first 8 payload bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToyHeader {
    /// 32-bit words of header and samples (28 bits).
    pub event_size: u32,
    /// 4 bits; see the `DISTRIBUTION_*` codes.
    pub distribution_type: u8,
    pub trigger_number: u32,
}

impl ToyHeader {
    /// The header of `n_samples` samples.
    pub fn for_samples(n_samples: usize, distribution_type: u8, trigger_number: u32) -> Self {
        let words = HEADER_WORDS32 as usize + (n_samples * 2).div_ceil(4);
        Self {
            event_size: (words as u32).min(MAX_EVENT_SIZE),
            distribution_type: distribution_type & 0xF,
            trigger_number,
        }
    }

    pub fn encode(self) -> [u8; HEADER_BYTES] {
        let w0 = (self.event_size & MAX_EVENT_SIZE) | u32::from(self.distribution_type & 0xF) << 28;
        let mut b = [0u8; HEADER_BYTES];
        b[..4].copy_from_slice(&w0.to_le_bytes());
        b[4..].copy_from_slice(&self.trigger_number.to_le_bytes());
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self, ToyError> {
        let head: [u8; HEADER_BYTES] = payload
            .get(..HEADER_BYTES)
            .and_then(|h| h.try_into().ok())
            .ok_or(ToyError::PayloadTooShort {
                bytes: payload.len(),
            })?;
        let w0 = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        Ok(Self {
            event_size: w0 & MAX_EVENT_SIZE,
            distribution_type: (w0 >> 28) as u8,
            trigger_number: u32::from_le_bytes([head[4], head[5], head[6], head[7]]),
        })
    }
}

/// A toy fragment's metadata and payload, decoded and checked against each
/// other (`event_size` within the payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToyView<'a> {
    pub metadata: ToyMetadata,
    pub header: ToyHeader,
    sample_bytes: &'a [u8],
}

impl<'a> ToyView<'a> {
    pub fn parse(metadata: &[u8], payload: &'a [u8]) -> Result<Self, ToyError> {
        let metadata = ToyMetadata::decode(metadata)?;
        let header = ToyHeader::decode(payload)?;
        if header.event_size < HEADER_WORDS32 {
            return Err(ToyError::EventSizeTooSmall {
                words: header.event_size,
            });
        }
        let bytes = header.event_size as usize * 4;
        if bytes > payload.len() {
            return Err(ToyError::EventSizeTooLarge {
                words: header.event_size,
                available: payload.len() / 4,
            });
        }
        Ok(Self {
            metadata,
            header,
            sample_bytes: payload.get(HEADER_BYTES..bytes).unwrap_or_default(),
        })
    }

    /// Samples as `ToyFragment` counts them: every u16 of `event_size`
    /// (so an odd count's padding half-word is included).
    pub fn samples(&self) -> impl ExactSizeIterator<Item = u16> + 'a {
        self.sample_bytes
            .chunks_exact(2)
            .map(|c| c.try_into().map_or(0, u16::from_le_bytes))
    }

    /// artdaq-core-demo's `fastVerify`: the index of the first sample with a
    /// bit at or above `num_adc_bits`, `None` if every sample fits.
    pub fn first_bad_sample(&self) -> Option<(usize, u16)> {
        let bits = u32::from(self.metadata.num_adc_bits);
        let limit = 1u32.checked_shl(bits).unwrap_or(u32::MAX);
        self.samples()
            .enumerate()
            .find(|&(_, v)| u32::from(v) >= limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_word_has_artdaq_core_demo_bit_positions() {
        let m = ToyMetadata {
            board_serial_number: 0xBEEF,
            num_adc_bits: 14,
        };
        let w = u64::from_le_bytes(m.encode());
        assert_eq!(w & 0xFFFF, 0xBEEF);
        assert_eq!((w >> 16) & 0xFF, 14);
        assert_eq!(w >> 24, 0);
        assert_eq!(ToyMetadata::decode(&m.encode()), Ok(m));
        assert_eq!(
            ToyMetadata::decode(&[0; 7]),
            Err(ToyError::BadMetadata { bytes: 7 })
        );
    }

    #[test]
    fn header_packs_event_size_and_distribution_in_one_word() {
        let h = ToyHeader::for_samples(40, DISTRIBUTION_MONOTONIC, 0xDEAD_BEEF);
        assert_eq!(h.event_size, 22);
        let b = h.encode();
        assert_eq!(u32::from_le_bytes([b[0], b[1], b[2], b[3]]), 22 | 2 << 28);
        assert_eq!(u32::from_le_bytes([b[4], b[5], b[6], b[7]]), 0xDEAD_BEEF);
        assert_eq!(ToyHeader::decode(&b), Ok(h));
        // An odd count rounds up to the padding half-word.
        assert_eq!(ToyHeader::for_samples(41, 0, 0).event_size, 23);
    }

    #[test]
    fn view_counts_samples_and_fast_verify_finds_the_first_too_wide() {
        let m = ToyMetadata {
            board_serial_number: 1,
            num_adc_bits: 12,
        };
        let mut payload = ToyHeader::for_samples(4, 0, 9).encode().to_vec();
        for v in [1u16, 4095, 4096, 7] {
            payload.extend_from_slice(&v.to_le_bytes());
        }
        let v = ToyView::parse(&m.encode(), &payload).expect("parses");
        assert_eq!(v.samples().collect::<Vec<_>>(), vec![1, 4095, 4096, 7]);
        assert_eq!(v.first_bad_sample(), Some((2, 4096)));
        assert_eq!(
            ToyView::parse(&m.encode(), &payload[..12]),
            Err(ToyError::EventSizeTooLarge {
                words: 4,
                available: 3
            })
        );
    }

    #[test]
    fn type_names_follow_artdaq_core_demo_and_artdaq() {
        assert_eq!(type_name(1), "MISSED");
        assert_eq!(type_name(2), "TOY1");
        assert_eq!(type_name(3), "TOY2");
        assert_eq!(type_name(6), "User(6)");
        assert_eq!(type_name(225), "EndOfData");
        assert_eq!(adc_bits_of(TOY1), Some(12));
        assert_eq!(adc_bits_of(TOY2), Some(14));
        assert_eq!(adc_bits_of(MISSED), None);
    }
}
