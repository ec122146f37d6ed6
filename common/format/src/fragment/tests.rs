//! The fragment format: header words, builders, parsing, every rejection.

use super::*;

fn header_at_limits() -> FragmentHeader {
    FragmentHeader {
        word_count: 4 + 255 + 1,
        version: HEADER_VERSION,
        fragment_type: 233,
        metadata_word_count: 255,
        sequence_id: MAX_SEQUENCE_ID,
        fragment_id: u16::MAX,
        timestamp: u64::MAX,
        valid: true,
        complete: false,
        atime_ns: MAX_ATIME_NS,
        atime_s: u32::MAX,
    }
}

#[test]
fn header_round_trips_every_field_at_its_limits() {
    for h in [
        header_at_limits(),
        FragmentHeader {
            word_count: 0,
            version: 0,
            fragment_type: 0,
            metadata_word_count: 0,
            sequence_id: 0,
            fragment_id: 0,
            timestamp: 0,
            valid: false,
            complete: true,
            atime_ns: 0,
            atime_s: 0,
        },
        FragmentHeader {
            word_count: u32::MAX,
            version: INVALID_VERSION,
            fragment_type: 255,
            metadata_word_count: 1,
            sequence_id: 0x1234_5678_9abc,
            fragment_id: 0x8001,
            timestamp: 0x0102_0304_0506_0708,
            valid: true,
            complete: true,
            atime_ns: 1,
            atime_s: 1,
        },
    ] {
        let words = h.encode().expect("encodable");
        assert_eq!(FragmentHeader::decode(words), h);
    }
}

#[test]
fn header_bits_are_where_the_reference_puts_them() {
    let h = FragmentHeader {
        word_count: 0x0000_0005,
        version: 0x0002,
        fragment_type: 0xE1,
        metadata_word_count: 0x03,
        sequence_id: 0x0000_1234_5678_9ABC,
        fragment_id: 0xBEEF,
        timestamp: 0xDEAD_BEEF_0000_0001,
        valid: true,
        complete: true,
        atime_ns: 0x5,
        atime_s: 0x7,
    };
    let w = h.encode().expect("encodable");
    assert_eq!(w[0], 0x03E1_0002_0000_0005);
    assert_eq!(w[1], 0xBEEF_1234_5678_9ABC);
    assert_eq!(w[2], 0xDEAD_BEEF_0000_0001);
    assert_eq!(w[3], 0x0000_0007_0000_0017);
}

#[test]
fn encode_rejects_fields_wider_than_their_bits() {
    let mut h = header_at_limits();
    h.sequence_id = MAX_SEQUENCE_ID + 1;
    assert_eq!(h.encode(), Err(FragmentError::SequenceIdTooLarge(1 << 48)));
    let mut h = header_at_limits();
    h.atime_ns = MAX_ATIME_NS + 1;
    assert_eq!(h.encode(), Err(FragmentError::AtimeNsTooLarge(1 << 30)));
}

#[test]
fn fragment_round_trips_through_bytes() {
    let f = Fragment::build(
        FragmentSpec {
            fragment_type: FragmentType::User(224),
            sequence_id: MAX_SEQUENCE_ID - 1,
            fragment_id: 7,
            timestamp: 99,
        },
        &[1, 2, 3, 4, 5, 6, 7, 8],
        &[9, 10, 11],
    )
    .expect("valid");
    assert_eq!(f.header().word_count, 6);
    assert_eq!(f.metadata(), &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(f.payload(), &[9, 10, 11, 0, 0, 0, 0, 0]);
    let g = Fragment::parse(f.bytes().clone()).expect("parses");
    assert_eq!(g, f);
    assert_eq!(Fragment::peek_len(f.bytes()), Some(48));
}

#[test]
fn packed_fragments_split_back_and_truncation_is_an_error() {
    let a = Fragment::build(
        FragmentSpec {
            fragment_type: FragmentType::User(1),
            sequence_id: 5,
            fragment_id: 0,
            timestamp: 1,
        },
        &[9; 8],
        &[1, 2, 3],
    )
    .expect("valid");
    let b = Fragment::end_of_data(1, 5, 3).expect("valid");
    let mut packed = a.bytes().to_vec();
    packed.extend_from_slice(b.bytes());
    let got: Vec<_> = split_packed(&packed)
        .collect::<Result<_, _>>()
        .expect("splits");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].header, *a.header());
    assert_eq!(got[0].metadata(), a.metadata());
    assert_eq!(got[1].payload(), b.payload());
    let cut = &packed[..packed.len() - 8];
    let r: Vec<_> = split_packed(cut).collect();
    assert_eq!(r.len(), 2);
    assert!(r[0].is_ok());
    assert_eq!(
        r[1],
        Err(FragmentError::TooShort {
            bytes: 32,
            expected: 40
        })
    );
}

#[test]
fn every_type_code_maps_back_to_itself() {
    for v in 0..=255u8 {
        assert_eq!(FragmentType::from_u8(v).as_u8(), v);
    }
    assert_eq!(FragmentType::from_u8(225), FragmentType::EndOfData);
    assert_eq!(FragmentType::from_u8(226), FragmentType::Data);
    assert_eq!(FragmentType::from_u8(227), FragmentType::Init);
    assert_eq!(FragmentType::from_u8(228), FragmentType::EndOfRun);
    assert_eq!(FragmentType::from_u8(229), FragmentType::EndOfSubrun);
    assert_eq!(FragmentType::from_u8(230), FragmentType::Shutdown);
    assert_eq!(FragmentType::from_u8(231), FragmentType::Empty);
    assert_eq!(FragmentType::from_u8(232), FragmentType::Container);
    assert_eq!(FragmentType::from_u8(233), FragmentType::Error);
    assert_eq!(FragmentType::from_u8(234), FragmentType::Reserved(234));
    assert!(!FragmentType::User(1).is_system());
    assert!(FragmentType::EndOfData.is_system());
}

#[test]
fn end_of_data_carries_its_count() {
    let f = Fragment::end_of_data(3, 17, u64::MAX - 5).expect("valid");
    let g = Fragment::parse(f.into_bytes()).expect("parses");
    assert_eq!(g.kind(), FragmentType::EndOfData);
    assert_eq!(g.fragment_id(), 3);
    assert_eq!(g.end_of_data_count(), Ok(u64::MAX - 5));
    let data = Fragment::build(
        FragmentSpec {
            fragment_type: FragmentType::Data,
            sequence_id: 1,
            fragment_id: 1,
            timestamp: 1,
        },
        &[],
        &[0; 16],
    )
    .expect("valid");
    assert_eq!(
        data.end_of_data_count(),
        Err(FragmentError::WrongType {
            found: 226,
            expected: "EndOfData"
        })
    );
    let long_eod = Fragment::build(
        FragmentSpec {
            fragment_type: FragmentType::EndOfData,
            sequence_id: 1,
            fragment_id: 1,
            timestamp: 0,
        },
        &[],
        &[0; 16],
    )
    .expect("valid");
    assert_eq!(
        long_eod.end_of_data_count(),
        Err(FragmentError::BadEndOfData { words: 2 })
    );
}

fn raw(h: FragmentHeader, extra_words: usize) -> Bytes {
    let mut v = Vec::new();
    for w in h.encode().expect("encodable") {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v.resize(v.len() + extra_words * WORD_BYTES, 0xAB);
    Bytes::from(v)
}

#[test]
fn malformed_inputs_get_typed_errors() {
    assert_eq!(
        Fragment::parse(Bytes::from_static(&[0; 31])),
        Err(FragmentError::TooShort {
            bytes: 31,
            expected: 32
        })
    );
    assert_eq!(
        Fragment::parse(Bytes::from(vec![0; 33])),
        Err(FragmentError::NotWordAligned { bytes: 33 })
    );
    let mut h = header_at_limits();
    h.word_count = 4;
    h.metadata_word_count = 0;
    h.version = 1;
    assert_eq!(
        Fragment::parse(raw(h, 0)),
        Err(FragmentError::UnknownVersion { version: 1 })
    );
    h.version = INVALID_VERSION;
    assert_eq!(
        Fragment::parse(raw(h, 0)),
        Err(FragmentError::UnknownVersion { version: 0xFFFF })
    );
    h.version = HEADER_VERSION;
    h.word_count = 6;
    assert_eq!(
        Fragment::parse(raw(h, 1)),
        Err(FragmentError::WordCountMismatch {
            word_count: 6,
            buffer_words: 5
        })
    );
    h.word_count = 5;
    h.metadata_word_count = 2;
    assert_eq!(
        Fragment::parse(raw(h, 1)),
        Err(FragmentError::MetadataTooLong {
            metadata_words: 2,
            word_count: 5
        })
    );
    h.metadata_word_count = 1;
    assert!(Fragment::parse(raw(h, 1)).is_ok());
    assert_eq!(
        Fragment::build(
            FragmentSpec {
                fragment_type: FragmentType::Data,
                sequence_id: 0,
                fragment_id: 0,
                timestamp: 0
            },
            &[1, 2, 3],
            &[]
        ),
        Err(FragmentError::BadMetadata { bytes: 3 })
    );
    assert_eq!(Fragment::peek_len(&[1, 2]), None);
}
