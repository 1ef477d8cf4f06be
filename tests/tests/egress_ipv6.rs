//! IPv6 through the gateway, switched on per pod with `join --ipv6 route`,
//! in a dual-stack cluster (`dual_stack`: every address with its IPv6
//! twin, the gateway pod's too): curl, ping and iperf3 from a labeled pod
//! reach the outside server from the gateway pod's IPv6 address, an
//! unlisted pod gets nothing, and leaving gives the pod its direct IPv6
//! back. The same scenario through the Linux reference gateway shows the
//! topology carries it without the agent.

mod common;

use std::net::{Ipv6Addr, SocketAddrV6};
use std::path::Path;
use std::time::{Duration, Instant};

use common::datagrams::{
    ask, assert_pattern, late_reply_to_a_closed_socket, pattern, PatternServer, ServerDf,
};
use common::*;
use egress_tests::agent::counters;
use egress_tests::clients::{self, Iperf3Options};
use egress_tests::dual_stack::{self, twin, twin_cidr};
use egress_tests::reference::{self, TunnelConfig};
use egress_tests::topology::{Cluster, ClusterConfig, Pod};
use egress_tests::{EgressSetup, GatewayOptions, Netns};

fn dual_stack_cluster() -> ClusterConfig {
    ClusterConfig { disable_ipv6: false, ..ClusterConfig::default() }
}

/// Our gateway in a dual-stack cluster, listing every pod's IPv6 address
/// too, and no pod joined yet.
fn start_dual_stack() -> EgressSetup {
    start(GatewayOptions { cluster: dual_stack_cluster(), dual_stack: true, joined: vec![], ..options() })
}

/// `join --ipv6 route` in pod `name`, the cluster's IPv6 range kept on
/// eth0, and with `labels` the label deciding. Its stdout.
fn join_routing_ipv6(s: &EgressSetup, name: &str, labels: Option<&Path>) -> String {
    let mut args = vec![s.agent_binary.display().to_string()];
    args.extend(s.join_args().to_args());
    args.extend(["--cluster-cidr".into(), twin_cidr(s.cluster.config().cluster_cidr)]);
    args.extend(["--ipv6".into(), "route".into()]);
    if let Some(labels) = labels {
        args.extend(["--labels-file".into(), labels.display().to_string()]);
    }
    let out = s.pod(name).ns.exec(&args).unwrap_or_else(|e| panic!("join --ipv6 route in {name}: {e:#}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl6(pod: &Pod, server6: Ipv6Addr, timeout: Duration) -> anyhow::Result<SocketAddrV6> {
    clients::curl_echo6(&pod.ns, server6, timeout)
}

/// A dual-stack cluster with the Linux reference gateway serving the pods
/// named in `clients`, IPv4 and IPv6 in the same tunnel.
fn with_the_dual_stack_linux_gateway(clients: &[&str]) -> Cluster {
    let tunnel = TunnelConfig::default();
    let cluster = Cluster::build(dual_stack_cluster()).unwrap();
    dual_stack::add_ipv6(&cluster).unwrap();
    let mut joined = Vec::new();
    for name in clients {
        let pod = cluster.pod(name);
        let mac = reference::join_worker(&cluster, pod, &tunnel).unwrap();
        reference::join_worker_ipv6(&cluster, pod, &tunnel).unwrap();
        joined.push((pod, mac));
    }
    let listed: Vec<(&Pod, &str)> = joined.iter().map(|(pod, mac)| (*pod, mac.as_str())).collect();
    reference::install_gateway(&cluster, &listed, &tunnel).unwrap();
    reference::install_gateway_ipv6(&cluster, &listed, &tunnel).unwrap();
    cluster
}

/// curl, ping and iperf3 both ways from `pod` to `server6`, each seen from
/// `expected_source` (curl) or at a useful rate (iperf3).
fn assert_ipv6_egress(pod: &Pod, server6: Ipv6Addr, expected_source: Ipv6Addr, outside: &Netns) {
    let seen = curl6(pod, server6, OK_TIMEOUT).unwrap_or_else(|e| panic!("curl -6 from {}: {e:#}", pod.name));
    assert_eq!(*seen.ip(), expected_source, "curl -6 from {}", pod.name);
    assert_nat_port(seen.port());
    clients::ping_ip(&pod.ns, server6.into(), 3).unwrap_or_else(|e| panic!("ping -6: {e:#}"));
    let _iperf = clients::start_iperf3_server_on(outside, server6.into()).unwrap();
    for reverse in [false, true] {
        let options = Iperf3Options { secs: 2.0, streams: 1, reverse };
        let tp = clients::iperf3_to(&pod.ns, server6.into(), &options).unwrap();
        eprintln!("IPv6 iperf3 from {} (reverse={reverse}): {}", pod.name, clients::mbit(tp.bits_per_second));
        assert!(tp.bits_per_second > 50e6, "bulk TCP over IPv6 through the tunnel");
    }
}

#[test]
fn switched_on_ipv6_leaves_from_the_gateway_s_ipv6_address() {
    let s = start_dual_stack();
    let (w1, w2, w3) = (s.pod("w1"), s.pod("w2"), s.pod("w3"));
    let server6 = twin(s.server_ip());
    let _echo6 = start_echo6(s.cluster.outside(), server6);
    let dir = egress_tests::util::TempDir::new("labels").unwrap();
    let labels = dir.path().join("labels");
    std::fs::write(&labels, "egress=\"external\"\n").unwrap();

    let direct = curl6(w1, server6, OK_TIMEOUT).expect("before join, IPv6 goes out directly");
    assert_eq!(*direct.ip(), twin(w1.ip));

    // Joined as today (--ipv6 unreachable): fails at once.
    s.join("w1").unwrap();
    let started = Instant::now();
    assert!(curl6(w1, server6, DROP_TIMEOUT).is_err(), "w1's IPv6 went out with --ipv6 unreachable");
    assert!(started.elapsed() < Duration::from_secs(1), "IPv6 hung instead of failing");

    // Switched on: the unreachable halves are replaced in place.
    let before = s.status().unwrap();
    let out = join_routing_ipv6(&s, "w1", Some(&labels));
    assert!(out.contains("goes through egress0 too"), "{out}");
    join_routing_ipv6(&s, "w3", Some(&labels));
    for pod in [w1, w3] {
        assert_ipv6_egress(pod, server6, twin(s.gateway_ip()), s.cluster.outside());
    }
    let after = s.status().unwrap();
    // Honest traffic loses nothing at the gateway (bulk TCP both ways
    // included: GRO aggregates of replies fit the tunnel whole here).
    let dropped: Vec<_> = after
        .counters
        .iter()
        .filter(|(name, value)| name.starts_with("drop_") && **value > before.counter_or_zero(name))
        .collect();
    assert!(dropped.is_empty(), "honest IPv6 traffic was dropped: {dropped:?}");
    for name in [counters::FORWARDED_TO_REMOTE, counters::FORWARDED_TO_CLIENT] {
        assert!(after.counter(name).unwrap() > before.counter_or_zero(name), "{name} did not increase");
    }
    assert!(
        after.ipv6_flows().any(|f| f["client_ip"] == twin(w1.ip).to_string()),
        "status lists w1's IPv6 flows: {:#?}",
        after.raw["flows"]
    );
    // IPv4 is as it was, and the cluster's IPv6 range stays on eth0.
    assert_eq!(s.curl_from("w1", OK_TIMEOUT).unwrap().ip, s.gateway_ip());
    let to_w3 = w1.ns.ip(&["-6", "route", "get", &twin(w3.ip).to_string()]).unwrap();
    assert!(String::from_utf8_lossy(&to_w3.stdout).contains("dev eth0"), "{to_w3:?}");

    // The gateway answers as the first hop (its probes are as long as
    // egress0's MTU: the answer quotes their head), and routers' Packet
    // Too Big about the 1,280-byte link beyond reaches the pod.
    let before = s.status().unwrap();
    let trace = tracepath_through_a_1280_hop(&s.cluster, w1, server6);
    assert_eq!(tracepath_hop(&trace, 1), Some(twin(s.gateway_ip()).to_string()), "the first hop: {trace}");
    let after = s.status().unwrap();
    assert!(
        after.counter("icmp_error_to_client").unwrap() > before.counter_or_zero("icmp_error_to_client"),
        "no ICMPv6 error reached the pod"
    );

    // An unlisted pod's IPv6 is dropped at the gateway (fail closed there).
    join_routing_ipv6(&s, "w2", None);
    assert!(curl6(w2, server6, DROP_TIMEOUT).is_err(), "unlisted w2's IPv6 was forwarded");

    // The label removed: w1 leaves, and its IPv6 goes out directly again.
    std::fs::write(&labels, "").unwrap();
    let out = join_routing_ipv6(&s, "w1", Some(&labels));
    assert!(out.contains("left"), "{out}");
    let direct = curl6(w1, server6, OK_TIMEOUT).expect("after leaving, IPv6 goes out directly");
    assert_eq!(*direct.ip(), twin(w1.ip));
}

#[test]
fn the_linux_reference_gateway_carries_the_same_ipv6() {
    let cluster = with_the_dual_stack_linux_gateway(&["w1", "w3"]);
    let server6 = twin(cluster.server_ip());
    let _echo6 = start_echo6(cluster.outside(), server6);
    let (w1, w3) = (cluster.pod("w1"), cluster.pod("w3"));
    for pod in [w1, w3] {
        assert_ipv6_egress(pod, server6, twin(cluster.gateway().ip), cluster.outside());
    }
    let trace = tracepath_through_a_1280_hop(&cluster, w1, server6);
    assert!(tracepath_hop(&trace, 1).is_some(), "Linux's gateway answers as the first hop: {trace}");
}

/// A cross-node IPv6 upload reaches the gateway as MTU-sized tunnel
/// packets, as IPv4 does: the GRO stage merges them again (uploads were
/// half as fast as Linux's without it) and delivers them intact.
#[test]
fn the_gro_stage_merges_a_cross_node_ipv6_upload() {
    let s = start_dual_stack();
    let (w1, outside) = (s.pod("w1"), s.cluster.outside());
    let server6 = twin(s.server_ip());
    join_routing_ipv6(&s, "w1", None);
    let _iperf = clients::start_iperf3_server_on(outside, server6.into()).unwrap();
    let csum_before = nstat(outside, "TcpInCsumErrors");
    let before = s.status().unwrap();
    let options = Iperf3Options { secs: 3.0, streams: 1, reverse: false };
    let t = clients::iperf3_to(&w1.ns, server6.into(), &options).unwrap();
    let after = s.status().unwrap();
    let rise = |name: &str| after.counter(name).unwrap() - before.counter_or_zero(name);
    let (into, out_of) = (rise("gro_stage_in"), rise("gro_stage_out"));
    eprintln!(
        "cross-node IPv6 upload: {} ; gro_stage_in {into}, gro_stage_out {out_of}",
        clients::mbit(t.bits_per_second)
    );
    assert!(t.bits_per_second > 50e6, "{}", clients::mbit(t.bits_per_second));
    assert_eq!(nstat(outside, "TcpInCsumErrors"), csum_before, "merged segments with bad TCP checksums");
    assert!(into > 10_000, "the upload's segments went through the stage ({into})");
    assert!(
        out_of * 4 < into,
        "GRO merged at least 4 segments per packet on average ({into} in, {out_of} out)"
    );
    let dropped: Vec<_> = after
        .counters
        .iter()
        .filter(|(name, value)| name.starts_with("drop_") && **value > before.counter_or_zero(name))
        .collect();
    assert!(dropped.is_empty(), "the upload lost packets at the gateway: {dropped:?}");
}

/// Bigger than one packet: what the server's kernel fragments for its
/// 1,500-byte link, the tunnel (1,450) cannot carry. IPv6 routers never
/// fragment, so both gateways answer the first fragment with Packet Too
/// Big; the server's kernel learns the tunnel's MTU and a retry's answer
/// arrives in fragments that fit, then every answer at once. 3000 bytes
/// each way (the worker's kernel fragments the requests), and a 3000-byte
/// ping.
///
/// Then a 1,280-byte hop beyond the gateway: its router answers each of
/// the client's fragments (cut for the tunnel's 1,450) with Packet Too
/// Big. The one about the first fragment quotes the ports: translated, it
/// teaches the client the path's MTU, and a retry crosses. Without it no
/// request would ever cross again.
fn big_ipv6_datagrams_cross_in_fragments(cluster: &Cluster, server6: Ipv6Addr, client: &Netns) {
    const BIG: usize = 3000;
    let outside = cluster.outside();
    let at = SocketAddrV6::new(server6, 7203, 0, 0);
    let replier = PatternServer::start(outside, at, ServerDf::LinuxDefault, BIG);
    let (reply, attempt) =
        ask(client, at, &pattern(BIG), Duration::from_secs(1), 3).expect("the answer arrived within 3 tries");
    eprintln!("the first {BIG}-byte IPv6 answer arrived on try {attempt}");
    assert_pattern("the first answer", &reply, BIG);
    let (reply, _) = ask(client, at, &pattern(BIG), OK_TIMEOUT, 1).expect("the next answer arrived at once");
    assert_pattern("the next answer", &reply, BIG);
    let requests = replier.stop();
    assert!(requests.len() >= 2, "the server received the requests");
    for request in &requests {
        assert_pattern("a request", request, BIG);
    }
    let server = server6.to_string();
    let ping = client.output(&["ping", "-n", "-c", "2", "-W", "2", "-s", "3000", &server]).unwrap();
    assert!(ping.status.success(), "a 3000-byte ping -6: {}", String::from_utf8_lossy(&ping.stdout));

    let replier = PatternServer::start(outside, at, ServerDf::LinuxDefault, BIG);
    set_outside_link_mtu(cluster, "1280");
    let answered = ask(client, at, &pattern(BIG), Duration::from_secs(1), 4);
    set_outside_link_mtu(cluster, "1500");
    let requests = replier.stop();
    let (reply, attempt) = answered.unwrap_or_else(|| {
        panic!("no answer through the 1,280-byte hop in 4 tries ({} requests arrived)", requests.len())
    });
    eprintln!("through the 1,280-byte hop, the answer arrived on try {attempt}");
    assert_pattern("the answer through the 1,280-byte hop", &reply, BIG);
}

#[test]
fn big_ipv6_datagrams_cross_the_gateway_in_fragments() {
    let s = start_dual_stack();
    join_routing_ipv6(&s, "w1", None);
    big_ipv6_datagrams_cross_in_fragments(&s.cluster, twin(s.server_ip()), &s.pod("w1").ns);
    let status = s.status().unwrap();
    eprintln!("counters: {:?}", status.counters);
    assert!(status.counter("fragment_translated").unwrap() > 0, "later fragments were translated");
    assert!(status.counter("icmp_too_big_to_remote").unwrap() > 0, "the server was told the tunnel's MTU");
    let told = status.counter("icmp_error_to_client").unwrap();
    assert!(told > 0, "the 1,280-byte hop's Packet Too Big reached the client");
    for name in ["drop_fragment_unmatched", "drop_fragment_over_budget", "drop_ipv6_ext_header"] {
        assert_eq!(status.counter_or_zero(name), 0, "{name}");
    }
}

#[test]
fn the_linux_reference_gateway_carries_big_ipv6_datagrams_the_same_way() {
    let cluster = with_the_dual_stack_linux_gateway(&["w1"]);
    let w1 = cluster.pod("w1");
    big_ipv6_datagrams_cross_in_fragments(&cluster, twin(cluster.server_ip()), &w1.ns);
}

/// A reply to a closed socket draws the pod's ICMPv6 port unreachable,
/// which reaches the remote translated (`egress_client_error6`): its
/// connected socket sees "connection refused", as through Linux's gateway.
#[test]
fn a_client_s_ipv6_port_unreachable_reaches_the_remote() {
    let s = start_dual_stack();
    join_routing_ipv6(&s, "w1", None);
    let at = SocketAddrV6::new(twin(s.server_ip()), 7101, 0, 0);
    let err = late_reply_to_a_closed_socket(s.cluster.outside(), at, &s.pod("w1").ns)
        .expect_err("the server heard nothing back");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(s.counter("icmp_error_to_remote").unwrap(), 1);
}

#[test]
fn the_linux_reference_gateway_passes_the_client_s_ipv6_port_unreachable_on_too() {
    let cluster = with_the_dual_stack_linux_gateway(&["w1"]);
    let w1 = cluster.pod("w1");
    let at = SocketAddrV6::new(twin(cluster.server_ip()), 7101, 0, 0);
    let err = late_reply_to_a_closed_socket(cluster.outside(), at, &w1.ns).expect_err("nothing came back");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}
