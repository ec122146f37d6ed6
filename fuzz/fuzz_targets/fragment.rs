//! Fuzzes the artdaq fragment decoder: `Fragment::parse`, `FragmentRef::parse`
//! and `split_packed` on arbitrary bytes. A parsed fragment must re-encode
//! to exactly its input, and nothing may panic or allocate beyond the input.
#![no_main]

use bytes::Bytes;
use daq_format::fragment::{Fragment, FragmentRef, HEADER_BYTES, split_packed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let owned = Fragment::parse(bytes.clone());
    let borrowed = FragmentRef::parse(data);
    assert_eq!(owned.is_ok(), borrowed.is_ok());
    if let Ok(f) = owned {
        assert_eq!(f.len(), data.len());
        assert_eq!(
            f.metadata().len() + f.payload().len() + HEADER_BYTES,
            data.len()
        );
        let again = Fragment::with_header(*f.header(), f.metadata(), f.payload())
            .expect("a decoded header re-encodes");
        assert_eq!(again.bytes(), &bytes);
        let _ = f.end_of_data_count();
    }
    let mut consumed = 0;
    let mut pieces = 0;
    for piece in split_packed(data) {
        pieces += 1;
        if let Ok(f) = piece {
            consumed += f.bytes.len();
            assert_eq!(
                f.metadata().len() + f.payload().len() + HEADER_BYTES,
                f.bytes.len()
            );
        }
    }
    assert!(consumed <= data.len());
    assert!(pieces <= data.len() / HEADER_BYTES + 1);
});
