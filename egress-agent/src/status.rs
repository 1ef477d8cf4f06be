//! `egress-agent status`: find the gateway program attached in this network
//! namespace among all loaded programs and read its live maps.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context, Result};
use aya::maps::{Map, MapData, MapInfo};
use egress_common::conntrack::{Binding, FlowState, NatEntry, NatEntry6, FLOW_OUTER_IPV6};
use egress_common::maps as names;
use serde::{Deserialize, Serialize};

use crate::{
    cli::StatusArgs,
    datapath::{conntrack, maps::DatapathMaps},
    netdev,
};

#[derive(Serialize, Deserialize)]
pub struct Flow {
    client_ip: IpAddr,
    client_port: u16,
    /// Where its tunnel comes from: the worker pod's IPv4 address, or its
    /// IPv6 one when the tunnel is over IPv6.
    client_outer_ip: IpAddr,
    remote_ip: IpAddr,
    remote_port: u16,
    protocol: String,
    nat_port: u16,
    state: String,
    /// Whether the remote has answered: until then the flow is short-lived
    /// and the first to go when the table is full.
    replied: bool,
    idle_s: u64,
}

impl Flow {
    /// A binding of either family, given its client's address (inside and
    /// outer) and its remote's.
    fn of(
        e: &impl Binding,
        (client_ip, client_outer_ip): (IpAddr, IpAddr),
        remote_ip: IpAddr,
        now: u64,
    ) -> Flow {
        Flow {
            client_ip,
            client_port: u16::from_be(e.client_port_be()),
            client_outer_ip,
            remote_ip,
            remote_port: u16::from_be(e.remote_port_be()),
            protocol: conntrack::protocol_name(e.protocol()).to_string(),
            nat_port: u16::from_be(e.nat_port_be()),
            state: match FlowState::from_u8(e.state()) {
                FlowState::SynSent => "syn-sent",
                FlowState::Open => "open",
                FlowState::Closing => "closing",
                FlowState::TimeWait => "time-wait",
                FlowState::HalfClosedByClient => "fin-client",
                FlowState::HalfClosedByRemote => "fin-remote",
            }
            .to_string(),
            replied: e.seen_reply(),
            idle_s: now.saturating_sub(e.last_seen_ns()) / 1_000_000_000,
        }
    }
}

/// What `status` shows; also served by the agent at `/status`.
#[derive(Serialize, Deserialize)]
pub struct Status {
    interface: String,
    /// The address IPv4 flows leave from, when the gateway has one (an
    /// IPv6-only cluster's has none).
    gateway_ip: Option<Ipv4Addr>,
    /// The address IPv6 flows leave from, when the gateway has one.
    #[serde(default)]
    gateway_ip6: Option<Ipv6Addr>,
    /// The clients by tunnel address: IPv4, or IPv6 for a pod without IPv4.
    clients: Vec<IpAddr>,
    flows: Vec<Flow>,
    counters: serde_json::Map<String, serde_json::Value>,
}

/// Opens the maps of the program whose CONFIG says it was set up in this
/// network namespace on `ifindex`: the main program's and its IPv6
/// programs' (which alone use the IPv6 maps), joined by the CONFIG map
/// they share.
pub fn find_maps(ifindex: u32) -> Result<DatapathMaps> {
    let netns = netdev::netns_inode()?;
    // Each datapath's maps by name, keyed by its CONFIG map's id.
    let mut datapaths: Vec<(u32, Vec<(String, u32)>)> = Vec::new();
    for info in aya::programs::loaded_programs() {
        let Ok(info) = info else { continue };
        // The kernel keeps the first 15 bytes of a program's name.
        let is = |full: &str, name: &str| full.get(..full.len().min(15)) == Some(name);
        let ours = info.name_as_str().is_some_and(|name| {
            is(names::PROGRAM, name) || names::IPV6_PROGRAM_SLOTS.iter().any(|(ipv6, _)| is(ipv6, name))
        });
        if !ours {
            continue;
        }
        let Ok(Some(map_ids)) = info.map_ids() else { continue };
        let by_name: Vec<(String, u32)> = map_ids
            .iter()
            .filter_map(|id| Some((MapInfo::from_id(*id).ok()?.name_as_str()?.to_string(), *id)))
            .collect();
        let Some(config_id) = by_name.iter().find(|(name, _)| name == names::CONFIG).map(|(_, id)| *id)
        else {
            continue;
        };
        match datapaths.iter_mut().find(|(id, _)| *id == config_id) {
            Some((_, maps)) => maps.extend(by_name),
            None => datapaths.push((config_id, by_name)),
        }
    }
    for (_, mut by_name) in datapaths {
        let maps = DatapathMaps::from_maps(|wanted| {
            let pos = by_name.iter().position(|(n, _)| n == wanted)?;
            let (_, id) = by_name.swap_remove(pos);
            Map::from_map_data(MapData::from_id(id).ok()?).ok()
        });
        let Ok(maps) = maps else { continue };
        let Ok(cfg) = maps.read_config() else { continue };
        if cfg.netns_inode == netns && cfg.ifindex == ifindex {
            return Ok(maps);
        }
    }
    bail!("no egress gateway is attached in this network namespace: is `egress-agent gateway` running here?")
}

/// Reads the live state from the maps.
pub fn collect(maps: &DatapathMaps, interface: &str) -> Result<Status> {
    let cfg = maps.read_config()?;
    let now = netdev::monotonic_ns();
    let ipv4 = conntrack::flows::<NatEntry>(maps)?.into_iter().map(|e| {
        let outer = Ipv4Addr::from(u32::from_be(e.client_outer_ip_be)).into();
        let client = (Ipv4Addr::from(u32::from_be(e.client_ip_be)).into(), outer);
        Flow::of(&e, client, Ipv4Addr::from(u32::from_be(e.remote_ip_be)).into(), now)
    });
    let ipv6 = conntrack::flows::<NatEntry6>(maps)?.into_iter().map(|e| {
        let client_ip: IpAddr = Ipv6Addr::from(e.client_ip).into();
        let outer = match e.flags & FLOW_OUTER_IPV6 {
            0 => Ipv4Addr::from(u32::from_be(e.client_outer_ip_be)).into(),
            _ => client_ip,
        };
        Flow::of(&e, (client_ip, outer), Ipv6Addr::from(e.remote_ip).into(), now)
    });
    let mut flows: Vec<Flow> = ipv4.chain(ipv6).collect();
    flows.sort_by_key(|f| (f.client_ip, f.client_port, f.remote_ip, f.remote_port));
    // IPv4 clients, then those listed by their IPv6 address alone (an id
    // of CLIENTS6 no IPv4 client has).
    let ipv4_clients = maps.client_ids()?;
    let ipv4_ids: std::collections::BTreeSet<u32> = ipv4_clients.values().copied().collect();
    let ipv6_only = maps.client6_ids()?.into_iter().filter(|(_, id)| !ipv4_ids.contains(id));
    let clients =
        ipv4_clients.into_keys().map(IpAddr::from).chain(ipv6_only.map(|(ip, _)| IpAddr::from(ip))).collect();
    let counters = maps
        .counter_totals()?
        .into_iter()
        .map(|(name, value)| (name.to_string(), serde_json::Value::from(value)))
        .collect();
    Ok(Status {
        interface: interface.to_string(),
        gateway_ip: cfg.has_ipv4().then(|| Ipv4Addr::from(u32::from_be(cfg.gateway_ip_be))),
        gateway_ip6: cfg.has_ipv6().then(|| Ipv6Addr::from(cfg.gateway_ip6)),
        clients,
        flows,
        counters,
    })
}

/// Asks the running agent on its loopback `--status-addr` (so this works
/// only inside the gateway pod), then falls back to opening the maps by id. The agent is the normal path: looking up another process's
/// BPF objects by id needs CAP_SYS_ADMIN, which the gateway container
/// does not have.
pub fn run(args: StatusArgs) -> Result<()> {
    let status = match fetch_from_agent(&args.agent_addr) {
        Ok(status) => status,
        Err(http_err) => {
            let from_maps = netdev::ifindex(&args.interface)
                .and_then(find_maps)
                .and_then(|maps| collect(&maps, &args.interface));
            match from_maps {
                Ok(status) => status,
                Err(maps_err) => bail!(
                    "no gateway answered at {} ({http_err:#}) and its maps could not be read ({maps_err:#}): is `egress-agent gateway` running in this pod? (pass --agent-addr if its --status-addr is not the default)",
                    args.agent_addr
                ),
            }
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_table(&status);
    }
    Ok(())
}

/// `GET /status` from the agent's HTTP endpoint.
fn fetch_from_agent(addr: &str) -> Result<Status> {
    let body = agent_request(addr, "GET", "/status")?;
    serde_json::from_str(&body).context("the agent's /status is not valid JSON")
}

/// One HTTP/1.1 request to the agent's `--status-addr`; the body of a 200.
pub fn agent_request(addr: &str, method: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let socket: std::net::SocketAddr =
        addr.parse().with_context(|| format!("invalid --agent-addr {addr:?}"))?;
    let timeout = std::time::Duration::from_secs(5);
    let mut stream = std::net::TcpStream::connect_timeout(&socket, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{}: {}", head.lines().next().unwrap_or(""), body.trim());
    }
    Ok(body.to_string())
}

fn print_table(s: &Status) {
    let gateway = match (s.gateway_ip, s.gateway_ip6) {
        (Some(ip), Some(ip6)) => format!("{ip} and {ip6}"),
        (Some(ip), None) => ip.to_string(),
        (None, Some(ip6)) => ip6.to_string(),
        (None, None) => "(no address)".to_string(),
    };
    println!("gateway {gateway} on {}, {} clients, {} flows", s.interface, s.clients.len(), s.flows.len());
    if !s.flows.is_empty() {
        println!(
            "\n{:<6} {:<21} {:<21} {:>8} {:<10} {:>6}",
            "PROTO", "CLIENT", "REMOTE", "NAT PORT", "STATE", "IDLE s"
        );
        for f in &s.flows {
            println!(
                "{:<6} {:<21} {:<21} {:>8} {:<10} {:>6}",
                f.protocol,
                std::net::SocketAddr::new(f.client_ip, f.client_port).to_string(),
                std::net::SocketAddr::new(f.remote_ip, f.remote_port).to_string(),
                f.nat_port,
                f.state,
                f.idle_s
            );
        }
    }
    println!("\ncounters:");
    for (name, value) in &s.counters {
        if value.as_u64() != Some(0) {
            println!("  {name:<28} {value}");
        }
    }
}
