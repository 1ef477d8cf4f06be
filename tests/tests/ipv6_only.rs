//! An IPv6-only cluster: the pods, the gateway pod among them, have IPv6
//! alone, the gateway's Service has an IPv6 ClusterIP (an ip6tables DNAT
//! in every node, as kube-proxy installs it), and so the tunnel's outer
//! header is IPv6 too: 70 bytes of headers, zero outer UDP checksums.
//!
//! The Linux reference gateway first: it shows the topology carries such
//! a tunnel (the DNAT, zero checksums across it, bulk TCP in 70-byte
//! headers, same-node and cross-node) without the agent, so that the
//! agent's own IPv6-only path is measured against something that works.

mod common;

use std::net::Ipv6Addr;

use common::*;
use egress_tests::clients::{self, Iperf3Options};
use egress_tests::dual_stack::{self, twin};
use egress_tests::reference::{self, TunnelConfig};
use egress_tests::require_root;
use egress_tests::topology::{Cluster, ClusterConfig, Pod};

/// The default cluster with IPv6 added, its Service's IPv6 twin, and every
/// pod made IPv6-only. Returns it and the Service's IPv6 VIP.
fn ipv6_only_cluster() -> (Cluster, Ipv6Addr) {
    if let Err(e) = require_root() {
        panic!("{e:#}");
    }
    let cluster = Cluster::build(ClusterConfig { disable_ipv6: false, ..ClusterConfig::default() }).unwrap();
    dual_stack::add_ipv6(&cluster).unwrap();
    let vip6 = dual_stack::add_ipv6_service(&cluster).unwrap();
    for pod in cluster.pods() {
        dual_stack::make_ipv6_only(pod).unwrap();
    }
    (cluster, vip6)
}

/// curl, ping and iperf3 both ways from `pod` to `server6`, curl seen
/// from `expected_source`.
fn assert_ipv6_egress(pod: &Pod, server6: Ipv6Addr, expected_source: Ipv6Addr, cluster: &Cluster) {
    let seen = clients::curl_echo6(&pod.ns, server6, OK_TIMEOUT)
        .unwrap_or_else(|e| panic!("curl -6 from {}: {e:#}", pod.name));
    assert_eq!(*seen.ip(), expected_source, "curl -6 from {}", pod.name);
    assert_nat_port(seen.port());
    clients::ping_ip(&pod.ns, server6.into(), 3)
        .unwrap_or_else(|e| panic!("ping -6 from {}: {e:#}", pod.name));
    let _iperf = clients::start_iperf3_server_on(cluster.outside(), server6.into()).unwrap();
    for reverse in [false, true] {
        let options = Iperf3Options { secs: 2.0, streams: 1, reverse };
        let tp = clients::iperf3_to(&pod.ns, server6.into(), &options).unwrap();
        eprintln!("iperf3 -6 from {} (reverse={reverse}): {}", pod.name, clients::mbit(tp.bits_per_second));
        assert!(tp.bits_per_second > 50e6, "bulk TCP in an IPv6 tunnel from {}", pod.name);
    }
}

#[test]
fn the_linux_reference_gateway_serves_an_ipv6_only_cluster() {
    let tunnel = TunnelConfig::default();
    let (cluster, vip6) = ipv6_only_cluster();
    let server6 = twin(cluster.server_ip());
    let _echo6 = start_echo6(cluster.outside(), server6);
    // w1 on the other node than the gateway, w3 on its node.
    let (w1, w3) = (cluster.pod("w1"), cluster.pod("w3"));
    let mut joined = Vec::new();
    for pod in [w1, w3] {
        joined.push((pod, reference::join_worker_outer6(&cluster, pod, vip6, &tunnel).unwrap()));
    }
    let listed: Vec<(&Pod, &str)> = joined.iter().map(|(pod, mac)| (*pod, mac.as_str())).collect();
    reference::install_gateway_outer6(&cluster, &listed, &tunnel).unwrap();

    let gateway = cluster.gateway();
    let csum_errors = |pod: &Pod| nstat(&pod.ns, "Udp6InCsumErrors");
    let before: Vec<u64> = [gateway, w1, w3].into_iter().map(csum_errors).collect();
    for pod in [w1, w3] {
        assert_ipv6_egress(pod, server6, twin(gateway.ip), &cluster);
    }
    let after: Vec<u64> = [gateway, w1, w3].into_iter().map(csum_errors).collect();
    assert_eq!(after, before, "outer UDP checksum errors (gateway, w1, w3)");
    // Nothing of it was IPv4: the pods have none.
    let v4 = w1.ns.output(&["ip", "-4", "-o", "addr", "show", "scope", "global"]).unwrap();
    assert!(v4.stdout.is_empty(), "w1 still has IPv4: {}", String::from_utf8_lossy(&v4.stdout));
}
