//! Arbitrary datagrams into `Opener::open`, with a sealer's real datagrams
//! mixed in: nothing panics; a forged one never opens; every outcome is
//! counted once; a real datagram opens exactly once (a second time is a
//! replay) and gives back its frame.
#![no_main]

use cpg_core::seal::{Key, KeyMaterial, Mode, OpenError, Opener, Sealer, SoftAesGcm, SEAL_OVERHEAD};
use libfuzzer_sys::fuzz_target;

fn key(mode: Mode) -> Key<SoftAesGcm> {
    let secret: Vec<u8> = (0u8..48).collect();
    let m = KeyMaterial::derive(&secret, "fuzz", mode).unwrap();
    Key::new(&m, SoftAesGcm::new(&m))
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mode = if first & 1 == 0 { Mode::Encrypt } else { Mode::Authenticate };
    let mut opener = Opener::new(key(mode), 1);
    let mut sealer = Sealer::new(key(mode), 2, u32::from(first >> 1));
    let mut opened = 0u64;
    // Chunks: a forged datagram (as given), then a real one sealing it.
    for (i, chunk) in rest.chunks(97).enumerate() {
        let from = 2 + (chunk.first().copied().unwrap_or(0) % 2) as u32;
        let mut forged = chunk.to_vec();
        match opener.open(from, &mut forged) {
            Ok(_) => panic!("a datagram nobody sealed opened"),
            Err(OpenError::TooManySenders) => panic!("two senders overflowed the window table"),
            Err(_) => {}
        }
        let mut real = vec![0u8; chunk.len() + SEAL_OVERHEAD];
        let dest = if i % 3 == 0 { 1 } else { 0 };
        let n = sealer.seal([chunk, &[]], dest, &mut real).unwrap();
        real.truncate(n);
        let copy = real.clone();
        assert_eq!(opener.open(2, &mut real), Ok(chunk.len()));
        assert_eq!(&real[..chunk.len()], chunk);
        opened += 1;
        assert_eq!(opener.open(2, &mut copy.clone()), Err(OpenError::Replay));
    }
    let stats = opener.stats();
    assert_eq!(stats.opened, opened);
});
