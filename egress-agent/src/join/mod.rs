//! `egress-agent join`: in a worker pod's network namespace (an init
//! container, and optionally a native sidecar with `--follow`). Creates the
//! VXLAN device to the gateway's Service address, keeps the cluster's own
//! CIDRs (and the tunnel's outer packets) on eth0, and points the default
//! route into the tunnel. Fail closed: with no gateway answering, external
//! traffic goes nowhere rather than out of the node with the node's
//! address. Idempotent.
//!
//! IPv6 (a dual-stack pod): its cluster IPv6 ranges (`--cluster-cidr`
//! takes them too) stay on eth0, and its external IPv6 goes where `--ipv6`
//! says, in two /1 routes, which win over any default route, one learned
//! from router advertisements included. `unreachable` (the default) fails
//! at once; `route` sends it into the tunnel like IPv4 (the tunnel itself
//! stays IPv4), for a gateway that has an IPv6 address to send it from.
//! Either way the pod's own IPv6 default route is never touched: leaving
//! removes our /1 routes and nothing else. A pod without IPv4 (an
//! IPv6-only cluster) has a tunnel over IPv6 (`outer6`).
//!
//! With `--labels-file` (the pod's labels through the Downward API) the
//! label decides: a pod that does not match `--selector` leaves instead,
//! which removes the tunnel and restores direct egress. That makes removing
//! the label a rollback, for running pods too when `--follow` is on.
//!
//! Several gateways (one per team or destination, each with its own egress
//! address): each `--gateway-for SELECTOR ADDRESS` names another gateway
//! for the pods its selector matches, and the first match decides. With
//! `--follow`, a pod whose label changes moves to its new gateway (the
//! tunnel device's remote is changed in place).
//!
//! Several replicas of one gateway: with `--replicas NAME` (a headless
//! Service's name) the `--follow` sidecar points the tunnel at one ready
//! replica itself, probes it through the tunnel and moves within a second
//! when it stops answering (see `steer`).
mod connections;
mod outer6;
mod probe;
mod replicas;
mod steer;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs},
    path::Path,
    str::FromStr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use egress_common::config::{IPV6_MIN_MTU, TUNNEL_GATEWAY_IP, TUNNEL_GATEWAY_MAC, TUNNEL_OVERHEAD};

use crate::{
    cli::{Ipv6Egress, JoinArgs},
    netdev::{self, Cidrs},
    netlink::{
        link::{self, VxlanSpec},
        neighbour,
        route::{self, Route},
        Netlink,
    },
    pods::selector::LabelSelector,
};

/// How often `--follow` re-reads the labels file. The kubelet refreshes it
/// on its own period (about a minute), which dominates the delay.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    /// Through the gateway at this address (as given: an address or a
    /// Service's DNS name).
    Join(String),
    Leave,
}

/// The gateways a pod may take, each with the labels that choose it, in
/// the order they are tried.
struct GatewayChoices(Vec<(LabelSelector, String)>);

impl GatewayChoices {
    /// `--selector` with `--gateway`, then each `--gateway-for` pair.
    fn parse(args: &JoinArgs) -> Result<GatewayChoices> {
        let first = LabelSelector::parse(&args.selector)
            .map_err(|e| anyhow::anyhow!("invalid --selector {:?}: {e}", args.selector))?;
        let mut choices = vec![(first, args.gateway.clone())];
        for pair in args.gateway_for.chunks(2) {
            let [selector, address] = pair else {
                bail!("--gateway-for takes two values, SELECTOR ADDRESS");
            };
            if selector.trim().is_empty() {
                bail!("--gateway-for {address}: an empty selector would take every pod; name the labels");
            }
            let parsed = LabelSelector::parse(selector)
                .map_err(|e| anyhow::anyhow!("invalid --gateway-for selector {selector:?}: {e}"))?;
            choices.push((parsed, address.clone()));
        }
        Ok(GatewayChoices(choices))
    }

    /// The first gateway whose selector matches `labels`.
    fn for_labels(&self, labels: &std::collections::BTreeMap<String, String>) -> Option<&str> {
        self.0.iter().find(|(selector, _)| selector.matches(labels)).map(|(_, gateway)| gateway.as_str())
    }
}

pub fn run(args: JoinArgs) -> Result<()> {
    let choices = GatewayChoices::parse(&args)?;
    if args.replicas.is_some() && !args.follow {
        bail!("--replicas is for the --follow sidecar (it probes and moves the tunnel while the pod runs); drop it from the one-shot join");
    }
    // `connections` counts and aborts IPv4 sockets only: the sidecar would
    // move an "idle" tunnel under live IPv6 connections and break them.
    if args.replicas.is_some() && args.ipv6 == Ipv6Egress::Route {
        bail!("--ipv6 route does not go with --replicas yet (moving between replicas would break the pod's IPv6 connections); drop --replicas (or, in a pod that has IPv4, use --ipv6 unreachable)");
    }
    if !args.follow {
        return apply(&args, &decide(&args, &choices)?);
    }
    follow(&args, &choices)
}

/// The sidecar: errors are reported and retried, never fatal; the pod's
/// routing stays as it was until the next attempt succeeds. While the pod
/// is joined to `--gateway` and `--replicas` is given, the tunnel is
/// steered between replicas every probe period.
fn follow(args: &JoinArgs, choices: &GatewayChoices) -> Result<()> {
    let mut applied: Option<Decision> = None;
    let mut steering: Option<steer::Steering<DeviceTunnel>> = None;
    let mut next_look = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_look {
            next_look = now + FOLLOW_INTERVAL;
            match decide(args, choices) {
                Ok(decision) if applied.as_ref() != Some(&decision) => match apply(args, &decision) {
                    Ok(()) => applied = Some(decision),
                    Err(err) => eprintln!("egress-agent: error: {err:#} (retrying)"),
                },
                Ok(_) => {}
                Err(err) => eprintln!("egress-agent: error: {err:#} (retrying)"),
            }
            let steered =
                args.replicas.as_deref().filter(|_| applied == Some(Decision::Join(args.gateway.clone())));
            match (steered, steering.is_some()) {
                (None, _) => steering = None,
                (Some(name), false) => match start_steering(args, name) {
                    Ok(started) => steering = Some(started),
                    Err(err) => eprintln!("egress-agent: error: {err:#} (retrying)"),
                },
                (Some(_), true) => {}
            }
        }
        match &mut steering {
            Some(steering) => {
                steering.tick(now);
                std::thread::sleep(steer::PROBE_INTERVAL);
            }
            None => std::thread::sleep(next_look.saturating_duration_since(Instant::now())),
        }
    }
}

fn start_steering(args: &JoinArgs, name: &str) -> Result<steer::Steering<DeviceTunnel>> {
    let eth = netdev::Interface::lookup(&args.interface)?;
    let worker = eth.require_ipv4("--replicas")?;
    let cluster = Cidrs::parse(&args.cluster_cidrs)?.v4;
    let netlink = Netlink::route()?;
    let tunnel = DeviceTunnel {
        device: args.device.clone(),
        interface: eth.ifindex,
        node_gateway: node_gateway(&netlink, &eth)?,
        service: args.gateway.clone(),
        netlink,
    };
    let steering = steer::Steering::start(args, name, worker, cluster, tunnel)?;
    println!(
        "steering: probing the replica of {worker} every {:?} through {}",
        steer::PROBE_INTERVAL,
        args.device
    );
    Ok(steering)
}

/// The pod's tunnel device, pointed at a replica or at the Service.
struct DeviceTunnel {
    device: String,
    /// eth0's index.
    interface: u32,
    node_gateway: Ipv4Addr,
    /// `--gateway`: the tunnel Service.
    service: String,
    netlink: Netlink,
}

impl steer::Tunnel for DeviceTunnel {
    fn prepare(&mut self, to: steer::Target) -> Result<Ipv4Addr> {
        let remote = match to {
            steer::Target::Service => resolve_gateway(&self.service)?,
            steer::Target::Replica(ip) => ip,
        };
        // The outer packets to it stay on eth0 (a replica's pod address is
        // covered by the pod CIDR when --cluster-cidr names it; this route
        // makes it so without).
        let outer = Route::via(remote.into(), 32, self.node_gateway.into(), self.interface).onlink();
        route::replace(&self.netlink, &outer)?;
        Ok(remote)
    }

    fn switch(&mut self, remote: Ipv4Addr) -> Result<()> {
        let device = tunnel_device(&self.netlink, &self.device)?;
        link::set_vxlan_remote(&self.netlink, device.index, remote.into())
    }

    /// The hold is the tunnel's next-hop neighbour entry, made unresolved:
    /// the kernel queues the pod's packets into the tunnel there, before
    /// the VXLAN device reads its remote, and sends them on when the entry
    /// is permanent again, through whatever remote it has by then.
    fn switch_if(&mut self, remote: Ipv4Addr, still_idle: &mut dyn FnMut() -> bool) -> Result<bool> {
        let device = tunnel_device(&self.netlink, &self.device)?.index;
        let next_hop = IpAddr::V4(TUNNEL_GATEWAY_IP.into());
        neighbour::hold(&self.netlink, device, next_hop)?;
        let switched = match still_idle() {
            true => link::set_vxlan_remote(&self.netlink, device, remote.into()).map(|()| true),
            false => Ok(false),
        };
        // Released whatever happened above: a held entry stalls the pod's
        // tunnel. One retry covers a transient failure of the socket.
        neighbour::replace_permanent(&self.netlink, device, next_hop, TUNNEL_GATEWAY_MAC)
            .or_else(|_| neighbour::replace_permanent(&self.netlink, device, next_hop, TUNNEL_GATEWAY_MAC))
            .context("the pod's traffic into the tunnel is held until the sidecar restarts")?;
        switched
    }

    fn target(&self) -> Result<steer::Target> {
        let remote = vxlan_remote(&self.netlink, &self.device)?;
        Ok(if Some(remote) == resolve_gateway(&self.service).ok() {
            steer::Target::Service
        } else {
            steer::Target::Replica(remote)
        })
    }
}

/// Without a labels file, through `--gateway`; with one, through the
/// gateway the labels choose, or leave when none does.
fn decide(args: &JoinArgs, choices: &GatewayChoices) -> Result<Decision> {
    let Some(path) = &args.labels_file else { return Ok(Decision::Join(args.gateway.clone())) };
    let labels = read_labels_file(path)?;
    Ok(match choices.for_labels(&labels) {
        Some(gateway) => Decision::Join(gateway.to_string()),
        None => Decision::Leave,
    })
}

/// Parses the Downward API's `metadata.labels` file: one `key="value"` a line.
fn read_labels_file(path: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read --labels-file {}: mount metadata.labels there with a downwardAPI volume",
            path.display()
        )
    })?;
    let mut labels = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Some((key, quoted)) = line.split_once('=') else {
            bail!("--labels-file {}: {line:?} is not key=\"value\"", path.display());
        };
        let value = quoted
            .trim()
            .trim_start_matches('"')
            .trim_end_matches('"')
            .replace("\\\"", "\"")
            .replace("\\\\", "\\");
        labels.insert(key.trim().to_string(), value);
    }
    Ok(labels)
}

fn apply(args: &JoinArgs, decision: &Decision) -> Result<()> {
    match decision {
        Decision::Join(gateway) => join(args, gateway),
        Decision::Leave => leave(args),
    }
}

/// The gateway Service's address: an IPv4 address as given, or the first
/// IPv4 address its DNS name resolves to.
fn resolve_gateway(gateway: &str) -> Result<Ipv4Addr> {
    resolve_in_family(gateway, "IPv4", |address| match address {
        SocketAddr::V4(v4) => Some(*v4.ip()),
        SocketAddr::V6(_) => None,
    })
}

/// The gateway Service's address in one family (`family` names it):
/// as given, or the first of that family its DNS name resolves to.
fn resolve_in_family<A: FromStr>(
    gateway: &str,
    family: &str,
    pick: impl Fn(SocketAddr) -> Option<A>,
) -> Result<A> {
    if let Ok(ip) = gateway.parse() {
        return Ok(ip);
    }
    let addrs = (gateway, 0)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the gateway {gateway:?}: is its Service deployed?"))?;
    addrs.filter_map(pick).next().with_context(|| {
        format!("the gateway {gateway:?} has no {family} address, which this pod's tunnel needs: give --gateway the Service's {family} address or name")
    })
}

/// Joins the gateway at `gateway` (an address or a Service's DNS name).
fn join(args: &JoinArgs, gateway: &str) -> Result<()> {
    let Cidrs { v4: cluster_cidrs, v6: cluster_cidrs_v6 } = Cidrs::parse(&args.cluster_cidrs)?;
    // The `--replicas` sidecar points the tunnel at a replica of this very
    // gateway itself; joining it again must not undo that.
    let steered = args.replicas.is_some() && gateway == args.gateway;
    let eth = &args.interface;
    let eth_link = netdev::Interface::lookup(eth)?;
    let Some(pod_ip) = eth_link.ipv4 else {
        return outer6::join(args, gateway, &eth_link, &cluster_cidrs_v6);
    };
    let gateway = resolve_gateway(gateway)?;
    if cluster_cidrs.is_empty() {
        eprintln!(
            "egress-agent: warning: no --cluster-cidr given: only {}'s own subnet and the gateway stay on it, all other cluster traffic goes through the gateway; pass the pod and service CIDRs",
            args.interface
        );
    }
    let ipv6 = plan_ipv6(args, &eth_link)?;
    let netlink = Netlink::route()?;
    let eth_mtu = eth_link.mtu;
    let node_gateway = node_gateway(&netlink, &eth_link)?;

    let device = ensure_vxlan_device(&netlink, args, gateway.into(), pod_ip.into(), &eth_link, steered)?;
    prepare_device_for_ipv6(&netlink, device, &ipv6)?;
    link::set(&netlink, device, Some(eth_mtu - TUNNEL_OVERHEAD as u32), true)
        .with_context(|| format!("bringing {} up", args.device))?;
    let next_hop = Ipv4Addr::from(TUNNEL_GATEWAY_IP);
    neighbour::replace_permanent(&netlink, device, next_hop.into(), TUNNEL_GATEWAY_MAC)?;
    warn_if_reverse_path_filtering(&args.device);

    // The tunnel's own outer packets, and the cluster, stay on eth0.
    // `onlink`: CNIs like Calico give pods a /32 and a next hop outside it.
    let via = IpAddr::V4(node_gateway);
    route::replace(&netlink, &Route::via(gateway.into(), 32, via, eth_link.ifindex).onlink())?;
    for (addr, len) in &cluster_cidrs {
        route::replace(&netlink, &Route::via((*addr).into(), *len, via, eth_link.ifindex).onlink())?;
    }
    let default = Route::via(Ipv4Addr::UNSPECIFIED.into(), 0, next_hop.into(), device)
        .onlink()
        .with_source(pod_ip.into());
    route::replace(&netlink, &default)?;
    println!(
        "joined: external traffic of {pod_ip} goes through {} to {gateway} (VNI {}, port {}); {} cluster CIDRs stay on {eth}",
        args.device,
        args.vni,
        args.vxlan_port,
        cluster_cidrs.len()
    );
    match ipv6 {
        Ipv6Plan::Off => {}
        // Closed before anything that may fail: a pod labeled while it
        // runs must never have its IPv4 tunnelled and its IPv6 open.
        Ipv6Plan::Unreachable(why) => {
            close_external_ipv6(&netlink)?;
            keep_cluster_ipv6(&netlink, &eth_link, &cluster_cidrs_v6)?;
            println!(
                "IPv6: external traffic of this pod is unreachable ({why}); {} IPv6 cluster CIDRs stay on {eth}",
                cluster_cidrs_v6.len()
            );
        }
        Ipv6Plan::Route(pod_ip6) => {
            // The floor first: it closes what nothing else holds, and
            // leaves the halves through the tunnel of an earlier run be.
            floor_external_ipv6(&netlink)?;
            keep_cluster_ipv6(&netlink, &eth_link, &cluster_cidrs_v6)?;
            route_external_ipv6_or_close(&netlink, &args.device, device, pod_ip6)?;
            println!(
                "IPv6: external traffic of {pod_ip6} goes through {} too (--ipv6 route: the gateway must have an IPv6 address); {} IPv6 cluster CIDRs stay on {eth}",
                args.device,
                cluster_cidrs_v6.len()
            );
        }
    }
    Ok(())
}

/// What `join` does with the pod's IPv6, decided before anything changes.
#[derive(Debug, PartialEq, Eq)]
enum Ipv6Plan {
    /// The pod runs no IPv6 on eth0.
    Off,
    /// Unreachable, and why.
    Unreachable(&'static str),
    /// Through the tunnel, leaving as this address (eth0's).
    Route(Ipv6Addr),
}

fn plan_ipv6(args: &JoinArgs, eth: &netdev::Interface) -> Result<Ipv6Plan> {
    if !ipv6_enabled(&eth.name) {
        return Ok(Ipv6Plan::Off);
    }
    let pod_ip6 = match (args.ipv6, eth.ipv6) {
        (Ipv6Egress::Unreachable, _) => return Ok(Ipv6Plan::Unreachable("--ipv6 unreachable")),
        // Link-local only (an IPv4 cluster whose pods run IPv6): there is
        // no address to leave as, and none the gateway could list.
        (Ipv6Egress::Route, None) => {
            return Ok(Ipv6Plan::Unreachable("the pod has no global IPv6 address to route from"))
        }
        (Ipv6Egress::Route, Some(address)) => address,
    };
    // On a link below IPv6's minimum MTU the kernel takes IPv6 off the
    // link, and the routes through it with it.
    let tunnel_mtu = eth.mtu.saturating_sub(TUNNEL_OVERHEAD as u32);
    if tunnel_mtu < IPV6_MIN_MTU as u32 {
        bail!(
            "--ipv6 route: {}'s MTU {} leaves the tunnel {tunnel_mtu}, below IPv6's minimum of {IPV6_MIN_MTU}; use --ipv6 unreachable",
            eth.name,
            eth.mtu
        );
    }
    Ok(Ipv6Plan::Route(pod_ip6))
}

/// Before the device comes up, in a pod that runs IPv6: no IPv6 address
/// of its own. Its link-local one would send duplicate address detection,
/// router solicitations and MLD reports into the tunnel, which the gateway
/// counts as drops; the next hop's neighbour entry is static and the pod's
/// address is on eth0.
fn prepare_device_for_ipv6(netlink: &Netlink, device: u32, plan: &Ipv6Plan) -> Result<()> {
    match plan {
        Ipv6Plan::Off => Ok(()),
        _ => link::set_no_ipv6_address(netlink, device),
    }
}

/// IPv6 on the tunnel device: the kernel neither routes through nor
/// receives on a link with `disable_ipv6`, and a new link takes
/// `net.ipv6.conf.default.disable_ipv6`. /proc/sys is read-only in most
/// containers: then say which setting would do.
fn enable_ipv6_on(device: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{device}/disable_ipv6");
    let value = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    if value.trim() == "0" {
        return Ok(());
    }
    std::fs::write(&path, "0").with_context(|| {
        format!(
            "--ipv6 route: IPv6 is off on {device} (net.ipv6.conf.default.disable_ipv6=1 in this pod) and {path} is read-only here; set net.ipv6.conf.default.disable_ipv6=0 in the pod's securityContext.sysctls, or use --ipv6 unreachable"
        )
    })
}

/// The two routes that together cover all of IPv6 and, being longer than
/// any default route, win over it: external IPv6 is unreachable, and
/// fails at once (ENETUNREACH) rather than hang, or goes through the
/// tunnel. Everything more specific (the pod's own subnet, link-local, the
/// cluster ranges added before them) stays as it is.
const IPV6_HALVES: [Ipv6Addr; 2] = [Ipv6Addr::UNSPECIFIED, Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0)];

/// With `--ipv6 route`, the metric of the unreachable halves under the
/// ones through the tunnel (those have the kernel's default, 1024).
const IPV6_FLOOR_METRIC: u32 = 4096;

/// The IPv6 next hop on the tunnel device, as `TUNNEL_GATEWAY_IP` is the
/// IPv4 one. Link-local, so it is the tunnel device's alone (eth0's
/// fe80::/64, wherever the CNI puts its gateway, is another link); the
/// gateway never sees it (the neighbour entry is static).
const TUNNEL_GATEWAY_IP6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0x42, 1);

/// Whether the pod's stack runs IPv6 on `eth` at all.
fn ipv6_enabled(eth: &str) -> bool {
    let disabled = |path: String| std::fs::read_to_string(path).map(|v| v.trim() == "1").unwrap_or(true);
    !disabled(format!("/proc/sys/net/ipv6/conf/{eth}/disable_ipv6"))
}

/// The cluster's IPv6 ranges via eth0's IPv6 next hop, before the halves
/// below would take them.
fn keep_cluster_ipv6(
    netlink: &Netlink,
    eth: &netdev::Interface,
    cluster_cidrs: &[(Ipv6Addr, u8)],
) -> Result<()> {
    if cluster_cidrs.is_empty() {
        return Ok(());
    }
    let Some(via) = node_gateway_of(netlink, eth, true)? else {
        bail!(
            "this pod has no IPv6 route via a next hop on {} to keep the IPv6 --cluster-cidr ranges on: is its IPv6 default route missing?",
            eth.name
        );
    };
    for (addr, len) in cluster_cidrs {
        route::replace(netlink, &Route::via((*addr).into(), *len, via, eth.ifindex))?;
    }
    Ok(())
}

/// Fail closed for IPv6: the two halves unreachable. Each replaces the
/// half through the tunnel in place, if `--ipv6 route` put one there.
fn close_external_ipv6(netlink: &Netlink) -> Result<()> {
    for half in IPV6_HALVES {
        route::replace(netlink, &Route::unreachable(half.into(), 1))?;
    }
    Ok(())
}

/// `--ipv6 route`: the two halves through the tunnel, leaving as the pod's
/// own address, each replacing an unreachable half in place (no moment
/// with neither). Under them, the same halves unreachable at a higher
/// metric: the kernel flushes routes through a link that goes down, is
/// re-created (`ensure_vxlan_device`) or drops below IPv6's minimum MTU,
/// and without the floor the pod's own IPv6 default route would then send
/// its external IPv6 straight out.
fn route_external_ipv6(netlink: &Netlink, name: &str, device: u32, pod_ip6: Ipv6Addr) -> Result<()> {
    enable_ipv6_on(name)?;
    neighbour::replace_permanent(netlink, device, TUNNEL_GATEWAY_IP6.into(), TUNNEL_GATEWAY_MAC)?;
    for half in IPV6_HALVES {
        let through =
            Route::via(half.into(), 1, TUNNEL_GATEWAY_IP6.into(), device).with_source(pod_ip6.into());
        route::replace(netlink, &through)?;
    }
    Ok(())
}

/// [`route_external_ipv6`], or, whatever did not work, the halves
/// unreachable: IPv6 never goes out directly (the --follow sidecar
/// retries).
fn route_external_ipv6_or_close(netlink: &Netlink, name: &str, device: u32, pod_ip6: Ipv6Addr) -> Result<()> {
    let Err(err) = route_external_ipv6(netlink, name, device, pod_ip6) else { return Ok(()) };
    if let Err(closing) = close_external_ipv6(netlink) {
        eprintln!("closing external IPv6 after the failure below failed too: {closing:#}");
    }
    Err(err)
}

/// The floor under `route_external_ipv6`'s halves (see there): the same
/// halves, unreachable at a higher metric.
fn floor_external_ipv6(netlink: &Netlink) -> Result<()> {
    for half in IPV6_HALVES {
        route::replace(netlink, &Route::unreachable(half.into(), 1).with_metric(IPV6_FLOOR_METRIC))?;
    }
    Ok(())
}

/// Undoes `close_external_ipv6` and `route_external_ipv6`: external IPv6
/// goes by the pod's own routes again. The cluster routes stay (they are
/// the same as the default's).
fn reopen_external_ipv6(netlink: &Netlink, tunnel: Option<u32>) -> Result<()> {
    // Only our halves, unreachable (either metric) or through the tunnel:
    // a route to ::/1 or 8000::/1 of another kind (a VPN's split default,
    // say) is the pod's own, and the kernel would delete it by prefix alone.
    let ours = |r: &Route| {
        r.prefix_len == 1
            && IPV6_HALVES.iter().any(|half| r.destination == IpAddr::V6(*half))
            && (r.unreachable || (tunnel.is_some() && r.device == tunnel))
    };
    for route in route::list(netlink, true)?.iter().filter(|r| ours(r)) {
        route::delete(netlink, route)?;
    }
    Ok(())
}

/// The next hop of eth0 in one family: the default route's on a first run;
/// on a re-run (the default now points into the tunnel, perhaps towards
/// another gateway address) any route's via eth0 that has one, such as
/// ours to the cluster CIDRs. None without one.
fn node_gateway_of(netlink: &Netlink, eth: &netdev::Interface, ipv6: bool) -> Result<Option<IpAddr>> {
    let routes = route::list(netlink, ipv6)?;
    let on_eth = || routes.iter().filter(|r| r.device == Some(eth.ifindex) && r.gateway.is_some());
    let default = on_eth().find(|r| r.prefix_len == 0);
    Ok(default.or_else(|| on_eth().next()).and_then(|r| r.gateway))
}

/// ICMP errors from cluster addresses (the gateway's node when a link
/// behind it is narrower, say) come in through the tunnel while the route
/// back to their source is eth0, and the tunnel device has no address:
/// Linux's reverse-path filter drops them in strict and in loose mode alike
/// (`fib_validate_source`: no address on the device). Errors from outside
/// the cluster are unaffected. The sysctl is the pod's (inherited from the
/// node when the pod was made): say so rather than change it.
fn warn_if_reverse_path_filtering(device: &str) {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"))
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    let effective = read("all").max(read(device));
    if effective != 0 {
        eprintln!(
            "egress-agent: warning: reverse-path filtering is on in this pod (rp_filter={effective}): ICMP errors from cluster addresses through the tunnel (a node's fragmentation-needed) are dropped; set net.ipv4.conf.all.rp_filter=0 in the pod to receive them"
        );
    }
}

/// Undoes `join`: the default route goes back to the node via eth0 first
/// (so there is no moment without one), then the tunnel device goes. The
/// routes to the cluster CIDRs stay: they are the same as the default's.
/// Nothing to do when there is no tunnel device; the gateway is not needed.
fn leave(args: &JoinArgs) -> Result<()> {
    let eth = &args.interface;
    let netlink = Netlink::route()?;
    if ipv6_enabled(eth) {
        reopen_external_ipv6(&netlink, link::index(&args.device))?;
    }
    let Some(device) = link::index(&args.device) else {
        println!("not joined: the pod's labels match no gateway's selector; egress stays direct");
        return Ok(());
    };
    let eth_link = netdev::Interface::lookup(eth)?;
    // An IPv6-only pod's default route was never moved (`outer6`).
    if eth_link.ipv4.is_some() {
        let via = node_gateway(&netlink, &eth_link)?;
        route::replace(
            &netlink,
            &Route::via(Ipv4Addr::UNSPECIFIED.into(), 0, via.into(), eth_link.ifindex).onlink(),
        )?;
    }
    link::delete(&netlink, device).with_context(|| format!("removing {}", args.device))?;
    println!("left: the pod's labels no longer match any gateway's selector; external traffic goes directly via {eth}");
    Ok(())
}

/// eth0's IPv4 next hop (see `node_gateway_of`).
fn node_gateway(netlink: &Netlink, eth: &netdev::Interface) -> Result<Ipv4Addr> {
    match node_gateway_of(netlink, eth, false)? {
        Some(IpAddr::V4(gateway)) => Ok(gateway),
        _ => bail!(
            "no route via a next hop on {} to learn the node's address from: is this a pod network namespace?",
            eth.name
        ),
    }
}

/// The tunnel device's MAC, derived from the pod IP (locally administered,
/// unicast; an IPv6 address's four 32-bit words folded together, so pods
/// with the same host part on different nodes differ): a re-created device
/// keeps it, so replies to the pod's live flows, which carry the MAC the
/// gateway learned, still reach it.
fn tunnel_device_mac(pod_ip: IpAddr) -> [u8; 6] {
    let [a, b, c, d] = match pod_ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let words = v6.octets();
            let word = |i: usize| u32::from_be_bytes([words[i], words[i + 1], words[i + 2], words[i + 3]]);
            (word(0) ^ word(4) ^ word(8) ^ word(12)).to_be_bytes()
        }
    };
    [0x06, 0x65, a, b, c, d]
}

/// The tunnel device, which `join` made.
fn tunnel_device(netlink: &Netlink, device: &str) -> Result<link::Link> {
    link::get(netlink, device)?
        .with_context(|| format!("there is no device {device}: has join run in this pod?"))
}

/// The remote address of the VXLAN device `device`.
fn vxlan_remote(netlink: &Netlink, device: &str) -> Result<Ipv4Addr> {
    match tunnel_device(netlink, device)?.vxlan.and_then(|vxlan| vxlan.remote) {
        Some(IpAddr::V4(remote)) => Ok(remote),
        _ => bail!("{device} has no IPv4 remote: is it our tunnel device?"),
    }
}

/// Creates the VXLAN device from `local` (the pod's address) to `gateway`,
/// or re-creates it if it exists with other settings, and returns its
/// index. One that differs only in its remote (of the same family) is
/// pointed at `gateway` in place (its routes and neighbour stay, so no
/// packet finds the pod without a route), unless it is `steered` (the
/// `--replicas` sidecar may point it at a replica of this very gateway;
/// the sidecar knows which).
fn ensure_vxlan_device(
    netlink: &Netlink,
    args: &JoinArgs,
    gateway: IpAddr,
    local: IpAddr,
    eth: &netdev::Interface,
    steered: bool,
) -> Result<u32> {
    let mac = tunnel_device_mac(local);
    if let Some(existing) = link::get(netlink, &args.device)? {
        let same_but_remote = existing.mac == Some(mac)
            && existing.vxlan.as_ref().is_some_and(|v| {
                v.vni == args.vni
                    && v.port == args.vxlan_port
                    && v.remote.is_some_and(|remote| remote.is_ipv6() == gateway.is_ipv6())
            });
        if same_but_remote {
            let remote = existing.vxlan.and_then(|v| v.remote);
            if remote != Some(gateway) && !steered {
                link::set_vxlan_remote(netlink, existing.index, gateway)?;
            }
            return Ok(existing.index);
        }
        link::delete(netlink, existing.index).with_context(|| format!("replacing {}", args.device))?;
    }
    link::add_vxlan(
        netlink,
        &VxlanSpec {
            name: &args.device,
            mac,
            vni: args.vni,
            remote: gateway,
            local,
            underlay: eth.ifindex,
            // One fixed source port: the Service's conntrack entry, and so
            // the chosen gateway replica, stays the same for all of this
            // pod's flows, and the gateway can answer to exactly that port.
            // Outer UDP checksums do not survive the Service DNAT across
            // veths reliably; zero is valid for IPv4 VXLAN, and for a
            // tunnel over IPv6 (RFC 6935).
            port: args.vxlan_port,
        },
    )?;
    link::index(&args.device).with_context(|| format!("{} vanished right after it was created", args.device))
}
