//! The program's maps. Names and value types come from egress-common so the
//! agent and `status` read exactly these.
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray},
};
use egress_common::{
    config::{GatewayConfig, CONFIG_LAYOUT_VERSION},
    conntrack::{FlowTuple, NatEntry},
    counters::{Counter, COUNTER_SLOTS},
    maps::{
        ClientInfo, ClientTraffic, NatDestination, CLIENTS_MAX, CLIENT_ID_MAX, CT_MAX_DEFAULT,
        EXCLUDED_DESTINATIONS_MAX, NAT_EXHAUSTED_MAX,
    },
};

#[map]
pub static CONFIG: Array<GatewayConfig> = Array::with_max_entries(1, 0);

#[map]
pub static CLIENTS: HashMap<u32, ClientInfo> = HashMap::with_max_entries(CLIENTS_MAX, 0);

#[map]
pub static EXCLUDED_DSTS: LpmTrie<u32, u8> =
    LpmTrie::with_max_entries(EXCLUDED_DESTINATIONS_MAX, BPF_F_NO_PREALLOC);

#[map]
pub static CT_ORIGINAL: LruHashMap<FlowTuple, NatEntry> = LruHashMap::with_max_entries(CT_MAX_DEFAULT, 0);

#[map]
pub static CT_REPLY: LruHashMap<FlowTuple, NatEntry> = LruHashMap::with_max_entries(CT_MAX_DEFAULT, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map]
pub static CLIENT_TRAFFIC: PerCpuArray<ClientTraffic> = PerCpuArray::with_max_entries(CLIENT_ID_MAX + 1, 0);

#[map]
pub static NAT_EXHAUSTED: LruPerCpuHashMap<NatDestination, u64> =
    LruPerCpuHashMap::with_max_entries(NAT_EXHAUSTED_MAX, 0);

/// The configuration, once the agent has written a layout we understand.
#[inline(always)]
pub fn config() -> Option<&'static GatewayConfig> {
    let cfg = CONFIG.get(0)?;
    if cfg.layout_version != CONFIG_LAYOUT_VERSION {
        return None;
    }
    Some(cfg)
}

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other writer, a plain add is exact.
        unsafe { *slot += 1 };
    }
}

/// A new flow to `destination` found no free NAT port: counted per
/// destination, so the agent can say which one ran out.
#[inline(always)]
pub fn count_nat_exhausted(destination: &NatDestination) {
    match NAT_EXHAUSTED.get_ptr_mut(destination) {
        // Per-CPU value: no other writer.
        Some(slot) => unsafe { *slot += 1 },
        None => {
            let _ = NAT_EXHAUSTED.insert(destination, &1, 0);
        }
    }
}

/// Which way a packet of a client's flow went.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToRemote,
    ToClient,
}

/// Adds a forwarded packet (`segments` on the wire, `bytes` of IPv4) to
/// its client's traffic.
#[inline(always)]
pub fn account(client_id: u32, direction: Direction, segments: u64, bytes: u64) {
    if let Some(slot) = CLIENT_TRAFFIC.get_ptr_mut(client_id) {
        // Per-CPU slot: no other writer.
        let traffic = unsafe { &mut *slot };
        if direction == Direction::ToRemote {
            traffic.to_remote_packets += segments;
            traffic.to_remote_bytes += bytes;
        } else {
            traffic.to_client_packets += segments;
            traffic.to_client_bytes += bytes;
        }
    }
}

/// How many packets `ctx` is on the wire: a GSO super-packet is `gso_segs`.
/// Read it before `bpf_skb_adjust_room`, which sets a GSO packet's
/// `gso_segs` to 0 for the stack to recompute.
#[inline(always)]
pub fn wire_segments(ctx: &aya_ebpf::programs::TcContext) -> u64 {
    let segments = unsafe { (*ctx.skb.skb).gso_segs };
    if segments == 0 {
        1
    } else {
        segments as u64
    }
}
