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
//! The cluster is dual-stack (`dual_stack`: every address has its IPv6
//! twin), for the IPv6 rows: each path carries its worker's IPv6 the same
//! way as its IPv4. `direct` routes it; `linux` adds the reference
//! gateway's IPv6 half (ip6tables MASQUERADE) in the same tunnel; `ebpf`
//! joins with `--ipv6 route` and lists the worker's IPv6 address. A second
//! set of servers listens on the twin of the server address.
//!
//! One change to the nodes: their conntrack forgets closed TCP connections
//! after 10 s instead of 120 s. Every path's connections cross node-b
//! (which routes them to the outside), and the three connection-rate runs
//! of a round put about 300k connections through it within half a minute:
//! more than a namespace's conntrack table holds (262144), and the runs
//! after that would measure a full table instead of the paths. The
//! gateways keep their defaults.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path as FilePath;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use egress_tests::{
    agent::{Agent, GatewayArgs, JoinArgs},
    clients::{self, EchoReply},
    dual_stack::{self, twin, twin_cidr},
    load::{self, CONN_RATE_PORT, CONN_RATE_PORTS, TCP_RR_PORT},
    reference::{self, TunnelConfig},
    scenario::PodsFile,
    topology::{Cluster, ClusterConfig, PodConfig, ServiceConfig},
    Daemon, Netns, Pod,
};

use super::{latency, EgressPath, Family};

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
    /// The Linux gateway pod, made with the workers so it gets IPv6 too.
    linux_gateway: Option<Pod>,
    pub cluster: Cluster,
}

impl Testbed {
    /// Builds the cluster and sets up `paths`.
    pub fn start(paths: &[EgressPath], agent_binary: &FilePath) -> Result<Testbed> {
        let config = ClusterConfig { disable_ipv6: false, ..ClusterConfig::default() };
        let mut cluster = Cluster::build(config).context("building the namespace cluster")?;
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
        let linux_gateway = match paths.contains(&EgressPath::Linux) {
            true => Some(add_linux_gateway_pod(&mut cluster)?),
            false => None,
        };
        // Every pod there is now gets its twin (the ones added later would not).
        dual_stack::add_ipv6(&cluster).context("adding IPv6 to the namespace cluster")?;
        let mut servers = Vec::new();
        for server in [IpAddr::V4(cluster.server_ip()), IpAddr::V6(twin(cluster.server_ip()))] {
            servers.extend([
                clients::start_iperf3_server_on(cluster.outside(), server)?,
                load::start_conn_server(
                    cluster.outside(),
                    SocketAddr::new(server, CONN_RATE_PORT),
                    CONN_RATE_PORTS,
                )?,
                load::start_rr_server(
                    cluster.outside(),
                    SocketAddr::new(server, TCP_RR_PORT),
                    Some(latency::TCP_RR_SERVER_CPU),
                )?,
            ]);
        }
        let mut testbed = Testbed {
            agent: None,
            _servers: servers,
            _pods_file: None,
            workers,
            expected_source: BTreeMap::new(),
            linux_gateway,
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

    /// The Linux gateway's Service, the worker joined to it, both
    /// families. Returns the gateway pod's address (the source the server
    /// sees).
    fn set_up_linux(&mut self, worker: &Pod) -> Result<Ipv4Addr> {
        let gateway = self.linux_gateway.clone().context("the Linux gateway pod was not made")?;
        let service = self.cluster.config().service.clone();
        self.cluster.add_service(&ServiceConfig {
            vip: LINUX_GATEWAY_VIP,
            backend_pod: LINUX_GATEWAY_POD.into(),
            ..service
        })?;
        let tunnel = TunnelConfig::default();
        let mac = reference::join_worker_via(&self.cluster, worker, LINUX_GATEWAY_VIP, &tunnel)?;
        reference::join_worker_ipv6(&self.cluster, worker, &tunnel)?;
        let clients = [(worker, mac.as_str())];
        reference::install_gateway_on(&self.cluster, &gateway, &clients, &tunnel)?;
        reference::install_gateway_ipv6_on(&self.cluster, &gateway, &clients, &tunnel)?;
        Ok(gateway.ip)
    }

    /// The agent in the cluster's gateway pod, listing the worker; the
    /// worker joined with `egress-agent join`.
    fn set_up_ebpf(&mut self, worker: &Pod, agent_binary: &FilePath) -> Result<()> {
        let pods_file = PodsFile::create()?;
        pods_file.write_dual(&[(worker.ip, Some(twin(worker.ip)), worker.name.as_str())])?;
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
        let mut argv = vec![agent_binary.display().to_string()];
        argv.extend(join.to_args());
        argv.extend(["--cluster-cidr".into(), twin_cidr(self.cluster.config().cluster_cidr)]);
        argv.extend(["--ipv6".into(), "route".into()]);
        worker.ns.exec(&argv).context("egress-agent join --ipv6 route")?;
        Ok(())
    }

    /// Checks every path end to end once, in both families: an HTTP
    /// request reaches the conn-rate server with the source address the
    /// path should give it.
    pub fn check_paths(&self) -> Result<()> {
        for (path, pod) in &self.workers {
            let expected = self.expected_source[path];
            for family in Family::ALL {
                let server = SocketAddr::new(self.server_ip(family), CONN_RATE_PORT);
                let url = format!("http://{server}/");
                let body = clients::curl(&pod.ns, &url, Duration::from_secs(5))
                    .with_context(|| format!("{} path: no answer from {url}", path.name()))?;
                let seen: IpAddr = match family {
                    Family::V4 => IpAddr::V4(body.parse::<EchoReply>()?.ip),
                    Family::V6 => IpAddr::V6(first_word_ipv6(&body)?),
                };
                let expected = match family {
                    Family::V4 => IpAddr::V4(expected),
                    Family::V6 => IpAddr::V6(twin(expected)),
                };
                if seen != expected {
                    bail!("{} path: the server at {server} saw {seen}, expected {expected}", path.name());
                }
                println!("    {:<6} worker {} → server sees {seen}", path.name(), pod.ip);
            }
        }
        Ok(())
    }

    /// The worker pod of `path`.
    pub fn worker(&self, path: EgressPath) -> &Netns {
        &self.workers[&path].ns
    }

    /// The server address of `family` in the outside namespace.
    pub fn server_ip(&self, family: Family) -> IpAddr {
        let server = self.cluster.server_ip();
        match family {
            Family::V4 => server.into(),
            Family::V6 => twin(server).into(),
        }
    }

    pub fn outside(&self) -> &Netns {
        self.cluster.outside()
    }

    /// The agent's counters (`status --json`), when the ebpf path is set up.
    pub fn agent_counters(&self) -> Option<BTreeMap<String, u64>> {
        self.agent.as_ref().and_then(|a| a.status().ok()).map(|s| s.counters)
    }
}

/// The second gateway pod, for the `linux` path, on the eBPF gateway's node
/// with its ephemeral port range.
fn add_linux_gateway_pod(cluster: &mut Cluster) -> Result<Pod> {
    let ebpf_gateway = cluster.gateway().clone();
    let ip = cluster.node(ebpf_gateway.node).pod_cidr.host(LINUX_GATEWAY_HOST)?;
    let port_range =
        cluster.config().pods.iter().find(|p| p.name == ebpf_gateway.name).and_then(|p| p.local_port_range);
    cluster.add_pod_with(PodConfig {
        name: LINUX_GATEWAY_POD.into(),
        node: ebpf_gateway.node,
        ip,
        local_port_range: port_range,
    })
}

/// The address at the start of a conn-rate answer (`<ip> <port>`), IPv6.
fn first_word_ipv6(body: &str) -> Result<Ipv6Addr> {
    let word = body.split_whitespace().next().unwrap_or_default();
    word.parse().with_context(|| format!("not an IPv6 address at the start of {body:?}"))
}
