//! Arbitrary bytes into `CpgMsg::parse`. Whatever parses must re-emit to a
//! message of the same length that parses to the same value; a joinlist is
//! iterated to the end. `McastRef::parse` (the receive path's in-place
//! read) must agree with it on every input.
#![no_main]

use cpg_core::wire::{CpgMsg, McastRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match (McastRef::parse(data), CpgMsg::parse(data)) {
        (Ok(Some(m)), Ok(CpgMsg::Mcast { pid, group, guarantee, payload })) => {
            assert_eq!((m.pid, m.group, m.guarantee, m.payload), (pid, group.as_bytes(), guarantee, payload));
        }
        (Ok(None), Ok(CpgMsg::Mcast { .. })) => panic!("an MCAST McastRef did not see"),
        (Ok(Some(_)), other) => panic!("McastRef read {other:?} as an MCAST"),
        (Err(a), Err(b)) => assert_eq!(a, b),
        (Err(e), Ok(_)) => panic!("McastRef refused ({e:?}) what CpgMsg parses"),
        (Ok(None), _) => {}
    }
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
