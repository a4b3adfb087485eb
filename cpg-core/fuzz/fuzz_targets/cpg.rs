//! Arbitrary bytes into `CpgMsg::parse`. Whatever parses must re-emit to a
//! message of the same length that parses to the same value; a joinlist is
//! iterated to the end.
#![no_main]

use cpg_core::wire::CpgMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = CpgMsg::parse(data) else { return };
    let len = msg.buffer_len();
    assert_eq!(len, data.len());
    let mut buf = vec![0; len];
    assert_eq!(msg.emit(&mut buf), Ok(len));
    assert_eq!(CpgMsg::parse(&buf).as_ref(), Ok(&msg));
    if let CpgMsg::JoinList(it) = msg {
        let n = it.len();
        assert_eq!(it.count(), n);
    }
});
