//! Map names, shared so the agent and `status` find exactly what the
//! program defines.

/// `Array<GatewayConfig>` with one slot.
pub const CONFIG: &str = "CONFIG";
/// `HashMap<u32 (client outer IPv4, network order), ClientInfo>`.
pub const CLIENTS: &str = "CLIENTS";
/// `LpmTrie<u32 (IPv4, network order), u8>`: destinations never NATed.
pub const EXCLUDED_DESTINATIONS: &str = "EXCLUDED_DSTS";
/// `HashMap<[u8; 16] (a client's inner IPv6), ClientInfo>`: the IPv6
/// address each labeled pod may send as, with the client id of its outer
/// IPv4 in `CLIENTS` (a pod's tunnel carries both its families).
pub const CLIENTS6: &str = "CLIENTS6";
/// `LpmTrie<[u8; 16], u8>`: IPv6 destinations never NATed.
pub const EXCLUDED_DESTINATIONS6: &str = "EXCLUDED_DSTS6";
/// `HashMap<FlowTuple, NatEntry>` keyed by the client's original tuple. A
/// plain (preallocated) hash, not an LRU: nothing leaves it behind the
/// datapath's back (docs/conntrack.md).
pub const CT_ORIGINAL: &str = "CT_ORIGINAL";
/// `HashMap<FlowTuple, NatEntry>` keyed by the tuple replies arrive with.
pub const CT_REPLY: &str = "CT_REPLY";
/// [`CT_ORIGINAL`] for IPv6: `HashMap<FlowTuple6, NatEntry6>`, of one
/// entry when the gateway has no IPv6 address (no memory for nothing).
pub const CT6_ORIGINAL: &str = "CT6_ORIGINAL";
/// [`CT_REPLY`] for IPv6: `HashMap<FlowTuple6, NatEntry6>`.
pub const CT6_REPLY: &str = "CT6_REPLY";
/// `PerCpuArray<FlowTuple>`: each CPU's ring of the original tuples of the
/// bindings it made last. When the table is full, a few slots are sampled
/// for a binding that may make room (unreplied or expired): under a flood
/// of flows nobody answers, those are what the rings hold.
pub const CT_RECENT: &str = "CT_RECENT";
/// `PerCpuArray<u32>` with one slot: where each CPU writes next in its ring.
pub const CT_RECENT_CURSOR: &str = "CT_RECENT_CURSOR";
/// `Array<u64>` indexed by client id: bindings the datapath made for the
/// client minus those it removed (wrapping; updated atomically, since
/// every CPU writes it).
pub const CLIENT_FLOWS: &str = "CLIENT_FLOWS";
/// `Array<u64>` indexed by client id: the client's bindings the agent
/// removed (its sweep, a client leaving). Only the agent writes it, so the
/// two counts never race; the client holds `CLIENT_FLOWS - CLIENT_FLOWS_SWEPT`.
pub const CLIENT_FLOWS_SWEPT: &str = "CLIENT_FLOWS_SWEPT";
/// `PerCpuArray<ClientRefusals>` indexed by client id.
pub const CLIENT_REFUSALS: &str = "CLIENT_REFUSALS";
/// `Array<u64>` indexed by client id: when the gateway may next answer the
/// client with an ICMP error of its own (a GCRA "theoretical arrival time",
/// `bpf_ktime_get_ns` clock).
pub const ICMP_ANSWER_RATE: &str = "ICMP_ANSWER_RATE";
/// `Array<u64>` indexed by client id: the client's allowance of first
/// fragments remembered in `FRAGMENTS` (GCRA slot,
/// `crate::fragments::FIRST_FRAGMENTS`). Not kept across restarts: it
/// covers a fraction of a second.
pub const FRAGMENT_ALLOWANCE: &str = "FRAGMENT_ALLOWANCE";
/// `PerCpuArray<ClientTraffic>` indexed by client id (0 is never used).
pub const CLIENT_TRAFFIC: &str = "CLIENT_TRAFFIC";
/// `LruPerCpuHashMap<NatDestination, u64>`: new flows dropped because every
/// NAT port towards that destination was bound.
pub const NAT_EXHAUSTED: &str = "NAT_EXHAUSTED";
/// [`NAT_EXHAUSTED`] for IPv6: `LruPerCpuHashMap<NatDestination6, u64>`.
pub const NAT_EXHAUSTED6: &str = "NAT_EXHAUSTED6";
/// `LruHashMap<FragmentKey, FragmentFlow>`: the flows of datagrams whose
/// first fragment passed (`crate::fragments`). Not kept across restarts.
pub const FRAGMENTS: &str = "FRAGMENTS";
/// `LruHashMap<FragmentKey6, FragmentFlow6>`: [`FRAGMENTS`] for IPv6.
pub const FRAGMENTS6: &str = "FRAGMENTS6";
/// `PerCpuArray<[u8; SPLIT_TAIL_MAX]>` with one slot: the second part of a
/// reply being split, off the stack.
pub const SPLIT_TAIL: &str = "SPLIT_TAIL";
/// `ProgramArray` with a slot for each IPv6 program
/// ([`IPV6_PROGRAM_SLOTS`]): [`IPV6_PROGRAM_SLOT`], the IPv6 classifier
/// the main one hands a client's inner IPv6 packet to (a tail call),
/// [`IPV6_REPLY_PROGRAM_SLOT`], the one it hands IPv6 packets for the
/// gateway's IPv6 address to, and two more that paths hand on to. IPv6 has
/// programs of its own because the IPv4 paths already take most of what
/// the verifier accepts in one (`prog_verifier`); several, because each
/// program has 512 bytes of stack and the paths together need more (the
/// two directions alone 608, measured). The
/// agent fills it at load and holds it; it is never carried over (a new
/// build brings its own program). The kernel empties a program array when
/// its last descriptor closes: the state keeper holds one too from the
/// agent's first hand-over on, so a killed agent's program keeps its IPv6
/// program until the next agent's replaces it. An agent killed before its
/// first hand-over leaves an empty slot: its program then drops a pod's
/// IPv6 as `drop_not_configured`, never lets it through.
pub const IPV6_PROGRAMS: &str = "IPV6_PROGRAMS";
/// The slot of [`IPV6_PROGRAMS`] that holds [`IPV6_PROGRAM`].
pub const IPV6_PROGRAM_SLOT: u32 = 0;
/// The slot of [`IPV6_PROGRAMS`] that holds [`IPV6_REPLY_PROGRAM`].
pub const IPV6_REPLY_PROGRAM_SLOT: u32 = 1;
/// The slot of [`IPV6_PROGRAMS`] that holds [`IPV6_ERROR_PROGRAM`].
pub const IPV6_ERROR_PROGRAM_SLOT: u32 = 2;
/// The slot of [`IPV6_PROGRAMS`] that holds [`IPV6_TOO_BIG_PROGRAM`].
pub const IPV6_TOO_BIG_PROGRAM_SLOT: u32 = 3;
/// The slot of [`IPV6_PROGRAMS`] that holds [`IPV6_CLIENT_ERROR_PROGRAM`].
pub const IPV6_CLIENT_ERROR_PROGRAM_SLOT: u32 = 4;
/// The slot of [`IPV6_PROGRAMS`] that holds [`IPV6_FRAGMENT_PROGRAM`].
pub const IPV6_FRAGMENT_PROGRAM_SLOT: u32 = 5;
/// The slot of [`IPV6_PROGRAMS`] that holds [`IPV6_REPLY_FRAGMENT_PROGRAM`].
pub const IPV6_REPLY_FRAGMENT_PROGRAM_SLOT: u32 = 6;
/// The slot of [`IPV6_PROGRAMS`] that holds [`IPV6_OUTER_PROGRAM`].
pub const IPV6_OUTER_PROGRAM_SLOT: u32 = 7;
/// The slot of [`IPV6_PROGRAMS`] that holds [`IPV6_OUTER_CLIENT_ERROR_PROGRAM`].
pub const IPV6_OUTER_CLIENT_ERROR_PROGRAM_SLOT: u32 = 8;
/// The slot of [`IPV6_PROGRAMS`] that holds [`IPV6_OUTER_FRAGMENT_PROGRAM`].
pub const IPV6_OUTER_FRAGMENT_PROGRAM_SLOT: u32 = 9;
/// The slot of [`IPV6_PROGRAMS`] that holds [`IPV6_TIME_EXCEEDED_PROGRAM`].
pub const IPV6_TIME_EXCEEDED_PROGRAM_SLOT: u32 = 10;
/// The slot of [`IPV6_PROGRAMS`] that holds [`IPV6_OUTER_TIME_EXCEEDED_PROGRAM`].
pub const IPV6_OUTER_TIME_EXCEEDED_PROGRAM_SLOT: u32 = 11;
/// Every IPv6 program and its slot of [`IPV6_PROGRAMS`].
pub const IPV6_PROGRAM_SLOTS: [(&str, u32); 12] = [
    (IPV6_PROGRAM, IPV6_PROGRAM_SLOT),
    (IPV6_REPLY_PROGRAM, IPV6_REPLY_PROGRAM_SLOT),
    (IPV6_ERROR_PROGRAM, IPV6_ERROR_PROGRAM_SLOT),
    (IPV6_TOO_BIG_PROGRAM, IPV6_TOO_BIG_PROGRAM_SLOT),
    (IPV6_CLIENT_ERROR_PROGRAM, IPV6_CLIENT_ERROR_PROGRAM_SLOT),
    (IPV6_FRAGMENT_PROGRAM, IPV6_FRAGMENT_PROGRAM_SLOT),
    (IPV6_REPLY_FRAGMENT_PROGRAM, IPV6_REPLY_FRAGMENT_PROGRAM_SLOT),
    (IPV6_OUTER_PROGRAM, IPV6_OUTER_PROGRAM_SLOT),
    (IPV6_OUTER_CLIENT_ERROR_PROGRAM, IPV6_OUTER_CLIENT_ERROR_PROGRAM_SLOT),
    (IPV6_OUTER_FRAGMENT_PROGRAM, IPV6_OUTER_FRAGMENT_PROGRAM_SLOT),
    (IPV6_TIME_EXCEEDED_PROGRAM, IPV6_TIME_EXCEEDED_PROGRAM_SLOT),
    (IPV6_OUTER_TIME_EXCEEDED_PROGRAM, IPV6_OUTER_TIME_EXCEEDED_PROGRAM_SLOT),
];

/// `PerCpuArray<u64>` indexed by [`crate::counters::Counter`].
pub const COUNTERS: &str = "COUNTERS";

/// The classifier's name in the object (and in `bpftool prog`).
pub const PROGRAM: &str = "egress_gateway";
/// The IPv6 classifier, reached from [`PROGRAM`] through [`IPV6_PROGRAMS`]
/// only (never attached).
pub const IPV6_PROGRAM: &str = "egress_gateway6";
/// The IPv6 reply classifier, reached from [`PROGRAM`] through
/// [`IPV6_PROGRAMS`] only (never attached).
pub const IPV6_REPLY_PROGRAM: &str = "egress_remote6";
/// The classifier of ICMPv6 errors to the gateway's IPv6 address (about a
/// client's flow, perhaps), reached like [`IPV6_REPLY_PROGRAM`]: a program
/// of its own, as the two paths together need more than BPF's 512 bytes
/// of stack.
pub const IPV6_ERROR_PROGRAM: &str = "egress_icmp6_error";
/// The classifier that answers an IPv6 reply too big for the tunnel with
/// Packet Too Big, handed it by [`IPV6_REPLY_PROGRAM`] (whose stack the
/// answer does not fit), with the flow's client id in the packet's
/// `cb[0]` (`IPV6_TOO_BIG_CLIENT_CB`) and its tunnel's overhead in `cb[1]`
/// (`IPV6_TOO_BIG_OVERHEAD_CB`).
pub const IPV6_TOO_BIG_PROGRAM: &str = "egress_too_big6";
/// The classifier that translates a client's ICMPv6 error about a reply
/// of its flow, handed it by [`IPV6_PROGRAM`] once that has checked it as
/// any packet of the client's (the translation does not fit there).
pub const IPV6_CLIENT_ERROR_PROGRAM: &str = "egress_client_error6";
/// The classifier that translates a client's IPv6 fragments, handed them
/// by [`IPV6_PROGRAM`] once checked as any packet of the client's
/// (`crate::fragments`). The two directions have a program each: together
/// they need more than one program's stack.
pub const IPV6_FRAGMENT_PROGRAM: &str = "egress_frag6_out";
/// The classifier that translates a remote's IPv6 fragments (their
/// fragment header first), handed them by [`IPV6_REPLY_PROGRAM`].
pub const IPV6_REPLY_FRAGMENT_PROGRAM: &str = "egress_frag6_in";
/// [`IPV6_PROGRAM`] for a client whose tunnel is over IPv6 (an IPv6-only
/// cluster), reached from [`PROGRAM`] for UDP to the tunnel port at the
/// gateway's IPv6 address. The same code, compiled for the other outer
/// header, as are the two after it (each of [`IPV6_PROGRAM`]'s
/// hand-ons).
pub const IPV6_OUTER_PROGRAM: &str = "egress_o6_gw";
/// [`IPV6_CLIENT_ERROR_PROGRAM`] for a client whose tunnel is over IPv6.
pub const IPV6_OUTER_CLIENT_ERROR_PROGRAM: &str = "egress_o6_cerr";
/// [`IPV6_FRAGMENT_PROGRAM`] for a client whose tunnel is over IPv6.
pub const IPV6_OUTER_FRAGMENT_PROGRAM: &str = "egress_o6_frag";
/// The classifier that answers a client's IPv6 packet whose hop limit
/// ends at the gateway with time exceeded, handed it by [`IPV6_PROGRAM`]
/// once checked as any packet of the client's: the answer does not fit
/// that program's stack beside the rest (Linux 6.1 adds 32 bytes for
/// each call to a helper function the compiler leaves out of line).
pub const IPV6_TIME_EXCEEDED_PROGRAM: &str = "egress_ttl6";
/// [`IPV6_TIME_EXCEEDED_PROGRAM`] for a client whose tunnel is over IPv6.
pub const IPV6_OUTER_TIME_EXCEEDED_PROGRAM: &str = "egress_o6_ttl";
/// Which word of the packet's control block (`__sk_buff.cb`, kept across
/// a tail call) carries the client id to [`IPV6_TOO_BIG_PROGRAM`]
/// (and [`IPV6_TOO_BIG_OVERHEAD_CB`] the tunnel's overhead).
pub const IPV6_TOO_BIG_CLIENT_CB: usize = 0;
/// Which word carries the tunnel overhead of that client's binding
/// (`config::TUNNEL_OVERHEAD` or `TUNNEL_OVERHEAD6`) to it.
pub const IPV6_TOO_BIG_OVERHEAD_CB: usize = 1;
/// The classifier on the GRO stage's receiving end (`crate::gro`).
pub const GRO_STAGE_PROGRAM: &str = "egress_gro_stage";
/// The classifier on the GRO stage's sending end, which takes back the
/// segments of a reply too big to be encapsulated whole.
pub const RESEGMENT_PROGRAM: &str = "egress_resegmented";
/// The micro-benchmarks' floor: the tunnel work alone (never attached).
pub const TUNNEL_FLOOR_PROGRAM: &str = "egress_tunnel_floor";

/// Default sizes; the agent may override the conntrack size at load time.
pub const CLIENTS_MAX: u32 = 16_384;
pub const EXCLUDED_DESTINATIONS_MAX: u32 = 1_024;
pub const CT_MAX_DEFAULT: u32 = 131_072;
/// Slots of each CPU's [`CT_RECENT`] ring.
pub const CT_RECENT_SLOTS: u32 = 1_024;
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
    /// [`CLIENT_TUNNEL_IPV6`], or 0.
    pub flags: u32,
}

/// [`ClientInfo::flags`] in CLIENTS6: a pod listed by its IPv6 address
/// alone (it has no IPv4), whose tunnel is over IPv6 from that address.
/// Only such an address may be a tunnel's outer source: a dual-stack
/// pod's IPv6 address (CLIENTS6 without the flag) comes inside its IPv4
/// tunnel only, so the tunnel port at the gateway's IPv6 address takes
/// nothing in a dual-stack cluster, and no binding of a dual-stack pod is
/// ever tunnelled over IPv6.
pub const CLIENT_TUNNEL_IPV6: u32 = 0x1;

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

/// New flows of one client that the datapath refused (one CPU's share).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClientRefusals {
    /// Refused because the client held `max_flows_per_client` bindings.
    pub over_share: u64,
    /// Refused because the table was full of flows that had seen replies.
    pub table_full: u64,
    /// Where the last refused flow was going.
    pub last_destination: NatDestination,
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

/// [`NatDestination`] for IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NatDestination6 {
    pub remote_ip: [u8; 16],
    /// 0 for ICMPv6 echo.
    pub remote_port_be: u16,
    pub protocol: u8,
    pub _pad: u8,
}
