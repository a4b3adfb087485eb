//! Arbitrary bytes into `CommitRepr::parse` (a COMMIT body, no frame
//! header), so every input reaches the body parser instead of first having
//! to get past the frame header. Whatever parses must hold one entry per
//! address, emit `buffer_len()` = input length bytes that parse to the same
//! commit token, and refuse a buffer one byte short with a typed error.
#![no_main]

use cpg_core::wire::{CommitRepr, WireError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(commit) = CommitRepr::parse(data) else {
        return;
    };
    assert_eq!(commit.addr.len(), commit.entries.len());
    assert!(usize::from(commit.memb_index) <= commit.addr.len());
    let len = commit.buffer_len();
    assert_eq!(len, data.len());
    let mut buf = vec![0; len];
    assert_eq!(
        commit.emit(&mut buf[..len - 1]),
        Err(WireError::BufferTooSmall)
    );
    assert_eq!(commit.emit(&mut buf), Ok(len));
    // Reserved bytes are ignored on parse and zeroed on emit: compare values.
    assert_eq!(CommitRepr::parse(&buf), Ok(commit));
});
