//! Hostile input, exhaustively: every prefix of every kind of packet the
//! program translates (a client's new and established flows, a reply, an
//! ICMP error about a flow). A truncated packet is never forwarded, never
//! creates a flow, and every run ends in exactly one verdict counter: passed
//! to the stack, forwarded, or dropped with a reason.
mod common;

use common::*;
use egress_common::checksum::internet_checksum;

/// Runs that reached a verdict: each run adds exactly one.
fn verdicts(h: &Harness) -> u64 {
    h.datapath
        .maps
        .counter_totals()
        .unwrap()
        .iter()
        .filter(|(n, _)| n.starts_with("drop_") || *n == "passed_to_stack" || n.starts_with("forwarded_to_"))
        .map(|(_, v)| v)
        .sum()
}

fn forwarded(h: &Harness) -> u64 {
    h.counter("forwarded_to_remote") + h.counter("forwarded_to_client")
}

/// Runs every prefix of `packet` that holds at least the outer IPv4 header
/// (the kernel's test run refuses shorter IPv4 frames with EINVAL; the
/// program's own bounds checks cover them on a real link) and checks the
/// invariants; the whole packet must still be forwarded afterwards.
fn every_prefix(h: &mut Harness, what: &str, packet: &[u8]) {
    let flows = h.counter("flow_created");
    for len in 14 + 20..packet.len() {
        let (verdicts_before, forwarded_before) = (verdicts(h), forwarded(h));
        let out = h.run(&packet[..len]);
        assert_ne!(out.action, TC_ACT_REDIRECT, "{what} cut to {len} bytes was forwarded");
        assert_eq!(forwarded(h), forwarded_before, "{what} cut to {len} bytes");
        assert_eq!(verdicts(h), verdicts_before + 1, "{what} cut to {len} bytes: one verdict, counted");
    }
    assert_eq!(h.counter("flow_created"), flows, "{what}: no prefix created a flow");
    assert_eq!(h.run(packet).action, TC_ACT_REDIRECT, "{what}, whole, is still forwarded");
}

#[test]
fn no_prefix_of_a_client_packet_is_forwarded() {
    let mut h = Harness::default();
    every_prefix(&mut h, "a new flow's SYN", &from_client(tcp_syn(40_000, 443), b"hello"));
    every_prefix(&mut h, "a data segment", &from_client(tcp_ack(40_000, 443), &[7; 300]));
    every_prefix(&mut h, "a UDP datagram", &from_client(L4::Udp { src: 5353, dst: 53 }, &[1; 64]));
    every_prefix(&mut h, "an echo request", &from_client(L4::EchoRequest { id: 9 }, &[2; 56]));
}

#[test]
fn no_prefix_of_a_reply_or_an_icmp_error_is_forwarded() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, tcp_syn(40_000, 443), b"");
    let reply = L4::Tcp { src: 443, dst: nat_port, syn: false, ack: true, fin: false, rst: false };
    every_prefix(&mut h, "a reply", &from_remote(reply, &[3; 300]));

    // Fragmentation needed from a router, quoting what the gateway sent.
    let sent = h.run(&from_client(tcp_ack(40_000, 443), &[4; 100]));
    let quote = &sent.packet[14..14 + 28];
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x04, 0xb0];
    icmp.extend_from_slice(quote);
    let csum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 60, 1, 0, 0, 198, 51, 100, 1];
    ip.extend_from_slice(&GATEWAY_IP.octets());
    ip[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    let csum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let mut error = [GATEWAY_MAC, NODE_MAC].concat();
    error.extend_from_slice(&[0x08, 0x00]);
    error.extend_from_slice(&ip);
    error.extend_from_slice(&icmp);
    every_prefix(&mut h, "an ICMP error", &error);
}

#[test]
fn ethernet_padding_is_not_truncation() {
    let mut h = Harness::default();
    let mut padded = from_client(tcp_syn(40_000, 443), b"");
    padded.extend_from_slice(&[0; 12]);
    assert_eq!(h.run(&padded).action, TC_ACT_REDIRECT);
}

#[test]
fn a_header_claiming_more_than_arrived_is_dropped() {
    let mut h = Harness::default();
    // The inner IPv4 length says 100 bytes more than the tunnel carries.
    let mut p = from_client(tcp_syn(40_000, 443), b"");
    let inner_len = u16::from_be_bytes([p[64 + 2], p[64 + 3]]) + 100;
    p[64 + 2..64 + 4].copy_from_slice(&inner_len.to_be_bytes());
    let before = h.counter("drop_malformed");
    assert_eq!(h.run(&p).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_malformed"), before + 1);
}
