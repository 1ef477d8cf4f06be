//! ICMP errors from beyond the gateway reach the client: path MTU discovery
//! through a narrower link behind the gateway (a bulk upload completes), and
//! traceroute from a worker shows the gateway and the hops behind it. And a
//! client's own error reaches the remote: a reply to a closed socket draws
//! port unreachable, which the remote's socket sees as "connection
//! refused", through our gateway as through Linux's.
mod common;

use std::net::SocketAddrV4;
use std::path::Path;

use common::datagrams::late_reply_to_a_closed_socket;
use common::*;
use egress_tests::{
    clients::{self, mbit},
    reference::TunnelConfig,
    topology::{NODE_EXTERNAL, POD_IFACE},
};

/// The MTU of the link between the gateway's node and the outside server,
/// below the tunnel MTU the worker starts from (eth0's 1500 − 50).
const NARROW_MTU: &str = "1200";

fn narrow_the_outside_link(s: &egress_tests::EgressSetup) {
    let node = &s.cluster.node(s.cluster.gateway().node).ns;
    node.ip(&["link", "set", "dev", NODE_EXTERNAL, "mtu", NARROW_MTU]).unwrap();
    s.cluster.outside().ip(&["link", "set", "dev", POD_IFACE, "mtu", NARROW_MTU]).unwrap();
}

/// The path MTU w1's kernel has learned for the server (0 if none).
fn learned_mtu(s: &egress_tests::EgressSetup) -> u32 {
    let server = s.server_ip().to_string();
    let out = s.pod("w1").ns.exec(&["ip", "route", "get", &server]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mtu" {
            return words.next().and_then(|m| m.parse().ok()).unwrap_or(0);
        }
    }
    0
}

#[test]
fn fragmentation_needed_reaches_the_worker_and_a_bulk_upload_completes() {
    let s = start(options());
    narrow_the_outside_link(&s);
    let server = s.server_ip().to_string();
    // 1328 bytes with DF: fits the tunnel, not the link behind the gateway.
    let ping =
        s.pod("w1").ns.output(&["ping", "-M", "do", "-s", "1300", "-c", "1", "-W", "2", &server]).unwrap();
    eprintln!("{}", String::from_utf8_lossy(&ping.stdout));
    assert!(!ping.status.success(), "a 1328-byte DF ping cannot cross a {NARROW_MTU} link");
    eventually("w1 learns the path MTU from the translated error", OK_TIMEOUT, || learned_mtu(&s) == 1200);
    assert!(s.counter("icmp_error_to_client").unwrap() >= 1);

    // TCP starts with the tunnel MSS and must shrink it from the errors
    // (Linux does not probe by default: without them the upload stalls).
    let _iperf = clients::start_iperf3_server(s.cluster.outside(), s.server_ip()).unwrap();
    let t = clients::iperf3(&s.pod("w3").ns, s.server_ip(), 2, false).unwrap();
    eprintln!("upload over the {NARROW_MTU} link: {}", mbit(t.bits_per_second));
    assert!(t.bits_per_second > 50e6, "{}", mbit(t.bits_per_second));
    assert_eq!(s.counter("drop_too_big_for_tunnel").unwrap(), 0);
}

#[test]
fn traceroute_from_a_worker_shows_the_hops_behind_the_gateway() {
    let s = start(options());
    let server = s.server_ip().to_string();
    let node = s.cluster.node(s.cluster.gateway().node);
    // w1 on another node, w3 on the gateway's own.
    for worker in ["w1", "w3"] {
        let out =
            s.pod(worker).ns.output(&["traceroute", "-n", "-q", "1", "-w", "1", "-m", "5", &server]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        eprintln!("{worker}: {text}");
        let hops: Vec<&str> =
            text.lines().skip(1).map(|l| l.split_whitespace().nth(1).unwrap_or("")).collect();
        // 1: the gateway, answering itself with time exceeded through the
        // tunnel; 2: the gateway's node, answering with time exceeded; 3:
        // the server, answering with port unreachable. The last two answers
        // went to the gateway's address and were translated back.
        let gateway = s.gateway_ip().to_string();
        assert_eq!(hops.first().copied(), Some(gateway.as_str()), "{worker}: hop 1 is the gateway");
        assert_eq!(
            hops.get(1).copied(),
            Some(node.bridge_ip.to_string().as_str()),
            "{worker}: hop 2 is the node"
        );
        assert_eq!(hops.last().copied(), Some(server.as_str()), "{worker}: the trace reaches the server");
    }
    assert!(s.counter("icmp_error_to_client").unwrap() >= 6);
}

#[test]
fn a_client_s_port_unreachable_reaches_the_remote() {
    let s = start(options());
    let at = SocketAddrV4::new(s.server_ip(), 7100);
    let result = late_reply_to_a_closed_socket(s.cluster.outside(), at, &s.pod("w1").ns);
    let err = result.expect_err("the server heard nothing back");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(s.counter("icmp_error_to_remote").unwrap(), 1);
}

#[test]
fn the_linux_reference_gateway_passes_the_client_s_port_unreachable_on_too() {
    let cluster = with_the_linux_gateway(&["w1"], &TunnelConfig::default());
    let _echo = clients::start_echo_server(cluster.outside(), Path::new(ECHO), cluster.server_ips()).unwrap();
    let w1 = cluster.pod("w1");
    let at = SocketAddrV4::new(cluster.server_ip(), 7100);
    let err = late_reply_to_a_closed_socket(cluster.outside(), at, &w1.ns).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}
