//! Prometheus text metrics. The main loop takes a [`DatapathSample`] at
//! every sweep; a scrape encodes the latest sample and the pod source's
//! health, so a scrape never touches the BPF maps itself.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{atomic::Ordering, Arc, Mutex},
};

use anyhow::Result;
use egress_common::{
    config::GatewayConfig,
    maps::{ClientRefusals, ClientTraffic},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};

use crate::{
    datapath::{conntrack::FlowTally, maps::DatapathMaps},
    gateway::reconcile::ClientTable,
    pods::{ClientIdentity, SourceHealth, SourceState},
};

/// What the datapath looked like at one moment.
#[derive(Default, Debug)]
pub struct DatapathSample {
    pub flows_by_protocol: BTreeMap<&'static str, u64>,
    /// NAT bindings held (one per flow).
    pub nat_bindings: u64,
    /// The most bindings towards one destination (address, port, protocol):
    /// each takes one of that destination's NAT ports.
    pub nat_ports_used_max: u64,
    /// NAT ports each destination can have.
    pub nat_ports_per_destination: u64,
    pub counters: Vec<(&'static str, u64)>,
    pub clients: Vec<ClientSample>,
    /// New flows dropped for want of a NAT port, by destination.
    pub nat_exhausted: BTreeMap<super::exhaustion::Destination, u64>,
}

#[derive(Debug)]
pub struct ClientSample {
    pub ip: IpAddr,
    /// The client's id in the datapath's per-client maps.
    pub id: u32,
    pub identity: ClientIdentity,
    pub traffic: ClientTraffic,
    /// Bindings held, as counted against its share of the table.
    pub flows: u64,
    pub refusals: ClientRefusals,
}

impl DatapathSample {
    /// Everything but the flows, which `flows` (a sweep pass's tally of
    /// what it kept) gives: the conntrack map is never walked here.
    pub fn take(
        maps: &DatapathMaps,
        clients: &ClientTable,
        cfg: &GatewayConfig,
        flows: &FlowTally,
    ) -> Result<DatapathSample> {
        let mut flows_by_protocol: BTreeMap<&'static str, u64> =
            ["tcp", "udp", "icmp", "icmpv6"].into_iter().map(|p| (p, 0)).collect();
        flows_by_protocol.extend(flows.by_protocol.iter().map(|(p, n)| (*p, *n)));
        Ok(DatapathSample {
            flows_by_protocol,
            nat_bindings: flows.bindings(),
            nat_ports_used_max: flows.most_towards_one_destination(),
            nat_ports_per_destination: (cfg.nat_port_max - cfg.nat_port_min) as u64 + 1,
            counters: maps.counter_totals()?,
            clients: client_samples(maps, clients)?,
            nat_exhausted: super::exhaustion::totals(maps)?,
        })
    }
}

/// The clients, their traffic, flows and refusals: a few lookups per
/// client, cheap enough to take whenever the client list changes.
pub fn client_samples(maps: &DatapathMaps, clients: &ClientTable) -> Result<Vec<ClientSample>> {
    clients
        .clients()
        .iter()
        .map(|(ip, client)| {
            Ok(ClientSample {
                ip: *ip,
                id: client.id,
                identity: client.identity.clone(),
                traffic: maps.client_traffic(client.id)?,
                flows: maps.client_flows(client.id)?,
                refusals: maps.client_refusals(client.id)?,
            })
        })
        .collect()
}

/// Everything a scrape reports.
#[derive(Debug)]
pub struct GatewayMetrics {
    pub sample: Mutex<DatapathSample>,
    pub source: Arc<SourceHealth>,
    pub ready: Arc<std::sync::atomic::AtomicBool>,
}

impl GatewayMetrics {
    /// After a sweep's slice: a whole new sample, with the tally of the
    /// flows of the sweep pass that ended in it, or the last pass's flows
    /// when none did (a pass over a large table takes a few intervals).
    /// Calls `with_clients` with the new client samples (the sweep's
    /// warning lines read them).
    pub fn refresh(
        &self,
        maps: &DatapathMaps,
        clients: &ClientTable,
        cfg: &GatewayConfig,
        flows: Option<FlowTally>,
        with_clients: impl FnOnce(&[ClientSample]),
    ) {
        match DatapathSample::take(maps, clients, cfg, flows.as_ref().unwrap_or(&FlowTally::default())) {
            Ok(mut sample) => {
                with_clients(&sample.clients);
                let mut last = self.lock_sample();
                if flows.is_none() {
                    sample.flows_by_protocol = std::mem::take(&mut last.flows_by_protocol);
                    (sample.nat_bindings, sample.nat_ports_used_max) =
                        (last.nat_bindings, last.nat_ports_used_max);
                }
                *last = sample;
            }
            Err(err) => tracing::warn!("reading the datapath for metrics: {err:#}"),
        }
    }

    /// After the client list changed: only the clients, without walking the
    /// conntrack map (seconds at a million flows) in the loop that applies
    /// the next change. Flows follow at the next sweep.
    pub fn refresh_clients(&self, maps: &DatapathMaps, clients: &ClientTable) {
        match client_samples(maps, clients) {
            Ok(samples) => self.lock_sample().clients = samples,
            Err(err) => tracing::warn!("reading the clients' traffic for metrics: {err:#}"),
        }
    }

    fn lock_sample(&self) -> std::sync::MutexGuard<'_, DatapathSample> {
        self.sample.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn registry(self: &Arc<Self>) -> Registry {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        registry
    }
}

/// Writes one metric family with one series per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (Vec<(&'static str, String)>, M)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: M,
) -> std::fmt::Result {
    let kind = value.metric_type();
    value.encode(encoder.encode_descriptor(name, help, None, kind)?)
}

impl Collector for GatewayMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        let ready = self.ready.load(Ordering::Relaxed) as i64;
        single(
            e,
            "egress_ready",
            "1 once the datapath is attached and the first full pod list is applied",
            ConstGauge::new(ready),
        )?;

        let source = &self.source;
        let state = source.state();
        family(
            e,
            "egress_pod_watch_state",
            "1 for the pod source's current state: starting (first list pending), watching, retrying (API errors; the client list is kept)",
            MetricType::Gauge,
            SourceState::ALL.map(|s| (vec![("state", s.name().to_string())], ConstGauge::new((s == state) as i64))),
        )?;
        single(
            e,
            "egress_pod_last_sync_timestamp_seconds",
            "Unix time of the last completed full pod list (file source: last successful read)",
            ConstGauge::new(source.last_sync_unix_s.load(Ordering::Relaxed) as i64),
        )?;
        single(
            e,
            "egress_pod_relists",
            "Completed full pod lists",
            ConstCounter::new(source.relists.load(Ordering::Relaxed)),
        )?;
        single(
            e,
            "egress_pod_watch_errors",
            "Failed list or watch requests (each retried with backoff)",
            ConstCounter::new(source.errors.load(Ordering::Relaxed)),
        )?;

        let sample = self.lock_sample();
        single(
            e,
            "egress_clients",
            "Pods allowed to use the gateway",
            ConstGauge::new(sample.clients.len() as i64),
        )?;
        family(
            e,
            "egress_flows",
            "Tracked flows by protocol",
            MetricType::Gauge,
            sample
                .flows_by_protocol
                .iter()
                .map(|(p, n)| (vec![("protocol", p.to_string())], ConstGauge::new(*n as i64))),
        )?;
        single(
            e,
            "egress_nat_bindings",
            "NAT bindings held (one per flow)",
            ConstGauge::new(sample.nat_bindings as i64),
        )?;
        single(
            e,
            "egress_nat_ports_used_max",
            "NAT ports in use towards the busiest destination (address, port, protocol)",
            ConstGauge::new(sample.nat_ports_used_max as i64),
        )?;
        single(
            e,
            "egress_nat_ports_per_destination",
            "NAT ports available towards each destination (the --nat-ports range)",
            ConstGauge::new(sample.nat_ports_per_destination as i64),
        )?;

        family(
            e,
            "egress_nat_ports_exhausted",
            "New flows dropped because every NAT port towards the destination (address:port/protocol) was bound",
            MetricType::Counter,
            sample.nat_exhausted.iter().map(|(destination, dropped)| {
                (vec![("destination", super::exhaustion::describe(destination))], ConstCounter::new(*dropped))
            }),
        )?;

        let is_drop = |name: &str| name.starts_with("drop_");
        family(
            e,
            "egress_drops",
            "Packets dropped by the datapath, by reason",
            MetricType::Counter,
            sample.counters.iter().filter(|(n, _)| is_drop(n)).map(|(n, v)| {
                (vec![("reason", n.trim_start_matches("drop_").to_string())], ConstCounter::new(*v))
            }),
        )?;
        family(
            e,
            "egress_datapath_events",
            "Datapath events other than drops (forwarded packets, flows created, ...)",
            MetricType::Counter,
            sample
                .counters
                .iter()
                .filter(|(n, _)| !is_drop(n))
                .map(|(n, v)| (vec![("event", n.to_string())], ConstCounter::new(*v))),
        )?;

        let per_client = |pick: fn(&ClientTraffic) -> (u64, u64)| {
            sample.clients.iter().flat_map(move |c| {
                let labels = |direction: &str| {
                    vec![
                        ("client", c.ip.to_string()),
                        ("pod", c.identity.name.clone()),
                        ("direction", direction.to_string()),
                    ]
                };
                let (to_remote, to_client) = pick(&c.traffic);
                [
                    (labels("to_remote"), ConstCounter::new(to_remote)),
                    (labels("to_client"), ConstCounter::new(to_client)),
                ]
            })
        };
        family(
            e,
            "egress_client_packets",
            "Packets forwarded per client and direction (GSO packets count as their segments)",
            MetricType::Counter,
            per_client(|t| (t.to_remote_packets, t.to_client_packets)),
        )?;
        family(
            e,
            "egress_client_bytes",
            "IPv4 bytes forwarded per client and direction, without the tunnel",
            MetricType::Counter,
            per_client(|t| (t.to_remote_bytes, t.to_client_bytes)),
        )?;
        let client_labels =
            |c: &ClientSample| vec![("client", c.ip.to_string()), ("pod", c.identity.name.clone())];
        family(
            e,
            "egress_client_flows",
            "Flows each client holds, counted against its share of the table (--max-flows-per-client)",
            MetricType::Gauge,
            sample.clients.iter().map(|c| (client_labels(c), ConstGauge::new(c.flows as i64))),
        )?;
        family(
            e,
            "egress_client_flows_refused",
            "New flows refused per client: over_share (it held --max-flows-per-client flows), table_full (the table was full of answered flows)",
            MetricType::Counter,
            sample.clients.iter().flat_map(|c| {
                let labels = |reason: &str| {
                    let mut labels = client_labels(c);
                    labels.push(("reason", reason.to_string()));
                    labels
                };
                [
                    (labels("over_share"), ConstCounter::new(c.refusals.over_share)),
                    (labels("table_full"), ConstCounter::new(c.refusals.table_full)),
                ]
            }),
        )?;
        Ok(())
    }
}
