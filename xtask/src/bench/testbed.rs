//! The namespace cluster the benchmark runs on, with the three paths set up
//! once: one worker pod per path, all on node-a (the gateway's node is
//! node-b), created the same way (`Cluster::add_pod`: a veth into node-a's
//! bridge), so they differ only in how their traffic leaves.
//!
//! - `direct`: nothing more; the default route is node-a's bridge, so the
//!   traffic is routed node-a → node-b → outside without a tunnel or NAT.
//! - `linux`: `reference::join_worker_via` (a kernel VXLAN device to its own
//!   Service VIP) and `reference::install_gateway_on` in a second gateway
//!   pod on node-b, `gw-linux` (VXLAN device, forwarding, policy routing
//!   for replies, iptables MASQUERADE).
//! - `ebpf`: `egress-agent gateway` in the cluster's gateway pod (node-b)
//!   with a pods file listing the worker, which ran `egress-agent join`.
//!
//! Both gateway pods sit on node-b's bridge with the same veth setup and
//! ephemeral port range, each behind its own Service (a DNAT in every node,
//! as kube-proxy does). The servers (iperf3, conn-rate, tcp-rr; udp-rate
//! per run) listen on the outside namespace's main address.
//!
//! One change to the nodes: their conntrack forgets closed TCP connections
//! after 10 s instead of 120 s. Every path's connections cross node-b
//! (which routes them to the outside), and the three connection-rate runs
//! of a round put about 300k connections through it within half a minute:
//! more than a namespace's conntrack table holds (262144), and the runs
//! after that would measure a full table instead of the paths. The
//! gateways keep their defaults.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path as FilePath;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use egress_tests::{
    agent::{self, Agent, GatewayArgs, JoinArgs},
    clients::{self, EchoReply},
    load::{self, CONN_RATE_PORT, CONN_RATE_PORTS, TCP_RR_PORT},
    reference::{self, TunnelConfig},
    scenario::PodsFile,
    topology::{Cluster, ClusterConfig, PodConfig, ServiceConfig},
    Daemon, Netns, Pod,
};

use super::{latency, EgressPath};

/// The second gateway pod, for the `linux` path.
const LINUX_GATEWAY_POD: &str = "gw-linux";
/// Its host number in node-b's pod CIDR (the eBPF gateway pod is .10).
const LINUX_GATEWAY_HOST: u32 = 20;
/// Its Service's ClusterIP (the eBPF gateway's is the cluster's, 10.96.0.10).
const LINUX_GATEWAY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
/// How long the nodes' conntrack keeps a closed TCP connection (TIME_WAIT).
const NODE_CONNTRACK_TIME_WAIT_S: u32 = 10;

/// The running cluster with the paths set up. Dropping it stops the agent
/// and the servers, then deletes every namespace.
pub struct Testbed {
    // Field order is drop order: the agent and servers before the cluster.
    agent: Option<Agent>,
    _servers: Vec<Daemon>,
    _pods_file: Option<PodsFile>,
    workers: BTreeMap<EgressPath, Pod>,
    /// Where each path's traffic should appear to come from (checked once).
    expected_source: BTreeMap<EgressPath, Ipv4Addr>,
    pub cluster: Cluster,
}

impl Testbed {
    /// Builds the cluster and sets up `paths`.
    pub fn start(paths: &[EgressPath], agent_binary: &FilePath) -> Result<Testbed> {
        let mut cluster =
            Cluster::build(ClusterConfig::default()).context("building the namespace cluster")?;
        let time_wait = NODE_CONNTRACK_TIME_WAIT_S.to_string();
        for node in cluster.nodes() {
            node.ns.sysctls(&[("net.netfilter.nf_conntrack_tcp_timeout_time_wait", &time_wait)])?;
        }
        let mut workers = BTreeMap::new();
        // Always in the same order, so each path's worker gets the same
        // address and veth whichever paths are selected.
        for path in EgressPath::ALL {
            if paths.contains(&path) {
                let pod = cluster.add_pod(0, &format!("bench-{}", path.name()))?;
                workers.insert(path, pod);
            }
        }
        let server = cluster.server_ip();
        let servers = vec![
            clients::start_iperf3_server(cluster.outside(), server)?,
            load::start_conn_server(
                cluster.outside(),
                SocketAddrV4::new(server, CONN_RATE_PORT),
                CONN_RATE_PORTS,
            )?,
            load::start_rr_server(
                cluster.outside(),
                SocketAddrV4::new(server, TCP_RR_PORT),
                Some(latency::TCP_RR_SERVER_CPU),
            )?,
        ];
        let mut testbed = Testbed {
            agent: None,
            _servers: servers,
            _pods_file: None,
            workers,
            expected_source: BTreeMap::new(),
            cluster,
        };
        if let Some(pod) = testbed.workers.get(&EgressPath::Direct).cloned() {
            testbed.expected_source.insert(EgressPath::Direct, pod.ip);
        }
        if let Some(pod) = testbed.workers.get(&EgressPath::Linux).cloned() {
            let gateway_ip = testbed.set_up_linux(&pod).context("setting up the linux path")?;
            testbed.expected_source.insert(EgressPath::Linux, gateway_ip);
        }
        if let Some(pod) = testbed.workers.get(&EgressPath::Ebpf).cloned() {
            testbed.set_up_ebpf(&pod, agent_binary).context("setting up the ebpf path")?;
            testbed.expected_source.insert(EgressPath::Ebpf, testbed.cluster.gateway().ip);
        }
        Ok(testbed)
    }

    /// The Linux gateway pod and its Service, the worker joined to it.
    /// Returns the gateway pod's address (the source the server sees).
    fn set_up_linux(&mut self, worker: &Pod) -> Result<Ipv4Addr> {
        let node_b = 1;
        let ebpf_gateway = self.cluster.gateway().clone();
        let ip = self.cluster.node(node_b).pod_cidr.host(LINUX_GATEWAY_HOST)?;
        let port_range = self
            .cluster
            .config()
            .pods
            .iter()
            .find(|p| p.name == ebpf_gateway.name)
            .and_then(|p| p.local_port_range);
        let gateway = self.cluster.add_pod_with(PodConfig {
            name: LINUX_GATEWAY_POD.into(),
            node: ebpf_gateway.node,
            ip,
            local_port_range: port_range,
        })?;
        let service = self.cluster.config().service.clone();
        self.cluster.add_service(&ServiceConfig {
            vip: LINUX_GATEWAY_VIP,
            backend_pod: LINUX_GATEWAY_POD.into(),
            ..service
        })?;
        let tunnel = TunnelConfig::default();
        let mac = reference::join_worker_via(&self.cluster, worker, LINUX_GATEWAY_VIP, &tunnel)?;
        reference::install_gateway_on(&self.cluster, &gateway, &[(worker, mac.as_str())], &tunnel)?;
        Ok(gateway.ip)
    }

    /// The agent in the cluster's gateway pod, listing the worker; the
    /// worker joined with `egress-agent join`.
    fn set_up_ebpf(&mut self, worker: &Pod, agent_binary: &FilePath) -> Result<()> {
        let pods_file = PodsFile::create()?;
        pods_file.write(&[(worker.ip, worker.name.as_str())])?;
        let mut args = GatewayArgs::new(pods_file.path());
        // One worker makes all the benchmark's flows, as in the Linux
        // gateway, which has no per-client share: the whole table is its.
        args.extra = vec!["--max-flows-per-client".into(), egress_common::maps::CT_MAX_DEFAULT.to_string()];
        self.agent = Some(Agent::start_gateway(&self.cluster.gateway().ns, agent_binary, &args)?);
        self._pods_file = Some(pods_file);
        let join = JoinArgs {
            gateway: self.cluster.service_vip().to_string(),
            cluster_cidrs: self.cluster.cluster_cidrs().iter().map(ToString::to_string).collect(),
            vni: None,
            vxlan_port: None,
        };
        agent::join(&worker.ns, agent_binary, &join)?;
        Ok(())
    }

    /// Checks every path end to end once: an HTTP request reaches the
    /// conn-rate server with the source address the path should give it.
    pub fn check_paths(&self) -> Result<()> {
        let url = format!("http://{}:{CONN_RATE_PORT}/", self.server_ip());
        for (path, pod) in &self.workers {
            let body = clients::curl(&pod.ns, &url, Duration::from_secs(5))
                .with_context(|| format!("{} path: no answer from {url}", path.name()))?;
            let seen: EchoReply = body.parse()?;
            let expected = self.expected_source[path];
            if seen.ip != expected {
                bail!("{} path: the server saw {}, expected {expected}", path.name(), seen.ip);
            }
            println!("    {:<6} worker {} → server sees {}", path.name(), pod.ip, seen.ip);
        }
        Ok(())
    }

    /// The worker pod of `path`.
    pub fn worker(&self, path: EgressPath) -> &Netns {
        &self.workers[&path].ns
    }

    /// The server address in the outside namespace.
    pub fn server_ip(&self) -> Ipv4Addr {
        self.cluster.server_ip()
    }

    pub fn outside(&self) -> &Netns {
        self.cluster.outside()
    }

    /// The agent's counters (`status --json`), when the ebpf path is set up.
    pub fn agent_counters(&self) -> Option<BTreeMap<String, u64>> {
        self.agent.as_ref().and_then(|a| a.status().ok()).map(|s| s.counters)
    }
}
