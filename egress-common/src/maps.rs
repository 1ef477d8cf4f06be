//! Map names, shared so the agent and `status` find exactly what the
//! program defines.

/// `Array<GatewayConfig>` with one slot.
pub const CONFIG: &str = "CONFIG";
/// `HashMap<u32 (client outer IPv4, network order), ClientInfo>`.
pub const CLIENTS: &str = "CLIENTS";
/// `LpmTrie<u32 (IPv4, network order), u8>`: destinations never NATed.
pub const EXCLUDED_DESTINATIONS: &str = "EXCLUDED_DSTS";
/// `LruHashMap<FlowTuple, NatEntry>` keyed by the client's original tuple.
pub const CT_ORIGINAL: &str = "CT_ORIGINAL";
/// `LruHashMap<FlowTuple, NatEntry>` keyed by the tuple replies arrive with.
pub const CT_REPLY: &str = "CT_REPLY";
/// `PerCpuArray<ClientTraffic>` indexed by client id (0 is never used).
pub const CLIENT_TRAFFIC: &str = "CLIENT_TRAFFIC";
/// `LruPerCpuHashMap<NatDestination, u64>`: new flows dropped because every
/// NAT port towards that destination was bound.
pub const NAT_EXHAUSTED: &str = "NAT_EXHAUSTED";
/// `PerCpuArray<u64>` indexed by [`crate::counters::Counter`].
pub const COUNTERS: &str = "COUNTERS";

/// The classifier's name in the object (and in `bpftool prog`).
pub const PROGRAM: &str = "egress_gateway";
/// The classifier on the GRO stage's receiving end (`crate::gro`).
pub const GRO_STAGE_PROGRAM: &str = "egress_gro_stage";

/// Default sizes; the agent may override the conntrack size at load time.
pub const CLIENTS_MAX: u32 = 16_384;
pub const EXCLUDED_DESTINATIONS_MAX: u32 = 1_024;
pub const CT_MAX_DEFAULT: u32 = 131_072;
/// Destinations whose NAT port exhaustion is remembered (the LRU forgets
/// the quietest first).
pub const NAT_EXHAUSTED_MAX: u32 = 1_024;

/// Client ids run from 1 to this; CLIENT_TRAFFIC has one more slot.
pub const CLIENT_ID_MAX: u32 = CLIENTS_MAX;

/// A labeled pod allowed to use the gateway.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClientInfo {
    /// Stable small number for per-client accounting, 1..=[`CLIENT_ID_MAX`];
    /// 0 is never used.
    pub client_id: u32,
}

/// What one client sent and received through the gateway (one CPU's share).
/// Packets count wire packets: a GSO super-packet counts as its segments.
/// Bytes are IPv4 packet lengths, without the tunnel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClientTraffic {
    pub to_remote_packets: u64,
    pub to_remote_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

/// A destination as NAT ports are allocated: each (address, port, protocol)
/// has the whole `--nat-ports` range to itself (endpoint-dependent mapping).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NatDestination {
    pub remote_ip_be: u32,
    /// 0 for ICMP echo.
    pub remote_port_be: u16,
    pub protocol: u8,
    pub _pad: u8,
}
