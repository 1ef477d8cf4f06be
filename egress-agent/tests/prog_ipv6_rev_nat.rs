//! Replies to the gateway's IPv6 address: a reply of a client's IPv6 flow
//! goes back to the client through its IPv4 tunnel, translated to its
//! address and port; anything else is the gateway pod's own, or dropped
//! when it comes to a NAT port unasked. Every checksum is verified with
//! our own code.
mod common;

use common::*;
use egress_common::{
    config::{GatewayConfig, TUNNEL_GATEWAY_MAC},
    conntrack::{FlowState, FLOW_SEEN_REPLY},
};
use etherparse::{Icmpv6Type, PacketBuilder};

const ETH_HLEN: usize = 14;
/// Outer IPv4 (20), UDP (8), VXLAN (8), then the inner Ethernet header.
const INNER_ETH_OFF: usize = ETH_HLEN + 36;
const INNER_IP_OFF: usize = INNER_ETH_OFF + 14;

/// Opens the client's flow `l4` and returns the NAT port (or identifier)
/// it left with.
fn open6(h: &mut Harness, l4: L4) -> u16 {
    let out = h.run(&from_client6(l4, b"ask"));
    assert_eq!(out.action, TC_ACT_REDIRECT, "the client's packet went out");
    let ip = ipv6_at(&out.packet, ETH_HLEN);
    if ip.next_header == 58 {
        icmp_id(&ip.l4)
    } else {
        ports(&ip.l4).0
    }
}

/// Sends the remote's `l4` and returns the inner IPv6 packet tunnelled to
/// the client, checking the tunnel around it.
fn reply(h: &mut Harness, l4: L4, payload: &[u8]) -> Ipv6View {
    tunnelled(h, &from_remote6(l4, payload))
}

/// Runs `packet` and returns the inner IPv6 packet tunnelled to the
/// client, checking the tunnel around it.
fn tunnelled(h: &mut Harness, packet: &[u8]) -> Ipv6View {
    let out = h.run(packet);
    assert_eq!(out.action, TC_ACT_REDIRECT, "sent to the client");
    assert_eq!(out.packet.len(), packet.len() + 50, "tunnelled");
    assert_eq!(&out.packet[12..14], &[0x08, 0x00], "the outer header is IPv4");
    let outer = ipv4_fields_at(&out.packet, ETH_HLEN);
    assert_eq!((outer.src, outer.dst), (GATEWAY_IP, CLIENT_IP), "to the client's worker");
    assert_eq!(outer.protocol, 17);
    assert_eq!(ports(&outer.payload), (VXLAN_PORT, VXLAN_PORT));
    let vxlan = &outer.payload[8..16];
    assert_eq!(vxlan[0], 0x08, "VNI present");
    assert_eq!(u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]), VNI);
    let inner_eth = &out.packet[INNER_ETH_OFF..INNER_IP_OFF];
    assert_eq!(&inner_eth[0..6], &CLIENT_MAC, "to the worker's tunnel device");
    assert_eq!(&inner_eth[6..12], &TUNNEL_GATEWAY_MAC);
    assert_eq!(&inner_eth[12..14], &[0x86, 0xdd], "the inner frame is IPv6");
    let inner = ipv6_at(&out.packet, INNER_IP_OFF);
    assert_eq!(outer.tos, inner.traffic_class, "DSCP and ECN copied out (RFC 6040)");
    inner
}

/// A NAT port of the harness's range (20,000-20,099) other than `nat_port`
/// (its neighbour: the range's last one has only one).
fn another_nat_port(nat_port: u16) -> u16 {
    if nat_port == 20_099 {
        nat_port - 1
    } else {
        nat_port + 1
    }
}

fn syn_ack(nat_port: u16) -> L4 {
    L4::Tcp { src: 443, dst: nat_port, syn: true, ack: true, fin: false, rst: false }
}

#[test]
fn a_tcp_reply_goes_back_to_the_client_through_its_tunnel() {
    let mut h = Harness::default();
    let nat_port = open6(&mut h, tcp_syn(40_000, 443));
    let inner = reply(&mut h, syn_ack(nat_port), b"welcome");
    assert_eq!(inner.src, REMOTE_IP6);
    assert_eq!(inner.dst, CLIENT_IP6);
    assert_eq!(ports(&inner.l4), (443, 40_000), "the client's own port");
    assert_eq!(inner.hop_limit, 49, "one hop");
    assert_eq!(&inner.l4[20..], b"welcome");
    let flow = h.flows6()[0];
    assert_ne!(flow.flags & FLOW_SEEN_REPLY, 0, "answered");
    assert_eq!(flow.state, FlowState::Open as u8);
    assert_eq!(h.counter("forwarded_to_client"), 1);
    assert_eq!(h.counter("passed_to_stack"), 0);
}

#[test]
fn udp_and_echo_replies_go_back_too() {
    let mut h = Harness::default();
    let udp_port = open6(&mut h, L4::Udp { src: 40_001, dst: 53 });
    let inner = reply(&mut h, L4::Udp { src: 53, dst: udp_port }, b"answer");
    assert_eq!((inner.dst, ports(&inner.l4)), (CLIENT_IP6, (53, 40_001)));
    let echo_id = open6(&mut h, L4::EchoRequest { id: 7 });
    let inner = reply(&mut h, L4::EchoReply { id: echo_id }, b"pong");
    assert_eq!(inner.next_header, 58);
    assert_eq!(inner.l4[0], 129, "an echo reply");
    assert_eq!(icmp_id(&inner.l4), 7, "the client's own identifier");
    assert_eq!(h.counter("forwarded_to_client"), 2);
}

#[test]
fn what_is_not_a_reply_stays_the_pod_s_or_is_dropped() {
    let mut h = Harness::default();
    let nat_port = open6(&mut h, tcp_syn(40_000, 443));
    // Unasked, to a NAT port: dropped, never the pod's nor a client's.
    let unasked =
        L4::Tcp { src: 443, dst: another_nat_port(nat_port), syn: true, ack: false, fin: false, rst: false };
    assert_eq!(h.run(&from_remote6(unasked, b"")).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_no_mapping"), 1);
    // From another remote, or another of its ports, to the flow's port:
    // not the flow's reply.
    let elsewhere =
        frame6(NODE_MAC, GATEWAY_MAC, v6("2001:db8::666"), GATEWAY_IP6, 50, syn_ack(nat_port), b"");
    assert_eq!(h.run(&elsewhere).action, TC_ACT_SHOT);
    let other_port = L4::Tcp { src: 444, dst: nat_port, syn: true, ack: true, fin: false, rst: false };
    assert_eq!(h.run(&from_remote6(other_port, b"")).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_no_mapping"), 3);
    // The pod's own: off the NAT ports, an echo reply to its own ping, an
    // ICMPv6 error (not translated yet), another of its addresses.
    let own = [
        from_remote6(L4::Tcp { src: 443, dst: 9_000, syn: true, ack: true, fin: false, rst: false }, b""),
        from_remote6(L4::EchoReply { id: 20_050 }, b""),
        frame6(NODE_MAC, GATEWAY_MAC, REMOTE_IP6, v6("fd00:10:244:2::2"), 50, syn_ack(nat_port), b""),
    ];
    for packet in own {
        assert_eq!(h.run(&packet).action, TC_ACT_UNSPEC, "left to the pod's stack");
    }
    assert_eq!(h.counter("forwarded_to_client"), 0);
    assert_eq!(h.flows6()[0].flags & FLOW_SEEN_REPLY, 0, "still unanswered");
}

/// A router on the way, beyond the gateway.
const ROUTER_IP6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

/// Sends the client's IPv6 packet `l4` and returns its NAT port (or echo
/// identifier) and the IPv6 packet as the gateway sent it.
fn sent6(h: &mut Harness, l4: L4, payload: &[u8]) -> (u16, Vec<u8>) {
    let out = h.run(&from_client6(l4, payload));
    assert_eq!(out.action, TC_ACT_REDIRECT, "the client's packet went out");
    let ip = ipv6_at(&out.packet, ETH_HLEN);
    let nat_port = if ip.next_header == 58 { icmp_id(&ip.l4) } else { ports(&ip.l4).0 };
    (nat_port, out.packet[ETH_HLEN..].to_vec())
}

/// A router's ICMPv6 error of `icmp_type` (code 0, `body` the four bytes
/// after the checksum) to the gateway's IPv6 address, quoting `quoted`,
/// its checksum computed by etherparse.
fn router_error(icmp_type: u8, body: [u8; 4], quoted: &[u8], hop_limit: u8) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(NODE_MAC, GATEWAY_MAC)
        .ipv6(ROUTER_IP6.octets(), GATEWAY_IP6.octets(), hop_limit)
        .icmpv6(Icmpv6Type::Unknown { type_u8: icmp_type, code_u8: 0, bytes5to8: body })
        .write(&mut out, quoted)
        .unwrap();
    out
}

/// The translated error's quote: whole, so its own checksum is checked too.
fn quote_of(error: &Ipv6View) -> Ipv6View {
    ipv6_at(&error.l4, 8)
}

/// Packet Too Big is what IPv6 path MTU discovery lives on: it reaches the
/// client as if a router had sent it the client, quote and all.
#[test]
fn a_packet_too_big_about_a_client_s_flow_reaches_the_client() {
    let mut h = Harness::default();
    let (_, sent) = sent6(&mut h, tcp_syn(40_000, 443), b"a large request");
    let error = tunnelled(&mut h, &router_error(2, 1280u32.to_be_bytes(), &sent, 60));
    assert_eq!((error.src, error.dst, error.hop_limit), (ROUTER_IP6, CLIENT_IP6, 59), "one hop, to the pod");
    assert_eq!(&error.l4[..2], &[2, 0], "Packet Too Big");
    assert_eq!(&error.l4[4..8], &1280u32.to_be_bytes(), "the MTU as the router said it");
    let quote = quote_of(&error);
    assert_eq!((quote.src, quote.dst), (CLIENT_IP6, REMOTE_IP6), "the pod's own packet");
    assert_eq!(ports(&quote.l4), (40_000, 443));
    assert_eq!(&quote.l4[20..], b"a large request");
    assert_eq!(h.counter("icmp_error_to_client"), 1);
    assert_eq!(h.counter("forwarded_to_client"), 1);
    assert_eq!(h.flows6()[0].flags & FLOW_SEEN_REPLY, 0, "an error is no answer");
}

/// Every error type, about UDP and echo flows too; a quote cut short of
/// the transport checksum still has its ports translated.
#[test]
fn time_exceeded_unreachable_and_parameter_problem_are_translated_too() {
    let mut h = Harness::default();
    let (_, udp) = sent6(&mut h, L4::Udp { src: 40_001, dst: 53 }, b"query");
    let (_, echo) = sent6(&mut h, L4::EchoRequest { id: 77 }, b"ping");
    let (_, tcp) = sent6(&mut h, tcp_syn(40_002, 443), b"");
    let error = tunnelled(&mut h, &router_error(3, [0; 4], &udp, 60));
    assert_eq!(ports(&quote_of(&error).l4), (40_001, 53), "time exceeded: traceroute");
    let error = tunnelled(&mut h, &router_error(1, [0; 4], &echo, 60));
    assert_eq!(icmp_id(&quote_of(&error).l4), 77, "unreachable, about a ping");
    let error = tunnelled(&mut h, &router_error(4, [0, 0, 0, 7], &tcp[..48], 60));
    assert_eq!(&error.l4[4..8], &[0, 0, 0, 7], "the pointer kept");
    let quote = &error.l4[8..];
    assert_eq!(&quote[8..24], &CLIENT_IP6.octets(), "the quoted source is the pod's");
    assert_eq!(ports(&quote[40..]), (40_002, 443));
    assert_eq!(h.counter("icmp_error_to_client"), 3);
}

/// What a hostile remote or a confused router may send instead: an error
/// about no flow, or about what the gateway never sent, reaches no client.
#[test]
fn an_error_about_no_client_s_flow_reaches_no_client() {
    let mut h = Harness::default();
    let (nat_port, sent) = sent6(&mut h, L4::Udp { src: 40_003, dst: 53 }, b"query");
    // A NAT port without a binding: dropped, nobody's.
    let mut unbound = sent.clone();
    unbound[40..42].copy_from_slice(&another_nat_port(nat_port).to_be_bytes());
    assert_eq!(h.run(&router_error(1, [0; 4], &unbound, 60)).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_no_mapping"), 1);
    // Whose hop limit ends here.
    assert_eq!(h.run(&router_error(1, [0; 4], &sent, 1)).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_ttl_exceeded"), 1);
    // The pod's own: a quote from another of its addresses, off the NAT
    // ports, an error type not translated, an echo id without a binding.
    let mut elsewhere = sent.clone();
    elsewhere[8..24].copy_from_slice(&v6("fd00:10:244:2::2").octets());
    let mut own_port = sent.clone();
    own_port[40..42].copy_from_slice(&9_000u16.to_be_bytes());
    let (ping_id, mut own_ping) = sent6(&mut h, L4::EchoRequest { id: 78 }, b"");
    let unbound_id: u16 = if ping_id == 20_099 { 20_098 } else { 20_099 };
    own_ping[44..46].copy_from_slice(&unbound_id.to_be_bytes());
    for packet in [
        router_error(1, [0; 4], &elsewhere, 60),
        router_error(1, [0; 4], &own_port, 60),
        router_error(100, [0; 4], &sent, 60),
        router_error(3, [0; 4], &own_ping, 60),
    ] {
        assert_eq!(h.run(&packet).action, TC_ACT_UNSPEC, "left to the pod's stack");
    }
    assert_eq!(h.counter("icmp_error_to_client"), 0);
    assert_eq!(h.counter("forwarded_to_client"), 0);
}

/// A remote's IPv6 packet to the gateway with `extensions` (each a
/// next-header value and its bytes) before an 8-byte transport header
/// `l4` of protocol `protocol`.
fn from_remote6_with(extensions: &[(u8, Vec<u8>)], protocol: u8, l4: [u8; 8]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (i, (_, bytes)) in extensions.iter().enumerate() {
        let next = extensions.get(i + 1).map_or(protocol, |(next, _)| *next);
        let mut header = bytes.clone();
        header[0] = next;
        payload.extend_from_slice(&header);
    }
    payload.extend_from_slice(&l4);
    let mut out = Vec::new();
    out.extend_from_slice(&GATEWAY_MAC);
    out.extend_from_slice(&NODE_MAC);
    out.extend_from_slice(&0x86ddu16.to_be_bytes());
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(&[extensions.first().map_or(protocol, |(first, _)| *first), 50]);
    out.extend_from_slice(&REMOTE_IP6.octets());
    out.extend_from_slice(&GATEWAY_IP6.octets());
    out.extend_from_slice(&payload);
    out
}

/// Hop-by-hop options (8 bytes: PadN).
fn hop_by_hop() -> (u8, Vec<u8>) {
    (0, vec![0, 0, 1, 4, 0, 0, 0, 0])
}

/// A fragment header at `offset` (8-byte units), more to come.
fn fragment(offset: u16) -> (u8, Vec<u8>) {
    let word = (offset << 3) | 1;
    (44, vec![0, 0, (word >> 8) as u8, word as u8, 0, 0, 0x12, 0x34])
}

/// A packet with extension headers before its transport header (or its
/// fragment header) is not translated. To a NAT port it is dropped (the
/// pod's stack would reset the client's flow); anything else, a later
/// fragment that no reply's first began included, is the pod's. (A
/// fragment header first is translated: prog_ipv6_fragments.rs.)
#[test]
fn a_remote_s_packet_with_extension_headers_to_a_nat_port_is_dropped() {
    let mut h = Harness::default();
    let nat_port = open6(&mut h, L4::Udp { src: 40_000, dst: 53 });
    let udp_to = |port: u16| {
        let [hi, lo] = port.to_be_bytes();
        [0, 53, hi, lo, 0, 8, 0, 0]
    };
    let tcp_to = |port: u16| {
        let [hi, lo] = port.to_be_bytes();
        [1, 187, hi, lo, 0, 0, 0, 0]
    };
    let dropped = [
        from_remote6_with(&[hop_by_hop()], 17, udp_to(nat_port)),
        // Another header after the fragment header: looked through too.
        from_remote6_with(&[fragment(0), (60, vec![0, 0, 1, 4, 0, 0, 0, 0])], 17, udp_to(nat_port)),
        from_remote6_with(
            &[hop_by_hop(), (60, vec![0, 0, 1, 4, 0, 0, 0, 0]), fragment(0)],
            6,
            tcp_to(nat_port),
        ),
        // More headers than are looked through, or one not known here
        // (AH) behind one: it might be for a NAT port.
        from_remote6_with(&[hop_by_hop(), hop_by_hop(), hop_by_hop(), hop_by_hop()], 17, udp_to(nat_port)),
        from_remote6_with(&[hop_by_hop(), (51, vec![0, 1, 0, 0, 0, 0, 0, 0])], 17, udp_to(9_000)),
    ];
    for (i, packet) in dropped.iter().enumerate() {
        assert_eq!(h.run(packet).action, TC_ACT_SHOT, "packet {i}");
    }
    assert_eq!(h.counter("drop_ipv6_ext_header"), 5);
    let own = [
        from_remote6_with(&[hop_by_hop()], 17, udp_to(9_000)),
        // A later fragment: no ports in it to tell.
        from_remote6_with(&[fragment(1)], 17, udp_to(nat_port)),
        // ICMPv6 behind a header: no ports.
        from_remote6_with(&[hop_by_hop()], 58, [128, 0, 0, 0, 0, 1, 0, 1]),
    ];
    for (i, packet) in own.iter().enumerate() {
        assert_eq!(h.run(packet).action, TC_ACT_UNSPEC, "left to the pod's stack: packet {i}");
    }
    assert_eq!(h.counter("drop_ipv6_ext_header"), 5);
    assert_eq!(h.counter("forwarded_to_client"), 0);
    // A first fragment whose transport header comes next is a reply's.
    let first = from_remote6_with(&[fragment(0)], 17, udp_to(nat_port));
    assert_eq!(h.run(&first).action, TC_ACT_REDIRECT, "a reply's first fragment is translated");
    assert_eq!(h.counter("forwarded_to_client"), 1);
}

#[test]
fn a_gateway_without_ipv6_leaves_all_ipv6_to_its_stack() {
    let cfg = GatewayConfig { gateway_ip6: [0; 16], ..config((20_000, 20_099)) };
    let mut h = Harness::with_config(&cfg, 4096);
    let out = h.run(&from_remote6(syn_ack(20_000), b""));
    assert_eq!(out.action, TC_ACT_UNSPEC);
    assert_eq!(h.counter("drop_no_mapping"), 0);
}

fn v6(text: &str) -> std::net::Ipv6Addr {
    text.parse().unwrap()
}
