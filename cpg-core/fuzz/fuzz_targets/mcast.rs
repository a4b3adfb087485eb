//! Arbitrary bytes into `McastRepr::parse` (an MCAST body, no frame
//! header), so every input reaches the body parser instead of first having
//! to get past the frame header. Whatever parses must borrow its payload
//! from the tail of the input, emit `buffer_len()` = input length bytes
//! that parse to the same multicast, and refuse a buffer one byte short
//! with a typed error.
#![no_main]

use cpg_core::wire::{McastRepr, WireError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mcast) = McastRepr::parse(data) else {
        return;
    };
    assert!(!mcast.payload.is_empty());
    assert!(data.ends_with(mcast.payload));
    let len = mcast.buffer_len();
    assert_eq!(len, data.len());
    let mut buf = vec![0; len];
    assert_eq!(
        mcast.emit(&mut buf[..len - 1]),
        Err(WireError::BufferTooSmall)
    );
    assert_eq!(mcast.emit(&mut buf), Ok(len));
    // Reserved bytes are ignored on parse and zeroed on emit: compare values.
    assert_eq!(McastRepr::parse(&buf), Ok(mcast));
});
