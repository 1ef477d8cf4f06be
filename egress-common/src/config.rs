//! The datapath's configuration, written by the agent into the one-slot
//! `CONFIG` array before the program is attached.

/// Version of this layout and of the map value types (5:
/// `tcp_time_wait_timeout_s` and `FlowState::TimeWait`); bumped whenever
/// one changes so an agent never adopts a program whose maps it would
/// misread.
pub const CONFIG_LAYOUT_VERSION: u32 = 5;

/// The fixed inner MAC the workers use for their tunnel next hop
/// (`TUNNEL_GATEWAY_IP`). Locally administered, so it can never clash with a NIC.
pub const TUNNEL_GATEWAY_MAC: [u8; 6] = [0x02, 0x65, 0x67, 0x77, 0x00, 0x01];
/// The link-local next hop `join` routes the worker's default route through
/// (not 169.254.1.1, which Calico already uses as the pod's eth0 gateway).
pub const TUNNEL_GATEWAY_IP: [u8; 4] = [169, 254, 42, 1];

/// What VXLAN over IPv4 adds in front of the inner IPv4 packet: outer IPv4
/// (20) + UDP (8) + VXLAN (8) + inner Ethernet (14). The worker's tunnel MTU
/// is eth0's minus this.
pub const TUNNEL_OVERHEAD: usize = 50;

pub const DEFAULT_VXLAN_PORT: u16 = 4789;
pub const DEFAULT_VNI: u32 = 4242;
/// Outside Linux's default ephemeral range (32768-60999), and above the
/// well-known and registered ports a gateway pod itself might listen on.
pub const DEFAULT_NAT_PORT_MIN: u16 = 10_240;
pub const DEFAULT_NAT_PORT_MAX: u16 = 32_767;
/// How many random NAT ports a new flow tries before it is dropped as
/// exhausted. Bounded so a full range costs a fixed, small amount of work.
pub const DEFAULT_PORT_RETRIES: u32 = 16;

pub const DEFAULT_TCP_SYN_TIMEOUT_S: u32 = 60;
pub const DEFAULT_TCP_ESTABLISHED_TIMEOUT_S: u32 = 7_440;
pub const DEFAULT_TCP_CLOSING_TIMEOUT_S: u32 = 30;
/// How long a NAT port stays bound after the remote closed first: above
/// Linux's fixed 60 s TIME_WAIT and equal to its conntrack's TIME_WAIT
/// timeout, which also covers stacks that wait 2 × 60 s.
pub const DEFAULT_TCP_TIME_WAIT_TIMEOUT_S: u32 = 120;
pub const DEFAULT_UDP_TIMEOUT_S: u32 = 60;
pub const DEFAULT_ICMP_TIMEOUT_S: u32 = 30;

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
    pub _pad0: u16,
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
}

impl GatewayConfig {
    /// Whether `port` (host order) is one the datapath hands out.
    #[inline(always)]
    pub fn is_nat_port(&self, port: u16) -> bool {
        port >= self.nat_port_min && port <= self.nat_port_max
    }
}

// The layout is shared with the kernel byte for byte: no implicit padding.
const _: () = assert!(core::mem::size_of::<GatewayConfig>() == 72);
