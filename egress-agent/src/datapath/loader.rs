//! Loading the embedded object, configuring it and attaching it to the
//! interface's TC ingress hook; or taking over the maps and links a previous
//! agent left with the state keeper, so its flows carry on.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::{Context, Result};
use aya::{
    maps::{Map, MapData, MapInfo, ProgramArray},
    programs::{
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
        SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfLoader,
};
use egress_common::{config::GatewayConfig, maps as names};

use super::{maps::DatapathMaps, privileges, tcx};
use crate::{keeper::Held, netdev::Cidrs};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress-ebpf.o"));

/// The maps that hold state worth keeping across agent restarts: all but
/// the rings of recent bindings, which only serve to find room in a full
/// table (and the object's global-data maps, rebuilt with each load).
const STATE_MAPS: [&str; 17] = [
    names::CONFIG,
    names::CLIENTS,
    names::CLIENTS6,
    names::EXCLUDED_DESTINATIONS,
    names::EXCLUDED_DESTINATIONS6,
    names::CT_ORIGINAL,
    names::CT_REPLY,
    names::CT6_ORIGINAL,
    names::CT6_REPLY,
    names::NAT_EXHAUSTED6,
    names::COUNTERS,
    names::CLIENT_TRAFFIC,
    names::CLIENT_FLOWS,
    names::CLIENT_FLOWS_SWEPT,
    names::CLIENT_REFUSALS,
    names::ICMP_ANSWER_RATE,
    names::NAT_EXHAUSTED,
];

/// The programs attached to a TC ingress hook, each by its own link.
pub const ATTACHED_PROGRAMS: [&str; 3] = [names::GRO_STAGE_PROGRAM, names::RESEGMENT_PROGRAM, names::PROGRAM];

/// Below Linux 6.6 (netlink filters), every filter of ours sits at this
/// priority and handle on its interface, so the next agent replaces it in
/// place (one netlink request, the hook never empty) instead of removing it
/// and adding its own.
const NETLINK_PRIORITY: u16 = 1;
const NETLINK_HANDLE: TcHandle = TcHandle::new(0, 1);

fn map_key(name: &str) -> String {
    format!("map:{name}")
}

fn link_key(name: &str) -> String {
    format!("link:{name}")
}

/// A loaded and configured datapath. Dropping it detaches the program
/// (unless the state keeper holds its links too) and unloads it.
pub struct Datapath {
    ebpf: Ebpf,
    pub maps: DatapathMaps,
    /// Duplicates of the state maps' descriptors, for the state keeper.
    map_fds: Vec<(&'static str, OwnedFd)>,
    /// TCX links by program name (none on kernels attached through netlink).
    links: Vec<(&'static str, OwnedFd)>,
    /// The IPv6 program's slot: kept open for as long as the program runs,
    /// since the kernel empties a program array when its last descriptor
    /// closes (and then hands the state keeper a duplicate).
    ipv6_programs: ProgramArray<MapData>,
    /// A duplicate of its descriptor, for the state keeper.
    ipv6_programs_fd: OwnedFd,
    /// The maps were a previous agent's: flows, clients and counters went on.
    pub adopted: bool,
    /// Entries of each conntrack half (a running table keeps its size).
    pub conntrack_size: u32,
}

impl Datapath {
    /// Loads and verifies the program and writes `cfg` and the excluded
    /// CIDRs, without attaching it anywhere yet. Maps in `previous` (a
    /// previous agent's, from the state keeper) are used instead of new
    /// ones when they are this gateway's and their layout is this build's;
    /// its links are left in `previous` only when they are this gateway's.
    pub fn load(
        cfg: &GatewayConfig,
        conntrack_size: u32,
        excluded: &Cidrs,
        object_override: Option<&std::path::Path>,
        previous: &mut Held,
    ) -> Result<Datapath> {
        raise_memlock_limit();
        let override_bytes = match object_override {
            Some(path) => Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
            None => None,
        };
        let object = override_bytes.as_deref().unwrap_or(OBJECT);
        let previous_maps = take_previous_datapath(previous, cfg)?;
        // A conntrack table cannot be resized: the one carried over keeps
        // its size until a detach.
        let ct_size = carried_size(&previous_maps, names::CT_ORIGINAL, conntrack_size, |kept| {
            tracing::warn!(
                "keeping the running datapath's conntrack size {kept} (--conntrack-size {conntrack_size} applies after `egress-agent detach`)"
            )
        });
        // The IPv6 halves take memory only where there is IPv6 to translate
        // (preallocated at the default size, the two would take about 45 MB).
        let ct6_wanted = if cfg.has_ipv6() { conntrack_size } else { 1 };
        let ct6_size = carried_size(&previous_maps, names::CT6_ORIGINAL, ct6_wanted, |kept| {
            if kept < ct6_wanted {
                tracing::warn!(
                    "keeping the running datapath's IPv6 conntrack size {kept} (the gateway had no IPv6 when it started, or --conntrack-size grew to {ct6_wanted}): IPv6 flows beyond it are refused until `egress-agent detach` and a restart"
                )
            }
        });
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::CT_ORIGINAL, ct_size)
            .map_max_entries(names::CT_REPLY, ct_size)
            .map_max_entries(names::CT6_ORIGINAL, ct6_size)
            .map_max_entries(names::CT6_REPLY, ct6_size)
            .load(object)
            .map_err(|err| {
                let err = anyhow::Error::new(err);
                if privileges::errno_of(&err) == Some(libc::EPERM) {
                    return privileges::bpf_refused("creating the program's maps");
                }
                err.context("loading the eBPF object (is this a BPF-capable kernel?)")
            })?;
        let adopted = !previous_maps.is_empty() && substitute_maps(&ebpf, &previous_maps)?;
        drop(previous_maps);
        let mut map_fds = Vec::new();
        for name in STATE_MAPS {
            let map = ebpf.map(name).with_context(|| format!("map {name} missing from the eBPF object"))?;
            let fd = state_map_data(map)
                .with_context(|| format!("map {name} is of an unexpected type"))?
                .fd()
                .as_fd()
                .try_clone_to_owned()?;
            map_fds.push((name, fd));
        }
        let maps = DatapathMaps::from_maps(|name| ebpf.take_map(name))?;
        let (ipv6_programs, ipv6_programs_fd) = match ebpf.take_map(names::IPV6_PROGRAMS) {
            Some(Map::ProgramArray(data)) => {
                let fd = data.fd().as_fd().try_clone_to_owned()?;
                (ProgramArray::try_from(Map::ProgramArray(data))?, fd)
            }
            _ => anyhow::bail!(
                "map {} missing from the eBPF object, or not a program array",
                names::IPV6_PROGRAMS
            ),
        };
        let mut datapath = Datapath {
            ebpf,
            maps,
            map_fds,
            links: Vec::new(),
            ipv6_programs,
            ipv6_programs_fd,
            adopted,
            conntrack_size: ct_size,
        };
        datapath.program()?.load().map_err(|err| {
            let errno = match &err {
                aya::programs::ProgramError::LoadError { io_error, .. } => io_error.raw_os_error(),
                _ => None,
            };
            // EPERM is a capability check, not the verifier (which says
            // EACCES or EINVAL): say which capabilities, not "refused".
            if errno == Some(libc::EPERM) {
                tracing::debug!("loading the program: {err:#}");
                return privileges::bpf_refused("loading the program");
            }
            // Without CAP_PERFMON the verifier also checks speculative
            // paths and stack spills more strictly; on kernels before 6.18
            // that refuses this program. Say what to add, in one line; the
            // verifier's own output is at debug level.
            if errno == Some(libc::EACCES) && !privileges::has_effective_capability(privileges::CAP_PERFMON) {
                tracing::debug!("verifier output: {err:#}");
                return anyhow::anyhow!(
                    "the kernel verifier refused the program without CAP_PERFMON: add PERFMON to the container's capabilities (with BPF and NET_ADMIN)"
                );
            }
            anyhow::Error::new(err).context("the kernel verifier refused the program")
        })?;
        datapath.load_ipv6_programs()?;
        datapath
            .classifier(names::GRO_STAGE_PROGRAM)?
            .load()
            .context("the kernel verifier refused the GRO stage's program")?;
        datapath
            .classifier(names::RESEGMENT_PROGRAM)?
            .load()
            .context("the kernel verifier refused the resegmentation program")?;
        // Only now: carried-over maps are still the running program's, and
        // a program this build failed to load must not change them. A share
        // never exceeds the table.
        let cfg = &GatewayConfig { max_flows_per_client: cfg.max_flows_per_client.min(ct_size), ..*cfg };
        datapath.maps.write_config(cfg)?;
        datapath.maps.set_excluded(excluded)?;
        Ok(datapath)
    }

    /// Whether the program is attached through TCX links (which the state
    /// keeper can hold), rather than netlink filters (kernels before 6.6).
    pub fn has_links(&self) -> bool {
        !self.links.is_empty()
    }

    /// The main classifier, for attaching or for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> Result<&mut SchedClassifier> {
        self.classifier(names::PROGRAM)
    }

    /// Loads the IPv6 classifier into its slot, where the main one's tail
    /// call finds it: before anything is attached, so no packet meets an
    /// empty slot.
    fn load_ipv6_programs(&mut self) -> Result<()> {
        for (name, slot) in names::IPV6_PROGRAM_SLOTS {
            let program = self.classifier(name)?;
            program.load().with_context(|| format!("the kernel verifier refused the IPv6 program {name}"))?;
            let fd = program.fd()?.try_clone()?;
            self.ipv6_programs
                .set(slot, &fd, 0)
                .with_context(|| format!("placing the IPv6 program {name} in its slot"))?;
        }
        Ok(())
    }

    /// The micro-benchmarks' floor program (the tunnel work alone), loaded
    /// on first use; the agent never loads or attaches it.
    pub fn tunnel_floor(&mut self) -> Result<&mut SchedClassifier> {
        let floor = self.classifier(names::TUNNEL_FLOOR_PROGRAM)?;
        if floor.fd().is_err() {
            floor.load().context("the kernel verifier refused the floor program")?;
        }
        self.classifier(names::TUNNEL_FLOOR_PROGRAM)
    }

    /// One of the object's classifiers by name (`egress_common::maps`).
    pub fn classifier(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the eBPF object"))?
            .try_into()?)
    }

    /// Attaches to `interface`'s TC ingress. Configuration is written
    /// before this, so no packet ever meets an unconfigured program.
    pub fn attach(&mut self, interface: &str, previous: &mut Held) -> Result<()> {
        self.attach_classifier(names::PROGRAM, interface, previous)
    }

    /// Attaches the GRO stage's classifier to the stage's receiving end.
    pub fn attach_gro_stage(&mut self, interface: &str, previous: &mut Held) -> Result<()> {
        self.attach_classifier(names::GRO_STAGE_PROGRAM, interface, previous)
    }

    /// Attaches the resegmentation classifier to the pair's other end.
    pub fn attach_resegment(&mut self, interface: &str, previous: &mut Held) -> Result<()> {
        self.attach_classifier(names::RESEGMENT_PROGRAM, interface, previous)
    }

    /// On 6.6+ a TCX link: the previous agent's, with this program swapped
    /// in atomically, or a new one. Before 6.6 a netlink filter.
    fn attach_classifier(&mut self, name: &'static str, interface: &str, previous: &mut Held) -> Result<()> {
        let ifindex = crate::netdev::ifindex(interface)?;
        let prog = self.classifier(name)?.fd()?.as_fd().try_clone_to_owned()?;
        if let Some(link) = previous.take(&link_key(name)) {
            match tcx::ingress_link(link.as_fd()) {
                Ok(Some(running)) if running.ifindex == ifindex => {
                    let ours = self.classifier(name)?.info()?.id();
                    tcx::replace_program(link.as_fd(), prog.as_fd()).with_context(|| {
                        format!("replacing the program of the running {name} link on {interface}")
                    })?;
                    let now = tcx::ingress_link(link.as_fd())?.map(|l| l.prog_id);
                    if now != Some(ours) {
                        anyhow::bail!(
                            "the running {name} link on {interface} runs program {now:?} after being given {ours}"
                        );
                    }
                    tracing::info!(
                        "took over the running {name} link on {interface}: program id {} replaced by this build's, id {ours}",
                        running.prog_id
                    );
                    self.links.push((name, link));
                    return Ok(());
                }
                _ => tracing::warn!(
                    "the state keeper's {name} link is not attached to {interface}: attaching anew"
                ),
            }
        }
        match tcx::attach_ingress(prog.as_fd(), ifindex) {
            Ok(link) => {
                self.links.push((name, link));
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.attach_with_netlink(name, interface),
            Err(e) => Err(e).with_context(|| format!("attaching {name} to {interface} ingress (TCX)")),
        }
    }

    /// Kernels before 6.6: the clsact qdisc and a netlink filter at our
    /// fixed place. A netlink filter outlives a killed agent (a TCX link
    /// does not): the one it left is replaced in place, so packets meet
    /// either its program or ours, never an empty hook.
    fn attach_with_netlink(&mut self, name: &str, interface: &str) -> Result<()> {
        if let Err(e) = tc::qdisc_add_clsact(interface) {
            tracing::debug!("clsact qdisc on {interface}: {e} (already present is fine)");
        }
        let place = SchedClassifierLink::attached(
            interface,
            TcAttachType::Ingress,
            NETLINK_PRIORITY,
            NETLINK_HANDLE,
            None,
        )
        .with_context(|| format!("looking up {interface}"))?;
        match self.classifier(name)?.attach_to_link(place) {
            Ok(_) => {
                tracing::info!("replaced the running {name} filter on {interface} in place");
                return Ok(());
            }
            Err(e) => tracing::debug!("no {name} filter at our place on {interface} to replace: {e}"),
        }
        // None of ours there: a filter left by a build that let the kernel
        // pick its place (before fixed places) goes first; there is no way
        // to replace it in place.
        remove_netlink_filter(interface, name);
        let options = NlOptions { priority: NETLINK_PRIORITY, handle: NETLINK_HANDLE, classid: None };
        self.classifier(name)?
            .attach_with_options(interface, TcAttachType::Ingress, TcAttachOptions::Netlink(options))
            .with_context(|| format!("attaching {name} to {interface} ingress"))?;
        Ok(())
    }

    /// A second set of handles on the same maps, for a reader on another
    /// thread (the `/status` listing), so it never waits for the main loop.
    pub fn reader_maps(&self) -> Result<DatapathMaps> {
        let mut fds: Vec<(&'static str, OwnedFd)> = Vec::new();
        for (name, fd) in &self.map_fds {
            fds.push((name, fd.try_clone().context("duplicating a map descriptor")?));
        }
        DatapathMaps::from_maps(|wanted| {
            let pos = fds.iter().position(|(name, _)| *name == wanted)?;
            let (_, fd) = fds.swap_remove(pos);
            Map::from_map_data(MapData::from_fd(fd).ok()?).ok()
        })
    }

    /// Everything the state keeper should hold: the state maps, the TCX
    /// links, and the IPv6 program's slot (never adopted: held so the
    /// running program's tail call keeps its target until the next agent's
    /// program replaces it).
    pub fn state_objects(&self) -> Vec<(String, BorrowedFd<'_>)> {
        let maps = self.map_fds.iter().map(|(name, fd)| (map_key(name), fd.as_fd()));
        let links = self.links.iter().map(|(name, fd)| (link_key(name), fd.as_fd()));
        let ipv6 = std::iter::once((map_key(names::IPV6_PROGRAMS), self.ipv6_programs_fd.as_fd()));
        maps.chain(links).chain(ipv6).collect()
    }
}

/// Removes a netlink filter of `program` from `interface`'s ingress, if
/// there is one (left by a killed agent on a kernel before 6.6).
pub fn remove_netlink_filter(interface: &str, program: &str) -> bool {
    match tc::qdisc_detach_program(interface, TcAttachType::Ingress, program) {
        Ok(()) => {
            tracing::warn!("removed a leftover {program} filter from {interface}");
            true
        }
        Err(e) => {
            tracing::debug!("no netlink filter of {program} on {interface}: {e}");
            false
        }
    }
}

/// The state maps among `previous`, with what the kernel says of each;
/// empty unless all of them are there, are this gateway's (its CONFIG names
/// this network namespace and interface) and have this build's layout
/// version. Links are left in `previous` only if they are this gateway's.
/// Fails if they are another gateway's: two gateways share a keeper socket.
fn take_previous_datapath(
    previous: &mut Held,
    ours: &GatewayConfig,
) -> Result<Vec<(&'static str, MapData, MapInfo)>> {
    if previous.is_empty() {
        return Ok(Vec::new());
    }
    let maps = take_previous_maps(previous);
    let config =
        maps.iter().find(|(name, _, _)| *name == names::CONFIG).and_then(|(_, data, _)| read_config(data));
    let Some(config) = config else {
        // Not even the identity can be read: use nothing, links included
        // (ours are attached anew; the keeper lets go of its own at our
        // first hand-over).
        for name in ATTACHED_PROGRAMS {
            previous.take(&link_key(name));
        }
        if !maps.is_empty() {
            tracing::warn!(
                "the state keeper's CONFIG is not this build's: starting with empty maps, its flows are lost"
            );
        }
        return Ok(Vec::new());
    };
    if config.netns_inode != ours.netns_inode || config.ifindex != ours.ifindex {
        anyhow::bail!(
            "the state keeper holds another gateway's datapath (network namespace {}, interface {}; this is {} and {}): give each gateway pod its own keeper socket",
            config.netns_inode,
            config.ifindex,
            ours.netns_inode,
            ours.ifindex
        );
    }
    if config.layout_version != ours.layout_version {
        tracing::warn!(
            "the running datapath's state is layout version {}, this build's is {}: starting with empty maps, its flows are lost",
            config.layout_version,
            ours.layout_version
        );
        return Ok(Vec::new());
    }
    if let Some(change) = tunnel_or_nat_change(&config, ours) {
        tracing::warn!(
            "{change} since the running datapath started: its flows cannot carry over (their NAT ports or tunnel no longer match), starting with empty maps"
        );
        return Ok(Vec::new());
    }
    Ok(maps)
}

/// What changed between a running datapath's configuration and ours that
/// its flows cannot survive: NAT ports outside the new range would never
/// be recognised as replies, and a new VNI or tunnel port would refuse
/// the workers' packets of the flows.
fn tunnel_or_nat_change(running: &GatewayConfig, ours: &GatewayConfig) -> Option<String> {
    if (running.nat_port_min, running.nat_port_max) != (ours.nat_port_min, ours.nat_port_max) {
        return Some(format!(
            "--nat-ports changed from {}-{} to {}-{}",
            running.nat_port_min, running.nat_port_max, ours.nat_port_min, ours.nat_port_max
        ));
    }
    if running.vni != ours.vni {
        return Some(format!("--vni changed from {} to {}", running.vni, ours.vni));
    }
    if running.vxlan_port_be != ours.vxlan_port_be {
        return Some(format!(
            "--vxlan-port changed from {} to {}",
            u16::from_be(running.vxlan_port_be),
            u16::from_be(ours.vxlan_port_be)
        ));
    }
    None
}

/// The CONFIG value in a previous CONFIG map, if it has this build's size
/// (read through a second descriptor: the typed handle takes its map).
fn read_config(data: &MapData) -> Option<GatewayConfig> {
    let second = MapData::from_fd(data.fd().as_fd().try_clone_to_owned().ok()?).ok()?;
    let config: aya::maps::Array<MapData, GatewayConfig> = Map::Array(second).try_into().ok()?;
    config.get(&0, 0).ok()
}

/// The state maps among `previous`; empty unless all of them are there.
fn take_previous_maps(previous: &mut Held) -> Vec<(&'static str, MapData, MapInfo)> {
    let mut out = Vec::new();
    for name in STATE_MAPS {
        let Some(fd) = previous.take(&map_key(name)) else { return Vec::new() };
        let data = match MapData::from_fd(fd) {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(
                    "the state keeper's {name} is not a usable map ({e}): starting with empty maps"
                );
                return Vec::new();
            }
        };
        match data.info() {
            Ok(info) => out.push((name, data, info)),
            Err(e) => {
                tracing::warn!("reading the state keeper's {name} ({e}): starting with empty maps");
                return Vec::new();
            }
        }
    }
    out
}

/// Points the freshly loaded object at the previous maps, when every one
/// has this build's layout: the object's instructions name each map by the
/// descriptor number its new map got at load, and the kernel resolves those
/// numbers only when the program itself is loaded, so making each number
/// refer to the previous map (dup3 over it) binds the program to the
/// previous maps and frees the new ones. Returns false, and changes
/// nothing, if any layout differs (a build whose state format changed).
fn substitute_maps(ebpf: &Ebpf, previous: &[(&'static str, MapData, MapInfo)]) -> Result<bool> {
    let mut pairs = Vec::new();
    for (name, data, info) in previous {
        let fresh = ebpf
            .map(name)
            .and_then(state_map_data)
            .with_context(|| format!("map {name} missing from the eBPF object"))?;
        let fresh_info = fresh.info()?;
        let layout = |i: &MapInfo| {
            (
                i.map_type().map(|t| format!("{t:?}")).ok(),
                i.key_size(),
                i.value_size(),
                i.max_entries(),
                i.map_flags(),
            )
        };
        if layout(info) != layout(&fresh_info) {
            tracing::warn!(
                "the running datapath's {name} differs from this build's (type, key, value, entries, flags: {:?} vs {:?}): starting with empty maps, its flows are lost",
                layout(info),
                layout(&fresh_info)
            );
            return Ok(false);
        }
        pairs.push((data.fd().as_fd().as_raw_fd(), fresh.fd().as_fd().as_raw_fd()));
    }
    for (previous_fd, fresh_fd) in pairs {
        if unsafe { libc::dup3(previous_fd, fresh_fd, libc::O_CLOEXEC) } < 0 {
            return Err(std::io::Error::last_os_error()).context("taking over a previous map (dup3)");
        }
    }
    Ok(true)
}

/// The entries of map `name` as carried over in `previous` (a map cannot
/// be resized; `kept` is told when that is not `wanted`), else `wanted`.
fn carried_size(
    previous: &[(&'static str, MapData, MapInfo)],
    name: &str,
    wanted: u32,
    kept: impl FnOnce(u32),
) -> u32 {
    match previous.iter().find(|(previous_name, _, _)| *previous_name == name) {
        Some((_, _, info)) if info.max_entries() != wanted => {
            kept(info.max_entries());
            info.max_entries()
        }
        _ => wanted,
    }
}

/// The map behind a state map's handle (the map types the object uses).
fn state_map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(m)
        | Map::HashMap(m)
        | Map::LruHashMap(m)
        | Map::LpmTrie(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuHashMap(m)
        | Map::PerCpuLruHashMap(m) => Some(m),
        _ => None,
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK; fine on 5.11+");
    }
}
