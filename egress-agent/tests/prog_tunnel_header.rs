//! The tunnel header as Linux's VXLAN device writes it: the inner packet's
//! DSCP and ECN copied to the outer header, a fresh IP ID on every packet
//! (the outer DF bit is clear); and on the way in, congestion marked on the
//! tunnel merged into the inner packet (RFC 6040).
mod common;

use common::*;
use egress_common::checksum::internet_checksum;

/// EF (DSCP 46) and ECT(0).
const EF_ECT0: u8 = (46 << 2) | 0b10;
const ECT0: u8 = 0b10;
const ECT1: u8 = 0b01;
const CE: u8 = 0b11;

/// Sets the TOS byte of the IPv4 header at `ip_off`, checksum included.
fn set_tos(packet: &mut [u8], ip_off: usize, tos: u8) {
    packet[ip_off + 1] = tos;
    packet[ip_off + 10..ip_off + 12].copy_from_slice(&[0, 0]);
    let sum = internet_checksum(&packet[ip_off..ip_off + 20]);
    packet[ip_off + 10..ip_off + 12].copy_from_slice(&sum.to_be_bytes());
}

fn ip_id(packet: &[u8], ip_off: usize) -> u16 {
    u16::from_be_bytes([packet[ip_off + 4], packet[ip_off + 5]])
}

/// A client's UDP packet with `inner_tos`, in a tunnel packet with `outer_tos`.
fn client_packet(inner_tos: u8, outer_tos: u8) -> Vec<u8> {
    let mut packet = from_client(L4::Udp { src: 5000, dst: 53 }, b"query");
    set_tos(&mut packet, 64, inner_tos);
    set_tos(&mut packet, 14, outer_tos);
    packet
}

#[test]
fn a_reply_s_tunnel_header_carries_its_dscp_and_ecn_and_a_fresh_ip_id() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, L4::Udp { src: 5000, dst: 53 }, b"query");
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let mut reply = from_remote(L4::Udp { src: 53, dst: nat_port }, b"answer");
        set_tos(&mut reply, 14, EF_ECT0);
        let out = h.run(&reply);
        assert_eq!(out.action, TC_ACT_REDIRECT);
        // ipv4_at checks both headers' checksums.
        let outer = ipv4_at(&out.packet, 14);
        assert_eq!(outer.protocol, 17);
        assert_eq!(out.packet[14 + 1], EF_ECT0, "the outer TOS is the inner one");
        assert_eq!(out.packet[64 + 1], EF_ECT0, "the inner TOS is left as it came");
        assert_eq!(out.packet[14 + 6] & 0x40, 0, "outer DF clear, as Linux's VXLAN device sends");
        ipv4_at(&out.packet, 64);
        ids.insert(ip_id(&out.packet, 14));
    }
    assert!(ids.len() > 1, "the outer IP ID never changes: {ids:?}");
}

#[test]
fn congestion_marked_on_the_tunnel_reaches_an_ecn_capable_packet() {
    for (inner, outer, expected) in
        [(ECT0, CE, CE), (ECT1, CE, CE), (CE, CE, CE), (ECT0, ECT1, ECT1), (ECT0, 0, ECT0), (0, ECT0, 0)]
    {
        let mut h = Harness::default();
        let out = h.run(&client_packet((46 << 2) | inner, outer));
        assert_eq!(out.action, TC_ACT_REDIRECT, "inner {inner:02b}, outer {outer:02b}");
        ipv4_at(&out.packet, 14);
        assert_eq!(
            out.packet[14 + 1],
            (46 << 2) | expected,
            "inner {inner:02b}, outer {outer:02b}: DSCP kept, ECN {expected:02b}"
        );
    }
}

#[test]
fn a_marked_tunnel_packet_whose_inner_packet_is_not_ecn_capable_is_dropped() {
    let mut h = Harness::default();
    let out = h.run(&client_packet(0, CE));
    assert_eq!(out.action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_ce_on_not_ect"), 1);
    assert!(h.flows().is_empty(), "a dropped packet made a binding");
}
