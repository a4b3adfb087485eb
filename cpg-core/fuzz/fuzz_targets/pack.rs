//! Arbitrary bytes into `Packed::parse`. Whatever parses must list exactly
//! `count()` items and re-emit (with its padding) to the same bytes.
#![no_main]

use cpg_core::wire::pack::{emit_packed, packed_len};
use cpg_core::wire::Packed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Packed::parse(data) else { return };
    let items: Vec<&[u8]> = p.items().map(|(_, item)| item).collect();
    assert_eq!(items.len(), p.count());
    for (at, item) in p.items() {
        assert_eq!(&data[at..at + item.len()], item);
    }
    let len = packed_len(items.iter().map(|i| i.len())) + p.pad();
    assert_eq!(len, data.len());
    assert!(p.pad() <= cpg_core::wire::pack::PACK_PAD_MAX);
    let mut buf = vec![0xAA; len];
    assert_eq!(emit_packed(p.header, &items, p.pad(), &mut buf), Ok(len));
    assert_eq!(buf, data);
});
