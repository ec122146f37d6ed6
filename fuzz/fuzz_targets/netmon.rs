//! Fuzzes NetMonInput (`netmon::decode`, the fixed path) on arbitrary bytes.
//! A decoded event must re-encode to its input (only bit 0 of the flags is
//! kept) and decode to the same event. The legacy path leaks one history
//! per event by design, so it is not fuzzed.
#![no_main]

use bytes::Bytes;
use daq_format::netmon::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let encoded = encode(&event).expect("a decoded event re-encodes");
    assert_eq!(encoded.len(), event.encoded_len());
    let mut expected = data.to_vec();
    // Flags: only the complete bit survives a round trip.
    expected[6] &= 1;
    expected[7] = 0;
    assert_eq!(&encoded[..], &expected[..]);
    assert_eq!(decode(encoded).expect("re-encoded event decodes"), event);
});
