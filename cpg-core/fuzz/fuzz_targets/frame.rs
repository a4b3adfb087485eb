//! Arbitrary bytes into `parse_frame` (cluster 0; the `_fuzzing` feature
//! skips the authenticator check). Whatever parses must re-emit to a frame
//! of the same length that parses to the same value.
#![no_main]

use cpg_core::wire::{emit_frame, frame_len, parse_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = parse_frame(data, 0) else {
        return;
    };
    let len = frame_len(&frame.packet);
    assert_eq!(len, data.len());
    let mut buf = vec![0; len];
    assert_eq!(
        emit_frame(frame.header.sender, 0, &frame.packet, &mut buf),
        Ok(len)
    );
    // Reserved and authenticator bytes are ignored on parse and zeroed on
    // emit, so compare values, not bytes.
    assert_eq!(parse_frame(&buf, 0).as_ref(), Ok(&frame));
});
