//! The egress assertions, run against the plain-Linux reference gateway
//! instead of the agent: proves the topology carries tunnelled egress
//! traffic through the Service DNAT (both from another node and from the
//! gateway's own bridge) and that the client helpers measure what the
//! agent tests rely on. Needs root, not the agent.

use std::net::SocketAddrV4;
use std::path::Path;
use std::time::Duration;

use egress_tests::clients::{self, ECHO_UDP_PORT};
use egress_tests::reference::{self, TunnelConfig};
use egress_tests::require_root;
use egress_tests::topology::Cluster;

const ECHO: &str = env!("CARGO_BIN_EXE_echo-server");
const T: Duration = Duration::from_secs(3);

#[test]
fn linux_reference_gateway_passes_the_egress_checks() {
    require_root().unwrap();
    let cluster = Cluster::build_default().unwrap();
    let server = cluster.server_ip();
    let _echo = clients::start_echo_server(cluster.outside(), Path::new(ECHO), cluster.server_ips()).unwrap();
    let t = TunnelConfig::default();
    let (gw, w1, w2, w3) = (cluster.gateway(), cluster.pod("w1"), cluster.pod("w2"), cluster.pod("w3"));

    let mac1 = reference::join_worker(&cluster, w1, &t).unwrap();
    let _mac2 = reference::join_worker(&cluster, w2, &t).unwrap();
    let mac3 = reference::join_worker(&cluster, w3, &t).unwrap();
    reference::install_gateway(&cluster, &[(w1, &mac1), (w3, &mac3)], &t).unwrap();

    let in_nat_range = |p: u16| (t.nat_ports.0..=t.nat_ports.1).contains(&p);
    for w in [w1, w3] {
        let seen = clients::curl_echo(&w.ns, server, T).unwrap();
        assert_eq!(seen.ip, gw.ip, "curl from {}", w.name);
        assert!(in_nat_range(seen.port));
        let udp = clients::udp_echo(&w.ns, SocketAddrV4::new(server, ECHO_UDP_PORT), T).unwrap();
        assert_eq!(udp.ip, gw.ip, "udp from {}", w.name);
        let nc = clients::nc_udp_echo(&w.ns, SocketAddrV4::new(server, ECHO_UDP_PORT)).unwrap();
        assert_eq!(nc.ip, gw.ip, "nc from {}", w.name);
        clients::ping(&w.ns, server, 3).unwrap();
    }

    // Fail closed: the joined but unlisted w2 gets nothing.
    assert!(clients::curl_echo(&w2.ns, server, Duration::from_secs(1)).is_err());

    // The gateway's own traffic keeps its address and ephemeral ports.
    let own = clients::curl_echo(&gw.ns, server, T).unwrap();
    assert_eq!(own.ip, gw.ip);
    assert!(own.port >= 32768);

    let many = clients::curl_echo_many(&w1.ns, server, 100, T).unwrap();
    assert_eq!(many.failures, 0);
    assert!(many.replies.iter().all(|r| r.ip == gw.ip));

    let _iperf = clients::start_iperf3_server(cluster.outside(), server).unwrap();
    for reverse in [false, true] {
        let tp = clients::iperf3(&w1.ns, server, 2, reverse).unwrap();
        eprintln!("reference gateway iperf3 (reverse={reverse}): {}", clients::mbit(tp.bits_per_second));
        assert!(tp.bits_per_second > 50e6);
    }
}
