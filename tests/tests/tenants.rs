//! Tenants cannot hurt each other, with real traffic: two labeled pods share
//! the gateway, `w1` (node A) behaves like an attacker and `w3` (node B) is
//! its neighbour. An RST spray holds no NAT port; a tenant that fills the
//! table does not break its neighbour's idle connection; a tenant at its
//! share is refused and its neighbour is not; the flow list cannot be read
//! from another pod. The RST spray also runs against the Linux reference
//! gateway: where Linux delivers, we deliver.

mod common;

use std::net::SocketAddrV4;
use std::path::Path;
use std::time::Duration;

use common::*;
use egress_tests::clients::{self, ECHO_HTTP_PORT, ECHO_UDP_PORT};
use egress_tests::craft::{spray_tcp, TCP_ACK, TCP_FIN, TCP_RST};
use egress_tests::reference::TunnelConfig;

/// The setup: 200 NAT ports, 400 RSTs from one tenant.
const NAT_PORTS: (u16, u16) = (20_000, 20_199);

/// UDP echo requests from `count` fresh sockets (one flow each) of pod
/// `name`; returns how many were answered.
fn udp_flows(s: &egress_tests::EgressSetup, name: &str, count: usize) -> usize {
    let server = s.udp_server();
    (0..count)
        .filter(|_| clients::udp_echo(&s.pod(name).ns, server, Duration::from_millis(300)).is_ok())
        .count()
}

/// `/metrics` as another pod of the cluster sees it.
fn metrics_from(s: &egress_tests::EgressSetup, name: &str) -> String {
    let url = format!("http://{}:9090/metrics", s.gateway_ip());
    clients::curl(&s.pod(name).ns, &url, OK_TIMEOUT).unwrap()
}

fn metric_value(metrics: &str, name: &str, labels: &[&str]) -> Option<u64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn an_rst_spray_holds_no_nat_port() {
    let mut opts = options();
    opts.extra_args = vec!["--nat-ports".into(), format!("{}-{}", NAT_PORTS.0, NAT_PORTS.1)];
    let s = start(opts);
    let (w1, w3) = (s.pod("w1"), s.pod("w3"));
    let server = SocketAddrV4::new(s.server_ip(), ECHO_HTTP_PORT);
    // RSTs, FINs and ACKs from 400 source ports each, twice the NAT range.
    for flags in [TCP_RST, TCP_RST | TCP_ACK] {
        assert_eq!(spray_tcp(&w1.ns, w1.ip, 40_000..40_400, server, flags).unwrap(), 400);
    }
    eventually("the spray reached the gateway", OK_TIMEOUT, || {
        s.status().unwrap().counter_or_zero("drop_rst_without_flow") == 800
    });
    let status = s.status().unwrap();
    assert_eq!(status.flows_of(w1.ip, "tcp").count(), 0, "an RST made a binding");
    // The neighbour's connections to the same server all work.
    let many = clients::curl_echo_many(&w3.ns, s.server_ip(), 20, OK_TIMEOUT).unwrap();
    assert_eq!(many.failures, 0, "{} of 20 connections failed after the RST spray", many.failures);
    // FINs and ACKs do make bindings, unreplied ones, which go with the SYN
    // timeout; the neighbour still finds ports meanwhile.
    spray_tcp(&w1.ns, w1.ip, 41_000..41_100, server, TCP_FIN | TCP_ACK).unwrap();
    let many = clients::curl_echo_many(&w3.ns, s.server_ip(), 20, OK_TIMEOUT).unwrap();
    assert_eq!(many.failures, 0);
}

#[test]
fn the_linux_reference_gateway_delivers_the_same_after_an_rst_spray() {
    let cluster = with_the_linux_gateway(
        &["w1", "w3"],
        &TunnelConfig { nat_ports: NAT_PORTS, ..TunnelConfig::default() },
    );
    let _echo = clients::start_echo_server(cluster.outside(), Path::new(ECHO), cluster.server_ips()).unwrap();
    let (w1, w3) = (cluster.pod("w1"), cluster.pod("w3"));
    let server = SocketAddrV4::new(cluster.server_ip(), ECHO_HTTP_PORT);
    for flags in [TCP_RST, TCP_RST | TCP_ACK] {
        spray_tcp(&w1.ns, w1.ip, 40_000..40_400, server, flags).unwrap();
    }
    let many = clients::curl_echo_many(&w3.ns, cluster.server_ip(), 20, OK_TIMEOUT).unwrap();
    assert_eq!(many.failures, 0, "Linux: {} of 20 connections failed", many.failures);
}

#[test]
fn a_tenant_that_fills_the_table_breaks_no_idle_connection_of_its_neighbour() {
    let mut opts = options();
    // A small table, and a share as big as the table, so one tenant can fill it.
    for (flag, value) in
        [("--conntrack-size", "1024"), ("--max-flows-per-client", "1024"), ("--gc-interval-s", "1")]
    {
        opts.extra_args.extend([flag.to_string(), value.to_string()]);
    }
    let s = start(opts);
    // The neighbour's pooled connection, idle while the tenant fills the table.
    let w3 = s.pod("w3");
    let server = SocketAddrV4::new(s.server_ip(), ECHO_HTTP_PORT);
    let pooled = clients::tcp_connect(&w3.ns, server, OK_TIMEOUT).unwrap();
    // 1,100 UDP exchanges from fresh sockets: the table (1,024 flows, one
    // the neighbour's) fills with answered flows, the tenant's excess is
    // refused. (A fresh socket may draw a source port used a moment before,
    // and so an existing flow: answers are not flows.)
    let answered = udp_flows(&s, "w1", 1100);
    let status = s.status().unwrap();
    let refused = status.counter("drop_conntrack_full").unwrap();
    eprintln!(
        "tenant: {answered} of 1100 exchanges answered; table: {} flows, {} made, {refused} refused",
        status.flows.len(),
        status.counter("flow_created").unwrap()
    );
    assert_eq!(status.flows.len(), 1024, "the table is not full");
    assert_eq!(status.counter("flow_created").unwrap(), 1024);
    assert!(refused >= 1 && answered >= 1000, "{answered} answered, {refused} refused");
    assert_eq!(status.counter("flow_early_dropped").unwrap(), 0, "an answered flow was evicted");
    // The pooled connection still works, on its NAT port.
    let echo = clients::http_echo_on(pooled).unwrap();
    assert_eq!(echo.ip, s.gateway_ip());
    // The refusals are the tenant's, and said so once per sweep.
    eventually_metrics(&s, "egress_client_flows_refused", &["\"w1\"", "table_full"], |v| v == refused);
    // The flow gauges are the sweep's tally of what it kept: the tenant's
    // 1,023 UDP flows to one server, and the neighbour's connection.
    let metrics = eventually_metrics(&s, "egress_nat_bindings", &[], |v| v == 1024);
    assert_eq!(metric_value(&metrics, "egress_flows", &["\"udp\""]), Some(1023));
    assert_eq!(metric_value(&metrics, "egress_flows", &["\"tcp\""]), Some(1));
    assert_eq!(metric_value(&metrics, "egress_nat_ports_used_max", &[]), Some(1023));
    eventually("the table-full warning line", OK_TIMEOUT, || {
        s.agent.log().contains("the flow table is full of answered flows")
    });
}

/// `/metrics` once `name` with `labels` has `value` (metrics follow a
/// sweep, a refused flow a moment later still).
fn eventually_metrics(
    s: &egress_tests::EgressSetup,
    name: &str,
    labels: &[&str],
    value: impl Fn(u64) -> bool,
) -> String {
    let mut metrics = String::new();
    eventually(&format!("{name} {labels:?} in /metrics"), OK_TIMEOUT, || {
        metrics = metrics_from(s, "w2");
        metric_value(&metrics, name, labels).is_some_and(&value)
    });
    metrics
}

#[test]
fn a_tenant_at_its_share_is_refused_and_its_neighbour_is_not() {
    let mut opts = options();
    for (flag, value) in [("--max-flows-per-client", "50"), ("--gc-interval-s", "1")] {
        opts.extra_args.extend([flag.to_string(), value.to_string()]);
    }
    let s = start(opts);
    let tenant = udp_flows(&s, "w1", 80);
    let neighbour = udp_flows(&s, "w3", 40);
    eprintln!("at a share of 50: tenant {tenant} of 80 answered, neighbour {neighbour} of 40");
    // (A fresh socket may draw the source port of an earlier one, and so
    // its flow: count flows and refusals, not answers.)
    let status = s.status().unwrap();
    assert_eq!(status.flows_of(s.pod("w1").ip, "udp").count(), 50, "the tenant holds its share");
    let refused = status.counter("drop_client_flow_limit").unwrap();
    assert_eq!(tenant as u64 + refused, 80);
    assert!(refused >= 25, "only {refused} of the tenant's 80 exchanges were refused");
    assert_eq!(neighbour, 40, "the neighbour was refused");
    let metrics =
        eventually_metrics(&s, "egress_client_flows_refused", &["\"w1\"", "over_share"], |v| v == refused);
    assert_eq!(metric_value(&metrics, "egress_client_flows_refused", &["\"w3\"", "over_share"]), Some(0));
    assert_eq!(metric_value(&metrics, "egress_client_flows{", &["\"w1\""]), Some(50));
    eventually("the share warning line", OK_TIMEOUT, || s.agent.log().contains("(w1) holds its share"));
    assert!(!s.agent.log().contains("(w3) holds its share"));
}

#[test]
fn flow_details_cannot_be_read_from_another_pod() {
    let s = start(options());
    clients::udp_echo(&s.pod("w1").ns, s.udp_server(), OK_TIMEOUT).unwrap();
    let nat_port = s.status().unwrap().flows_of(s.pod("w1").ip, "udp").next().unwrap().nat_port;
    // Inside the gateway pod, `egress-agent status` lists the flow (above).
    // From another pod: probes and metrics, and nothing that names a flow.
    let w2 = &s.pod("w2").ns;
    let gateway = s.gateway_ip();
    let metrics = metrics_from(&s, "w2");
    assert!(metrics.contains("egress_ready 1"));
    for secret in [s.server_ip().to_string(), format!("{nat_port}"), ECHO_UDP_PORT.to_string()] {
        assert!(!metrics.contains(&secret), "/metrics names {secret}");
    }
    let status_on_metrics = clients::curl(w2, &format!("http://{gateway}:9090/status"), OK_TIMEOUT);
    assert!(
        status_on_metrics.is_err() || !status_on_metrics.as_ref().unwrap().contains("flows"),
        "/status is served on the pod network: {status_on_metrics:?}"
    );
    let status_port = clients::curl(w2, &format!("http://{gateway}:9091/status"), DROP_TIMEOUT);
    assert!(status_port.is_err(), "the status listener answered another pod: {status_port:?}");
}
