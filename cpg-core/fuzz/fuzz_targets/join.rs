//! Arbitrary bytes into `JoinRepr::parse` (a JOIN body, no frame header),
//! so every input reaches the body parser instead of first having to get
//! past the frame header. Whatever parses must emit `buffer_len()` = input
//! length bytes that parse to the same JOIN, and refuse a buffer one byte
//! short with a typed error.
#![no_main]

use cpg_core::wire::{JoinRepr, WireError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(join) = JoinRepr::parse(data) else {
        return;
    };
    let len = join.buffer_len();
    assert_eq!(len, data.len());
    let mut buf = vec![0; len];
    assert_eq!(
        join.emit(&mut buf[..len - 1]),
        Err(WireError::BufferTooSmall)
    );
    assert_eq!(join.emit(&mut buf), Ok(len));
    // Reserved bytes are ignored on parse and zeroed on emit: compare values.
    assert_eq!(JoinRepr::parse(&buf), Ok(join));
});
