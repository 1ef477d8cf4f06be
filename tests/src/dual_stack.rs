//! IPv6 on top of a [`Cluster`] built with `disable_ipv6: false`: every
//! address of the IPv4 plan gets a twin, its digits kept
//! (`10.244.1.11` → `fd00:10:244:1::11`, each /24 a /64, a /16 a /48), so
//! a dual-stack test reads like its IPv4 twin.
//!
//! - each node forwards IPv6; its bridge, underlay and (the egress node's)
//!   outside link get the twins of their IPv4 addresses, and the nodes
//!   route each other's pod /64 over the underlay;
//! - every pod that exists now gets its twin on eth0 and an IPv6 default
//!   route via its bridge (pods added later stay IPv4-only: a gateway
//!   pod without IPv6);
//! - the outside namespace gets the twins of the server addresses and
//!   routes the cluster's /48 back through the egress node, without
//!   masquerade: the outside server sees the source the gateway chose.
//!
//! No IPv6 Service: the tunnel (and its Service VIP) stays IPv4. For an
//! IPv6-only cluster, [`add_ipv6_service`] adds the Service's IPv6 twin
//! and [`make_ipv6_only`] takes IPv4 away from the pods (the nodes keep
//! both, as a node's own addresses are not the pods' business).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cidr::Ipv4Cidr;
use crate::netns::Netns;
use crate::topology::{Cluster, Pod, BRIDGE, NODE_EXTERNAL, NODE_UPLINK, POD_IFACE};

/// The IPv6 twin of an IPv4 address: `a.b.c.d` → `fd00:a:b:c::d`, the
/// decimal digits read as hex.
pub fn twin(ip: Ipv4Addr) -> Ipv6Addr {
    let [a, b, c, d] = ip.octets();
    format!("fd00:{a}:{b}:{c}::{d}").parse().expect("every octet is at most three digits")
}

/// The twin of a network whose prefix is a whole number of octets
/// (`10.244.0.0/16` → `fd00:10:244::/48`), as a `--cluster-cidr` value.
pub fn twin_cidr(cidr: Ipv4Cidr) -> String {
    assert!(cidr.prefix_len.is_multiple_of(8), "{cidr}: only /8, /16, /24 and /32 have a twin");
    format!("{}/{}", twin(cidr.network()), 16 + 2 * cidr.prefix_len)
}

/// Adds IPv6 to `cluster` (see the module documentation) and waits until
/// no address is tentative any more.
pub fn add_ipv6(cluster: &Cluster) -> Result<()> {
    let c = cluster.config();
    if c.disable_ipv6 {
        bail!("the cluster was built with disable_ipv6: build it with `disable_ipv6: false` to add IPv6");
    }
    let nodes = cluster.nodes();
    for node in nodes {
        node.ns.sysctls(&[("net.ipv6.conf.all.forwarding", "1")])?;
        add_address(&node.ns, twin(node.bridge_ip), 64, BRIDGE)?;
        if nodes.len() > 1 {
            add_address(&node.ns, twin(node.underlay_ip), 64, NODE_UPLINK)?;
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        for (j, other) in nodes.iter().enumerate() {
            if i != j {
                let via = twin(other.underlay_ip).to_string();
                node.ns.ip(&["-6", "route", "add", &twin_cidr(other.pod_cidr), "via", &via])?;
            }
        }
    }

    let o = &c.outside;
    let edge = cluster.node(o.node);
    add_address(&edge.ns, twin(o.node_ip), 64, NODE_EXTERNAL)?;
    let outside = cluster.outside();
    for ip in &o.server_ips {
        add_address(outside, twin(*ip), 64, POD_IFACE)?;
    }
    let via = twin(o.node_ip).to_string();
    outside.ip(&["-6", "route", "add", &twin_cidr(c.cluster_cidr), "via", &via])?;
    if nodes.len() > 1 {
        outside.ip(&["-6", "route", "add", &twin_cidr(c.underlay), "via", &via])?;
    }
    for (i, other) in nodes.iter().enumerate() {
        if i != o.node {
            let via = twin(edge.underlay_ip).to_string();
            other.ns.ip(&["-6", "route", "add", &twin_cidr(o.link), "via", &via])?;
        }
    }

    for pod in cluster.pods() {
        add_address(&pod.ns, twin(pod.ip), 64, POD_IFACE)?;
        let bridge = twin(cluster.node(pod.node).bridge_ip).to_string();
        pod.ns.ip(&["-6", "route", "add", "default", "via", &bridge])?;
    }
    let mut all: Vec<&Netns> = nodes.iter().map(|n| &*n.ns).collect();
    all.push(outside);
    all.extend(cluster.pods().iter().map(|p| &*p.ns));
    for ns in all {
        settle(ns)?;
    }
    Ok(())
}

/// The cluster Service's IPv6 twin, as kube-proxy installs an IPv6
/// ClusterIP: an ip6tables DNAT of `twin(vip)` to the backend pod's IPv6
/// address in every node's PREROUTING chain. Returns the IPv6 VIP.
pub fn add_ipv6_service(cluster: &Cluster) -> Result<Ipv6Addr> {
    let s = &cluster.config().service;
    let backend = cluster
        .try_pod(&s.backend_pod)
        .with_context(|| format!("service backend pod {:?} is not in the cluster", s.backend_pod))?;
    let vip6 = twin(s.vip);
    let to = format!("[{}]:{}", twin(backend.ip), s.backend_port);
    let (vip, port) = (vip6.to_string(), s.port.to_string());
    for node in cluster.nodes() {
        let rule = ["-A", "PREROUTING", "-d", &vip, "-p", &s.protocol, "--dport", &port];
        let mut full = vec!["ip6tables", "-w", "10", "-t", "nat"];
        full.extend_from_slice(&rule);
        full.extend_from_slice(&["-j", "DNAT", "--to-destination", &to]);
        node.ns.exec(&full).with_context(|| format!("the IPv6 Service DNAT in {}", node.ns.name()))?;
    }
    Ok(vip6)
}

/// Takes IPv4 away from `pod` after [`add_ipv6`]: its IPv4 address and
/// routes go, and IPv6 is all it has, as in an IPv6-only cluster.
pub fn make_ipv6_only(pod: &Pod) -> Result<()> {
    let script = format!("set -e\nip -4 route flush table main\nip -4 addr flush dev {POD_IFACE}\n");
    pod.ns.sh(&script).with_context(|| format!("taking IPv4 away from {}", pod.name))?;
    Ok(())
}

/// `addr/len` on `dev`, without duplicate address detection (no address
/// here is used twice, and DAD would hold it back for a second).
fn add_address(ns: &Netns, addr: Ipv6Addr, len: u8, dev: &str) -> Result<()> {
    ns.ip(&["-6", "addr", "add", &format!("{addr}/{len}"), "dev", dev, "nodad"])
        .with_context(|| format!("adding {addr}/{len} to {dev} in {}", ns.name()))
        .map(|_| ())
}

/// Waits until `ns` has no tentative IPv6 address (the link-local ones the
/// kernel made when the links came up): until then neighbour discovery
/// from them is held back and first packets are lost.
fn settle(ns: &Netns) -> Result<()> {
    crate::util::wait_for(
        &format!("IPv6 duplicate address detection in {}", ns.name()),
        Duration::from_secs(5),
        Duration::from_millis(100),
        || Ok(ns.ip(&["-6", "addr", "show", "tentative"])?.stdout.is_empty().then_some(())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::cidr;

    #[test]
    fn twins_keep_the_digits() {
        assert_eq!(twin(Ipv4Addr::new(10, 244, 1, 11)), "fd00:10:244:1::11".parse::<Ipv6Addr>().unwrap());
        assert_eq!(twin(Ipv4Addr::new(198, 51, 100, 10)).to_string(), "fd00:198:51:100::10");
        assert_eq!(twin_cidr(cidr("10.244.0.0/16")), "fd00:10:244::/48");
        assert_eq!(twin_cidr(cidr("10.244.2.0/24")), "fd00:10:244:2::/64");
    }
}
