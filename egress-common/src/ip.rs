//! IPv4 numbers, one name each, shared by the program and the agent: the
//! protocols the gateway translates, the ICMP types it reads or writes, and
//! the destinations it must never translate.

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_SOURCE_QUENCH: u8 = 4;
pub const ICMP_REDIRECT: u8 = 5;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// Whether an ICMP type is an error message (RFC 1122 3.2.2). No ICMP
/// error is ever sent about one of these (RFC 1812 4.3.2.7), or two
/// routers could answer each other's errors forever.
#[inline(always)]
pub fn is_icmp_error(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMP_DEST_UNREACHABLE
            | ICMP_SOURCE_QUENCH
            | ICMP_REDIRECT
            | ICMP_TIME_EXCEEDED
            | ICMP_PARAMETER_PROBLEM
    )
}

/// Whether `dst_be` (network order) is an address the gateway must never
/// NAT a client's packet to, whatever `--exclude-cidr` says:
///
/// - 0.0.0.0/8 ("this network", RFC 1122) and 127.0.0.0/8 (loopback): with
///   the gateway's source address they would reach the gateway pod's own
///   stack or a node's, not the internet;
/// - 224.0.0.0/4 (multicast) and 240.0.0.0/4 (reserved, with the limited
///   broadcast 255.255.255.255): one client's packet would go to many, under
///   the address every firewall trusts;
/// - the gateway's own address: a labeled pod would reach the gateway pod's
///   own listeners (its metrics, the agent's loopback endpoints through a
///   NAT port) from the gateway's address.
#[inline(always)]
pub fn is_martian_destination(dst_be: u32, gateway_ip_be: u32) -> bool {
    // The first octet is the first byte on the wire, whatever the host order.
    let first_octet = dst_be.to_ne_bytes()[0];
    first_octet == 0 || first_octet == 127 || first_octet >= 224 || dst_be == gateway_ip_be
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(a: u8, b: u8, c: u8, d: u8) -> u32 {
        u32::from_ne_bytes([a, b, c, d])
    }

    #[test]
    fn martians_and_the_gateway_itself_are_never_natted() {
        let gateway = be(10, 244, 2, 10);
        for martian in [
            be(0, 0, 0, 0),
            be(0, 1, 2, 3),
            be(127, 0, 0, 1),
            be(127, 255, 255, 255),
            be(224, 0, 0, 251),
            be(239, 255, 255, 250),
            be(240, 0, 0, 1),
            be(255, 255, 255, 255),
            gateway,
        ] {
            assert!(is_martian_destination(martian, gateway), "{:?}", martian.to_ne_bytes());
        }
        for fine in [be(1, 1, 1, 1), be(126, 255, 255, 255), be(128, 0, 0, 1), be(223, 255, 255, 255)] {
            assert!(!is_martian_destination(fine, gateway), "{:?}", fine.to_ne_bytes());
        }
    }

    #[test]
    fn icmp_errors_are_told_from_queries() {
        for error in [3, 4, 5, 11, 12] {
            assert!(is_icmp_error(error));
        }
        for query in [0, 8, 13, 14, 42] {
            assert!(!is_icmp_error(query));
        }
    }
}
