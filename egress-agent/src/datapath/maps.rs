//! Typed handles on the program's maps.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, Ipv6Addr},
};

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues,
    },
    Pod,
};
use egress_common::{
    config::GatewayConfig,
    conntrack::{FlowTuple, FlowTuple6, NatEntry, NatEntry6},
    counters::Counter,
    maps as names,
    maps::{ClientInfo, ClientRefusals, ClientTraffic, NatDestination, NatDestination6, CLIENT_TUNNEL_IPV6},
};

use crate::netdev::Cidrs;

pub struct DatapathMaps {
    pub config: Array<MapData, GatewayConfig>,
    pub clients: HashMap<MapData, u32, ClientInfo>,
    pub clients6: HashMap<MapData, [u8; 16], ClientInfo>,
    pub excluded: LpmTrie<MapData, u32, u8>,
    pub excluded6: LpmTrie<MapData, [u8; 16], u8>,
    pub ct_original: HashMap<MapData, FlowTuple, NatEntry>,
    pub ct_reply: HashMap<MapData, FlowTuple, NatEntry>,
    pub ct6_original: HashMap<MapData, FlowTuple6, NatEntry6>,
    pub ct6_reply: HashMap<MapData, FlowTuple6, NatEntry6>,
    pub counters: PerCpuArray<MapData, u64>,
    pub client_traffic: PerCpuArray<MapData, ClientTraffic>,
    pub nat_exhausted: PerCpuHashMap<MapData, NatDestination, u64>,
    pub nat_exhausted6: PerCpuHashMap<MapData, NatDestination6, u64>,
    pub client_flows: Array<MapData, u64>,
    pub client_flows_swept: Array<MapData, u64>,
    pub client_refusals: PerCpuArray<MapData, ClientRefusals>,
}

impl DatapathMaps {
    /// Builds the handles from maps looked up by name; `take` hands over
    /// each map (from a freshly loaded object or from map ids).
    pub fn from_maps(mut take: impl FnMut(&str) -> Option<Map>) -> Result<DatapathMaps> {
        let mut get =
            |name: &str| take(name).ok_or_else(|| anyhow!("map {name} missing from the eBPF object"));
        Ok(DatapathMaps {
            config: get(names::CONFIG)?.try_into().context(names::CONFIG)?,
            clients: get(names::CLIENTS)?.try_into().context(names::CLIENTS)?,
            clients6: get(names::CLIENTS6)?.try_into().context(names::CLIENTS6)?,
            excluded: get(names::EXCLUDED_DESTINATIONS)?.try_into().context(names::EXCLUDED_DESTINATIONS)?,
            excluded6: get(names::EXCLUDED_DESTINATIONS6)?
                .try_into()
                .context(names::EXCLUDED_DESTINATIONS6)?,
            ct_original: get(names::CT_ORIGINAL)?.try_into().context(names::CT_ORIGINAL)?,
            ct_reply: get(names::CT_REPLY)?.try_into().context(names::CT_REPLY)?,
            ct6_original: get(names::CT6_ORIGINAL)?.try_into().context(names::CT6_ORIGINAL)?,
            ct6_reply: get(names::CT6_REPLY)?.try_into().context(names::CT6_REPLY)?,
            counters: get(names::COUNTERS)?.try_into().context(names::COUNTERS)?,
            client_traffic: get(names::CLIENT_TRAFFIC)?.try_into().context(names::CLIENT_TRAFFIC)?,
            nat_exhausted: get(names::NAT_EXHAUSTED)?.try_into().context(names::NAT_EXHAUSTED)?,
            nat_exhausted6: get(names::NAT_EXHAUSTED6)?.try_into().context(names::NAT_EXHAUSTED6)?,
            client_flows: get(names::CLIENT_FLOWS)?.try_into().context(names::CLIENT_FLOWS)?,
            client_flows_swept: get(names::CLIENT_FLOWS_SWEPT)?
                .try_into()
                .context(names::CLIENT_FLOWS_SWEPT)?,
            client_refusals: get(names::CLIENT_REFUSALS)?.try_into().context(names::CLIENT_REFUSALS)?,
        })
    }

    pub fn read_config(&self) -> Result<GatewayConfig> {
        self.config.get(&0, 0).context("reading CONFIG")
    }

    pub fn write_config(&mut self, cfg: &GatewayConfig) -> Result<()> {
        self.config.set(0, cfg, 0).context("writing CONFIG")
    }

    /// The allowed client addresses and their ids.
    pub fn client_ids(&self) -> Result<BTreeMap<Ipv4Addr, u32>> {
        let mut out = BTreeMap::new();
        for item in self.clients.iter() {
            let (ip_be, info) = item.context("reading CLIENTS")?;
            out.insert(Ipv4Addr::from(u32::from_be(ip_be)), info.client_id);
        }
        Ok(out)
    }

    /// Allows `ip` as client `client_id`, whose traffic, refusal and flow
    /// counts start at zero (the id may have belonged to a client that left).
    pub fn add_client(&mut self, ip: Ipv4Addr, client_id: u32) -> Result<()> {
        self.reset_client(client_id)?;
        self.clients
            .insert(u32::from(ip).to_be(), ClientInfo { client_id, flags: 0 }, 0)
            .with_context(|| format!("adding client {ip} (is the CLIENTS map full?)"))
    }

    /// A client listed by its IPv6 address alone (a pod without IPv4,
    /// which tunnels over IPv6 from it): [`DatapathMaps::add_client`]'s
    /// counters start from zero as that one's do.
    /// Its tunnel comes from that address (`CLIENT_TUNNEL_IPV6`).
    pub fn add_ipv6_client(&mut self, ip: Ipv6Addr, client_id: u32) -> Result<()> {
        self.reset_client(client_id)?;
        self.clients6
            .insert(ip.octets(), ClientInfo { client_id, flags: CLIENT_TUNNEL_IPV6 }, 0)
            .with_context(|| format!("adding client {ip} (is the CLIENTS6 map full?)"))
    }

    /// The clients listed by their IPv6 address alone (`CLIENT_TUNNEL_IPV6`).
    pub fn ipv6_listed_clients(&self) -> Result<BTreeSet<Ipv6Addr>> {
        let mut out = BTreeSet::new();
        for item in self.clients6.iter() {
            let (ip, info) = item.context("reading CLIENTS6")?;
            if info.flags & CLIENT_TUNNEL_IPV6 != 0 {
                out.insert(Ipv6Addr::from(ip));
            }
        }
        Ok(out)
    }

    /// Zeroes the per-client counters of `client_id` (a reused id starts
    /// from nothing).
    fn reset_client(&mut self, client_id: u32) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let reset = || format!("resetting the counters of client id {client_id}");
        self.client_traffic
            .set(client_id, PerCpuValues::try_from(vec![ClientTraffic::default(); cpus])?, 0)
            .with_context(reset)?;
        self.client_refusals
            .set(client_id, PerCpuValues::try_from(vec![ClientRefusals::default(); cpus])?, 0)
            .with_context(reset)?;
        self.client_flows.set(client_id, 0, 0).with_context(reset)?;
        self.client_flows_swept.set(client_id, 0, 0).with_context(reset)
    }

    pub fn remove_client(&mut self, ip: Ipv4Addr) -> Result<()> {
        match self.clients.remove(&u32::from(ip).to_be()) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing client {ip}")),
        }
    }

    /// The clients' IPv6 addresses and the ids of the clients they are.
    pub fn client6_ids(&self) -> Result<BTreeMap<Ipv6Addr, u32>> {
        let mut out = BTreeMap::new();
        for item in self.clients6.iter() {
            let (ip, info) = item.context("reading CLIENTS6")?;
            out.insert(Ipv6Addr::from(ip), info.client_id);
        }
        Ok(out)
    }

    /// Lets client `client_id` (already added by its IPv4) also send as `ip`.
    pub fn add_client6(&mut self, ip: Ipv6Addr, client_id: u32) -> Result<()> {
        self.clients6
            .insert(ip.octets(), ClientInfo { client_id, flags: 0 }, 0)
            .with_context(|| format!("adding client address {ip} (is the CLIENTS6 map full?)"))
    }

    pub fn remove_client6(&mut self, ip: Ipv6Addr) -> Result<()> {
        match self.clients6.remove(&ip.octets()) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing client address {ip}")),
        }
    }

    /// One more excluded IPv6 range beside those `set_excluded` made.
    pub fn add_excluded6(&mut self, addr: Ipv6Addr, prefix_len: u8) -> Result<()> {
        let key = Key::new(prefix_len as u32, addr.octets());
        self.excluded6.insert(&key, 1, 0).with_context(|| format!("adding excluded CIDR {addr}/{prefix_len}"))
    }

    /// Makes the excluded CIDRs of both families exactly `wanted` (maps
    /// carried over from a previous agent may hold others): the new ones
    /// go in before the old ones go, so nothing meant to be excluded is
    /// ever let through.
    pub fn set_excluded(&mut self, wanted: &Cidrs) -> Result<()> {
        let v4: Vec<(u32, u8)> =
            wanted.v4.iter().map(|(addr, len)| (u32::from(*addr).to_be(), *len)).collect();
        let v6: Vec<([u8; 16], u8)> = wanted.v6.iter().map(|(addr, len)| (addr.octets(), *len)).collect();
        make_exactly(&mut self.excluded, &v4, names::EXCLUDED_DESTINATIONS, |ip_be| {
            Ipv4Addr::from(u32::from_be(ip_be)).to_string()
        })?;
        make_exactly(&mut self.excluded6, &v6, names::EXCLUDED_DESTINATIONS6, |ip| {
            Ipv6Addr::from(ip).to_string()
        })
    }

    /// Counter totals over all CPUs, by name.
    pub fn counter_totals(&self) -> Result<Vec<(&'static str, u64)>> {
        Counter::ALL
            .iter()
            .map(|c| {
                let per_cpu = self
                    .counters
                    .get(&(*c as u32), 0)
                    .with_context(|| format!("reading counter {}", c.name()))?;
                Ok((c.name(), per_cpu.iter().sum()))
            })
            .collect()
    }
}

impl DatapathMaps {
    /// New flows dropped for want of a NAT port, by destination, summed over
    /// all CPUs (the destinations the LRU still remembers).
    pub fn nat_exhausted(&self) -> Result<BTreeMap<NatDestination, u64>> {
        let mut out = BTreeMap::new();
        for item in self.nat_exhausted.iter() {
            let (destination, per_cpu) = item.context("reading NAT_EXHAUSTED")?;
            out.insert(destination, per_cpu.iter().sum());
        }
        Ok(out)
    }

    /// [`DatapathMaps::nat_exhausted`] for IPv6 destinations.
    pub fn nat_exhausted6(&self) -> Result<Vec<(NatDestination6, u64)>> {
        let mut out = Vec::new();
        for item in self.nat_exhausted6.iter() {
            let (destination, per_cpu) = item.context("reading NAT_EXHAUSTED6")?;
            out.push((destination, per_cpu.iter().sum()));
        }
        Ok(out)
    }

    /// The bindings client `client_id` holds, as the datapath counts them
    /// against its share (`CLIENT_FLOWS - CLIENT_FLOWS_SWEPT`).
    pub fn client_flows(&self, client_id: u32) -> Result<u64> {
        let made = self.client_flows.get(&client_id, 0).context("reading CLIENT_FLOWS")?;
        let swept = self.client_flows_swept.get(&client_id, 0).context("reading CLIENT_FLOWS_SWEPT")?;
        let held = made.wrapping_sub(swept);
        Ok(if held > u64::MAX / 2 { 0 } else { held })
    }

    /// Records that the agent removed `removed` bindings of `client_id`
    /// (only the agent writes this count, so a read and a write suffice).
    pub fn add_flows_swept(&mut self, client_id: u32, removed: u64) -> Result<()> {
        let swept = self.client_flows_swept.get(&client_id, 0).context("reading CLIENT_FLOWS_SWEPT")?;
        self.client_flows_swept
            .set(client_id, swept.wrapping_add(removed), 0)
            .context("writing CLIENT_FLOWS_SWEPT")
    }

    /// A client's refused new flows, summed over all CPUs; the last
    /// destination is any CPU's (the most recent one is not kept).
    pub fn client_refusals(&self, client_id: u32) -> Result<ClientRefusals> {
        let per_cpu = self
            .client_refusals
            .get(&client_id, 0)
            .with_context(|| format!("reading the refusals of client id {client_id}"))?;
        Ok(per_cpu.iter().fold(ClientRefusals::default(), |sum, cpu| ClientRefusals {
            over_share: sum.over_share + cpu.over_share,
            table_full: sum.table_full + cpu.table_full,
            last_destination: if cpu.over_share + cpu.table_full > 0 {
                cpu.last_destination
            } else {
                sum.last_destination
            },
        }))
    }

    /// A client's traffic summed over all CPUs.
    pub fn client_traffic(&self, client_id: u32) -> Result<ClientTraffic> {
        let per_cpu = self
            .client_traffic
            .get(&client_id, 0)
            .with_context(|| format!("reading the traffic of client id {client_id}"))?;
        Ok(per_cpu.iter().fold(ClientTraffic::default(), |sum, cpu| ClientTraffic {
            to_remote_packets: sum.to_remote_packets + cpu.to_remote_packets,
            to_remote_bytes: sum.to_remote_bytes + cpu.to_remote_bytes,
            to_client_packets: sum.to_client_packets + cpu.to_client_packets,
            to_client_bytes: sum.to_client_bytes + cpu.to_client_bytes,
        }))
    }
}

/// Makes `trie` hold exactly the prefixes `wanted`, adding before removing.
fn make_exactly<K: Pod + PartialEq>(
    trie: &mut LpmTrie<MapData, K, u8>,
    wanted: &[(K, u8)],
    name: &str,
    show: impl Fn(K) -> String,
) -> Result<()> {
    for (data, len) in wanted {
        trie.insert(&Key::new(*len as u32, *data), 1, 0)
            .with_context(|| format!("adding excluded CIDR {}/{len} to {name}", show(*data)))?;
    }
    let present: Vec<Key<K>> =
        trie.keys().collect::<Result<_, _>>().with_context(|| format!("reading {name}"))?;
    for key in present {
        let here = (key.data(), key.prefix_len() as u8);
        if !wanted.contains(&here) {
            trie.remove(&key)
                .with_context(|| format!("removing excluded CIDR {}/{} from {name}", show(here.0), here.1))?;
        }
    }
    Ok(())
}
