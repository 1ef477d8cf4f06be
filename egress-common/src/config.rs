//! The datapath's configuration, written by the agent into the one-slot
//! `CONFIG` array before the program is attached.

/// Version of this layout and of the map value types (8: IPv6 bindings
/// whose tunnel is over IPv6, `conntrack::FLOW_OUTER_IPV6`, and the
/// programs that make them; 7: `gateway_ip6` and
/// the IPv6 maps; 6: conntrack halves that never evict on their own,
/// `NatEntry::flags` and `created_ns`, per-client flow counts and
/// refusals, `max_flows_per_client`, `resegment_ifindex`); bumped whenever one changes so an agent never
/// adopts a program whose maps it would misread.
pub const CONFIG_LAYOUT_VERSION: u32 = 8;

/// The fixed inner MAC the workers use for their tunnel next hop
/// (`TUNNEL_GATEWAY_IP`). Locally administered, so it can never clash with a NIC.
pub const TUNNEL_GATEWAY_MAC: [u8; 6] = [0x02, 0x65, 0x67, 0x77, 0x00, 0x01];
/// The link-local next hop `join` routes the worker's default route through
/// (not 169.254.1.1, which Calico already uses as the pod's eth0 gateway).
pub const TUNNEL_GATEWAY_IP: [u8; 4] = [169, 254, 42, 1];

/// The ICMP code of a probe answer (an echo reply from `TUNNEL_GATEWAY_IP`)
/// from a gateway pod that is draining; 0 otherwise.
pub const PROBE_DRAINING_CODE: u8 = 1;

/// IPv6's minimum link MTU (RFC 8200 5): every IPv6 path carries this much,
/// so the tunnel must carry it to carry IPv6.
pub const IPV6_MIN_MTU: usize = 1280;

/// What VXLAN over IPv4 adds in front of the inner IPv4 packet: outer IPv4
/// (20) + UDP (8) + VXLAN (8) + inner Ethernet (14). The worker's tunnel MTU
/// is eth0's minus this.
pub const TUNNEL_OVERHEAD: usize = 50;

/// [`TUNNEL_OVERHEAD`] with an outer IPv6 header (40), as in an IPv6-only
/// cluster: 70.
pub const TUNNEL_OVERHEAD6: usize = 70;

/// The outer IPv4 total length of a tunnel packet that carries
/// `inner_ip_len` bytes of IPv4, or None when it would not fit the 16-bit
/// field: a GRO aggregate longer than 65,485 bytes, which must be cut into
/// segments before it can be encapsulated. Never a wrapped length: the
/// node would trim the packet to it and lose the rest.
#[inline(always)]
pub fn tunnel_outer_ip_len(inner_ip_len: u32) -> Option<u16> {
    // Outer IPv4, UDP, VXLAN and the inner Ethernet header, then the packet.
    let outer_ip = inner_ip_len as u64 + TUNNEL_OVERHEAD as u64;
    if outer_ip > u16::MAX as u64 {
        None
    } else {
        Some(outer_ip as u16)
    }
}

/// The outer IPv6 payload length of a tunnel packet over IPv6 that
/// carries `inner_ip_len` bytes of IP, or None when it would not fit the
/// 16-bit field (more than 65,505 bytes: UDP, VXLAN and the inner
/// Ethernet header take 30). As [`tunnel_outer_ip_len`], never wrapped.
#[inline(always)]
pub fn tunnel_outer_payload_len6(inner_ip_len: u32) -> Option<u16> {
    let payload = inner_ip_len as u64 + (TUNNEL_OVERHEAD6 - IPV6_HLEN) as u64;
    if payload > u16::MAX as u64 {
        None
    } else {
        Some(payload as u16)
    }
}

/// An IPv6 header's fixed length.
const IPV6_HLEN: usize = 40;

pub const DEFAULT_VXLAN_PORT: u16 = 4789;
pub const DEFAULT_VNI: u32 = 4242;
/// NAT source ports: 54,272 per destination. Above the well-known and
/// registered ports a gateway pod itself listens on (tunnel 4789, metrics
/// 9090, status 9091), and below the gateway pod's own ephemeral ports,
/// which the manifests move to the top (`GATEWAY_EPHEMERAL_PORTS`): the pod
/// makes a handful of connections, its clients many.
pub const DEFAULT_NAT_PORT_MIN: u16 = 10_240;
pub const DEFAULT_NAT_PORT_MAX: u16 = 64_511;
/// The gateway pod's `net.ipv4.ip_local_port_range` that goes with the
/// default NAT ports (one even and one odd end, as Linux prefers).
pub const GATEWAY_EPHEMERAL_PORTS: (u16, u16) = (64_512, 65_535);
/// How many random NAT ports a new flow looks at, after its own port, before
/// it is dropped as exhausted. Each is one hash insert; 128 keep failures
/// well under 1 % at 95 % occupancy (0.95^128 = 0.14 %; 96 tries measured
/// 0.8-1.1 %, too close) and bound the work a SYN to an exhausted
/// destination costs (about 30 µs).
pub const DEFAULT_PORT_RETRIES: u32 = 128;
/// The most `--port-retries` may be (the program's loop bound).
pub const MAX_PORT_RETRIES: u32 = 128;

pub const DEFAULT_TCP_SYN_TIMEOUT_S: u32 = 60;
pub const DEFAULT_TCP_ESTABLISHED_TIMEOUT_S: u32 = 7_440;
pub const DEFAULT_TCP_CLOSING_TIMEOUT_S: u32 = 30;
/// How long a NAT port stays bound after the remote closed first: above
/// Linux's fixed 60 s TIME_WAIT and equal to its conntrack's TIME_WAIT
/// timeout, which also covers stacks that wait 2 × 60 s.
pub const DEFAULT_TCP_TIME_WAIT_TIMEOUT_S: u32 = 120;
pub const DEFAULT_UDP_TIMEOUT_S: u32 = 60;
pub const DEFAULT_ICMP_TIMEOUT_S: u32 = 30;
/// No timeout may be shorter: the datapath refreshes a flow's timestamp at
/// most once a second, so a shorter one could expire a busy flow.
pub const MIN_TIMEOUT_S: u32 = 2;

/// A client's share of the conntrack table when `--max-flows-per-client`
/// is not given: an eighth, so one labeled pod can never fill it, and
/// (at the default 131,072 flows) 16,384 flows, under a third of the
/// 54,272 NAT ports a single destination has.
pub const fn default_max_flows_per_client(conntrack_size: u32) -> u32 {
    conntrack_size / 8
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    pub layout_version: u32,
    /// The gateway pod's own IPv4 on the attached interface.
    pub gateway_ip_be: u32,
    /// Identity of the network namespace the agent configured this program
    /// in (inode of /proc/self/ns/net), so `status` and a restarted agent
    /// find the program of their own pod among all loaded ones.
    pub netns_inode: u64,
    /// The interface the program is attached to; traffic is sent back out of it.
    pub ifindex: u32,
    pub vni: u32,
    pub vxlan_port_be: u16,
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    /// Nonzero once the pod is terminating (`egress-agent drain`): the
    /// answers to the workers' probes carry `PROBE_DRAINING_CODE`, so they
    /// take their new connections elsewhere, while everything goes on being
    /// forwarded. (Padding before, always 0: no layout change.)
    pub draining: u16,
    pub port_retries: u32,
    pub tcp_syn_timeout_s: u32,
    pub tcp_established_timeout_s: u32,
    pub tcp_closing_timeout_s: u32,
    pub udp_timeout_s: u32,
    pub icmp_timeout_s: u32,
    /// MTU of the attached interface: a reply that would exceed it once
    /// encapsulated is dropped and counted (0 = unknown, not checked).
    pub mtu: u32,
    /// The GRO stage's sending end (a veth pair inside the gateway pod, see
    /// `egress_common::gro`), or 0 when the stage is off.
    pub gro_ifindex: u32,
    /// See `FlowState::TimeWait`.
    pub tcp_time_wait_timeout_s: u32,
    /// Bindings one client may hold at once; its further new flows are
    /// refused (`drop_client_flow_limit`), nobody else's.
    pub max_flows_per_client: u32,
    /// Where a reply too big to be encapsulated as one packet (a GRO
    /// aggregate over 65,485 bytes) is sent to be cut into segments: the
    /// sending end of a veth pair inside the pod without TSO, whose other
    /// end runs `egress_resegmented`. 0: no such pair; the reply is dropped.
    pub resegment_ifindex: u32,
    /// The gateway pod's own IPv6 on the attached interface (its first
    /// global one), what a labeled pod's IPv6 leaves with; all zero when it
    /// has none, and then no IPv6 is translated (`drop_ipv6_disabled`).
    pub gateway_ip6: [u8; 16],
}

impl GatewayConfig {
    /// Whether `port` (host order) is one the datapath hands out.
    #[inline(always)]
    pub fn is_nat_port(&self, port: u16) -> bool {
        port >= self.nat_port_min && port <= self.nat_port_max
    }

    /// Whether the gateway has an IPv6 address to translate to.
    #[inline(always)]
    pub fn has_ipv6(&self) -> bool {
        self.gateway_ip6 != [0; 16]
    }

    /// Whether the gateway has an IPv4 address (an IPv6-only cluster's
    /// has none: `gateway_ip_be` is 0). The datapath does not test it: no
    /// router forwards a packet to 0.0.0.0, and an IPv6-only gateway has
    /// no IPv4 client nor binding, so any IPv4 path ends in a drop. (A
    /// test in the main classifier cost the verifier 270,000 instructions.)
    #[inline(always)]
    pub fn has_ipv4(&self) -> bool {
        self.gateway_ip_be != 0
    }
}

// The layout is shared with the kernel byte for byte: no implicit padding.
const _: () = assert!(core::mem::size_of::<GatewayConfig>() == 96);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_lengths_never_wrap() {
        assert_eq!(tunnel_outer_ip_len(1450), Some(1500));
        assert_eq!(tunnel_outer_ip_len(65_485), Some(65_535));
        assert_eq!(tunnel_outer_ip_len(65_486), None, "46 full segments and a short one");
        assert_eq!(tunnel_outer_ip_len(65_535), None);
        assert_eq!(tunnel_outer_ip_len(u32::MAX), None);
    }

    #[test]
    fn ipv6_outer_payload_lengths_never_wrap() {
        // A 1,430-byte inner packet in a 1,500-byte frame's IPv6 outer.
        assert_eq!(tunnel_outer_payload_len6(1430), Some(1460));
        assert_eq!(tunnel_outer_payload_len6(65_505), Some(65_535));
        assert_eq!(tunnel_outer_payload_len6(65_506), None);
        assert_eq!(tunnel_outer_payload_len6(u32::MAX), None);
    }
}
