//! The namespace cluster on its own, without the agent: routing between
//! pods and nodes, the outside server, the Service DNAT (also between pods
//! of one bridge), and cleanup.

use std::net::SocketAddrV4;
use std::time::Duration;

use egress_tests::cidr::cidr;
use egress_tests::clients::{self, curl_echo, ping, udp_echo};
use egress_tests::topology::{Cluster, ClusterConfig, NodeConfig, PodConfig};
use egress_tests::{netns, require_root};

const ECHO: &str = env!("CARGO_BIN_EXE_echo-server");
const T: Duration = Duration::from_secs(3);

#[test]
fn default_cluster_routes_serves_and_cleans_up() {
    require_root().unwrap();
    let prefix;
    {
        let mut cluster = Cluster::build_default().unwrap();
        prefix = cluster.prefix().to_string();
        let (gw, w1, w2, w3) = (
            cluster.gateway().clone(),
            cluster.pod("w1").clone(),
            cluster.pod("w2").clone(),
            cluster.pod("w3").clone(),
        );

        // Pod to pod: same bridge, across nodes, and to the gateway.
        ping(&w1.ns, w2.ip, 1).unwrap();
        ping(&w1.ns, w3.ip, 1).unwrap();
        ping(&w3.ns, gw.ip, 1).unwrap();
        ping(&w1.ns, gw.ip, 1).unwrap();

        // Outside server: pods reach it with their own address (no masquerade).
        let server = cluster.server_ip();
        let _echo =
            clients::start_echo_server(cluster.outside(), std::path::Path::new(ECHO), cluster.server_ips())
                .unwrap();
        ping(&w1.ns, server, 1).unwrap();
        let seen = curl_echo(&gw.ns, server, T).unwrap();
        assert_eq!(seen.ip, gw.ip, "outside sees the gateway pod's own IP");
        assert!(seen.port >= 32768, "gateway pod ephemeral port {} below its local port range", seen.port);
        assert_eq!(curl_echo(&w1.ns, server, T).unwrap().ip, w1.ip);
        assert_eq!(curl_echo(&w3.ns, cluster.server_ips()[1], T).unwrap().ip, w3.ip);
        let udp = udp_echo(&w1.ns, SocketAddrV4::new(server, clients::ECHO_UDP_PORT), T).unwrap();
        assert_eq!(udp.ip, w1.ip);
        let nc = clients::nc_udp_echo(&w2.ns, SocketAddrV4::new(server, clients::ECHO_UDP_PORT)).unwrap();
        assert_eq!(nc.ip, w2.ip);

        // The Service VIP: DNAT to the gateway pod, from another node and
        // from the gateway's own bridge (needs bridge-nf-call-iptables).
        // The client socket is connected to the VIP, so it only accepts a
        // reply that was un-DNATed back to the VIP.
        let port = cluster.service_port();
        let _svc = {
            let mut args = vec![ECHO.to_string(), "--bind".into(), gw.ip.to_string()];
            args.extend(["--udp-port".into(), port.to_string(), "--http-port".into(), "8080".into()]);
            let mut d = egress_tests::Daemon::spawn(&gw.ns, "service-echo", &args).unwrap();
            d.wait_for_line("ready", T, |l| l.contains("echo-server ready")).unwrap();
            d
        };
        let vip = SocketAddrV4::new(cluster.service_vip(), port);
        assert_eq!(udp_echo(&w1.ns, vip, T).unwrap().ip, w1.ip, "VIP from node A");
        assert_eq!(udp_echo(&w3.ns, vip, T).unwrap().ip, w3.ip, "VIP from the gateway's bridge");

        // Adding a pod later picks a free address and wires it the same way.
        // The bridge keeps its MAC when ports are added (pods cache it).
        let bridge_mac =
            |c: &Cluster| c.node(0).ns.exec(&["cat", "/sys/class/net/cni0/address"]).unwrap().stdout;
        let mac_before = bridge_mac(&cluster);
        let extra = cluster.add_pod(0, "extra").unwrap();
        let _more: Vec<_> = (0..3).map(|i| cluster.add_pod(0, &format!("more{i}")).unwrap()).collect();
        assert_eq!(bridge_mac(&cluster), mac_before, "the node bridge's MAC changed when pods were added");
        assert!(cluster.node(0).pod_cidr.contains(extra.ip));
        assert_eq!(curl_echo(&extra.ns, server, T).unwrap().ip, extra.ip);

        // The other client helpers, directly (no gateway in the path).
        let started = std::time::Instant::now();
        let many = clients::curl_echo_many(&w2.ns, server, 20, T).unwrap();
        assert_eq!(many.failures, 0, "{} of 20 failed in {:?}", many.failures, started.elapsed());
        assert!(many.replies.iter().all(|r| r.ip == w2.ip));
        let _iperf = clients::start_iperf3_server(cluster.outside(), server).unwrap();
        for reverse in [false, true] {
            let t = clients::iperf3(&w1.ns, server, 1, reverse).unwrap();
            eprintln!("direct iperf3 (reverse={reverse}): {}", clients::mbit(t.bits_per_second));
            assert!(t.bits_per_second > 50e6);
        }
        // Failures are counted, not fatal (nothing listens on port 80 in the gateway pod).
        let failed = clients::curl_echo_many(&w2.ns, gw.ip, 2, Duration::from_millis(300)).unwrap();
        assert_eq!((failed.failures, failed.replies.len()), (2, 0));

        // Nothing has a route to anything else: traffic cannot leave.
        let out = w1.ns.output(&["ping", "-c", "1", "-W", "1", "192.0.2.1"]).unwrap();
        assert!(!out.status.success());

        // MTU is 1500 on the paths under test.
        let link = w1.ns.exec(&["ip", "-o", "link", "show", "eth0"]).unwrap();
        assert!(String::from_utf8_lossy(&link.stdout).contains("mtu 1500"));
    }
    let left: Vec<String> = netns::list().into_iter().filter(|n| netns::has_prefix(n, &prefix)).collect();
    assert!(left.is_empty(), "namespaces left after drop: {left:?}");
}

#[test]
fn three_nodes_share_a_fabric() {
    require_root().unwrap();
    let mut config = ClusterConfig::default();
    config.nodes.push(NodeConfig {
        name: "node-c".into(),
        pod_cidr: cidr("10.244.3.0/24"),
        underlay_ip: "172.18.0.3".parse().unwrap(),
    });
    config.pods.push(PodConfig {
        name: "w4".into(),
        node: 2,
        ip: "10.244.3.14".parse().unwrap(),
        local_port_range: None,
    });
    let cluster = Cluster::build(config).unwrap();
    let w4 = cluster.pod("w4");
    ping(&w4.ns, cluster.pod("w1").ip, 1).unwrap();
    ping(&w4.ns, cluster.gateway().ip, 1).unwrap();
    ping(&w4.ns, cluster.server_ip(), 1).unwrap();
}

#[test]
fn a_failed_build_cleans_up() {
    require_root().unwrap();
    let mut config = ClusterConfig::default();
    let prefix = config.prefix.clone();
    config.pods[1].ip = "10.99.0.1".parse().unwrap(); // not in node A's pod CIDR
    let err = Cluster::build(config).unwrap_err();
    assert!(err.to_string().contains("is not in node"), "{err:#}");
    let left: Vec<String> = netns::list().into_iter().filter(|n| netns::has_prefix(n, &prefix)).collect();
    assert!(left.is_empty(), "namespaces left after a failed build: {left:?}");
}
