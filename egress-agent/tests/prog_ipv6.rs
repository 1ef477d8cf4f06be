//! A labeled pod's IPv6 packets in its IPv4 tunnel (a dual-stack cluster):
//! handed to `egress_gateway6` by a tail call and, until IPv6 egress is
//! translated (issue 14), dropped there, each for its reason. Nothing of a
//! pod's IPv6 ever leaves the gateway, and no flow is made for it.
mod common;

use std::net::Ipv6Addr;

use common::*;
use egress_common::{config::TUNNEL_GATEWAY_MAC, ip::IPPROTO_ICMPV6};
use etherparse::PacketBuilder;

const CLIENT_IP6: &str = "fd00:10:244:1::5";
const REMOTE_IP6: &str = "2606:4700::1111";
const ETH_HLEN: usize = 14;

fn v6(text: &str) -> [u8; 16] {
    text.parse::<Ipv6Addr>().unwrap().octets()
}

/// An inner Ethernet + IPv6 frame from the client to `dst`, built by etherparse.
fn frame6(dst: &str, l4: L4) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(CLIENT_MAC, TUNNEL_GATEWAY_MAC).ipv6(v6(CLIENT_IP6), v6(dst), 64);
    let mut out = Vec::new();
    match l4 {
        L4::Tcp { src, dst, .. } => ip.tcp(src, dst, 1000, 64_000).syn().write(&mut out, b"data").unwrap(),
        L4::Udp { src, dst } => ip.udp(src, dst).write(&mut out, b"data").unwrap(),
        L4::EchoRequest { id } => ip.icmpv6_echo_request(id, 1).write(&mut out, b"data").unwrap(),
        L4::EchoReply { id } => ip.icmpv6_echo_reply(id, 1).write(&mut out, b"data").unwrap(),
    }
    out
}

/// An inner Ethernet + IPv6 frame with `next_header` and `payload` as
/// given, its payload length `claimed` (or the true one).
fn raw_frame6(next_header: u8, payload: &[u8], claimed: Option<u16>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&TUNNEL_GATEWAY_MAC);
    out.extend_from_slice(&CLIENT_MAC);
    out.extend_from_slice(&0x86ddu16.to_be_bytes());
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&claimed.unwrap_or(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(&[next_header, 64]);
    out.extend_from_slice(&v6(CLIENT_IP6));
    out.extend_from_slice(&v6(REMOTE_IP6));
    out.extend_from_slice(payload);
    out
}

fn sent(h: &Harness) -> u64 {
    h.counter("forwarded_to_remote") + h.counter("forwarded_to_client") + h.counter("probe_answered")
}

/// `packet` is dropped, counted under `counter`, sends nothing and makes
/// no flow; and it reached the IPv6 program (no empty-slot fallback).
fn assert_dropped(h: &mut Harness, packet: &[u8], counter: &str) {
    let before = h.counter(counter);
    let out = h.run(packet);
    assert_eq!(out.action, TC_ACT_SHOT, "{counter}: dropped");
    assert_eq!(h.counter(counter), before + 1, "{counter}: counted");
    assert_eq!(sent(h), 0, "{counter}: nothing sent");
    assert!(h.flows().is_empty(), "{counter}: no flow made");
    assert_eq!(h.counter("drop_not_configured"), 0, "{counter}: the IPv6 program was in its slot");
}

#[test]
fn a_pod_s_ipv6_reaches_the_ipv6_program_and_never_leaves() {
    let mut h = Harness::default();
    for l4 in [tcp_syn(40_000, 443), L4::Udp { src: 40_001, dst: 53 }, L4::EchoRequest { id: 7 }] {
        assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &frame6(REMOTE_IP6, l4)), "drop_ipv6_not_translated");
    }
    // The same pod's IPv4 still goes out: the tail call is IPv6's alone.
    let out = h.run(&from_client(tcp_syn(40_000, 443), b""));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    assert_eq!(h.counter("forwarded_to_remote"), 1);
}

#[test]
fn hostile_ipv6_is_dropped_for_what_it_is() {
    let mut h = Harness::default();
    let udp = [0x9c, 0x41, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, b'd', b'a', b't', b'a'];
    // Extension headers before the transport header: an 8-byte hop-by-hop
    // (next header UDP, PadN), and the others by their numbers alone.
    let mut hop_by_hop = vec![17, 0, 1, 4, 0, 0, 0, 0];
    hop_by_hop.extend_from_slice(&udp);
    assert_dropped(
        &mut h,
        &tunnel(CLIENT_IP, VNI, &raw_frame6(0, &hop_by_hop, None)),
        "drop_ipv6_ext_header",
    );
    for next_header in [43, 44, 60] {
        let frame = raw_frame6(next_header, &hop_by_hop, None);
        assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &frame), "drop_ipv6_ext_header");
    }
    // Destinations never to be NATed, whatever the protocol.
    for martian in ["::1", "::", "::ffff:10.0.0.1", "fe80::1", "ff02::1", "ff0e::1"] {
        let frame = frame6(martian, L4::Udp { src: 40_002, dst: 53 });
        assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &frame), "drop_martian_destination");
    }
    // A payload length that claims more than arrived, or a version that
    // is not 6 under the IPv6 ethertype.
    for claimed in [udp.len() as u16 + 1, 1400] {
        let lying = raw_frame6(17, &udp, Some(claimed));
        assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &lying), "drop_malformed");
    }
    let mut version4 = raw_frame6(17, &udp, None);
    version4[ETH_HLEN] = 0x45;
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &version4), "drop_malformed");
    let truncated = &raw_frame6(17, &udp, None)[..ETH_HLEN + 30];
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, truncated), "drop_malformed");
    // SCTP, and an ICMPv6 echo reply sent as if in answer to nothing.
    assert_dropped(
        &mut h,
        &tunnel(CLIENT_IP, VNI, &raw_frame6(132, &udp, None)),
        "drop_unsupported_protocol",
    );
    let reply = frame6(REMOTE_IP6, L4::EchoReply { id: 9 });
    assert_eq!(reply[ETH_HLEN + 6], IPPROTO_ICMPV6);
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &reply), "drop_ipv6_not_translated");
}

#[test]
fn ipv6_from_outside_the_labeled_pods_never_reaches_the_ipv6_program() {
    let mut h = Harness::default();
    let frame = frame6(REMOTE_IP6, tcp_syn(40_000, 443));
    // The outer checks come first: an unlisted worker pod, another VNI.
    assert_dropped(&mut h, &tunnel(OTHER_POD_IP, VNI, &frame), "drop_unknown_client");
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI + 1, &frame), "drop_bad_vni");
    assert_eq!(h.counter("drop_ipv6_not_translated"), 0);
}
