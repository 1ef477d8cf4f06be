//! Which NAT port a new flow gets: its own port when that is free (port
//! preservation), else a random free one, looked for long enough that a
//! crowded destination still takes new flows.
mod common;

use common::*;
use egress_common::{
    conntrack::{Binding, FlowTuple},
    ip::IPPROTO_TCP,
};

/// The default `--nat-ports`, where worker pods' own ports (Linux's
/// 32768-60999) fall.
const DEFAULT_RANGE: (u16, u16) =
    (egress_common::config::DEFAULT_NAT_PORT_MIN, egress_common::config::DEFAULT_NAT_PORT_MAX);

fn nat_port_of(out: &Outcome) -> u16 {
    assert_eq!(out.action, TC_ACT_REDIRECT, "forwarded");
    let ip = ipv4_at(&out.packet, 14);
    if ip.protocol == 1 {
        icmp_id(&ip.l4)
    } else {
        ports(&ip.l4).0
    }
}

fn syn_ack(remote_port: u16, nat_port: u16) -> L4 {
    L4::Tcp { src: remote_port, dst: nat_port, syn: true, ack: true, fin: false, rst: false }
}

#[test]
fn a_client_keeps_its_own_port_when_it_is_free() {
    let mut h = Harness::new(DEFAULT_RANGE);
    assert_eq!(nat_port_of(&h.run(&from_client(tcp_syn(40_000, 443), b""))), 40_000);
    assert_eq!(nat_port_of(&h.run(&from_client(L4::Udp { src: 51_234, dst: 53 }, b"q"))), 51_234);
    assert_eq!(nat_port_of(&h.run(&from_client(L4::EchoRequest { id: 33_000 }, b"ping"))), 33_000);
    // The reply on the kept port reaches the client.
    let out = h.run(&from_remote(syn_ack(443, 40_000), b""));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    assert_eq!(ipv4_at(&out.packet, 64).dst, CLIENT_IP);
    assert_eq!(ports(&ipv4_at(&out.packet, 64).l4), (443, 40_000));
}

#[test]
fn a_port_outside_the_range_gets_one_inside() {
    let mut h = Harness::new(DEFAULT_RANGE);
    for client_port in [1_023u16, 5_353, 64_512, 65_535] {
        let nat_port = nat_port_of(&h.run(&from_client(L4::Udp { src: client_port, dst: 53 }, b"q")));
        assert!(
            (DEFAULT_RANGE.0..=DEFAULT_RANGE.1).contains(&nat_port),
            "client port {client_port} got NAT port {nat_port}, outside --nat-ports"
        );
    }
}

/// A hostile pod that opens flows from the ports a neighbour is about to use
/// only moves the neighbour to other ports: each flow gets its own replies.
#[test]
fn a_neighbour_holding_the_same_port_moves_the_flow_not_its_replies() {
    let mut h = Harness::new(DEFAULT_RANGE);
    let squatted: Vec<u16> = (40_000..40_050).collect();
    for &port in &squatted {
        let taken = nat_port_of(&h.run(&from_client_at(SECOND_CLIENT_IP, tcp_syn(port, 443), b"")));
        assert_eq!(taken, port, "the first to use a port keeps it");
    }
    for &port in &squatted {
        let nat_port = nat_port_of(&h.run(&from_client(tcp_syn(port, 443), b"")));
        assert_ne!(nat_port, port, "a port held towards this remote is never shared");
        let out = h.run(&from_remote(syn_ack(443, nat_port), b""));
        assert_eq!(out.action, TC_ACT_REDIRECT);
        assert_eq!(ipv4_at(&out.packet, 64).dst, CLIENT_IP, "the reply on port {nat_port}");
        assert_eq!(ports(&ipv4_at(&out.packet, 64).l4), (443, port));
        let out = h.run(&from_remote(syn_ack(443, port), b""));
        assert_eq!(ipv4_at(&out.packet, 64).dst, SECOND_CLIENT_IP, "the squatter's reply on port {port}");
    }
    // Ports are per remote endpoint: towards another one, the port is free.
    assert_eq!(nat_port_of(&h.run(&from_client(tcp_syn(40_000, 80), b""))), 40_000);
    assert_eq!(h.counter("drop_nat_ports_exhausted"), 0);
}

/// 95 % of one destination's ports taken at random places, then new flows
/// whose own port is taken: the random search finds one of the 5 % for
/// nearly all of them (0.95^128 = 0.14 % fail; with the 16 tries of before,
/// 44 % did).
#[test]
fn at_95_percent_occupancy_nearly_every_new_flow_finds_a_port() {
    const RANGE: (u16, u16) = (20_000, 21_999);
    let mut h = Harness::new(RANGE);
    // The second client's ports lie outside the range, so its bindings
    // land on random ports. Filling the last few percent can itself miss
    // (0.949^128 per flow), so the fill goes on until 1,900 are in.
    let (mut client_port, mut filled, mut fill_misses) = (1_024u16, 0, 0u64);
    while filled < 1_900 {
        let out = h.run(&from_client_at(SECOND_CLIENT_IP, tcp_syn(client_port, 443), b""));
        match out.action {
            TC_ACT_REDIRECT => filled += 1,
            TC_ACT_SHOT => fill_misses += 1,
            other => panic!("a filling SYN returned {other}"),
        }
        client_port += 1;
    }
    let taken: Vec<u16> = h.flows().iter().map(|f| u16::from_be(f.nat_port_be)).collect();
    assert_eq!(taken.len(), 1_900);
    // Probes from ports that are taken, so preservation never helps; each
    // is removed after, so the occupancy stays at 95 %.
    let probes = 2_000u32;
    let mut failed = 0u32;
    for i in 0..probes {
        let client_port = taken[i as usize % taken.len()];
        let out = h.run(&from_client(tcp_syn(client_port, 443), b""));
        match out.action {
            TC_ACT_REDIRECT => {
                let nat_port = nat_port_of(&out);
                assert!(!taken.contains(&nat_port), "NAT port {nat_port} was already taken");
                remove_binding(&mut h, client_port, nat_port);
            }
            TC_ACT_SHOT => failed += 1,
            other => panic!("a probe SYN returned {other}"),
        }
    }
    assert_eq!(h.counter("drop_nat_ports_exhausted"), fill_misses + failed as u64);
    eprintln!("{failed} of {probes} new flows found no port at 95 % occupancy");
    // 2.8 expected; 20 is beyond nine standard deviations, and far below
    // the 880 that 16 tries would fail, or the 14 that 96 would.
    assert!(failed < 20, "{failed} of {probes} new flows found no free port");
}

/// Removes both halves of CLIENT_IP's flow `client_port` -> REMOTE_IP:443.
fn remove_binding(h: &mut Harness, client_port: u16, nat_port: u16) {
    let maps = &mut h.datapath.maps;
    let original = FlowTuple::new(
        u32::from(CLIENT_IP).to_be(),
        u32::from(REMOTE_IP).to_be(),
        client_port.to_be(),
        443u16.to_be(),
        IPPROTO_TCP,
    );
    let entry = maps.ct_original.get(&original, 0).unwrap();
    assert_eq!(u16::from_be(entry.nat_port_be), nat_port);
    maps.ct_original.remove(&original).unwrap();
    maps.ct_reply.remove(&entry.reply_tuple(u32::from(GATEWAY_IP).to_be())).unwrap();
}
