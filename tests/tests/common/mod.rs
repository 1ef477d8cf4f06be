//! Shared by the egress integration tests (each test file is its own crate).
#![allow(dead_code)]

pub mod datagrams;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use egress_tests::agent::DEFAULT_NAT_PORTS;
use egress_tests::reference::{self, TunnelConfig};
use egress_tests::topology::{Cluster, Pod, NODE_EXTERNAL, POD_IFACE};
use egress_tests::{require_root, Daemon, EgressSetup, GatewayOptions, Netns};

pub const ECHO: &str = env!("CARGO_BIN_EXE_echo-server");

/// Timeout for requests that must succeed.
pub const OK_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout for requests that must get no answer.
pub const DROP_TIMEOUT: Duration = Duration::from_secs(2);

/// Default options: w1 and w3 listed, w1/w2/w3 joined.
pub fn options() -> GatewayOptions {
    GatewayOptions::with_echo_server(ECHO)
}

/// Starts the standard setup or panics with the whole error chain (e.g.
/// "not root" or "egress-agent binary not found at …": never a silent pass).
pub fn start(opts: GatewayOptions) -> EgressSetup {
    if let Err(e) = require_root() {
        panic!("{e:#}");
    }
    EgressSetup::start(opts).unwrap_or_else(|e| panic!("starting the egress setup: {e:#}"))
}

/// The default cluster with the Linux reference gateway (VXLAN device,
/// conntrack and MASQUERADE in the gateway pod) on `tunnel`, and the pods
/// named in `clients` joined to it and listed: what a test runs its
/// scenario through to show Linux delivers it too. Panics like [`start`].
pub fn with_the_linux_gateway(clients: &[&str], tunnel: &TunnelConfig) -> Cluster {
    if let Err(e) = require_root() {
        panic!("{e:#}");
    }
    let cluster = Cluster::build_default().unwrap();
    let joined: Vec<(&Pod, String)> = clients
        .iter()
        .map(|name| {
            let pod = cluster.pod(name);
            (pod, reference::join_worker(&cluster, pod, tunnel).unwrap())
        })
        .collect();
    let listed: Vec<(&Pod, &str)> = joined.iter().map(|(pod, mac)| (*pod, mac.as_str())).collect();
    reference::install_gateway(&cluster, &listed, tunnel).unwrap();
    cluster
}

/// The echo server on `server6` (the outside's IPv6 twin of a server
/// address), which answers with the source it saw.
pub fn start_echo6(outside: &Netns, server6: Ipv6Addr) -> Daemon {
    let bind = server6.to_string();
    let mut echo = Daemon::spawn(outside, "echo-server6", &[ECHO, "--bind", &bind]).unwrap();
    echo.wait_for_line("ready", Duration::from_secs(10), |l| l.contains("echo-server ready")).unwrap();
    echo
}

pub fn assert_nat_port(port: u16) {
    assert!(
        DEFAULT_NAT_PORTS.contains(&port),
        "port {port} seen by the server is outside the NAT range {DEFAULT_NAT_PORTS:?}"
    );
}

/// Polls `f` every 200 ms until it returns true; returns the time it took,
/// or panics with `what` after `timeout`.
pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            panic!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Reads one counter of `nstat` in a namespace (absolute value).
pub fn nstat(ns: &egress_tests::Netns, name: &str) -> u64 {
    let out = ns.exec(&["nstat", "-az", name]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}

/// `tracepath -6` from `pod` to `server6` with a 1,280-byte link between
/// the egress node and the outside (IPv6's minimum; routers there send
/// Packet Too Big, never fragment): the path MTU is found through the
/// tunnel, the server is reached, and the output is returned. The link's
/// MTU goes back to what it was.
pub fn tracepath_through_a_1280_hop(cluster: &Cluster, pod: &Pod, server6: Ipv6Addr) -> String {
    set_outside_link_mtu(cluster, "1280");
    let out = pod.ns.output(&["tracepath", "-6", "-n", "-m", "8", &server6.to_string()]);
    set_outside_link_mtu(cluster, "1500");
    let out = out.unwrap_or_else(|e| panic!("tracepath -6 from {}: {e:#}", pod.name));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("tracepath -6 from {}:\n{text}", pod.name);
    assert!(text.contains("reached"), "tracepath -6 from {} did not reach {server6}: {text}", pod.name);
    assert!(text.contains("Resume: pmtu 1280"), "the 1,280-byte hop was not found: {text}");
    text
}

/// The MTU of the link between the egress node and the outside, both ends.
pub fn set_outside_link_mtu(cluster: &Cluster, mtu: &str) {
    let edge = &cluster.node(cluster.config().outside.node).ns;
    edge.ip(&["link", "set", NODE_EXTERNAL, "mtu", mtu]).unwrap();
    cluster.outside().ip(&["link", "set", POD_IFACE, "mtu", mtu]).unwrap();
}

/// Hop `hop`'s answering address in tracepath's output, if it answered.
pub fn tracepath_hop(text: &str, hop: u32) -> Option<String> {
    let prefix = format!("{hop}:");
    text.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| line.split_whitespace().nth(1))
        .find(|word| word.contains(':'))
        .map(str::to_string)
}
