//! `join` in a pod without IPv4, as in an IPv6-only cluster: the tunnel's
//! outer header is IPv6 too, from the pod's IPv6 address to the gateway
//! Service's IPv6 address (70 bytes of headers, not 50), and all the
//! pod's external traffic is IPv6, through it.
//!
//! The order keeps the pod fail-closed at every step: the routes that
//! must stay on eth0 (the Service address, the cluster's ranges: nothing
//! external), the unreachable floor under the two halves, the device, and
//! last the halves through it. A failure on the way leaves external IPv6
//! unreachable, never open, and the cluster reachable.
use std::net::{Ipv6Addr, SocketAddr};

use anyhow::{bail, Context, Result};
use egress_common::config::{IPV6_MIN_MTU, TUNNEL_OVERHEAD6};

use super::{
    ensure_vxlan_device, floor_external_ipv6, keep_cluster_ipv6, node_gateway_of, resolve_in_family,
    route_external_ipv6_or_close,
};
use crate::{
    cli::{Ipv6Egress, JoinArgs},
    netdev,
    netlink::{
        link,
        route::{self, Route},
        Netlink,
    },
};

/// Joins the gateway at `gateway` (an IPv6 address or a Service's DNS
/// name) from `eth`, which has no IPv4 address.
pub(super) fn join(
    args: &JoinArgs,
    gateway: &str,
    eth: &netdev::Interface,
    cluster_cidrs: &[(Ipv6Addr, u8)],
) -> Result<()> {
    let Some(pod_ip6) = eth.ipv6 else {
        bail!("interface {} has no global IPv6 address to tunnel from", eth.name);
    };
    if args.ipv6 != Ipv6Egress::Route {
        bail!(
            "this pod has no IPv4 address: its egress is IPv6 alone, and --ipv6 unreachable would leave it none; pass --ipv6 route"
        );
    }
    let tunnel_mtu = eth.mtu.saturating_sub(TUNNEL_OVERHEAD6 as u32);
    if tunnel_mtu < IPV6_MIN_MTU as u32 {
        bail!(
            "{}'s MTU {} leaves a tunnel over IPv6 {tunnel_mtu}, below IPv6's minimum of {IPV6_MIN_MTU}: raise the pod network's MTU to {} or more",
            eth.name,
            eth.mtu,
            IPV6_MIN_MTU + TUNNEL_OVERHEAD6
        );
    }
    let gateway = resolve_gateway6(gateway)?;
    if cluster_cidrs.is_empty() {
        eprintln!(
            "egress-agent: warning: no IPv6 --cluster-cidr given: only {}'s own subnet and the gateway stay on it, all other cluster traffic goes through the gateway; pass the pod and service CIDRs",
            eth.name
        );
    }
    let netlink = Netlink::route()?;
    let Some(via) = node_gateway_of(&netlink, eth, true)? else {
        bail!(
            "this pod has no IPv6 route via a next hop on {} to send the tunnel by: is its IPv6 default route missing?",
            eth.name
        );
    };
    // What stays on eth0 first: the tunnel's own outer packets (the halves
    // would take the Service's address into the tunnel) and the cluster,
    // DNS included. Neither opens anything external; a failure after the
    // floor then leaves the pod its cluster, and so a retry its DNS.
    route::replace(&netlink, &Route::via(gateway.into(), 128, via, eth.ifindex))?;
    keep_cluster_ipv6(&netlink, eth, cluster_cidrs)?;
    floor_external_ipv6(&netlink)?;

    let device = ensure_vxlan_device(&netlink, args, gateway.into(), pod_ip6.into(), eth, false)?;
    link::set_no_ipv6_address(&netlink, device)?;
    link::set(&netlink, device, Some(tunnel_mtu), true)
        .with_context(|| format!("bringing {} up", args.device))?;
    route_external_ipv6_or_close(&netlink, &args.device, device, pod_ip6)?;
    println!(
        "joined: external traffic of {pod_ip6} goes through {} to {gateway} over IPv6 (this pod has no IPv4; VNI {}, port {}); {} IPv6 cluster CIDRs stay on {}",
        args.device,
        args.vni,
        args.vxlan_port,
        cluster_cidrs.len(),
        eth.name
    );
    Ok(())
}

/// The gateway Service's IPv6 address, as given or as its DNS name
/// resolves.
fn resolve_gateway6(gateway: &str) -> Result<Ipv6Addr> {
    resolve_in_family(gateway, "IPv6", |address| match address {
        SocketAddr::V6(v6) => Some(*v6.ip()),
        SocketAddr::V4(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_gateway_is_taken_as_given_and_an_ipv4_one_refused() {
        let vip: Ipv6Addr = "fd00:10:96::10".parse().unwrap();
        assert_eq!(resolve_gateway6("fd00:10:96::10").unwrap(), vip);
        let refused = resolve_gateway6("10.96.0.10").unwrap_err();
        assert!(format!("{refused:#}").contains("has no IPv6 address"), "{refused:#}");
    }
}
