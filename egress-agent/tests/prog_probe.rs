//! A worker's ping of the tunnel's gateway address (169.254.42.1, its
//! default route's next hop) is answered by the program itself, back
//! through the worker's tunnel, and leaves no state. Only a listed pod
//! asking as itself is answered; anything else about that address takes
//! the paths every packet takes.
mod common;

use std::net::Ipv4Addr;

use common::*;
use egress_common::config::{PROBE_DRAINING_CODE, TUNNEL_GATEWAY_IP, TUNNEL_GATEWAY_MAC, TUNNEL_OVERHEAD};

const TUNNEL_GATEWAY: Ipv4Addr =
    Ipv4Addr::new(TUNNEL_GATEWAY_IP[0], TUNNEL_GATEWAY_IP[1], TUNNEL_GATEWAY_IP[2], TUNNEL_GATEWAY_IP[3]);
const ETH_HLEN: usize = 14;

/// `l4` from `inner_src` to the tunnel's gateway address, in a tunnel from
/// `outer_src`.
fn to_tunnel_gateway(outer_src: Ipv4Addr, inner_src: Ipv4Addr, l4: L4, payload: &[u8]) -> Vec<u8> {
    let inner = frame(CLIENT_MAC, TUNNEL_GATEWAY_MAC, inner_src, TUNNEL_GATEWAY, 64, l4, payload);
    tunnel(outer_src, VNI, &inner)
}

#[test]
fn a_ping_of_the_tunnel_gateway_is_answered_through_the_worker_s_tunnel() {
    let mut h = Harness::default();
    let payload = b"are you there? 0123456789abcdef";
    let request = to_tunnel_gateway(CLIENT_IP, CLIENT_IP, L4::EchoRequest { id: 4242 }, payload);
    let out = h.run(&request);
    assert_eq!(out.action, TC_ACT_REDIRECT, "answered and sent out");
    assert_eq!(out.packet.len(), request.len(), "the request became its reply in place");

    let outer = ipv4_at(&out.packet, ETH_HLEN);
    assert_eq!((outer.src, outer.dst, outer.protocol), (GATEWAY_IP, CLIENT_IP, 17), "back to the worker");
    assert_eq!(ports(&outer.l4), (VXLAN_PORT, VXLAN_PORT), "in the tunnel");
    let inner_eth = &out.packet[ETH_HLEN + TUNNEL_OVERHEAD - ETH_HLEN..][..12];
    assert_eq!((&inner_eth[..6], &inner_eth[6..]), (&CLIENT_MAC[..], &TUNNEL_GATEWAY_MAC[..]));
    // ipv4_at verifies the header and ICMP checksums.
    let reply = ipv4_at(&out.packet, ETH_HLEN + TUNNEL_OVERHEAD);
    assert_eq!((reply.src, reply.dst, reply.protocol), (TUNNEL_GATEWAY, CLIENT_IP, 1));
    assert_eq!(reply.l4[0], 0, "an echo reply");
    assert_eq!(icmp_id(&reply.l4), 4242, "with the request's identifier");
    let sent = ipv4_at(&request, ETH_HLEN + TUNNEL_OVERHEAD);
    assert_eq!(reply.l4[4..], sent.l4[4..], "identifier, sequence and data as sent");

    assert_eq!(h.counter("probe_answered"), 1);
    assert_eq!(h.counter("forwarded_to_remote"), 0, "nothing went out of the cluster");
    assert!(h.flows().is_empty(), "a probe makes no binding");
}

/// `egress-agent drain` sets CONFIG's `draining`: the answer says so in
/// its code (checksum still right), and the pod's traffic is forwarded as
/// before; clearing it takes the mark away.
#[test]
fn a_draining_gateway_marks_its_answers_and_goes_on_forwarding() {
    let mut h = Harness::default();
    let ping = to_tunnel_gateway(CLIENT_IP, CLIENT_IP, L4::EchoRequest { id: 9 }, b"draining?");
    let answer_code = |h: &mut Harness| {
        let out = h.run(&ping);
        assert_eq!(out.action, TC_ACT_REDIRECT, "answered");
        // ipv4_at verifies the header and ICMP checksums.
        let reply = ipv4_at(&out.packet, ETH_HLEN + TUNNEL_OVERHEAD);
        assert_eq!(reply.l4[0], 0, "an echo reply");
        reply.l4[1]
    };
    assert_eq!(answer_code(&mut h), 0);

    let mut cfg = h.datapath.maps.read_config().unwrap();
    cfg.draining = 1;
    h.datapath.maps.write_config(&cfg).unwrap();
    assert_eq!(answer_code(&mut h), PROBE_DRAINING_CODE);
    let out = h.run(&from_client(tcp_syn(40_000, 443), b""));
    assert_eq!(out.action, TC_ACT_REDIRECT, "a new flow is still forwarded while draining");
    assert_eq!(h.counter("forwarded_to_remote"), 1);

    cfg.draining = 0;
    h.datapath.maps.write_config(&cfg).unwrap();
    assert_eq!(answer_code(&mut h), 0);
}

#[test]
fn only_a_listed_pod_asking_as_itself_is_answered() {
    let mut h = Harness::default();
    let ping = L4::EchoRequest { id: 7 };
    let unlisted = to_tunnel_gateway(OTHER_POD_IP, OTHER_POD_IP, ping, b"x");
    assert_eq!(h.run(&unlisted).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_unknown_client"), 1);
    // A listed pod claiming another's address: the answer would go to it.
    let spoofed = to_tunnel_gateway(CLIENT_IP, SECOND_CLIENT_IP, ping, b"x");
    assert_eq!(h.run(&spoofed).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_spoofed_inner_source"), 1);
    // Not an echo request: no answer; it takes the usual way (an echo
    // reply from a client answers nothing of ours).
    let reply = to_tunnel_gateway(CLIENT_IP, CLIENT_IP, L4::EchoReply { id: 7 }, b"x");
    assert_eq!(h.run(&reply).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_unsupported_protocol"), 1);
    assert_eq!(h.counter("probe_answered"), 0);
}
