//! A plain-Linux egress gateway (VXLAN device + iptables MASQUERADE) on the
//! same topology, with its own worker-side setup.
//!
//! Why it exists: it proves that the topology and the client helpers carry
//! tunnelled egress traffic without relying on the eBPF agent (so a harness
//! bug is never mistaken for a datapath bug), and it is the baseline the
//! benchmarks compare the eBPF datapath against. It mirrors the agent's
//! wire format (VXLAN to the Service VIP, fixed source port, zero outer UDP
//! checksum) but shares no code with it.
//!
//! In a dual-stack cluster ([`crate::dual_stack`]) the `_ipv6` halves add
//! IPv6 to both ends after the IPv4 ones: the same tunnel carries the
//! pods' IPv6, which ip6tables masquerades to the gateway pod's IPv6
//! address.
//!
//! In an IPv6-only cluster ([`crate::dual_stack::make_ipv6_only`]) the
//! `_outer6` functions make the tunnel itself IPv6: to the Service's IPv6
//! VIP, 70 bytes of headers (`TUNNEL_OVERHEAD6`) instead of 50.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};
use egress_common::config::{DEFAULT_NAT_PORT_MAX, DEFAULT_NAT_PORT_MIN, TUNNEL_OVERHEAD6};

use crate::dual_stack::{twin, twin_cidr};
use crate::topology::{Cluster, Pod, POD_IFACE};

/// Tunnel parameters shared by both ends.
#[derive(Clone, Debug)]
pub struct TunnelConfig {
    pub vni: u32,
    pub port: u16,
    /// The next hop the workers route through (on the tunnel device).
    pub next_hop: Ipv4Addr,
    /// Their IPv6 next hop there (link-local: the tunnel device's own).
    pub next_hop6: Ipv6Addr,
    /// The gateway tunnel device's MAC (the workers' static neighbour entry).
    pub gateway_mac: String,
    /// Source ports the gateway may SNAT to (must avoid its ephemeral range).
    pub nat_ports: (u16, u16),
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            vni: 4343,
            port: 4789,
            next_hop: Ipv4Addr::new(169, 254, 43, 1),
            next_hop6: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0x43, 1),
            gateway_mac: "02:72:65:66:00:01".into(),
            nat_ports: (DEFAULT_NAT_PORT_MIN, DEFAULT_NAT_PORT_MAX),
        }
    }
}

/// Sets up worker `pod`: external traffic into a VXLAN device aimed at the
/// Service VIP, cluster CIDRs kept on eth0. Returns the device's MAC.
pub fn join_worker(cluster: &Cluster, pod: &Pod, t: &TunnelConfig) -> Result<String> {
    join_worker_via(cluster, pod, cluster.service_vip(), t)
}

/// [`join_worker`] with the tunnel aimed at `service_vip` (a gateway other
/// than the cluster's own Service, see [`Cluster::add_service`]).
pub fn join_worker_via(
    cluster: &Cluster,
    pod: &Pod,
    service_vip: Ipv4Addr,
    t: &TunnelConfig,
) -> Result<String> {
    let node = cluster.node(pod.node);
    let mtu = cluster.config().mtu - 50;
    let mut script = format!(
        "set -e
ip link add egress0 mtu {mtu} type vxlan id {vni} remote {vip} local {ip} dev {eth} \
  srcport {port} {port1} dstport {port} nolearning noudpcsum
ip link set egress0 up
ip neigh replace {hop} lladdr {mac} dev egress0 nud permanent
",
        vni = t.vni,
        vip = service_vip,
        ip = pod.ip,
        eth = POD_IFACE,
        port = t.port,
        port1 = t.port + 1,
        hop = t.next_hop,
        mac = t.gateway_mac,
    );
    for c in cluster.cluster_cidrs() {
        script.push_str(&format!("ip route replace {c} via {} dev {POD_IFACE}\n", node.bridge_ip));
    }
    script.push_str(&format!("ip route replace default via {} dev egress0 onlink\n", t.next_hop));
    script.push_str("cat /sys/class/net/egress0/address\n");
    let out = pod.ns.sh(&script).with_context(|| format!("reference join of {}", pod.name))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Turns the cluster's gateway pod into a Linux gateway serving `clients`
/// (each already set up with [`join_worker`], given with its tunnel MAC).
pub fn install_gateway(cluster: &Cluster, clients: &[(&Pod, &str)], t: &TunnelConfig) -> Result<()> {
    install_gateway_on(cluster, cluster.gateway(), clients, t)
}

/// [`install_gateway`] in pod `gw` instead of the cluster's Service backend.
pub fn install_gateway_on(
    cluster: &Cluster,
    gw: &Pod,
    clients: &[(&Pod, &str)],
    t: &TunnelConfig,
) -> Result<()> {
    let pods = cluster.config().cluster_cidr;
    let (lo, hi) = t.nat_ports;
    let mut script = format!(
        "set -e
ip link add vx0 mtu {mtu} type vxlan id {vni} local {gwip} dev {eth} srcport {port} {port1} \
  dstport {port} nolearning noudpcsum
ip link set vx0 address {mac} up
ip addr add {hop}/32 dev vx0
echo 1 > /proc/sys/net/ipv4/ip_forward
echo 0 > /proc/sys/net/ipv4/conf/all/send_redirects
echo 0 > /proc/sys/net/ipv4/conf/{eth}/send_redirects
# Only packets that came in on eth0 (de-masqueraded replies) go back into
# the tunnel; the tunnel's own outer packets must use the main table.
ip rule add iif {eth} lookup 143
ip route add {pods} dev vx0 table 143
iptables -w 10 -A FORWARD -i vx0 -o vx0 -j DROP
iptables -w 10 -t nat -A POSTROUTING -s {gwip} -j RETURN
iptables -w 10 -t nat -A POSTROUTING -o {eth} -s {pods} -p tcp -j MASQUERADE --to-ports {lo}-{hi}
iptables -w 10 -t nat -A POSTROUTING -o {eth} -s {pods} -p udp -j MASQUERADE --to-ports {lo}-{hi}
iptables -w 10 -t nat -A POSTROUTING -o {eth} -s {pods} -j MASQUERADE
",
        mtu = cluster.config().mtu - 50,
        vni = t.vni,
        gwip = gw.ip,
        eth = POD_IFACE,
        port = t.port,
        port1 = t.port + 1,
        mac = t.gateway_mac,
        hop = t.next_hop,
    );
    for (pod, mac) in clients {
        script.push_str(&format!(
            "ip neigh replace {ip} lladdr {mac} dev vx0 nud permanent
bridge fdb append {mac} dev vx0 dst {ip}
iptables -w 10 -A FORWARD -i vx0 -s {ip} -j ACCEPT
",
            ip = pod.ip
        ));
    }
    // Fail closed: anything else from the tunnel is dropped.
    script.push_str("iptables -w 10 -A FORWARD -i vx0 -j DROP\n");
    gw.ns.sh(&script).context("installing the reference Linux gateway")?;
    Ok(())
}

/// [`join_worker`]'s IPv6 half, run after it in a dual-stack pod: external
/// IPv6 into the same device, over an unreachable floor (so it never goes
/// out directly when the device goes), the cluster's IPv6 range on eth0.
pub fn join_worker_ipv6(cluster: &Cluster, pod: &Pod, t: &TunnelConfig) -> Result<()> {
    let bridge6 = twin(cluster.node(pod.node).bridge_ip);
    let mut script = format!(
        "set -e
ip -6 neigh replace {hop6} lladdr {mac} dev egress0 nud permanent
ip -6 route replace {cluster6} via {bridge6} dev {POD_IFACE}
",
        hop6 = t.next_hop6,
        mac = t.gateway_mac,
        cluster6 = twin_cidr(cluster.config().cluster_cidr),
    );
    for half in ["::/1", "8000::/1"] {
        script.push_str(&format!(
            "ip -6 route replace unreachable {half} metric 4096
ip -6 route replace {half} via {hop6} dev egress0 src {pod6}
",
            hop6 = t.next_hop6,
            pod6 = twin(pod.ip),
        ));
    }
    pod.ns.sh(&script).with_context(|| format!("reference IPv6 join of {}", pod.name))?;
    Ok(())
}

/// [`install_gateway`]'s IPv6 half, run after it: the same tunnel device
/// forwards the clients' IPv6, masqueraded to the gateway pod's IPv6
/// address, and only the de-masqueraded replies go back into it.
pub fn install_gateway_ipv6(cluster: &Cluster, clients: &[(&Pod, &str)], t: &TunnelConfig) -> Result<()> {
    install_gateway_ipv6_on(cluster, cluster.gateway(), clients, t)
}

/// [`install_gateway_ipv6`] in pod `gw`, after [`install_gateway_on`] there.
pub fn install_gateway_ipv6_on(
    cluster: &Cluster,
    gw: &Pod,
    clients: &[(&Pod, &str)],
    t: &TunnelConfig,
) -> Result<()> {
    let pods6 = twin_cidr(cluster.config().cluster_cidr);
    let (lo, hi) = t.nat_ports;
    let mut script = format!(
        "set -e
echo 1 > /proc/sys/net/ipv6/conf/all/forwarding
ip -6 rule add iif {eth} lookup 143
ip -6 route add {pods6} dev vx0 table 143
ip6tables -w 10 -A FORWARD -i vx0 -o vx0 -j DROP
ip6tables -w 10 -t nat -A POSTROUTING -s {gw6} -j RETURN
ip6tables -w 10 -t nat -A POSTROUTING -o {eth} -s {pods6} -p tcp -j MASQUERADE --to-ports {lo}-{hi}
ip6tables -w 10 -t nat -A POSTROUTING -o {eth} -s {pods6} -p udp -j MASQUERADE --to-ports {lo}-{hi}
ip6tables -w 10 -t nat -A POSTROUTING -o {eth} -s {pods6} -j MASQUERADE
",
        eth = POD_IFACE,
        gw6 = twin(gw.ip),
    );
    for (pod, mac) in clients {
        script.push_str(&format!(
            "ip -6 neigh replace {ip6} lladdr {mac} dev vx0 nud permanent
ip6tables -w 10 -A FORWARD -i vx0 -s {ip6} -j ACCEPT
",
            ip6 = twin(pod.ip)
        ));
    }
    // Fail closed: any other IPv6 from the tunnel is dropped.
    script.push_str("ip6tables -w 10 -A FORWARD -i vx0 -j DROP\n");
    gw.ns.sh(&script).context("installing the reference Linux gateway's IPv6")?;
    Ok(())
}

/// The worker side in an IPv6-only pod: a VXLAN device whose outer header
/// is IPv6, to the Service's IPv6 VIP `vip6`, then [`join_worker_ipv6`]'s
/// routes. The VIP stays on eth0 (the halves would take it into the
/// tunnel). Outer UDP checksums are zero both ways, as the IPv4 tunnel's
/// (RFC 6935 allows it for tunnels; a Service DNAT on the way would leave
/// a real one stale), so the device must accept zero ones too. Returns
/// the device's MAC.
pub fn join_worker_outer6(cluster: &Cluster, pod: &Pod, vip6: Ipv6Addr, t: &TunnelConfig) -> Result<String> {
    let bridge6 = twin(cluster.node(pod.node).bridge_ip);
    let script = format!(
        "set -e
ip -6 route replace {vip6}/128 via {bridge6} dev {eth}
ip link add egress0 mtu {mtu} type vxlan id {vni} remote {vip6} local {pod6} dev {eth} \
  srcport {port} {port1} dstport {port} nolearning udp6zerocsumtx udp6zerocsumrx
ip link set egress0 up
cat /sys/class/net/egress0/address
",
        mtu = cluster.config().mtu - TUNNEL_OVERHEAD6 as u32,
        vni = t.vni,
        pod6 = twin(pod.ip),
        eth = POD_IFACE,
        port = t.port,
        port1 = t.port + 1,
    );
    let out = pod.ns.sh(&script).with_context(|| format!("reference IPv6-outer join of {}", pod.name))?;
    join_worker_ipv6(cluster, pod, t)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The gateway side in an IPv6-only gateway pod: a VXLAN device whose
/// outer header is IPv6, from the pod's IPv6 address, then
/// [`install_gateway_ipv6_on`]'s forwarding and masquerade for `clients`
/// (each joined with [`join_worker_outer6`], given with its tunnel MAC).
pub fn install_gateway_outer6(cluster: &Cluster, clients: &[(&Pod, &str)], t: &TunnelConfig) -> Result<()> {
    let gw = cluster.gateway();
    let mut script = format!(
        "set -e
ip link add vx0 mtu {mtu} type vxlan id {vni} local {gw6} dev {eth} srcport {port} {port1} \
  dstport {port} nolearning udp6zerocsumtx udp6zerocsumrx
ip link set vx0 address {mac} up
",
        mtu = cluster.config().mtu - TUNNEL_OVERHEAD6 as u32,
        vni = t.vni,
        gw6 = twin(gw.ip),
        eth = POD_IFACE,
        port = t.port,
        port1 = t.port + 1,
        mac = t.gateway_mac,
    );
    for (pod, mac) in clients {
        script.push_str(&format!("bridge fdb append {mac} dev vx0 dst {}\n", twin(pod.ip)));
    }
    gw.ns.sh(&script).context("installing the reference Linux gateway's IPv6 tunnel")?;
    install_gateway_ipv6_on(cluster, gw, clients, t)
}
