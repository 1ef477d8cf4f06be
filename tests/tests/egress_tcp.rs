//! TCP through the gateway: the outside sees the gateway pod's IP, flows are
//! tracked and reported, many short connections work, and the gateway pod's
//! own traffic is left alone.

mod common;

use std::net::SocketAddrV4;

use common::*;
use egress_tests::agent::{counters, DEFAULT_NAT_PORTS};
use egress_tests::clients::{self, curl_echo, ECHO_HTTP_PORT};

#[test]
fn curl_from_listed_workers_leaves_with_the_gateway_ip() {
    let s = start(options());
    let before = s.status().unwrap();

    for worker in ["w1", "w3"] {
        let seen = s.curl_from(worker, OK_TIMEOUT).unwrap_or_else(|e| panic!("curl from {worker}: {e:#}"));
        assert_eq!(seen.ip, s.gateway_ip(), "{worker}'s request must leave with the gateway pod's IP");
        assert_ne!(seen.ip, s.pod(worker).ip);
        assert_nat_port(seen.port);
    }

    // `join` is idempotent: running it again changes nothing.
    s.join("w1").unwrap();
    assert_eq!(s.curl_from("w1", OK_TIMEOUT).unwrap().ip, s.gateway_ip());

    let after = s.status().unwrap();
    for name in [counters::FORWARDED_TO_REMOTE, counters::FORWARDED_TO_CLIENT] {
        assert!(
            after.counter(name).unwrap() > before.counter_or_zero(name),
            "counter {name} did not increase"
        );
    }

    // SIGTERM stops the agent cleanly (exit status 0).
    let mut s = s;
    let exit = s.agent.terminate().unwrap();
    assert!(exit.success(), "egress-agent exited with {exit} on SIGTERM; output:\n{}", s.agent.log());
}

#[test]
fn an_active_flow_is_reported_by_status() {
    let s = start(options());
    let w1 = s.pod("w1");
    let server = SocketAddrV4::new(s.server_ip(), ECHO_HTTP_PORT);

    // Open a connection and keep it open (no request yet) while reading status.
    let stream = clients::tcp_connect(&w1.ns, server, OK_TIMEOUT).unwrap();
    let local_port = stream.local_addr().unwrap().port();
    let status = s.status().unwrap();
    let flow = status
        .flows_of(w1.ip, "tcp")
        .find(|f| f.client_port == local_port)
        .unwrap_or_else(|| panic!("no tcp flow for {}:{local_port} in {:#?}", w1.ip, status.flows))
        .clone();
    assert_eq!(flow.remote_ip, s.server_ip());
    assert_eq!(flow.remote_port, ECHO_HTTP_PORT);
    assert!(DEFAULT_NAT_PORTS.contains(&flow.nat_port), "nat_port {} outside the NAT range", flow.nat_port);

    // The server saw exactly that NAT port.
    let seen = clients::http_echo_on(stream).unwrap();
    assert_eq!(seen.ip, s.gateway_ip());
    assert_eq!(seen.port, flow.nat_port, "status nat_port vs. the port the server saw");
}

#[test]
fn three_hundred_short_connections_all_succeed() {
    const N: usize = 300;
    let s = start(options());
    let w1 = s.pod("w1");

    let result = clients::curl_echo_many(&w1.ns, s.server_ip(), N, DROP_TIMEOUT).unwrap();
    assert_eq!(result.failures, 0, "{} of {N} connections failed", result.failures);
    for reply in &result.replies {
        assert_eq!(reply.ip, s.gateway_ip());
        assert_nat_port(reply.port);
    }

    let status = s.status().unwrap();
    let tcp_flows = status.flows_of(w1.ip, "tcp").count();
    assert!(tcp_flows <= N, "{tcp_flows} tcp flows for {N} connections");
}

#[test]
fn the_gateway_pods_own_traffic_is_not_translated() {
    let s = start(options());
    let gw = s.cluster.gateway();

    let seen = curl_echo(&gw.ns, s.server_ip(), OK_TIMEOUT).unwrap();
    assert_eq!(seen.ip, gw.ip);
    assert!(seen.port >= 32768, "gateway's own port {} should come from its ephemeral range", seen.port);
    assert!(!DEFAULT_NAT_PORTS.contains(&seen.port));

    let udp = clients::udp_echo(&gw.ns, s.udp_server(), OK_TIMEOUT).unwrap();
    assert_eq!(udp.ip, gw.ip);
    assert!(udp.port >= 32768);

    // And it created no flows.
    let status = s.status().unwrap();
    assert!(
        status.flows.iter().all(|f| f.client_ip != gw.ip),
        "the gateway's own connections must not be tracked as client flows: {:#?}",
        status.flows
    );
}
