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

/// Whether a whole L4 segment (checksum field included) verifies.
pub fn l4_checksum_ok(src: [u8; 4], dst: [u8; 4], protocol: u8, segment: &[u8]) -> bool {
    let sum = ones_complement_sum(segment, pseudo_header_sum(src, dst, protocol, segment.len() as u16));
    sum == 0xffff
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
}
