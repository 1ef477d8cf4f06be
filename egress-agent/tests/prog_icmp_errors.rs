//! ICMP errors from beyond the gateway, translated back to the client
//! through the header they quote (RFC 5508): destination unreachable
//! (fragmentation needed, port unreachable) and time exceeded.
mod common;

use std::net::Ipv4Addr;

use common::*;
use egress_common::checksum::internet_checksum;

/// A router between the gateway and the remote.
const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// What the gateway sent for `l4` from the client (SNATed), as a router
/// would quote it: the IPv4 packet without Ethernet, cut to `quote_len`.
fn sent_packet(h: &mut Harness, l4: L4, quote_len: usize) -> Vec<u8> {
    let out = h.run(&from_client(l4, &[0x55; 1200]));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    out.packet[14..14 + quote_len.min(out.packet.len() - 14)].to_vec()
}

/// An ICMP error from `from` to the gateway, quoting `quoted`.
fn icmp_error(from: Ipv4Addr, icmp_type: u8, code: u8, mtu: u16, quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![icmp_type, code, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(quoted);
    let csum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 60, 1, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&from.octets());
    ip.extend_from_slice(&GATEWAY_IP.octets());
    let csum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let mut frame = GATEWAY_MAC.to_vec();
    frame.extend_from_slice(&NODE_MAC);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&icmp);
    frame
}

/// Runs `error` and checks it reached the client intact: tunnelled to its
/// worker, addressed to it, checksums valid (the ICMP one over the whole
/// rewritten quote), and the quote naming the client's own address.
/// Returns the ICMP message as the client gets it.
fn expect_translated(h: &mut Harness, error: &[u8]) -> Vec<u8> {
    let out = h.run(error);
    assert_eq!(out.action, TC_ACT_REDIRECT, "translated and sent to the client");
    let outer = ipv4_at(&out.packet, 14);
    assert_eq!(
        (outer.src, outer.dst, outer.protocol),
        (GATEWAY_IP, CLIENT_IP, 17),
        "tunnelled to the worker"
    );
    let inner = ipv4_at(&out.packet, 14 + 50); // verifies the IP and ICMP checksums
    assert_eq!((inner.src, inner.dst, inner.protocol, inner.ttl), (ROUTER_IP, CLIENT_IP, 1, 59));
    let quote = &inner.l4[8..];
    assert_eq!(internet_checksum(&quote[..20]), 0, "the quoted IPv4 header's checksum verifies");
    assert_eq!(Ipv4Addr::new(quote[12], quote[13], quote[14], quote[15]), CLIENT_IP, "quoted source");
    assert_eq!(Ipv4Addr::new(quote[16], quote[17], quote[18], quote[19]), REMOTE_IP, "quoted destination");
    assert_eq!(h.counter("icmp_error_to_client"), 1);
    inner.l4
}

#[test]
fn fragmentation_needed_reaches_the_client_with_its_own_port_and_the_mtu() {
    for quote_len in [28, 548] {
        let mut h = Harness::default();
        let sent = sent_packet(&mut h, tcp_syn(40_000, 443), quote_len);
        let icmp = expect_translated(&mut h, &icmp_error(ROUTER_IP, 3, 4, 1200, &sent));
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1200, "next-hop MTU unchanged");
        assert_eq!(
            ports(&icmp[28..]),
            (40_000, 443),
            "quoted ports are the client's (quote {quote_len} bytes)"
        );
        assert_eq!(icmp.len(), 8 + quote_len, "the quote keeps its length");
        assert_eq!(&icmp[8 + 20 + 8..], &sent[28..], "the rest of the quote is untouched");
    }
}

#[test]
fn port_unreachable_for_udp_reaches_the_client() {
    let mut h = Harness::default();
    let sent = sent_packet(&mut h, L4::Udp { src: 5353, dst: 53 }, 28);
    let icmp = expect_translated(&mut h, &icmp_error(ROUTER_IP, 3, 3, 0, &sent));
    assert_eq!(ports(&icmp[28..]), (5353, 53));
}

#[test]
fn time_exceeded_for_a_ping_reaches_the_client_with_its_identifier() {
    let mut h = Harness::default();
    let sent = sent_packet(&mut h, L4::EchoRequest { id: 777 }, 28);
    let icmp = expect_translated(&mut h, &icmp_error(ROUTER_IP, 11, 0, 0, &sent));
    assert_eq!((icmp[0], icmp[28], icmp_id(&icmp[28..])), (11, 8, 777));
}

#[test]
fn errors_about_unbound_or_foreign_ports_do_not_reach_clients() {
    let mut h = Harness::default();
    let sent = sent_packet(&mut h, tcp_syn(40_000, 443), 28);
    // The same quote with another NAT port: nothing is bound there.
    let mut unbound = sent.clone();
    let nat_port = u16::from_be_bytes([sent[20], sent[21]]);
    unbound[20..22].copy_from_slice(&(if nat_port == 20_000 { 20_001u16 } else { 20_000 }).to_be_bytes());
    let out = h.run(&icmp_error(ROUTER_IP, 3, 4, 1200, &unbound));
    assert_eq!(out.action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_no_mapping"), 1);
    // About the gateway pod's own connection (not a NAT port): its stack's.
    let mut own = sent.clone();
    own[20..22].copy_from_slice(&45_000u16.to_be_bytes());
    assert_eq!(h.run(&icmp_error(ROUTER_IP, 3, 4, 1200, &own)).action, TC_ACT_UNSPEC);
    // Quoting someone else's packet, or too little to name a port.
    let mut foreign = sent.clone();
    foreign[12..16].copy_from_slice(&[192, 0, 2, 9]);
    assert_eq!(h.run(&icmp_error(ROUTER_IP, 3, 4, 1200, &foreign)).action, TC_ACT_UNSPEC);
    assert_eq!(h.run(&icmp_error(ROUTER_IP, 3, 4, 1200, &sent[..24])).action, TC_ACT_UNSPEC);
    assert_eq!(h.counter("icmp_error_to_client"), 0);
}
