//! A namespace "cluster" that mirrors a small Kubernetes cluster.
//!
//! ```text
//!   pod ns (eth0) ─┐                                   ┌─ pod ns (eth0)
//!   pod ns (eth0) ─┤ cni0 bridge   eth0 ══ eth0   cni0 ├─ gateway pod ns (eth0)
//!                  node A ns  ───────────────────  node B ns ── ext0 ══ eth0  outside ns
//!                  (DNAT VIP→gw)                    (DNAT VIP→gw)          (server IPs)
//! ```
//!
//! - every node is a namespace with a Linux bridge (`cni0`) holding the pod
//!   network, IP forwarding on, and `bridge-nf-call-iptables=1` so the
//!   Service DNAT also applies between pods of one bridge, as on kube-proxy
//!   clusters;
//! - nodes reach each other over an "underlay" (a direct veth for two nodes,
//!   a bridge namespace for more) with routes to each other's pod CIDR;
//! - the "outside" namespace hangs off one node (the gateway's) and routes
//!   the cluster CIDR back through it without masquerade, so the outside
//!   server sees the source address the gateway pod chose;
//! - every pod is a namespace whose `eth0` is a veth into its node's bridge;
//! - the Service VIP is an iptables DNAT in every node's PREROUTING chain,
//!   exactly what kube-proxy installs.
//!
//! Everything is described by [`ClusterConfig`] so other address plans can
//! be tried without touching the logic. Dropping the [`Cluster`] deletes all
//! its namespaces (and with them all veths), also during a panic.

use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use egress_common::config::GATEWAY_EPHEMERAL_PORTS;

use crate::cidr::{cidr, Ipv4Cidr};
use crate::netns::{self, Netns};

/// Name of the pod bridge in every node namespace.
pub const BRIDGE: &str = "cni0";
/// Name of the underlay interface in every node namespace.
pub const NODE_UPLINK: &str = "eth0";
/// Name of the node's interface towards the outside namespace.
pub const NODE_EXTERNAL: &str = "ext0";
/// Name of the interface inside pods and the outside namespace.
pub const POD_IFACE: &str = "eth0";

/// One node: a namespace with a pod bridge.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Short name; the namespace is `<prefix>-<name>`.
    pub name: String,
    /// The node's pod CIDR; the bridge gets its first host address.
    pub pod_cidr: Ipv4Cidr,
    /// The node's address on the underlay (inside [`ClusterConfig::underlay`]).
    pub underlay_ip: Ipv4Addr,
}

/// One pod: a namespace with `eth0` in its node's bridge.
#[derive(Clone, Debug)]
pub struct PodConfig {
    /// Short name; the namespace is `<prefix>-<name>`.
    pub name: String,
    /// Index into [`ClusterConfig::nodes`].
    pub node: usize,
    /// The pod IP (inside the node's pod CIDR).
    pub ip: Ipv4Addr,
    /// `net.ipv4.ip_local_port_range` to set in the pod, if any (the gateway
    /// pod's ephemeral ports must not overlap the agent's NAT port range).
    pub local_port_range: Option<(u16, u16)>,
}

/// The "internet": one namespace with the server addresses.
#[derive(Clone, Debug)]
pub struct OutsideConfig {
    /// Index of the node the outside network is attached to (the egress node).
    pub node: usize,
    /// The link network between that node and the outside namespace.
    pub link: Ipv4Cidr,
    /// The node's address on that link (the outside's route back).
    pub node_ip: Ipv4Addr,
    /// Server addresses in the outside namespace; the first is the main one.
    pub server_ips: Vec<Ipv4Addr>,
}

/// The Service that fronts the gateway pod.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The ClusterIP.
    pub vip: Ipv4Addr,
    /// `udp` or `tcp`.
    pub protocol: String,
    pub port: u16,
    /// Name of the backend pod (the gateway).
    pub backend_pod: String,
    pub backend_port: u16,
}

/// The whole topology as data. [`ClusterConfig::default`] is the standard
/// two-node cluster the tests use.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Prefix of every namespace name. Defaults to a per-process unique
    /// [`netns::unique_prefix`]; the demo may set a fixed one so that
    /// [`netns::cleanup_prefix`] can find leftovers of an earlier run.
    pub prefix: String,
    /// The network the nodes share (each node's `underlay_ip` is inside it).
    pub underlay: Ipv4Cidr,
    /// The cluster's pod CIDR (all node pod CIDRs are inside it).
    pub cluster_cidr: Ipv4Cidr,
    /// The cluster's Service CIDR.
    pub service_cidr: Ipv4Cidr,
    pub nodes: Vec<NodeConfig>,
    pub outside: OutsideConfig,
    pub service: ServiceConfig,
    /// Pods created by [`Cluster::build`]; more can be added later.
    pub pods: Vec<PodConfig>,
    /// MTU of every interface.
    pub mtu: u32,
    /// `net.bridge.bridge-nf-call-iptables` in the nodes (true, as on
    /// kube-proxy clusters: the Service DNAT then also applies to traffic
    /// between pods of one bridge).
    pub bridge_nf_call_iptables: bool,
    /// Disable IPv6 in every namespace (less background noise: no DAD, no
    /// router solicitations on the interfaces under test).
    pub disable_ipv6: bool,
}

impl Default for ClusterConfig {
    /// Node A (10.244.1.0/24) and node B (10.244.2.0/24) joined by a veth
    /// (172.18.0.1 ↔ 172.18.0.2); the outside (198.51.100.10 and .20) on
    /// node B via 198.51.100.1; the gateway pod 10.244.2.10 on node B behind
    /// the Service 10.96.0.10:4789/udp; workers `w1` 10.244.1.11 and `w2`
    /// 10.244.1.12 on node A, `w3` 10.244.2.13 on node B.
    fn default() -> Self {
        let ip = |s: &str| -> Ipv4Addr { s.parse().expect("valid literal") };
        let pod = |name: &str, node: usize, addr: &str| PodConfig {
            name: name.into(),
            node,
            ip: ip(addr),
            local_port_range: None,
        };
        ClusterConfig {
            prefix: netns::unique_prefix(),
            underlay: cidr("172.18.0.0/24"),
            cluster_cidr: cidr("10.244.0.0/16"),
            service_cidr: cidr("10.96.0.0/12"),
            nodes: vec![
                NodeConfig {
                    name: "node-a".into(),
                    pod_cidr: cidr("10.244.1.0/24"),
                    underlay_ip: ip("172.18.0.1"),
                },
                NodeConfig {
                    name: "node-b".into(),
                    pod_cidr: cidr("10.244.2.0/24"),
                    underlay_ip: ip("172.18.0.2"),
                },
            ],
            outside: OutsideConfig {
                node: 1,
                link: cidr("198.51.100.0/24"),
                node_ip: ip("198.51.100.1"),
                server_ips: vec![ip("198.51.100.10"), ip("198.51.100.20")],
            },
            service: ServiceConfig {
                vip: ip("10.96.0.10"),
                protocol: "udp".into(),
                port: 4789,
                backend_pod: "gateway".into(),
                backend_port: 4789,
            },
            pods: vec![
                PodConfig {
                    local_port_range: Some(GATEWAY_EPHEMERAL_PORTS),
                    ..pod("gateway", 1, "10.244.2.10")
                },
                pod("w1", 0, "10.244.1.11"),
                pod("w2", 0, "10.244.1.12"),
                pod("w3", 1, "10.244.2.13"),
            ],
            mtu: 1500,
            bridge_nf_call_iptables: true,
            disable_ipv6: true,
        }
    }
}

/// A node namespace.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub ns: Arc<Netns>,
    pub pod_cidr: Ipv4Cidr,
    /// The bridge address, i.e. the pods' default gateway.
    pub bridge_ip: Ipv4Addr,
    pub underlay_ip: Ipv4Addr,
}

/// A pod: its namespace (shared, so a `Pod` can be cloned freely; the
/// namespace goes away when the cluster and all clones are dropped).
#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    pub ns: Arc<Netns>,
    pub ip: Ipv4Addr,
    /// Index of the pod's node.
    pub node: usize,
}

/// A running cluster topology. Built by [`Cluster::build`]; torn down on drop.
#[derive(Debug)]
pub struct Cluster {
    // Field order is drop order: pods, then the outside, then the nodes.
    pods: Vec<Pod>,
    outside: Arc<Netns>,
    nodes: Vec<Node>,
    fabric: Option<Netns>,
    config: ClusterConfig,
    next_port: u32,
}

impl Cluster {
    /// Builds [`ClusterConfig::default`].
    pub fn build_default() -> Result<Cluster> {
        Cluster::build(ClusterConfig::default())
    }

    /// Checks prerequisites (root, tools), removes namespaces leaked by dead
    /// test processes, and builds the topology. On error everything created
    /// so far is removed again.
    pub fn build(config: ClusterConfig) -> Result<Cluster> {
        crate::util::require_root()?;
        crate::tools::ensure_packages()?;
        netns::cleanup_stale();
        validate(&config)?;

        let outside = Arc::new(new_ns(&config, "outside")?);
        let mut cluster = Cluster {
            pods: Vec::new(),
            outside,
            nodes: Vec::new(),
            fabric: None,
            config: config.clone(),
            next_port: 0,
        };
        for node in &config.nodes {
            let node = cluster.create_node(node)?;
            cluster.nodes.push(node);
        }
        cluster.connect_nodes()?;
        cluster.connect_outside()?;
        for pod in &config.pods {
            cluster.add_pod_with(pod.clone())?;
        }
        cluster.install_service()?;
        Ok(cluster)
    }

    fn create_node(&self, node: &NodeConfig) -> Result<Node> {
        let c = &self.config;
        let ns = new_ns(c, &node.name)?;
        ns.sysctls(&[
            ("net.ipv4.ip_forward", "1"),
            // A hairpin through one interface (pod → node → pod on the same
            // bridge) must not trigger ICMP redirects.
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.default.send_redirects", "0"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ])?;
        set_bridge_netfilter(&ns, c.bridge_nf_call_iptables)?;
        let bridge_ip = node.pod_cidr.host(1)?;
        let mtu = c.mtu.to_string();
        // A bridge without an explicit address takes the lowest MAC of its
        // ports and changes it when a pod with a lower MAC is added; pods
        // that cached the old one then have their packets dropped (as
        // "other host") until their neighbour entry expires. Pin it.
        let mac = bridge_mac(bridge_ip);
        ns.ip(&["link", "add", BRIDGE, "address", &mac, "mtu", &mtu, "type", "bridge"])?;
        ns.ip(&["addr", "add", &node.pod_cidr.with_addr(bridge_ip), "dev", BRIDGE])?;
        ns.ip(&["link", "set", BRIDGE, "up"])?;
        Ok(Node {
            name: node.name.clone(),
            ns: Arc::new(ns),
            pod_cidr: node.pod_cidr,
            bridge_ip,
            underlay_ip: node.underlay_ip,
        })
    }

    /// Wires the underlay and the routes between pod CIDRs.
    fn connect_nodes(&mut self) -> Result<()> {
        let mtu = self.config.mtu.to_string();
        match self.nodes.len() {
            0 | 1 => {}
            2 => veth(&self.nodes[0].ns, NODE_UPLINK, &self.nodes[1].ns, NODE_UPLINK, &mtu)?,
            _ => {
                let fabric = new_ns(&self.config, "fabric")?;
                fabric.ip(&["link", "add", "br0", "mtu", &mtu, "type", "bridge"])?;
                fabric.ip(&["link", "set", "br0", "up"])?;
                for (i, node) in self.nodes.iter().enumerate() {
                    let port = format!("n{i}");
                    veth(&fabric, &port, &node.ns, NODE_UPLINK, &mtu)?;
                    fabric.ip(&["link", "set", &port, "master", "br0", "up"])?;
                }
                self.fabric = Some(fabric);
            }
        }
        if self.nodes.len() < 2 {
            return Ok(());
        }
        let underlay = self.config.underlay;
        for node in &self.nodes {
            node.ns.ip(&["addr", "add", &underlay.with_addr(node.underlay_ip), "dev", NODE_UPLINK])?;
            node.ns.ip(&["link", "set", NODE_UPLINK, "up"])?;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            for (j, other) in self.nodes.iter().enumerate() {
                if i != j {
                    let via = other.underlay_ip.to_string();
                    node.ns.ip(&["route", "add", &other.pod_cidr.to_string(), "via", &via])?;
                }
            }
        }
        Ok(())
    }

    /// Attaches the outside namespace to its node; other nodes route the
    /// outside network through that node.
    fn connect_outside(&self) -> Result<()> {
        let c = &self.config;
        let o = &c.outside;
        let mtu = c.mtu.to_string();
        let node = &self.nodes[o.node];
        veth(&node.ns, NODE_EXTERNAL, &self.outside, POD_IFACE, &mtu)?;
        node.ns.ip(&["addr", "add", &o.link.with_addr(o.node_ip), "dev", NODE_EXTERNAL])?;
        node.ns.ip(&["link", "set", NODE_EXTERNAL, "up"])?;
        for ip in &o.server_ips {
            self.outside.ip(&["addr", "add", &o.link.with_addr(*ip), "dev", POD_IFACE])?;
        }
        self.outside.ip(&["link", "set", POD_IFACE, "up"])?;
        let via = o.node_ip.to_string();
        self.outside.ip(&["route", "add", &c.cluster_cidr.to_string(), "via", &via])?;
        if self.nodes.len() > 1 {
            self.outside.ip(&["route", "add", &c.underlay.to_string(), "via", &via])?;
        }
        for (i, other) in self.nodes.iter().enumerate() {
            if i != o.node {
                let via = node.underlay_ip.to_string();
                other.ns.ip(&["route", "add", &o.link.to_string(), "via", &via])?;
            }
        }
        Ok(())
    }

    /// The kube-proxy part: DNAT the Service VIP to the backend pod in every
    /// node's PREROUTING chain.
    fn install_service(&self) -> Result<()> {
        self.add_service(&self.config.service)
    }

    /// Adds another Service (e.g. a second gateway, each with its own
    /// ClusterIP): the same DNAT as the cluster's own Service, in every node.
    pub fn add_service(&self, s: &ServiceConfig) -> Result<()> {
        let backend = self
            .try_pod(&s.backend_pod)
            .ok_or_else(|| anyhow!("service backend pod {:?} is not in the cluster", s.backend_pod))?;
        let to = format!("{}:{}", backend.ip, s.backend_port);
        let (vip, port) = (s.vip.to_string(), s.port.to_string());
        for node in &self.nodes {
            let rule = ["-A", "PREROUTING", "-d", &vip, "-p", &s.protocol, "--dport", &port];
            nat_rule(&node.ns, &[&rule[..], &["-j", "DNAT", "--to-destination", &to]].concat())?;
        }
        Ok(())
    }

    /// What kube-proxy does when a Service's endpoints change: the VIP of
    /// `s` is spread over `backends` (each new flow picks one at random, as
    /// kube-proxy's iptables mode does), replacing the single DNAT rule of
    /// [`Cluster::add_service`], and the conntrack entries of flows that were
    /// DNATed to a backend in `gone` are deleted, so their next packet picks
    /// a live backend (kube-proxy clears UDP entries of removed endpoints).
    pub fn set_service_backends(
        &self,
        s: &ServiceConfig,
        backends: &[Ipv4Addr],
        gone: &[Ipv4Addr],
    ) -> Result<()> {
        let chain = format!("SVC-{:08X}", u32::from(s.vip));
        let (vip, port) = (s.vip.to_string(), s.port.to_string());
        let jump = ["PREROUTING", "-d", &vip, "-p", &s.protocol, "--dport", &port, "-j", &chain];
        for node in &self.nodes {
            // The chain may exist already (a second change): empty it.
            let _ = nat_rule(&node.ns, &["-N", &chain]);
            nat_rule(&node.ns, &["-F", &chain])?;
            // First in PREROUTING, so the single DNAT rule never matches.
            if nat_rule(&node.ns, &[&["-C"], &jump[..]].concat()).is_err() {
                nat_rule(&node.ns, &[&["-I", "PREROUTING", "1"], &jump[1..]].concat())?;
            }
            for (i, backend) in backends.iter().enumerate() {
                let to = format!("{backend}:{}", s.backend_port);
                let probability = format!("{:.5}", 1.0 / (backends.len() - i) as f64);
                // DNAT to a port needs the protocol in the rule itself.
                let mut rule = vec!["-A", chain.as_str(), "-p", s.protocol.as_str()];
                if i + 1 < backends.len() {
                    rule.extend([
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        probability.as_str(),
                    ]);
                }
                rule.extend(["-j", "DNAT", "--to-destination", to.as_str()]);
                nat_rule(&node.ns, &rule)?;
            }
            for backend in gone {
                // Exit status 1 when there was nothing to delete.
                let ip = backend.to_string();
                node.ns.output(&[
                    "conntrack",
                    "-D",
                    "-p",
                    &s.protocol,
                    "--orig-dst",
                    &vip,
                    "--reply-src",
                    &ip,
                ])?;
            }
        }
        Ok(())
    }

    /// Adds a pod on node `node` with the lowest free address of the node's
    /// pod CIDR (from .2 up).
    pub fn add_pod(&mut self, node: usize, name: &str) -> Result<Pod> {
        let n = self.nodes.get(node).ok_or_else(|| anyhow!("no node {node}"))?;
        let (cidr, bridge_ip) = (n.pod_cidr, n.bridge_ip);
        let size = 1u32 << (32 - cidr.prefix_len as u32);
        let ip = (2..size.saturating_sub(1))
            .map(|h| cidr.host(h))
            .filter_map(Result::ok)
            .find(|ip| *ip != bridge_ip && self.pods.iter().all(|p| p.ip != *ip))
            .ok_or_else(|| anyhow!("no free address in {cidr}"))?;
        self.add_pod_with(PodConfig { name: name.into(), node, ip, local_port_range: None })
    }

    /// Adds a pod exactly as configured.
    pub fn add_pod_with(&mut self, pod: PodConfig) -> Result<Pod> {
        if self.try_pod(&pod.name).is_some() {
            bail!("pod {:?} already exists", pod.name);
        }
        let port = format!("veth{}", self.next_port);
        self.next_port += 1;
        let node =
            self.nodes.get(pod.node).ok_or_else(|| anyhow!("pod {:?}: no node {}", pod.name, pod.node))?;
        if !node.pod_cidr.contains(pod.ip) {
            bail!("pod {:?}: {} is not in node {}'s {}", pod.name, pod.ip, node.name, node.pod_cidr);
        }
        let ns = new_ns(&self.config, &pod.name)?;
        if let Some((lo, hi)) = pod.local_port_range {
            ns.sysctls(&[("net.ipv4.ip_local_port_range", &format!("{lo} {hi}"))])?;
        }
        let mtu = self.config.mtu.to_string();
        veth(&node.ns, &port, &ns, POD_IFACE, &mtu).with_context(|| format!("wiring pod {}", pod.name))?;
        node.ns.ip(&["link", "set", &port, "master", BRIDGE, "up"])?;
        ns.ip(&["addr", "add", &node.pod_cidr.with_addr(pod.ip), "dev", POD_IFACE])?;
        ns.ip(&["link", "set", POD_IFACE, "up"])?;
        ns.ip(&["route", "add", "default", "via", &node.bridge_ip.to_string()])?;
        let pod = Pod { name: pod.name, ns: Arc::new(ns), ip: pod.ip, node: pod.node };
        self.pods.push(pod.clone());
        Ok(pod)
    }

    /// The pod named `name`; panics if there is none (a test bug).
    pub fn pod(&self, name: &str) -> &Pod {
        self.try_pod(name).unwrap_or_else(|| panic!("no pod named {name:?}"))
    }

    /// The pod named `name`, if any.
    pub fn try_pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.name == name)
    }

    /// All pods, in creation order.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The gateway pod (the Service's backend).
    pub fn gateway(&self) -> &Pod {
        self.pod(&self.config.service.backend_pod)
    }

    /// Node `index`.
    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The outside ("internet") namespace.
    pub fn outside(&self) -> &Arc<Netns> {
        &self.outside
    }

    /// The main outside server address.
    pub fn server_ip(&self) -> Ipv4Addr {
        self.config.outside.server_ips[0]
    }

    /// All outside server addresses.
    pub fn server_ips(&self) -> &[Ipv4Addr] {
        &self.config.outside.server_ips
    }

    /// The gateway Service's ClusterIP.
    pub fn service_vip(&self) -> Ipv4Addr {
        self.config.service.vip
    }

    /// The gateway Service's port.
    pub fn service_port(&self) -> u16 {
        self.config.service.port
    }

    /// The CIDRs a joined worker must keep on eth0 (pod and Service CIDRs),
    /// as `egress-agent join --cluster-cidr` values.
    pub fn cluster_cidrs(&self) -> Vec<Ipv4Cidr> {
        vec![self.config.cluster_cidr, self.config.service_cidr]
    }

    /// The configuration this cluster was built from.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The namespace name prefix (for [`netns::cleanup_prefix`]).
    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }
}

fn validate(c: &ClusterConfig) -> Result<()> {
    if c.nodes.is_empty() {
        bail!("a cluster needs at least one node");
    }
    if c.outside.node >= c.nodes.len() {
        bail!("outside.node {} does not exist", c.outside.node);
    }
    if c.outside.server_ips.is_empty() {
        bail!("outside.server_ips is empty");
    }
    for n in &c.nodes {
        if !c.cluster_cidr.contains(n.pod_cidr.network()) {
            bail!("node {}: {} is outside the cluster CIDR {}", n.name, n.pod_cidr, c.cluster_cidr);
        }
        if c.nodes.len() > 1 && !c.underlay.contains(n.underlay_ip) {
            bail!("node {}: {} is outside the underlay {}", n.name, n.underlay_ip, c.underlay);
        }
    }
    Ok(())
}

/// Creates `<prefix>-<role>` with the per-namespace defaults applied.
fn new_ns(c: &ClusterConfig, role: &str) -> Result<Netns> {
    let ns = Netns::create(&format!("{}-{}", c.prefix, role))?;
    if c.disable_ipv6 {
        ns.sysctls(&[("net.ipv6.conf.all.disable_ipv6", "1"), ("net.ipv6.conf.default.disable_ipv6", "1")])?;
    }
    Ok(ns)
}

/// A fixed, locally administered MAC for a node bridge, derived from its IP.
fn bridge_mac(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:62:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Creates a veth pair with one end in each namespace (never on the host).
fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str, mtu: &str) -> Result<()> {
    a.ip(&[
        "link",
        "add",
        a_name,
        "mtu",
        mtu,
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "mtu",
        mtu,
        "netns",
        b.name(),
    ])
    .map(|_| ())
}

/// Sets `bridge-nf-call-iptables` in a node (the kernel's default is 1 once
/// br_netfilter is loaded, so `false` must be written too). Loads
/// br_netfilter first if it is needed and missing.
fn set_bridge_netfilter(ns: &Netns, on: bool) -> Result<()> {
    const KEY: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    let present = |ns: &Netns| ns.sh(&format!("test -e {KEY}")).is_ok();
    if !present(ns) {
        if !on {
            return Ok(());
        }
        let loaded = std::process::Command::new("modprobe")
            .arg("br_netfilter")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !loaded || !present(ns) {
            bail!("{KEY} is missing and `modprobe br_netfilter` did not provide it");
        }
    }
    ns.sysctls(&[("net.bridge.bridge-nf-call-iptables", if on { "1" } else { "0" })])
}

/// `iptables -t nat ARGS` in `ns` (waiting for the xtables lock).
fn nat_rule(ns: &Netns, args: &[&str]) -> Result<std::process::Output> {
    let mut full = vec!["iptables", "-w", "10", "-t", "nat"];
    full.extend_from_slice(args);
    ns.exec(&full)
}
