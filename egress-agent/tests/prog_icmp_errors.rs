//! ICMP errors translated through the header they quote (RFC 5508): from
//! beyond the gateway back to the client (destination unreachable with
//! fragmentation needed and port unreachable, time exceeded, parameter
//! problem), and a client's own (port unreachable) on to the remote.
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
        // The quoted TCP checksum, when the quote holds it, is the one the
        // client sent (every NAT change undone); the rest is untouched.
        const CSUM: usize = 20 + 16;
        if quote_len >= CSUM + 2 {
            let client_sent = from_client(tcp_syn(40_000, 443), &[0x55; 1200]);
            assert_eq!(
                &icmp[8 + CSUM..8 + CSUM + 2],
                &client_sent[64 + CSUM..64 + CSUM + 2],
                "quoted TCP checksum"
            );
            assert_eq!(&icmp[8 + CSUM + 2..], &sent[CSUM + 2..], "the rest of the quote is untouched");
        }
        assert_eq!(&icmp[8 + 20 + 8..8 + CSUM.min(quote_len)], &sent[28..CSUM.min(quote_len)]);
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

/// A later fragment's quote holds data where ports would be: a tenant can
/// make that data look like another client's live flow (its NAT port and
/// remote port), and an error about the tenant's fragment would then
/// reach the other client. Not translated: the pod's, as Linux's
/// conntrack leaves it.
#[test]
fn an_error_quoting_a_later_fragment_reaches_no_client() {
    let mut h = Harness::default();
    let sent = sent_packet(&mut h, L4::Udp { src: 5353, dst: 53 }, 28);
    let mut later = sent.clone();
    later[6..8].copy_from_slice(&(1480u16 / 8).to_be_bytes()); // offset 1,480: the bytes are data
    later[10..12].copy_from_slice(&[0, 0]);
    let csum = internet_checksum(&later[..20]);
    later[10..12].copy_from_slice(&csum.to_be_bytes());
    assert_eq!(h.run(&icmp_error(ROUTER_IP, 3, 4, 1200, &later)).action, TC_ACT_UNSPEC);
    assert_eq!(h.counter("icmp_error_to_client"), 0);
    // The same error about the first fragment is the client's.
    let mut first = sent.clone();
    first[6..8].copy_from_slice(&0x2000u16.to_be_bytes()); // more fragments, offset 0
    first[10..12].copy_from_slice(&[0, 0]);
    let csum = internet_checksum(&first[..20]);
    first[10..12].copy_from_slice(&csum.to_be_bytes());
    expect_translated(&mut h, &icmp_error(ROUTER_IP, 3, 4, 1200, &first));
}

/// ICMP `icmp_type`/`code` with `rest` (the 4 bytes after the checksum)
/// quoting `quoted`, in an IPv4 packet from `src` to `dst` with `ttl`.
fn icmp_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![icmp_type, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(quoted);
    let csum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, ttl, 1, 0, 0];
    ip[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let csum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    [ip, icmp].concat()
}

/// The client's port unreachable about `reply` (the IPv4 packet it got),
/// through its tunnel.
fn client_port_unreachable(reply_as_received: &[u8]) -> Vec<u8> {
    let error = icmp_packet(CLIENT_IP, REMOTE_IP, 64, 3, 3, [0; 4], reply_as_received);
    let mut inner = NODE_MAC.to_vec(); // any inner destination MAC
    inner.extend_from_slice(&CLIENT_MAC);
    inner.extend_from_slice(&[0x08, 0x00]);
    inner.extend_from_slice(&error);
    tunnel(CLIENT_IP, VNI, &inner)
}

#[test]
fn a_client_s_port_unreachable_reaches_the_remote_about_the_gateway_s_port() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, L4::Udp { src: 5000, dst: 53 }, b"query");
    // The reply, as the client got it (reverse-NATed: to its own port).
    let out = h.run(&from_remote(L4::Udp { src: 53, dst: nat_port }, b"a late answer"));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let reply_as_received = out.packet[64..].to_vec();
    // Its socket is gone: the client's stack answers port unreachable.
    let out = h.run(&client_port_unreachable(&reply_as_received));
    assert_eq!(out.action, TC_ACT_REDIRECT, "the client's error was not sent on");
    assert_eq!(h.counter("icmp_error_to_remote"), 1);
    // The error as the remote gets it: from the gateway, about the packet
    // the remote sent to the gateway's NAT port; every checksum valid,
    // the quoted UDP one over the whole quoted datagram included.
    let error = ipv4_at(&out.packet, 14);
    assert_eq!((error.src, error.dst, error.protocol, error.ttl), (GATEWAY_IP, REMOTE_IP, 1, 63));
    assert_eq!((error.l4[0], error.l4[1]), (3, 3));
    let quote = &error.l4[8..];
    assert_eq!(internet_checksum(&quote[..20]), 0, "the quoted IPv4 header's checksum verifies");
    let quoted_dst = Ipv4Addr::new(quote[16], quote[17], quote[18], quote[19]);
    assert_eq!(quoted_dst, GATEWAY_IP);
    assert_eq!(ports(&quote[20..]), (53, nat_port), "the quoted ports are the remote's and the NAT port");
    assert!(
        egress_common::checksum::l4_checksum_ok(REMOTE_IP.octets(), GATEWAY_IP.octets(), 17, &quote[20..]),
        "the quoted UDP checksum is the one the remote sent"
    );
}

#[test]
fn a_client_s_error_about_a_flow_it_does_not_have_goes_nowhere() {
    let mut h = Harness::default();
    // About a reply to a port it never used.
    let stranger =
        frame(NODE_MAC, GATEWAY_MAC, REMOTE_IP, CLIENT_IP, 50, L4::Udp { src: 53, dst: 6000 }, b"?");
    let out = h.run(&client_port_unreachable(&stranger[14..]));
    assert_eq!(out.action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_no_mapping"), 1);
    // About a packet addressed to someone else.
    open_flow(&mut h, L4::Udp { src: 5000, dst: 53 }, b"query");
    let someone_else =
        frame(NODE_MAC, GATEWAY_MAC, REMOTE_IP, SECOND_CLIENT_IP, 50, L4::Udp { src: 53, dst: 5000 }, b"?");
    let out = h.run(&client_port_unreachable(&someone_else[14..]));
    assert_eq!(out.action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_spoofed_inner_source"), 1);
    assert_eq!(h.counter("icmp_error_to_remote"), 0);
}

#[test]
fn parameter_problem_is_translated_like_the_other_errors() {
    let mut h = Harness::default();
    let sent = sent_packet(&mut h, L4::Udp { src: 5353, dst: 53 }, 48);
    let icmp = expect_translated(&mut h, &icmp_error(ROUTER_IP, 12, 0, 0, &sent));
    assert_eq!((icmp[0], icmp[1]), (12, 0));
    assert_eq!(ports(&icmp[28..]), (5353, 53));
}
