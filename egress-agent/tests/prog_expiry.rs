//! Expiry without the agent: the datapath alone refuses expired UDP, ICMP
//! and closing-TCP bindings (an unsolicited packet to their old NAT port is
//! dropped, a new packet starts a new binding) and keeps a live TCP flow. A
//! flow whose remote closed first keeps its NAT port past the closing
//! timeout, in the datapath and through the agent's sweep (the one test
//! here that runs a sweep). What a full table does is in `prog_tenants`.
mod common;

use common::*;
use egress_agent::datapath::conntrack::{sweep_expired, Halves};
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

    h.age_all(5);
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

    h.age_all(5);
    // The remote's TIME_WAIT retransmits its FIN: it still reaches the client.
    assert_eq!(h.run(&from_remote(tcp_fin(80, time_wait), b"")).action, TC_ACT_REDIRECT);
    assert_eq!(
        h.run(&from_remote(tcp_fin(80, closing), b"")).action,
        TC_ACT_SHOT,
        "past the closing timeout"
    );
    h.age_all(5);
    let now = egress_agent::netdev::monotonic_ns();
    assert_eq!(
        sweep_expired(&mut h.datapath.maps, Halves::Both, now).unwrap().0,
        0,
        "the closing flow is already gone"
    );
    assert_eq!(state_of(&h, time_wait), Some(FlowState::TimeWait as u8), "the sweep keeps the held port");

    // The same client port opening again gets the same NAT port: the remote
    // accepts it in TIME_WAIT, as that client's timestamps only grow.
    assert_eq!(open_flow(&mut h, tcp_syn(40_000, 80), b""), time_wait);
    assert_eq!(state_of(&h, time_wait), Some(FlowState::SynSent as u8));

    // Past the TIME_WAIT timeout the port is released (timeouts shortened
    // rather than the flows aged by two minutes: a VM that just booted has
    // no two minutes of clock to go back).
    closed_flow(&mut h, 40_002, true);
    let mut cfg = h.datapath.maps.read_config().unwrap();
    assert_eq!(cfg.tcp_time_wait_timeout_s, DEFAULT_TCP_TIME_WAIT_TIMEOUT_S);
    (cfg.tcp_time_wait_timeout_s, cfg.tcp_syn_timeout_s) = (3, 3);
    h.datapath.maps.write_config(&cfg).unwrap();
    h.age_all(4);
    let now = egress_agent::netdev::monotonic_ns();
    assert_eq!(sweep_expired(&mut h.datapath.maps, Halves::Both, now).unwrap().0, 2);
}
