//! Tenants cannot hurt each other, packet by packet. CLIENT_IP plays the
//! hostile labeled pod, SECOND_CLIENT_IP the neighbour it must not disturb:
//! lone RSTs make no binding, FINs and ACKs only short-lived unreplied ones;
//! a client at its share of the table is refused and nobody else is; a full
//! table refuses a new flow rather than break an answered one, and makes
//! room from unreplied flows when it can; a live flow's NAT port is never
//! handed to another flow; martian destinations are never NATed; the
//! gateway's own time-exceeded answers are rate-limited per client and
//! never about an ICMP error; a map entry that changed hands is never used.
mod common;

use std::net::Ipv4Addr;

use common::*;
use egress_agent::datapath::conntrack::{remove_binding, sweep_expired, Halves};
use egress_common::{
    config::{GatewayConfig, TUNNEL_GATEWAY_MAC},
    conntrack::{Binding, FlowState, FlowTuple},
};

fn set_config(h: &mut Harness, change: impl FnOnce(&mut GatewayConfig)) {
    let mut cfg = h.datapath.maps.read_config().unwrap();
    change(&mut cfg);
    h.datapath.maps.write_config(&cfg).unwrap();
}

fn tcp(src: u16, dst: u16, syn: bool, ack: bool, fin: bool, rst: bool) -> L4 {
    L4::Tcp { src, dst, syn, ack, fin, rst }
}

/// A packet of `client` to `dst` with `ttl`, as its worker sends it.
fn from_client_to(client: Ipv4Addr, dst: Ipv4Addr, ttl: u8, l4: L4) -> Vec<u8> {
    let inner = frame(CLIENT_MAC, TUNNEL_GATEWAY_MAC, client, dst, ttl, l4, b"");
    tunnel(client, VNI, &inner)
}

/// Opens a flow of `client` and returns its NAT port.
fn open_from(h: &mut Harness, client: Ipv4Addr, l4: L4) -> u16 {
    let out = h.run(&from_client_at(client, l4, b""));
    assert_eq!(out.action, TC_ACT_REDIRECT, "a new flow of {client} was refused");
    ports(&ipv4_at(&out.packet, 14).l4).0
}

#[test]
fn a_lone_rst_makes_no_binding_and_holds_no_nat_port() {
    // Two NAT ports: a spray of RSTs must not take them.
    let mut h = Harness::new((20_000, 20_001));
    for client_port in 40_000..40_200 {
        let out = h.run(&from_client(tcp(client_port, 80, false, false, false, true), b""));
        assert_eq!(out.action, TC_ACT_SHOT, "an RST for no flow was forwarded");
    }
    assert_eq!(h.counter("drop_rst_without_flow"), 200);
    assert!(h.flows().is_empty(), "an RST made a binding");
    assert_eq!(h.reply_entries(), 0);
    // The neighbour's connections to the same server get both ports.
    for client_port in [50_000, 50_001] {
        open_from(&mut h, SECOND_CLIENT_IP, tcp_syn(client_port, 80));
    }
    // An RST of a known flow still goes out (and closes it).
    let rst = h.run(&from_client_at(SECOND_CLIENT_IP, tcp(50_000, 80, false, true, false, true), b""));
    assert_eq!(rst.action, TC_ACT_REDIRECT);
}

#[test]
fn a_fin_or_ack_makes_only_an_unreplied_binding_that_lives_by_the_syn_timeout() {
    let mut h = Harness::default();
    set_config(&mut h, |c| c.tcp_syn_timeout_s = 5);
    let fin_port = open_flow(&mut h, tcp_fin(40_000, 80), b"");
    let ack_port = open_flow(&mut h, tcp_ack(40_001, 80), b"data");
    for flow in h.flows() {
        assert_eq!(flow.state, FlowState::SynSent as u8, "picked up as unreplied, not open");
        assert!(!flow.seen_reply());
    }
    // The remote answers the ACK's flow: now it is open and answered.
    assert_eq!(h.run(&from_remote(tcp_ack(80, ack_port), b"")).action, TC_ACT_REDIRECT);
    let answered = h.flows().into_iter().find(|f| u16::from_be(f.nat_port_be) == ack_port).unwrap();
    assert_eq!(answered.state, FlowState::Open as u8);
    assert!(answered.seen_reply(), "the reply marks the flow answered");
    assert!(h
        .datapath
        .maps
        .ct_reply
        .iter()
        .filter_map(|r| r.ok())
        .all(|(_, e)| { e.seen_reply() == (u16::from_be(e.nat_port_be) == ack_port) }));
    // Six seconds later the unreplied one is gone (the SYN timeout), the
    // answered one is not (two hours).
    h.age_all(6);
    assert_eq!(h.run(&from_remote(tcp_ack(80, fin_port), b"late")).action, TC_ACT_SHOT);
    assert_eq!(h.run(&from_remote(tcp_ack(80, ack_port), b"data")).action, TC_ACT_REDIRECT);
}

#[test]
fn a_client_at_its_share_is_refused_and_nobody_else_notices() {
    let mut h = Harness::default();
    set_config(&mut h, |c| c.max_flows_per_client = 8);
    // Eight live, answered flows: nothing of its own may make room.
    for client_port in 0..8 {
        let nat_port = open_from(&mut h, CLIENT_IP, L4::Udp { src: 5000 + client_port, dst: 53 });
        let answer = from_remote(L4::Udp { src: 53, dst: nat_port }, b"answer");
        assert_eq!(h.run(&answer).action, TC_ACT_REDIRECT);
    }
    assert_eq!(h.datapath.maps.client_flows(1).unwrap(), 8);
    let refused = h.run(&from_client(L4::Udp { src: 6000, dst: 53 }, b""));
    assert_eq!(refused.action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_client_flow_limit"), 1);
    let refusals = h.datapath.maps.client_refusals(1).unwrap();
    assert_eq!((refusals.over_share, refusals.table_full), (1, 0));
    assert_eq!(refusals.last_destination.remote_port_be, 53u16.to_be(), "the refused flow's destination");
    // Its existing flows go on; the neighbour's new flows start.
    assert_eq!(h.run(&from_client(L4::Udp { src: 5000, dst: 53 }, b"")).action, TC_ACT_REDIRECT);
    for client_port in 0..8 {
        open_from(&mut h, SECOND_CLIENT_IP, L4::Udp { src: 5000 + client_port, dst: 53 });
    }
    assert_eq!(h.datapath.maps.client_refusals(2).unwrap().over_share, 0);
    // At its share with flows nobody answered, a client's new flow takes
    // the place of one of its own, never of the neighbour's.
    for client_port in 0..20 {
        open_from(&mut h, SECOND_CLIENT_IP, L4::Udp { src: 7000 + client_port, dst: 53 });
    }
    assert_eq!(h.datapath.maps.client_flows(2).unwrap(), 8);
    assert_eq!(h.counter("flow_early_dropped"), 20);
    assert_eq!(h.datapath.maps.client_flows(1).unwrap(), 8, "the neighbour's flows were taken");
    assert_flow_counts_match_the_table(&h);

    // A flow that goes (here: expired, met by a packet in the datapath)
    // gives the share back; so does one the agent's sweep removes.
    set_config(&mut h, |c| c.udp_timeout_s = 2);
    h.age_all(3);
    assert_eq!(h.run(&from_client(L4::Udp { src: 5000, dst: 53 }, b"")).action, TC_ACT_REDIRECT);
    assert_eq!(h.datapath.maps.client_flows(1).unwrap(), 8, "one expired flow left, its new one came");
    let now = egress_agent::netdev::monotonic_ns();
    assert_eq!(sweep_expired(&mut h.datapath.maps, Halves::Both, now).unwrap().0, 7 + 8);
    assert_eq!(h.datapath.maps.client_flows(1).unwrap(), 1);
    assert_eq!(h.datapath.maps.client_flows(2).unwrap(), 0);
    open_from(&mut h, CLIENT_IP, L4::Udp { src: 6000, dst: 53 });
    assert_flow_counts_match_the_table(&h);
}

/// Opens `count` answered TCP flows of `client` to REMOTE_IP:80 from
/// client ports starting at `first_port`; returns (client port, NAT port).
fn answered_flows(h: &mut Harness, client: Ipv4Addr, first_port: u16, count: u16) -> Vec<(u16, u16)> {
    (first_port..first_port + count)
        .map(|client_port| {
            let nat_port = open_from(h, client, tcp_syn(client_port, 80));
            let syn_ack = from_remote(tcp(80, nat_port, true, true, false, false), b"");
            assert_eq!(h.run(&syn_ack).action, TC_ACT_REDIRECT);
            (client_port, nat_port)
        })
        .collect()
}

/// Whether a data segment to `nat_port` reaches `client_port` of its client.
fn reaches(h: &mut Harness, nat_port: u16, client_port: u16) -> bool {
    let out = h.run(&from_remote(tcp_ack(80, nat_port), b"data"));
    out.action == TC_ACT_REDIRECT && ports(&ipv4_at(&out.packet, 64).l4).1 == client_port
}

#[test]
fn a_full_table_refuses_the_new_flow_rather_than_break_an_answered_one() {
    // The harness's table holds 4,096 flows; the share is the whole table.
    let mut h = Harness::new((10_000, 40_000));
    let held = answered_flows(&mut h, SECOND_CLIENT_IP, 1024, 10);
    answered_flows(&mut h, CLIENT_IP, 1024, 4096 - 10);
    assert_eq!(h.flows().len(), 4096);
    let refused = h.run(&from_client(tcp_syn(30_000, 443), b""));
    assert_eq!(refused.action, TC_ACT_SHOT, "a full table took a new flow");
    assert_eq!(h.counter("drop_conntrack_full"), 1);
    assert_eq!(h.counter("flow_early_dropped"), 0, "an answered flow was evicted");
    let refusals = h.datapath.maps.client_refusals(1).unwrap();
    assert_eq!((refusals.over_share, refusals.table_full), (0, 1));
    // The neighbour's idle connections are all still there, each on its port.
    for (client_port, nat_port) in held {
        assert!(reaches(&mut h, nat_port, client_port), "an answered flow lost its binding");
    }
}

#[test]
fn a_full_table_makes_room_from_unreplied_flows_and_keeps_answered_ones() {
    let mut h = Harness::new((10_000, 40_000));
    let held = answered_flows(&mut h, SECOND_CLIENT_IP, 1024, 10);
    // The hostile client fills the rest with flows nobody answers.
    for i in 0..(4096 - 10) as u32 {
        let (src, dst) = (1024 + (i % 30_000) as u16, 1000 + (i / 30_000) as u16);
        open_from(&mut h, CLIENT_IP, L4::Udp { src, dst });
    }
    assert_eq!(h.flows().len(), 4096);
    // Every new flow of the neighbour still starts, each by making room
    // from an unreplied flow; none of its answered flows goes.
    for client_port in 0..500 {
        open_from(&mut h, SECOND_CLIENT_IP, L4::Udp { src: 2000 + client_port, dst: 53 });
    }
    assert_eq!(h.counter("flow_early_dropped"), 500);
    assert_eq!(h.counter("drop_conntrack_full"), 0);
    assert_eq!(h.flows().len(), 4096);
    for (client_port, nat_port) in held {
        assert!(reaches(&mut h, nat_port, client_port), "an answered flow was evicted");
    }
    // Each client's share counts exactly what it holds: evicted flows
    // (the hostile client's, and some of the neighbour's own new ones, all
    // unreplied) went back to their owners.
    assert_flow_counts_match_the_table(&h);
}

/// Each client's flow count (what its share is checked against) equals the
/// bindings it holds.
fn assert_flow_counts_match_the_table(h: &Harness) {
    for client_id in [1, 2] {
        let held = h.flows().iter().filter(|f| f.client_id == client_id).count() as u64;
        assert_eq!(h.datapath.maps.client_flows(client_id).unwrap(), held, "client id {client_id}");
    }
}

#[test]
fn a_live_flow_s_nat_port_is_never_given_to_another_flow() {
    // One NAT port: the neighbour's answered flow holds it.
    let mut h = Harness::new((20_000, 20_000));
    let held = answered_flows(&mut h, SECOND_CLIENT_IP, 40_000, 1);
    let out = h.run(&from_client(tcp_syn(41_000, 80), b""));
    assert_eq!(out.action, TC_ACT_SHOT, "the held port went to another flow");
    assert_eq!(h.counter("drop_nat_ports_exhausted"), 1);
    assert!(reaches(&mut h, held[0].1, held[0].0));
    // Once that flow is over and swept, the port is free again.
    set_config(&mut h, |c| c.tcp_established_timeout_s = 2);
    h.age_all(3);
    let now = egress_agent::netdev::monotonic_ns();
    assert_eq!(sweep_expired(&mut h.datapath.maps, Halves::Both, now).unwrap().0, 1);
    assert_eq!(open_flow(&mut h, tcp_syn(41_000, 80), b""), 20_000);
}

#[test]
fn martian_destinations_are_never_natted() {
    let mut h = Harness::default();
    let martians = ["0.1.2.3", "127.0.0.1", "224.0.0.251", "239.255.255.250", "240.0.0.1", "255.255.255.255"]
        .map(|a| a.parse::<Ipv4Addr>().unwrap());
    for dst in martians.into_iter().chain([GATEWAY_IP]) {
        for ttl in [64, 1] {
            let out = h.run(&from_client_to(CLIENT_IP, dst, ttl, L4::Udp { src: 5000, dst: 53 }));
            assert_eq!(out.action, TC_ACT_SHOT, "a packet to {dst} (TTL {ttl}) was not dropped");
        }
    }
    assert_eq!(h.counter("drop_martian_destination"), 14);
    assert_eq!(h.counter("icmp_error_to_client"), 0, "a time exceeded about a martian");
    assert!(h.flows().is_empty());
}

#[test]
fn time_exceeded_answers_are_rate_limited_per_client() {
    let mut h = Harness::default();
    let expired = |client| from_client_to(client, REMOTE_IP, 1, L4::Udp { src: 33_434, dst: 33_434 });
    let answered = (0..10).filter(|_| h.run(&expired(CLIENT_IP)).action == TC_ACT_REDIRECT).count();
    assert_eq!(answered, 6, "a burst of 6, then 1 a second");
    assert_eq!(h.counter("icmp_answer_rate_limited"), 4);
    assert_eq!(h.counter("drop_ttl_exceeded"), 10);
    // The neighbour's traceroute is answered all the same.
    assert_eq!(h.run(&expired(SECOND_CLIENT_IP)).action, TC_ACT_REDIRECT);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(h.run(&expired(CLIENT_IP)).action, TC_ACT_REDIRECT, "the allowance refills");
}

#[test]
fn time_exceeded_is_never_sent_about_an_icmp_error() {
    let mut h = Harness::default();
    // A port unreachable (type 3) whose TTL runs out at the gateway.
    let mut error = from_client_to(CLIENT_IP, REMOTE_IP, 1, L4::EchoRequest { id: 7 });
    let icmp = 64 + 20;
    error[icmp] = 3;
    error[icmp + 1] = 3;
    error[icmp + 2..icmp + 4].copy_from_slice(&[0, 0]);
    let sum = egress_common::checksum::internet_checksum(&error[icmp..]);
    error[icmp + 2..icmp + 4].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(h.run(&error).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_ttl_exceeded"), 1);
    assert_eq!(h.counter("icmp_error_to_client"), 0, "an ICMP error about an ICMP error");
    assert_eq!(h.counter("icmp_answer_rate_limited"), 0, "refused for what it is, not for the rate");
}

#[test]
fn an_entry_that_changed_hands_is_never_used() {
    let mut h = Harness::default();
    // The neighbour's flow, and the reply tuple of another NAT port whose
    // entry is (as after a delete and a reuse on another CPU) the
    // neighbour's binding: it must not carry a reply to the neighbour.
    let nat_port = open_from(&mut h, SECOND_CLIENT_IP, tcp_syn(40_000, 80));
    let theirs = h.flows()[0];
    let other_port: u16 = if nat_port == 20_050 { 20_051 } else { 20_050 };
    let stale_key = FlowTuple::new(
        u32::from(REMOTE_IP).to_be(),
        u32::from(GATEWAY_IP).to_be(),
        80u16.to_be(),
        other_port.to_be(),
        6,
    );
    h.datapath.maps.ct_reply.insert(stale_key, theirs, 0).unwrap();
    let out = h.run(&from_remote(tcp_ack(80, other_port), b"not yours"));
    assert_eq!(out.action, TC_ACT_SHOT, "a reply went through an entry of another tuple");
    assert_eq!(h.counter("forwarded_to_client"), 0);
    // The same in the client direction: the entry under the hostile
    // client's tuple holds the neighbour's binding.
    let hostile_key = FlowTuple::new(
        u32::from(CLIENT_IP).to_be(),
        u32::from(REMOTE_IP).to_be(),
        41_000u16.to_be(),
        80u16.to_be(),
        6,
    );
    h.datapath.maps.ct_original.insert(hostile_key, theirs, 0).unwrap();
    let out = h.run(&from_client(tcp_ack(41_000, 80), b"x"));
    if out.action == TC_ACT_REDIRECT {
        assert_ne!(ports(&ipv4_at(&out.packet, 14).l4).0, nat_port, "sent on the neighbour's NAT port");
    }
    // The datapath never removes such entries (they are not the packet's);
    // the agent's next sweep does, and leaves the real binding alone.
    let now = egress_agent::netdev::monotonic_ns();
    sweep_expired(&mut h.datapath.maps, Halves::Both, now).unwrap();
    assert!(h.datapath.maps.ct_original.get(&hostile_key, 0).is_err(), "a foreign entry outlived the sweep");
    assert!(h.datapath.maps.ct_reply.get(&stale_key, 0).is_err(), "a foreign entry outlived the sweep");
    assert_eq!(h.flows(), vec![theirs], "the neighbour's binding went with them");
}

#[test]
fn the_sweep_removes_only_the_binding_it_judged() {
    let mut h = Harness::default();
    set_config(&mut h, |c| c.udp_timeout_s = 2);
    let first_port = open_flow(&mut h, L4::Udp { src: 5000, dst: 53 }, b"");
    h.age_all(3);
    // The sweep judges the flow expired...
    let judged = h.flows()[0];
    let now = egress_agent::netdev::monotonic_ns();
    assert!(judged.is_expired(&h.datapath.maps.read_config().unwrap(), now));
    // ...and before it removes it, a packet meets the expired binding in
    // the datapath, which replaces it with a new one for the same tuple.
    h.run(&from_client(L4::Udp { src: 5000, dst: 53 }, b"again"));
    let fresh = h.flows()[0];
    assert!(!fresh.same_binding(&judged), "a new binding, maybe on another port than {first_port}");
    let cfg = h.datapath.maps.read_config().unwrap();
    assert!(!remove_binding(&mut h.datapath.maps, &judged, |e| e.is_expired(&cfg, now)).unwrap());
    assert_eq!(h.flows(), vec![fresh], "the new binding was removed in the old one's place");
    assert_eq!(h.reply_entries(), 1);
    let reply = from_remote(L4::Udp { src: 53, dst: u16::from_be(fresh.nat_port_be) }, b"answer");
    assert_eq!(h.run(&reply).action, TC_ACT_REDIRECT);
    assert_eq!(h.datapath.maps.client_flows(1).unwrap(), 1);
}
