//! Arbitrary bytes into the IPC parsers (`cpg_core::ipc`). The first byte
//! picks the entry:
//!
//! - `0`: a setup stream (`parse_record::<Setup>`, record after record);
//! - `1` / `2`: one request / event body, its kind (kept near the real
//!   ones, so most inputs reach a body parser) and flags from the next 4
//!   bytes;
//! - `3`: a ring's data area read to its end (`Ring::read` on the request
//!   or event ring, then the message parser), head and tail from the next
//!   16 bytes, the rest of the input written at the tail's position.
//!
//! Whatever parses must re-emit to exactly its input bytes (every field is
//! canonical: reserved bytes zero, flags defined), and every record the
//! ring hands out must lie inside the data area, after the tail, before
//! the head.
#![no_main]

use cpg_core::ipc::{
    emit_record, parse_record, DeliverHead, Direction, Event, EventKind, Message, Request, Ring,
    Setup, RING_CAPACITY_MIN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 4 {
        0 => setup_stream(rest),
        1 => body(Direction::Requests, rest),
        2 => body(Direction::Events, rest),
        _ => ring(if sel & 4 == 0 { Direction::Requests } else { Direction::Events }, rest),
    }
});

fn setup_stream(mut bytes: &[u8]) {
    while let Ok((msg, len)) = parse_record::<Setup>(bytes) {
        assert!(len <= bytes.len() && len % 8 == 0);
        let mut out = vec![0; len];
        assert_eq!(emit_record(&msg, &mut out), Ok(len));
        // Header and body are canonical (the padding is not checked).
        let used = 8 + msg.body_len();
        assert_eq!(out[..used], bytes[..used]);
        bytes = &bytes[len..];
    }
}

/// Parse `body` as a message of `kind` with `flags`; re-emit and compare.
fn check(dir: Direction, kind: u16, flags: u16, body: &[u8]) {
    match dir {
        Direction::Requests => {
            if let Ok(m) = Request::parse(kind, flags, body) {
                canonical(&m, kind, flags, body);
            }
        }
        Direction::Events => {
            let parsed = Event::parse(kind, flags, body);
            if let Ok(m) = &parsed {
                canonical(m, kind, flags, body);
            }
            // the client's in-place readers agree with the full parser
            if flags == 0 && kind == EventKind::Deliver as u16 {
                assert_eq!(DeliverHead::parse(body).is_ok(), parsed.is_ok());
            }
            if flags == 0 && kind == EventKind::DeliverRef as u16 {
                assert_eq!(DeliverHead::parse_ref(body).is_ok(), parsed.is_ok());
            }
        }
        // bytes only: nothing to parse
        Direction::Deliveries => {}
    }
}

fn canonical<'a, M: Message<'a>>(m: &M, kind: u16, flags: u16, body: &[u8]) {
    assert_eq!((m.kind(), m.flags(), m.body_len()), (kind, flags, body.len()));
    let mut out = vec![0xEE; body.len()];
    assert_eq!(m.emit_body(&mut out), Ok(body.len()));
    assert_eq!(out, body);
    if !body.is_empty() {
        assert!(m.emit_body(&mut out[..body.len() - 1]).is_err());
    }
}

fn body(dir: Direction, rest: &[u8]) {
    let Some((head, body)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let k = u16::from_le_bytes([head[0], head[1]]);
    let kind = match dir {
        Direction::Requests => 0x0200 | (k & 0x0F),
        Direction::Events => 0x0300 | (k & 0x0F),
        Direction::Deliveries => cpg_core::ipc::DELIVERY_DATA,
    };
    // Mostly the defined flag bit, now and then an undefined one.
    let flags = u16::from_le_bytes([head[2], head[3]]) & 0x8003;
    check(dir, kind, flags, body);
}

fn ring(dir: Direction, rest: &[u8]) {
    let Some((idx, bytes)) = rest.split_first_chunk::<16>() else {
        return;
    };
    let Ok(r) = Ring::new(RING_CAPACITY_MIN) else {
        return;
    };
    let cap = r.capacity();
    let tail = u64::from_le_bytes(idx[..8].try_into().unwrap_or_default());
    let delta = u64::from_le_bytes(idx[8..].try_into().unwrap_or_default());
    // Mostly a plausible head (within the capacity), now and then any.
    let head = if delta >> 63 == 0 {
        tail.wrapping_add(delta % (cap as u64 + 16))
    } else {
        delta
    };
    let mut area = vec![0u8; cap];
    let at = r.position(tail);
    for (i, &b) in bytes.iter().take(cap).enumerate() {
        area[(at + i) % cap] = b;
    }
    let mut t = tail;
    for _ in 0..cap / 8 {
        match r.read(&area, head, t, dir) {
            Ok(Some((rec, body))) => {
                assert!(rec.body.end <= cap && rec.body.len() == body.len());
                assert!(body.len() <= r.body_max());
                let moved = rec.new_tail.wrapping_sub(t);
                assert!(moved > 0 && moved % 8 == 0);
                assert!(moved <= head.wrapping_sub(t));
                assert!(dir.accepts(rec.kind));
                check(dir, rec.kind, rec.flags, body);
                t = rec.new_tail;
            }
            Ok(None) => {
                assert_eq!(t, head);
                return;
            }
            Err(_) => return,
        }
    }
}
