//! An IPv6-only cluster: the pods, the gateway pod among them, have IPv6
//! alone, the gateway's Service has an IPv6 ClusterIP (an ip6tables DNAT
//! in every node, as kube-proxy installs it), and so the tunnel's outer
//! header is IPv6 too: 70 bytes of headers, zero outer UDP checksums.
//!
//! The Linux reference gateway first: it shows the topology carries such
//! a tunnel (the DNAT, zero checksums across it, bulk TCP in 70-byte
//! headers, same-node and cross-node) without the agent, so that the
//! agent's own IPv6-only path is measured against something that works.
//! Then `egress-agent join` in IPv6-only pods, through that gateway; then
//! the agent's own gateway, in an IPv6-only gateway pod, serving pods
//! listed by their IPv6 addresses.

mod common;

use std::net::Ipv6Addr;
use std::path::Path;
use std::process::Output;

use common::*;
use egress_common::config::{DEFAULT_VNI, TUNNEL_GATEWAY_MAC, TUNNEL_OVERHEAD6};
use egress_tests::agent::{agent_binary, Agent, GatewayArgs};
use egress_tests::clients::{self, Iperf3Options};
use egress_tests::dual_stack::{self, twin, twin_cidr};
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

/// `egress-agent join --ipv6 IPV6` in `pod`, towards the Service's IPv6
/// address, the cluster's IPv6 range kept on eth0, the label in `labels`
/// deciding (joined whatever the labels without one).
fn join6(
    cluster: &Cluster,
    vip6: Ipv6Addr,
    pod: &Pod,
    ipv6: &str,
    labels: Option<&Path>,
) -> anyhow::Result<Output> {
    let agent = agent_binary()?;
    let mut args = vec![
        agent.display().to_string(),
        "join".into(),
        "--gateway".into(),
        vip6.to_string(),
        "--cluster-cidr".into(),
        twin_cidr(cluster.config().cluster_cidr),
        "--ipv6".into(),
        ipv6.into(),
    ];
    if let Some(labels) = labels {
        args.extend(["--labels-file".into(), labels.display().to_string()]);
    }
    pod.ns.exec(&args)
}

/// Udp6InCsumErrors of every node, then every pod: a zero outer checksum
/// refused anywhere on the way would count there.
fn checksum_errors(cluster: &Cluster) -> Vec<u64> {
    let nodes = cluster.nodes().iter().map(|node| nstat(&node.ns, "Udp6InCsumErrors"));
    nodes.chain(cluster.pods().iter().map(|pod| nstat(&pod.ns, "Udp6InCsumErrors"))).collect()
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
    let before = checksum_errors(&cluster);
    for pod in [w1, w3] {
        assert_ipv6_egress(pod, server6, twin(gateway.ip), &cluster);
    }
    assert_eq!(checksum_errors(&cluster), before, "UDP checksum errors over IPv6 (nodes, then pods)");
    // Nothing of it was IPv4: the pods have none.
    let v4 = w1.ns.output(&["ip", "-4", "-o", "addr", "show", "scope", "global"]).unwrap();
    assert!(v4.stdout.is_empty(), "w1 still has IPv4: {}", String::from_utf8_lossy(&v4.stdout));
}

/// `egress-agent join` in IPv6-only pods, with the Linux reference
/// gateway at the Service's IPv6 address: the tunnel device's outer header
/// is IPv6 (to the VIP, zero checksums both ways, MTU eth0 - 70), and the
/// pods' external IPv6 leaves from the gateway's address. `--ipv6
/// unreachable`, which would leave such a pod no egress at all, is refused
/// before anything changes. The label removed, the pod's IPv6 goes out
/// directly again.
#[test]
fn join_tunnels_an_ipv6_only_pod_over_ipv6() {
    let (cluster, vip6) = ipv6_only_cluster();
    let [a, b, c, d, e, f] = TUNNEL_GATEWAY_MAC;
    let gateway_mac = format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}");
    let tunnel = TunnelConfig { vni: DEFAULT_VNI, gateway_mac, ..TunnelConfig::default() };
    let server6 = twin(cluster.server_ip());
    let _echo6 = start_echo6(cluster.outside(), server6);
    let dir = egress_tests::util::TempDir::new("labels").unwrap();
    let labels = dir.path().join("labels");
    std::fs::write(&labels, "egress=\"external\"\n").unwrap();
    let join = |pod: &Pod, ipv6: &str| join6(&cluster, vip6, pod, ipv6, Some(&labels));
    let stdout = |out: Output| String::from_utf8_lossy(&out.stdout).into_owned();

    let (w1, w2, w3) = (cluster.pod("w1"), cluster.pod("w2"), cluster.pod("w3"));
    let refused = join(w2, "unreachable").expect_err("--ipv6 unreachable in an IPv6-only pod");
    assert!(format!("{refused:#}").contains("pass --ipv6 route"), "{refused:#}");
    assert!(w2.ns.ip(&["link", "show", "egress0"]).is_err(), "nothing was made before the refusal");

    let mut joined = Vec::new();
    for pod in [w1, w3] {
        let out = stdout(join(pod, "route").unwrap_or_else(|e| panic!("join in {}: {e:#}", pod.name)));
        assert!(out.contains("over IPv6"), "{out}");
        let mac = pod.ns.sh("cat /sys/class/net/egress0/address").unwrap();
        joined.push((pod, String::from_utf8_lossy(&mac.stdout).trim().to_string()));
    }
    let device = stdout(w1.ns.ip(&["-d", "link", "show", "egress0"]).unwrap());
    for expected in [
        format!("remote {vip6}"),
        format!("local {}", twin(w1.ip)),
        "udp6zerocsumtx".to_string(),
        "udp6zerocsumrx".to_string(),
        format!("mtu {}", cluster.config().mtu - TUNNEL_OVERHEAD6 as u32),
    ] {
        assert!(device.contains(&expected), "egress0 lacks {expected:?}: {device}");
    }
    let half = || stdout(w1.ns.ip(&["-6", "route", "show", "::/1"]).unwrap());
    assert!(half().contains("dev egress0"), "external IPv6 into the tunnel: {}", half());
    // Joined, with no gateway serving the tunnel yet: closed, not direct.
    assert!(clients::curl_echo6(&w1.ns, server6, DROP_TIMEOUT).is_err(), "w1 reached the server untunnelled");
    // Again: the same device, the same routes.
    let ifindex = || stdout(w1.ns.sh("cat /sys/class/net/egress0/ifindex").unwrap());
    let first = ifindex();
    join(w1, "route").unwrap();
    assert_eq!(ifindex(), first, "a second join keeps the device");
    assert!(half().contains("dev egress0"), "{}", half());

    let listed: Vec<(&Pod, &str)> = joined.iter().map(|(pod, mac)| (*pod, mac.as_str())).collect();
    reference::install_gateway_outer6(&cluster, &listed, &tunnel).unwrap();
    for pod in [w1, w3] {
        assert_ipv6_egress(pod, server6, twin(cluster.gateway().ip), &cluster);
    }

    std::fs::write(&labels, "").unwrap();
    let out = stdout(join(w1, "route").unwrap());
    assert!(out.contains("left"), "{out}");
    assert!(w1.ns.ip(&["link", "show", "egress0"]).is_err(), "the tunnel device is gone");
    assert!(half().is_empty(), "our halves are gone: {}", half());
    let seen = clients::curl_echo6(&w1.ns, server6, OK_TIMEOUT).expect("direct IPv6 after leaving");
    assert_eq!(*seen.ip(), twin(w1.ip), "after leaving, w1's IPv6 goes out as itself");
}

/// The agent's own gateway in an IPv6-only gateway pod (no IPv4 at all),
/// the pods file listing w1 and w3 by their IPv6 addresses, w2 joined but
/// unlisted: the listed pods' curl, ping and iperf3 both ways leave from
/// the gateway pod's IPv6 address, across nodes and on the gateway's own
/// node, with no UDP checksum error anywhere; tracepath -6 finds a
/// 1,280-byte hop beyond it, the gateway its first hop; the metrics
/// answer on the pod's IPv6 address; w2 gets nothing, w1 sending as w3
/// gets nothing, and
/// nothing of it leaves directly. The same as the Linux reference gateway
/// above delivers.
#[test]
fn our_gateway_serves_an_ipv6_only_cluster() {
    let (cluster, vip6) = ipv6_only_cluster();
    let server6 = twin(cluster.server_ip());
    let _echo6 = start_echo6(cluster.outside(), server6);
    let (w1, w2, w3) = (cluster.pod("w1"), cluster.pod("w2"), cluster.pod("w3"));
    let dir = egress_tests::util::TempDir::new("pods6").unwrap();
    let pods = dir.path().join("pods.txt");
    std::fs::write(&pods, format!("# listed by IPv6\n{} w1\n{} w3\n", twin(w1.ip), twin(w3.ip))).unwrap();
    let agent_binary = agent_binary().unwrap_or_else(|e| panic!("{e:#}"));
    let agent = Agent::start_gateway(&cluster.gateway().ns, &agent_binary, &GatewayArgs::new(&pods))
        .unwrap_or_else(|e| panic!("the gateway in an IPv6-only pod: {e:#}"));
    for pod in [w1, w2, w3] {
        join6(&cluster, vip6, pod, "route", None).unwrap_or_else(|e| panic!("join in {}: {e:#}", pod.name));
    }

    let before = checksum_errors(&cluster);
    for pod in [w1, w3] {
        assert_ipv6_egress(pod, server6, twin(cluster.gateway().ip), &cluster);
    }
    assert_eq!(checksum_errors(&cluster), before, "UDP checksum errors over IPv6 (nodes, then pods)");
    // Path MTU through the IPv6 tunnel: the gateway answers as the first
    // hop, and the 1,280-byte hop's Packet Too Big reaches the pod.
    let trace = tracepath_through_a_1280_hop(&cluster, w1, server6);
    let gateway6 = twin(cluster.gateway().ip);
    assert_eq!(tracepath_hop(&trace, 1), Some(gateway6.to_string()), "the first hop: {trace}");
    // The kubelet's probes reach the metrics on the pod's IPv6 address,
    // from its node, across the datapath on eth0.
    let readyz = format!("http://[{gateway6}]:9090/readyz");
    let node = &cluster.node(cluster.gateway().node).ns;
    let probed = node.output(&["curl", "-sf", "--max-time", "5", &readyz]).unwrap();
    assert!(probed.status.success(), "{readyz}: {}", String::from_utf8_lossy(&probed.stderr));

    assert!(clients::curl_echo6(&w2.ns, server6, DROP_TIMEOUT).is_err(), "unlisted w2 reached the server");
    // Listed w1 sending as w3 (its address added to w1's loopback): the
    // packets go into w1's tunnel, and the gateway drops them there.
    let w3_ip6 = twin(w3.ip);
    let spoofed_before =
        agent.status_json().unwrap()["counters"]["drop_spoofed_inner_source"].as_u64().unwrap();
    w1.ns.ip(&["-6", "addr", "add", &format!("{w3_ip6}/128"), "dev", "lo", "nodad"]).unwrap();
    let url = format!("http://[{server6}]:{}/", clients::ECHO_HTTP_PORT);
    let as_w3 =
        w1.ns.output(&["curl", "-s", "--max-time", "2", "--interface", &w3_ip6.to_string(), &url]).unwrap();
    w1.ns.ip(&["-6", "addr", "del", &format!("{w3_ip6}/128"), "dev", "lo"]).unwrap();
    assert!(
        !as_w3.status.success(),
        "w1 reached the server as w3: {}",
        String::from_utf8_lossy(&as_w3.stdout)
    );
    let spoofed = agent.status_json().unwrap()["counters"]["drop_spoofed_inner_source"].as_u64().unwrap();
    assert!(spoofed > spoofed_before, "w1's packets as w3 are counted where they stop");
    assert_eq!(*clients::curl_echo6(&w3.ns, server6, OK_TIMEOUT).unwrap().ip(), gateway6, "w3 is unaffected");
    let status = agent.status_json().unwrap();
    let counter =
        |name: &str| status["counters"][name].as_u64().unwrap_or_else(|| panic!("no {name}: {status}"));
    assert!(counter("drop_unknown_client") > 0, "w2's packets are counted where they stop: {status}");
    let mut clients: Vec<String> = status["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|ip| Some(ip.as_str()?.to_string()))
        .collect();
    let mut listed = vec![twin(w1.ip).to_string(), twin(w3.ip).to_string()];
    clients.sort();
    listed.sort();
    assert_eq!(clients, listed, "listed by IPv6: {status}");
    assert!(status["gateway_ip"].is_null(), "no IPv4 to leave from: {status}");
    let flows = status["flows"].as_array().unwrap();
    assert!(
        flows.iter().any(|flow| flow["client_outer_ip"] == flow["client_ip"]),
        "a flow's tunnel comes from the pod's own IPv6 address: {status}"
    );
}
