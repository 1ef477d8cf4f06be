//! Every drop has a reason and a counter; what is not ours is left alone.
mod common;

use common::*;
use egress_common::config::{CONFIG_LAYOUT_VERSION, TUNNEL_GATEWAY_MAC};

fn forwarded(h: &Harness) -> u64 {
    h.counter("forwarded_to_remote") + h.counter("forwarded_to_client")
}

fn assert_dropped(h: &mut Harness, packet: &[u8], counter: &str) {
    let (before, forwarded_before) = (h.counter(counter), forwarded(h));
    let out = h.run(packet);
    assert_eq!(out.action, TC_ACT_SHOT, "{counter}: dropped");
    assert_eq!(h.counter(counter), before + 1, "{counter}: counted");
    assert_eq!(forwarded(h), forwarded_before, "{counter}: nothing forwarded");
}

fn inner(src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr, ttl: u8, l4: L4) -> Vec<u8> {
    frame(CLIENT_MAC, TUNNEL_GATEWAY_MAC, src, dst, ttl, l4, b"data")
}

fn inner_with_payload(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    ttl: u8,
    l4: L4,
    payload: &[u8],
) -> Vec<u8> {
    frame(CLIENT_MAC, TUNNEL_GATEWAY_MAC, src, dst, ttl, l4, payload)
}

#[test]
fn unlisted_client() {
    let mut h = Harness::default();
    let p = tunnel(OTHER_POD_IP, VNI, &inner(OTHER_POD_IP, REMOTE_IP, 64, tcp_syn(1, 2)));
    assert_dropped(&mut h, &p, "drop_unknown_client");
}

#[test]
fn wrong_vni_and_missing_vni_flag() {
    let mut h = Harness::default();
    let frame = inner(CLIENT_IP, REMOTE_IP, 64, tcp_syn(1, 2));
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI + 1, &frame), "drop_bad_vni");
    let mut no_flag = tunnel(CLIENT_IP, VNI, &frame);
    no_flag[42] = 0;
    assert_dropped(&mut h, &no_flag, "drop_bad_vni");
}

#[test]
fn excluded_destination() {
    let mut h = Harness::default();
    let p = tunnel(CLIENT_IP, VNI, &inner(CLIENT_IP, "192.0.2.55".parse().unwrap(), 64, tcp_syn(1, 2)));
    assert_dropped(&mut h, &p, "drop_excluded_destination");
}

#[test]
fn inner_source_other_than_the_client() {
    let mut h = Harness::default();
    let p = tunnel(CLIENT_IP, VNI, &inner(OTHER_POD_IP, REMOTE_IP, 64, tcp_syn(1, 2)));
    assert_dropped(&mut h, &p, "drop_spoofed_inner_source");
}

#[test]
fn truncated_tunnel_and_inner_headers() {
    let mut h = Harness::default();
    let full = from_client(tcp_syn(1, 2), b"");
    // Cut inside the VXLAN header, the inner IPv4 header and the inner TCP header.
    for cut in [46, 70, 90] {
        let mut p = full[..cut].to_vec();
        // Keep the outer lengths consistent with the cut, as a sender would.
        let ip_len = (cut - 14) as u16;
        p[16..18].copy_from_slice(&ip_len.to_be_bytes());
        p[24..26].copy_from_slice(&[0, 0]);
        let csum = egress_common::checksum::internet_checksum(&p[14..34]);
        p[24..26].copy_from_slice(&csum.to_be_bytes());
        p[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
        assert_dropped(&mut h, &p, "drop_malformed");
    }
}

#[test]
fn inner_later_fragment_without_its_first() {
    let mut h = Harness::default();
    let mut f = inner(CLIENT_IP, REMOTE_IP, 64, L4::Udp { src: 1, dst: 2 });
    f[14 + 7] = 185; // offset 1480: no ports, and no first fragment seen
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let csum = egress_common::checksum::internet_checksum(&f[14..34]);
    f[14 + 10..14 + 12].copy_from_slice(&csum.to_be_bytes());
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &f), "drop_fragment_unmatched");
}

#[test]
fn inner_ip_options() {
    let mut h = Harness::default();
    let f = inner(CLIENT_IP, REMOTE_IP, 64, L4::Udp { src: 1, dst: 2 });
    // Insert 4 bytes of options (NOPs + end) and fix ihl/total length.
    let mut g = f[..34].to_vec();
    g.extend_from_slice(&[1, 1, 1, 0]);
    g.extend_from_slice(&f[34..]);
    g[14] = 0x46;
    let total = (g.len() - 14) as u16;
    g[16..18].copy_from_slice(&total.to_be_bytes());
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &g), "drop_ip_options");
}

#[test]
fn unsupported_inner_protocols() {
    let mut h = Harness::default();
    let mut arp = inner(CLIENT_IP, REMOTE_IP, 64, L4::Udp { src: 1, dst: 2 });
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &arp), "drop_unsupported_protocol");
    let mut sctp = inner(CLIENT_IP, REMOTE_IP, 64, L4::Udp { src: 1, dst: 2 });
    sctp[14 + 9] = 132;
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &sctp), "drop_unsupported_protocol");
    let echo_reply_from_client = inner(CLIENT_IP, REMOTE_IP, 64, L4::EchoReply { id: 9 });
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &echo_reply_from_client), "drop_unsupported_protocol");
}

/// A client packet whose TTL runs out here goes no further, and the client
/// gets ICMP time exceeded from the gateway through the tunnel, quoting it.
#[test]
fn ttl_that_would_expire_is_answered_with_time_exceeded() {
    let mut h = Harness::default();
    for (ttl, l4) in [(1, L4::Udp { src: 33_434, dst: 33_435 }), (0, tcp_syn(40_000, 80))] {
        let expiring = inner(CLIENT_IP, REMOTE_IP, ttl, l4);
        let (dropped, answered) = (h.counter("drop_ttl_exceeded"), h.counter("icmp_error_to_client"));
        let out = h.run(&tunnel(CLIENT_IP, VNI, &expiring));
        assert_eq!(out.action, TC_ACT_REDIRECT, "TTL {ttl}: answered");
        assert_eq!(h.counter("drop_ttl_exceeded"), dropped + 1, "the packet itself goes no further");
        assert_eq!(h.counter("icmp_error_to_client"), answered + 1);
        assert_eq!(h.counter("forwarded_to_remote"), 0);
        assert!(h.flows().is_empty(), "no flow for an expired packet");

        // Outer: gateway -> the worker, VXLAN to its tunnel device.
        let outer = ipv4_at(&out.packet, 14);
        assert_eq!((outer.src, outer.dst, outer.protocol), (GATEWAY_IP, CLIENT_IP, 17));
        assert_eq!(ports(&outer.l4), (VXLAN_PORT, VXLAN_PORT));
        assert_eq!(&outer.l4[16..22], &CLIENT_MAC);
        // Inner: time exceeded in transit, from the gateway, quoting the
        // whole expired packet as it arrived (ipv4_at checks every checksum).
        let answer = ipv4_at(&out.packet, 14 + 50);
        assert_eq!((answer.src, answer.dst, answer.protocol), (GATEWAY_IP, CLIENT_IP, 1));
        assert_eq!((answer.l4[0], answer.l4[1]), (11, 0), "type 11 code 0");
        assert_eq!(&answer.l4[8..], &expiring[14..], "the quote");
    }
    // An odd length, to check the checksum's last byte.
    let odd = inner_with_payload(CLIENT_IP, REMOTE_IP, 1, L4::Udp { src: 33_436, dst: 33_437 }, &[7; 33]);
    let out = h.run(&tunnel(CLIENT_IP, VNI, &odd));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    assert_eq!(&ipv4_at(&out.packet, 64).l4[8..], &odd[14..]);
    // A packet too big to quote whole within 576 bytes is only dropped.
    let big = inner_with_payload(CLIENT_IP, REMOTE_IP, 1, L4::Udp { src: 33_438, dst: 33_439 }, &[7; 600]);
    let answered = h.counter("icmp_error_to_client");
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &big), "drop_ttl_exceeded");
    assert_eq!(h.counter("icmp_error_to_client"), answered);
}

#[test]
fn nat_ports_exhausted_for_one_destination_only() {
    let mut h = Harness::new((20_000, 20_001));
    for client_port in [1000, 1001] {
        assert_eq!(h.run(&from_client(tcp_syn(client_port, 80), b"")).action, TC_ACT_REDIRECT);
    }
    assert_dropped(&mut h, &from_client(tcp_syn(1002, 80), b""), "drop_nat_ports_exhausted");
    assert_dropped(&mut h, &from_client(tcp_syn(1003, 80), b""), "drop_nat_ports_exhausted");
    // Endpoint-dependent: another remote port still has both NAT ports free.
    assert_eq!(h.run(&from_client(tcp_syn(1002, 81), b"")).action, TC_ACT_REDIRECT);
    // Counted for the destination that ran out, and only for it.
    assert_eq!(h.exhausted(), vec![(format!("{REMOTE_IP}:80/tcp"), 2)]);
}

#[test]
fn unsolicited_packet_to_a_nat_port() {
    let mut h = Harness::default();
    let syn = L4::Tcp { src: 443, dst: 20_050, syn: true, ack: false, fin: false, rst: false };
    assert_dropped(&mut h, &from_remote(syn, b""), "drop_no_mapping");
    assert_dropped(&mut h, &from_remote(L4::Udp { src: 53, dst: 20_050 }, b""), "drop_no_mapping");
}

#[test]
fn unconfigured_program_drops() {
    let mut h = Harness::default();
    let mut cfg = config((20_000, 20_099));
    cfg.layout_version = CONFIG_LAYOUT_VERSION + 1;
    h.datapath.maps.write_config(&cfg).unwrap();
    assert_dropped(&mut h, &from_client(tcp_syn(1, 2), b""), "drop_not_configured");
}

#[test]
fn the_gateway_pods_own_traffic_passes_untouched() {
    let mut h = Harness::default();
    let own = [
        // A reply to the pod's own ephemeral port, outside the NAT range.
        from_remote(L4::Tcp { src: 443, dst: 40_000, syn: true, ack: true, fin: false, rst: false }, b""),
        // Traffic for another address.
        frame(NODE_MAC, GATEWAY_MAC, REMOTE_IP, OTHER_POD_IP, 64, tcp_syn(1, 20_050), b""),
        // An echo reply to the pod's own ping (no binding): its stack decides.
        from_remote(L4::EchoReply { id: 20_050 }, b""),
        // UDP to the gateway on another port.
        from_remote(L4::Udp { src: 53, dst: 5353 }, b"x"),
    ];
    for p in own {
        let out = h.run(&p);
        assert_eq!(out.action, TC_ACT_UNSPEC, "handed on to the pod's stack");
        assert_eq!(out.packet, p, "byte for byte unchanged");
    }
    assert_eq!(h.counter("passed_to_stack"), 4);
}

#[test]
fn reply_too_big_for_the_tunnel() {
    let mut h = Harness::default();
    let nat_port = {
        let out = h.run(&from_client(L4::Udp { src: 5000, dst: 9000 }, b""));
        ports(&ipv4_at(&out.packet, 14).l4).0
    };
    // 1500-byte IP packet: 1550 once encapsulated, over the 1500 MTU. It
    // has DF: dropped, and answered with fragmentation needed.
    let big = from_remote(L4::Udp { src: 9000, dst: nat_port }, &[0u8; 1472]);
    assert_eq!(h.run(&big).action, TC_ACT_REDIRECT);
    assert_eq!(h.counter("drop_too_big_for_tunnel"), 1);
    assert_eq!(h.counter("icmp_frag_needed_to_remote"), 1);
    assert_eq!(h.counter("forwarded_to_client"), 0);
    // 1450 bytes + 50 fits exactly.
    let fits = from_remote(L4::Udp { src: 9000, dst: nat_port }, &[0u8; 1422]);
    assert_eq!(h.run(&fits).action, TC_ACT_REDIRECT);
    assert_eq!(h.counter("forwarded_to_client"), 1);
}

/// A packet from the remote to the gateway with the IP header changed by `edit`
/// (checksum fixed afterwards).
fn remote_packet_with(l4: L4, edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut p = from_remote(l4, b"payload");
    edit(&mut p);
    let total = (p.len() - 14) as u16;
    p[16..18].copy_from_slice(&total.to_be_bytes());
    p[24..26].copy_from_slice(&[0, 0]);
    let ihl = (p[14] & 0x0f) as usize * 4;
    let csum = egress_common::checksum::internet_checksum(&p[14..14 + ihl]);
    p[24..26].copy_from_slice(&csum.to_be_bytes());
    p
}

fn with_ip_options(p: &mut Vec<u8>) {
    p.splice(34..34, [1u8, 1, 1, 0]);
    p[14] = 0x46;
}

#[test]
fn unsolicited_fragments_and_options_aimed_at_nat_ports_are_dropped() {
    let mut h = Harness::default();
    let udp_to_nat = L4::Udp { src: 53, dst: 20_050 };
    // A first fragment carries ports: translated like any reply, so with no
    // flow on that NAT port it is unsolicited.
    let first_fragment = remote_packet_with(udp_to_nat, |p| p[20] |= 0x20);
    assert_dropped(&mut h, &first_fragment, "drop_no_mapping");
    let options = remote_packet_with(tcp_ack(443, 20_050), with_ip_options);
    assert_dropped(&mut h, &options, "drop_ip_options");
    let tunnel_with_options = remote_packet_with(L4::Udp { src: 4789, dst: VXLAN_PORT }, with_ip_options);
    assert_dropped(&mut h, &tunnel_with_options, "drop_ip_options");
}

#[test]
fn fragments_and_options_for_the_pod_itself_pass() {
    let mut h = Harness::default();
    let own = [
        // A later fragment: no ports to look at, the stack decides.
        remote_packet_with(L4::Udp { src: 53, dst: 20_050 }, |p| p[21] = 0x10),
        // To the pod's own ephemeral port, outside the NAT range.
        remote_packet_with(L4::Udp { src: 53, dst: 40_000 }, |p| p[20] |= 0x20),
        remote_packet_with(tcp_ack(443, 40_000), with_ip_options),
    ];
    for p in own {
        let out = h.run(&p);
        assert_eq!(out.action, TC_ACT_UNSPEC);
        assert_eq!(out.packet, p);
    }
}
