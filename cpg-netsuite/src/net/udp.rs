//! Just enough IPv4/UDP for the stage to change a datagram's payload and
//! keep it deliverable: find the payload, recompute the UDP checksum.

/// The byte range of the UDP payload in an IPv4 packet, if it is a whole
/// (unfragmented) UDP datagram whose lengths agree.
pub fn payload_range(pkt: &[u8]) -> Option<std::ops::Range<usize>> {
    let first = *pkt.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*pkt.get(2)?, *pkt.get(3)?]));
    let frag = u16::from_be_bytes([*pkt.get(6)?, *pkt.get(7)?]);
    // more-fragments set or a non-zero offset: part of a datagram
    if ihl < 20 || *pkt.get(9)? != 17 || frag & 0x3fff != 0 || total > pkt.len() {
        return None;
    }
    let udp_len = usize::from(u16::from_be_bytes([*pkt.get(ihl + 4)?, *pkt.get(ihl + 5)?]));
    if udp_len < 8 || ihl + udp_len != total {
        return None;
    }
    Some(ihl + 8..total)
}

/// Recompute the UDP checksum of a packet [`payload_range`] accepts.
/// Returns `false` (and changes nothing) for any other packet.
pub fn fix_checksum(pkt: &mut [u8]) -> bool {
    let Some(range) = payload_range(pkt) else {
        return false;
    };
    let ihl = range.start - 8;
    let udp_len = range.end - ihl;
    pkt[ihl + 6] = 0;
    pkt[ihl + 7] = 0;
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u32::from(b));
            sum += hi | lo;
        }
    };
    add(&pkt[12..20]); // source and destination address
    add(&[0, 17]);
    add(&(udp_len as u16).to_be_bytes());
    add(&pkt[ihl..range.end]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut c = !(sum as u16);
    if c == 0 {
        c = 0xffff; // 0 means "no checksum" in UDP over IPv4
    }
    pkt[ihl + 6..ihl + 8].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10.77.0.1:5405 -> 10.77.0.2:5405, payload "hello", checksum as the
    /// kernel computed it (checked by hand with the RFC 768 sum).
    fn datagram() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 33, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2, // IPv4
            0x15, 0x1d, 0x15, 0x1d, 0, 13, 0, 0, // UDP, checksum below
        ];
        p.extend_from_slice(b"hello");
        p
    }

    /// RFC 1071: a packet with a correct checksum sums to 0xffff.
    fn verifies(p: &[u8]) -> bool {
        let r = payload_range(p).unwrap();
        let ihl = r.start - 8;
        let mut sum: u32 = 0;
        let mut add = |b: &[u8]| {
            for c in b.chunks(2) {
                sum += (u32::from(c[0]) << 8) | c.get(1).map_or(0, |&x| u32::from(x));
            }
        };
        add(&p[12..20]);
        add(&[0, 17]);
        add(&((r.end - ihl) as u16).to_be_bytes());
        add(&p[ihl..r.end]);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    #[test]
    fn checksum_verifies_after_a_change() {
        let mut p = datagram();
        assert!(fix_checksum(&mut p));
        assert!(verifies(&p));
        let r = payload_range(&p).unwrap();
        p[r.start + 1] ^= 0x5a;
        assert!(!verifies(&p), "a changed payload no longer verifies");
        assert!(fix_checksum(&mut p));
        assert!(verifies(&p));
    }

    #[test]
    fn payload_of_a_whole_udp_datagram_only() {
        let p = datagram();
        assert_eq!(payload_range(&p), Some(28..33));
        let mut frag = p.clone();
        frag[6] = 0x20; // more fragments
        assert_eq!(payload_range(&frag), None);
        let mut tcp = p.clone();
        tcp[9] = 6;
        assert_eq!(payload_range(&tcp), None);
        assert_eq!(payload_range(&p[..30]), None, "truncated");
        let mut odd = p;
        odd.push(0); // an odd-length payload sums with a zero pad byte
        odd[3] = 34;
        odd[25] = 14;
        assert!(fix_checksum(&mut odd));
        assert!(verifies(&odd));
    }
}
