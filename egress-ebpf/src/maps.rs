//! The program's maps. Names and value types come from egress-common so the
//! agent and `status` read exactly these.
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use egress_common::{
    config::{GatewayConfig, CONFIG_LAYOUT_VERSION},
    conntrack::{FlowTuple, NatEntry},
    counters::{Counter, COUNTER_SLOTS},
    maps::{ClientInfo, CLIENTS_MAX, CT_MAX_DEFAULT, EXCLUDED_DESTINATIONS_MAX},
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
