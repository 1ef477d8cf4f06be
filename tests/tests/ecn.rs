//! ECN marks cross the tunnel both ways, as through Linux's own VXLAN
//! gateway: the worker's node marks congestion (CE) on ECN-capable tunnel
//! packets, as an AQM on a busy link would. A request sent ECN-capable must
//! reach the server marked (the gateway merges the outer mark into the
//! packet it decapsulates, RFC 6040), and the reply too (the gateway copies
//! the reply's ECN to the outer header, so the node can mark it, and the
//! worker's tunnel device passes the mark on). Without either, the mark is
//! lost: a sender that relies on ECN sees no congestion and keeps pushing.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use common::*;
use egress_tests::clients;
use egress_tests::reference::TunnelConfig;
use egress_tests::tos::{TosSocket, ECN_CE, ECN_ECT0};
use egress_tests::Netns;

const REFLECTOR_PORT: u16 = 7000;
const T: Duration = Duration::from_secs(5);

/// Marks CE on every ECN-capable (ECT(0)) tunnel packet `node` forwards.
fn mark_congestion_on_the_tunnel(node: &Netns) {
    node.exec(&[
        "iptables",
        "-w",
        "10",
        "-t",
        "mangle",
        "-A",
        "FORWARD",
        "-p",
        "udp",
        "--dport",
        "4789",
        "-m",
        "ecn",
        "--ecn-ip-ect",
        "2",
        "-j",
        "TOS",
        "--set-tos",
        "0x03/0x03",
    ])
    .unwrap();
}

/// The client sends an ECN-capable datagram to a reflector at `server`,
/// which answers ECN-capable with the TOS it saw. Returns the ECN the
/// server saw and the ECN of the reply the client got.
fn exchange(outside: &Netns, server: Ipv4Addr, client: &Netns) -> (u8, u8) {
    let at = SocketAddrV4::new(server, REFLECTOR_PORT);
    let reflector = TosSocket::bind(outside, at, ECN_ECT0).unwrap();
    let socket = TosSocket::bind(client, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), ECN_ECT0).unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let (_, from, tos) = reflector.recv(T).expect("the request reached the server");
            reflector.send_to(&[tos], from).unwrap();
        });
        socket.send_to(b"ecn?", at).unwrap();
        let (payload, _, tos) = socket.recv(T).expect("the reply reached the client");
        (payload[0] & 0b11, tos & 0b11)
    })
}

#[test]
fn congestion_marks_cross_the_tunnel_both_ways() {
    let s = start(options());
    mark_congestion_on_the_tunnel(&s.cluster.node(s.pod("w1").node).ns);
    let (request, reply) = exchange(s.cluster.outside(), s.server_ip(), &s.pod("w1").ns);
    assert_eq!(request, ECN_CE, "the request reached the server without the tunnel's mark");
    assert_eq!(reply, ECN_CE, "the reply reached the client without the tunnel's mark");
    assert_eq!(s.counter("drop_ce_on_not_ect").unwrap(), 0);
}

#[test]
fn the_linux_reference_gateway_passes_them_too() {
    let cluster = with_the_linux_gateway(&["w1"], &TunnelConfig::default());
    let _echo = clients::start_echo_server(cluster.outside(), Path::new(ECHO), cluster.server_ips()).unwrap();
    let w1 = cluster.pod("w1");
    mark_congestion_on_the_tunnel(&cluster.node(w1.node).ns);
    assert_eq!(exchange(cluster.outside(), cluster.server_ip(), &w1.ns), (ECN_CE, ECN_CE));
}
