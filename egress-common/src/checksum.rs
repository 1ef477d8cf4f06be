//! Internet checksum (RFC 1071) over whole buffers. The datapath updates
//! checksums incrementally with the kernel's helpers; this full computation
//! is what userspace tests use to check the program's result independently.

/// One's complement sum of `data` folded to 16 bits, not inverted.
pub fn ones_complement_sum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u64) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum field value for `data` (with its checksum field zeroed).
pub fn internet_checksum(data: &[u8]) -> u16 {
    !ones_complement_sum(data, 0)
}

/// The IPv4 pseudo-header sum for a TCP/UDP checksum.
pub fn pseudo_header_sum(src: [u8; 4], dst: [u8; 4], protocol: u8, l4_len: u16) -> u32 {
    let words = [
        u16::from_be_bytes([src[0], src[1]]),
        u16::from_be_bytes([src[2], src[3]]),
        u16::from_be_bytes([dst[0], dst[1]]),
        u16::from_be_bytes([dst[2], dst[3]]),
        protocol as u16,
        l4_len,
    ];
    words.iter().map(|w| *w as u32).sum()
}

/// The IPv6 pseudo-header sum (RFC 8200 8.1) for a TCP, UDP or ICMPv6
/// checksum: both addresses, the upper-layer length as 32 bits and the
/// next header.
#[inline(always)]
pub fn pseudo_header_sum_v6(src: [u8; 16], dst: [u8; 16], next_header: u8, upper_len: u32) -> u32 {
    // Indexed in a loop of fixed bounds, not through iterators: the eBPF
    // program calls this too, and an iterator chain came out as a function
    // of its own with a bounds-check panic the verifier refuses.
    let mut sum = (upper_len >> 16) + (upper_len & 0xffff) + next_header as u32;
    let mut at = 0;
    while at < 16 {
        sum += u16::from_be_bytes([src[at], src[at + 1]]) as u32
            + u16::from_be_bytes([dst[at], dst[at + 1]]) as u32;
        at += 2;
    }
    sum
}

/// Whether a whole IPv6 upper-layer segment (checksum field included)
/// verifies. ICMPv6 is checked this way too: it has a pseudo-header.
pub fn l4_checksum_ok_v6(src: [u8; 16], dst: [u8; 16], next_header: u8, segment: &[u8]) -> bool {
    let initial = pseudo_header_sum_v6(src, dst, next_header, segment.len() as u32);
    ones_complement_sum(segment, initial) == 0xffff
}

/// Whether a whole L4 segment (checksum field included) verifies.
pub fn l4_checksum_ok(src: [u8; 4], dst: [u8; 4], protocol: u8, segment: &[u8]) -> bool {
    let sum = ones_complement_sum(segment, pseudo_header_sum(src, dst, protocol, segment.len() as u16));
    sum == 0xffff
}

/// A transport checksum after NAT changed one address of its
/// pseudo-header (when `with_address`: TCP and UDP; not ICMP, which has
/// none) and one port (or echo identifier), all host order, computed
/// incrementally (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')). For the
/// checksums the datapath cannot hand to the kernel's helpers, such as a
/// transport checksum inside an ICMP error's quote. Straight-line: no loop
/// for the verifier to walk.
#[inline(always)]
pub fn nat_checksum_update(
    checksum: u16,
    old_addr: u32,
    new_addr: u32,
    old_port: u16,
    new_port: u16,
    with_address: bool,
) -> u16 {
    let mut sum = (!checksum) as u32 + (!old_port) as u32 + new_port as u32;
    if with_address {
        sum += (!((old_addr >> 16) as u16)) as u32
            + (!(old_addr as u16)) as u32
            + (new_addr >> 16)
            + (new_addr & 0xffff);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// [`nat_checksum_update`] for IPv6: one 16-byte address of the
/// pseudo-header and one port (or echo identifier) changed. Always with
/// the address: TCP, UDP and ICMPv6 all cover it. A fixed eight-step loop
/// the compiler unrolls.
#[inline(always)]
pub fn nat_checksum_update_v6(
    checksum: u16,
    old_addr: &[u8; 16],
    new_addr: &[u8; 16],
    old_port: u16,
    new_port: u16,
) -> u16 {
    let mut sum = (!checksum) as u32 + (!old_port) as u32 + new_port as u32;
    let mut word = 0;
    while word < 8 {
        let old = u16::from_be_bytes([old_addr[2 * word], old_addr[2 * word + 1]]);
        let new = u16::from_be_bytes([new_addr[2 * word], new_addr[2 * word + 1]]);
        sum += (!old) as u32 + new as u32;
        word += 1;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example bytes: sum 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement_sum(&data, 0), 0xddf2);
    }

    #[test]
    fn ipv4_header_verifies() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01,
            0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = internet_checksum(&hdr);
        assert_eq!(c, 0xb861);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(ones_complement_sum(&hdr, 0), 0xffff);
    }

    #[test]
    fn an_incremental_update_equals_a_full_computation() {
        let mut segment =
            [0x12u8, 0x34, 0x00, 0x35, 0x00, 0x0e, 0x00, 0x00, b'a', b'n', b's', b'w', b'e', b'r'];
        let (src, dst) = ([203, 0, 113, 7], [10, 0, 0, 1]);
        let full = |segment: &[u8], dst: [u8; 4]| {
            !ones_complement_sum(segment, pseudo_header_sum(src, dst, 17, segment.len() as u16))
        };
        let before = full(&segment, dst);
        // The destination address and port change (a reverse NAT).
        let new_dst = [10, 1, 0, 5];
        let (old_port, new_port) = (0x0035u16, 0x9c40u16);
        segment[2..4].copy_from_slice(&new_port.to_be_bytes());
        let addr = |a: [u8; 4]| u32::from_be_bytes(a);
        let updated = nat_checksum_update(before, addr(dst), addr(new_dst), old_port, new_port, true);
        assert_eq!(updated, full(&segment, new_dst));
        // Without an address (ICMP): only the identifier.
        assert_eq!(nat_checksum_update(0x1234, 0, 0, 0x0001, 0x0001, false), 0x1234);
    }

    #[test]
    fn an_ipv6_incremental_update_equals_a_full_computation() {
        let v6 = |text: &str| text.parse::<core::net::Ipv6Addr>().unwrap().octets();
        // A UDP segment from a client, source-NATed to the gateway.
        let (client, gateway, remote) =
            (v6("fd00:10:244:1::11"), v6("2001:db8:ffff::10"), v6("2606:4700::1111"));
        let mut segment = [0x9c, 0x40, 0x00, 0x35, 0x00, 0x0d, 0x00, 0x00, b'q', b'u', b'e', b'r', b'y'];
        let full = |segment: &[u8], src: [u8; 16]| {
            !ones_complement_sum(segment, pseudo_header_sum_v6(src, remote, 17, segment.len() as u32))
        };
        let before = full(&segment, client);
        let mut checked = segment;
        checked[6..8].copy_from_slice(&before.to_be_bytes());
        assert!(l4_checksum_ok_v6(client, remote, 17, &checked));
        assert!(!l4_checksum_ok_v6(gateway, remote, 17, &checked), "the address is covered");
        let (old_port, new_port) = (0x9c40u16, 0xc351u16);
        segment[0..2].copy_from_slice(&new_port.to_be_bytes());
        let updated = nat_checksum_update_v6(before, &client, &gateway, old_port, new_port);
        assert_eq!(updated, full(&segment, gateway));
        segment[6..8].copy_from_slice(&updated.to_be_bytes());
        assert!(l4_checksum_ok_v6(gateway, remote, 17, &segment));
    }
}
