//! Exhaustion and expiry without the agent: the datapath alone refuses
//! expired UDP, ICMP and closing-TCP bindings (an unsolicited packet to
//! their old NAT port is dropped, a new packet starts a new binding), keeps
//! a live TCP flow, and a full conntrack table evicts its least recently
//! used flows so that new flows always start. A flow whose remote closed
//! first keeps its NAT port past the closing timeout, in the datapath and
//! through the agent's sweep (the one test here that runs a sweep).
mod common;

use common::*;
use egress_agent::datapath::conntrack::sweep_expired;
use egress_common::{config::DEFAULT_TCP_TIME_WAIT_TIMEOUT_S, conntrack::FlowState};

/// The default harness with 1 s UDP, ICMP and closing timeouts (TCP
/// established keeps its two hours).
fn harness() -> Harness {
    let mut h = Harness::default();
    let mut cfg = config((20_000, 20_099));
    cfg.udp_timeout_s = 1;
    cfg.icmp_timeout_s = 1;
    cfg.tcp_closing_timeout_s = 1;
    h.datapath.maps.write_config(&cfg).unwrap();
    h
}

/// Makes every entry look last seen `secs` ago.
fn age_all(h: &mut Harness, secs: u64) {
    let then = egress_agent::netdev::monotonic_ns().saturating_sub(secs * 1_000_000_000);
    for map in [&mut h.datapath.maps.ct_original, &mut h.datapath.maps.ct_reply] {
        let entries: Vec<_> = map.iter().filter_map(|r| r.ok()).collect();
        for (key, mut entry) in entries {
            entry.last_seen_ns = then;
            map.insert(key, entry, 0).unwrap();
        }
    }
}

fn tcp(src: u16, dst: u16, syn: bool, ack: bool, fin: bool) -> L4 {
    L4::Tcp { src, dst, syn, ack, fin, rst: false }
}

#[test]
fn udp_icmp_and_closing_tcp_bindings_expire_in_the_datapath_alone() {
    let mut h = harness();
    let udp_port = open_flow(&mut h, L4::Udp { src: 5000, dst: 53 }, b"");
    let echo_id = open_flow(&mut h, L4::EchoRequest { id: 9 }, b"ping");
    // A TCP flow closed by both sides...
    let closed = open_flow(&mut h, tcp_syn(40_000, 80), b"");
    h.run(&from_remote(tcp(80, closed, true, true, false), b""));
    h.run(&from_client(tcp_fin(40_000, 80), b""));
    h.run(&from_remote(tcp_fin(80, closed), b""));
    // ...and one still open.
    let open = open_flow(&mut h, tcp_syn(40_001, 80), b"");
    h.run(&from_remote(tcp(80, open, true, true, false), b""));
    let states: Vec<u8> = h.flows().iter().map(|f| f.state).collect();
    assert!(states.contains(&(FlowState::Closing as u8)), "{states:?}");

    age_all(&mut h, 5);
    let (expired, no_mapping, to_stack) =
        (h.counter("flow_expired_in_datapath"), h.counter("drop_no_mapping"), h.counter("passed_to_stack"));
    for (what, reply) in [
        ("udp", from_remote(L4::Udp { src: 53, dst: udp_port }, b"late")),
        ("closed tcp", from_remote(tcp_ack(80, closed), b"late")),
    ] {
        assert_eq!(h.run(&reply).action, TC_ACT_SHOT, "a late {what} reply reached the client");
    }
    assert_eq!(h.counter("drop_no_mapping"), no_mapping + 2);
    // An echo reply nobody is bound to may be the pod's own ping's: it goes
    // to the pod's stack, never to a client.
    let late_echo = h.run(&from_remote(L4::EchoReply { id: echo_id }, b"late"));
    assert_eq!(
        late_echo.action, TC_ACT_UNSPEC,
        "a late echo reply went somewhere other than the pod's stack"
    );
    assert_eq!(h.counter("passed_to_stack"), to_stack + 1);
    assert!(h.counter("flow_expired_in_datapath") >= expired + 3);
    // The open TCP flow is five seconds idle, far from its two hours.
    assert_eq!(h.run(&from_remote(tcp_ack(80, open), b"data")).action, TC_ACT_REDIRECT);

    // The client's next datagram starts a new binding.
    let created = h.counter("flow_created");
    assert_eq!(h.run(&from_client(L4::Udp { src: 5000, dst: 53 }, b"again")).action, TC_ACT_REDIRECT);
    assert_eq!(h.counter("flow_created"), created + 1);
}

/// A TCP flow closed by both sides, the remote's FIN first when
/// `remote_first`; returns its NAT port.
fn closed_flow(h: &mut Harness, client_port: u16, remote_first: bool) -> u16 {
    let nat_port = open_flow(h, tcp_syn(client_port, 80), b"");
    h.run(&from_remote(tcp(80, nat_port, true, true, false), b""));
    let (client_fin, remote_fin) =
        (from_client(tcp_fin(client_port, 80), b""), from_remote(tcp_fin(80, nat_port), b""));
    let order = if remote_first { [remote_fin, client_fin] } else { [client_fin, remote_fin] };
    for packet in order {
        assert_eq!(h.run(&packet).action, TC_ACT_REDIRECT);
    }
    nat_port
}

#[test]
fn a_nat_port_the_remote_holds_in_time_wait_outlives_the_closing_timeout() {
    // Closing 1 s, TIME_WAIT the default 120 s.
    let mut h = harness();
    let time_wait = closed_flow(&mut h, 40_000, true);
    let closing = closed_flow(&mut h, 40_001, false);
    let state_of = |h: &Harness, nat_port: u16| {
        h.flows().iter().find(|f| u16::from_be(f.nat_port_be) == nat_port).map(|f| f.state)
    };
    assert_eq!(state_of(&h, time_wait), Some(FlowState::TimeWait as u8), "the remote closed first");
    assert_eq!(state_of(&h, closing), Some(FlowState::Closing as u8), "the client closed first");
    // An RST (the client's answer to a late segment) does not free a port the
    // remote may still hold in TIME_WAIT.
    let rst = L4::Tcp { src: 40_000, dst: 80, syn: false, ack: false, fin: false, rst: true };
    h.run(&from_client(rst, b""));
    assert_eq!(state_of(&h, time_wait), Some(FlowState::TimeWait as u8));

    age_all(&mut h, 5);
    // The remote's TIME_WAIT retransmits its FIN: it still reaches the client.
    assert_eq!(h.run(&from_remote(tcp_fin(80, time_wait), b"")).action, TC_ACT_REDIRECT);
    assert_eq!(
        h.run(&from_remote(tcp_fin(80, closing), b"")).action,
        TC_ACT_SHOT,
        "past the closing timeout"
    );
    age_all(&mut h, 5);
    let now = egress_agent::netdev::monotonic_ns();
    assert_eq!(sweep_expired(&mut h.datapath.maps, now).unwrap(), 0, "the closing flow is already gone");
    assert_eq!(state_of(&h, time_wait), Some(FlowState::TimeWait as u8), "the sweep keeps the held port");

    // The same client port opening again gets the same NAT port: the remote
    // accepts it in TIME_WAIT, as that client's timestamps only grow.
    assert_eq!(open_flow(&mut h, tcp_syn(40_000, 80), b""), time_wait);
    assert_eq!(state_of(&h, time_wait), Some(FlowState::SynSent as u8));

    // Past the TIME_WAIT timeout the port is released.
    closed_flow(&mut h, 40_002, true);
    age_all(&mut h, DEFAULT_TCP_TIME_WAIT_TIMEOUT_S as u64 + 1);
    let now = egress_agent::netdev::monotonic_ns();
    assert_eq!(sweep_expired(&mut h.datapath.maps, now).unwrap(), 2);
}

#[test]
fn a_full_table_evicts_the_least_recently_used_flows_and_new_flows_still_start() {
    // 4096 flows fit (Harness's conntrack size); three times as many start.
    let mut h = Harness::new((10_000, 40_000));
    let flows: Vec<(u16, u16)> = (0..3 * 4096u32)
        .map(|i| {
            let (src, dst) = (1024 + (i % 30_000) as u16, 1000 + (i / 30_000) as u16);
            (src, open_flow(&mut h, L4::Udp { src, dst }, b""))
        })
        .collect();
    assert_eq!(h.counter("flow_created"), flows.len() as u64, "every new flow started");
    assert_eq!(h.counter("drop_conntrack_insert"), 0);
    assert_eq!(h.counter("drop_nat_ports_exhausted"), 0);
    let held = h.datapath.maps.ct_original.keys().count();
    assert!(held <= 4096, "{held} flows held in a table of 4096");

    // The newest flows are there; the oldest were evicted and their late
    // replies are dropped. BPF's LRU is approximate (per-CPU free lists
    // refilled in batches), so "most", not "all"; but a reply never goes to
    // another flow than the one that holds its NAT port now (an evicted
    // flow's port may have gone to a newer flow).
    let reply = |nat_port: u16| from_remote(L4::Udp { src: 1000, dst: nat_port }, b"reply");
    let holder: std::collections::HashMap<u16, u16> = flows.iter().map(|(src, port)| (*port, *src)).collect();
    let outcome = |h: &mut Harness, sample: &[(u16, u16)]| {
        let mut forwarded = 0;
        for (_, nat_port) in sample {
            let out = h.run(&reply(*nat_port));
            if out.action == TC_ACT_REDIRECT {
                let to = ports(&ipv4_at(&out.packet, 64).l4).1;
                assert_eq!(to, holder[nat_port], "the reply to NAT port {nat_port} went to the wrong flow");
                forwarded += 1;
            } else {
                assert_eq!(out.action, TC_ACT_SHOT);
            }
        }
        forwarded
    };
    let newest = outcome(&mut h, &flows[flows.len() - 100..]);
    assert!(newest >= 95, "only {newest} of the 100 newest flows are still there");
    let no_mapping = h.counter("drop_no_mapping");
    let oldest_only: Vec<(u16, u16)> =
        flows[..100].iter().filter(|(src, port)| holder[port] == *src).copied().collect();
    let kept = outcome(&mut h, &oldest_only);
    let evicted = (oldest_only.len() - kept) as u64;
    assert!(
        evicted * 2 > oldest_only.len() as u64,
        "only {evicted} of the oldest {} flows were evicted",
        oldest_only.len()
    );
    assert_eq!(h.counter("drop_no_mapping"), no_mapping + evicted, "every dropped reply is counted");
}
