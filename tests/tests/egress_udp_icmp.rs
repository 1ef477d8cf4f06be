//! UDP and ICMP echo through the gateway.

mod common;

use common::*;
use egress_tests::agent::DEFAULT_NAT_PORTS;
use egress_tests::clients::{self, ECHO_UDP_PORT};

#[test]
fn udp_request_response_leaves_with_the_gateway_ip() {
    let s = start(options());
    let w1 = s.pod("w1");

    // A Rust client on a connected socket: only a reply from the server's
    // address is accepted, so the reverse translation is checked too.
    let sock = clients::udp_socket(&w1.ns).unwrap();
    let local_port = sock.local_addr().unwrap().port();
    let seen = clients::udp_echo_on(&sock, s.udp_server(), OK_TIMEOUT).unwrap();
    assert_eq!(seen.ip, s.gateway_ip());
    assert_nat_port(seen.port);

    // The same source port keeps its NAT port.
    let again = clients::udp_echo_on(&sock, s.udp_server(), OK_TIMEOUT).unwrap();
    assert_eq!(again, seen, "one UDP flow must keep its mapping");

    let status = s.status().unwrap();
    let flow = status
        .flows_of(w1.ip, "udp")
        .find(|f| f.client_port == local_port)
        .unwrap_or_else(|| panic!("no udp flow for {}:{local_port} in {:#?}", w1.ip, status.flows));
    assert_eq!(flow.remote_ip, s.server_ip());
    assert_eq!(flow.remote_port, ECHO_UDP_PORT);
    assert_eq!(flow.nat_port, seen.port);

    // The real netcat, from both listed workers.
    for worker in ["w1", "w3"] {
        let nc = clients::nc_udp_echo(&s.pod(worker).ns, s.udp_server())
            .unwrap_or_else(|e| panic!("nc -u from {worker}: {e:#}"));
        assert_eq!(nc.ip, s.gateway_ip(), "nc -u from {worker}");
    }
}

#[test]
fn ping_through_the_gateway() {
    let s = start(options());
    for worker in ["w1", "w3"] {
        clients::ping(&s.pod(worker).ns, s.server_ip(), 3)
            .unwrap_or_else(|e| panic!("ping from {worker}: {e:#}"));
    }
    let w1 = s.pod("w1");
    let status = s.status().unwrap();
    let flow = status
        .flows_of(w1.ip, "icmp")
        .find(|f| f.remote_ip == s.server_ip())
        .unwrap_or_else(|| panic!("no icmp flow for {} in {:#?}", w1.ip, status.flows));
    assert!(
        DEFAULT_NAT_PORTS.contains(&flow.nat_port),
        "icmp identifier mapping {} outside the NAT range",
        flow.nat_port
    );
}

/// `ping 169.254.42.1` (the tunnel's gateway address, the default route's
/// next hop) from a worker is answered by the gateway's program through
/// the tunnel: a listed pod's path to the gateway works; an unlisted one,
/// joined all the same, gets no answer.
#[test]
fn a_worker_s_ping_of_the_tunnel_gateway_address_is_answered_by_the_gateway() {
    let s = start(options());
    let tunnel_gateway: std::net::Ipv4Addr = egress_common::config::TUNNEL_GATEWAY_IP.into();
    clients::ping(&s.pod("w1").ns, tunnel_gateway, 3).unwrap_or_else(|e| panic!("ping from w1: {e:#}"));
    assert_eq!(s.counter("probe_answered").unwrap(), 3);
    assert!(clients::ping(&s.pod("w2").ns, tunnel_gateway, 1).is_err(), "w2 is not listed, yet was answered");
    assert_eq!(s.counter("probe_answered").unwrap(), 3);
    assert!(s.counter("drop_unknown_client").unwrap() >= 1);
}
