//! Command-line interface. The forms documented in the README are a
//! contract: scripts and manifests rely on them.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use egress_common::config::*;

/// Where the agent serves the flow list, and where `status` asks for it.
pub const DEFAULT_STATUS_ADDR: &str = "127.0.0.1:9091";

#[derive(Parser)]
#[command(name = "egress-agent", version, about = "eBPF egress SNAT gateway for Kubernetes pods")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway: attach the datapath to IFACE and feed it clients.
    Gateway(GatewayArgs),
    /// Inside a worker pod: route external traffic through the gateway tunnel.
    Join(JoinArgs),
    /// Show live flows and counters of the gateway in this network namespace.
    Status(StatusArgs),
    /// Hold the datapath's links and maps so that it outlives an agent
    /// restart (a native sidecar of the gateway pod; needs no capabilities).
    Keep(KeepArgs),
    /// Take the datapath off the interface now (rollback): the state keeper
    /// lets go, a running agent detaches and exits, leftovers are removed.
    Detach(DetachArgs),
    /// The gateway pod's preStop hook: tell the workers (in the answers to
    /// their probes) to take new connections elsewhere, then wait until
    /// this gateway's TCP connections have ended.
    Drain(DrainArgs),
}

#[derive(Args, Clone, Debug)]
pub struct DrainArgs {
    /// The agent's --status-addr.
    #[arg(long, default_value = DEFAULT_STATUS_ADDR)]
    pub agent_addr: String,
    /// Wait at least this long, connections or not: workers without the
    /// --replicas sidecar leave only when kube-proxy takes this pod out of
    /// the tunnel Service.
    #[arg(long, default_value_t = 5)]
    pub min_wait_s: u64,
}

#[derive(Args, Clone, Debug)]
pub struct GatewayArgs {
    /// The gateway pod's interface that receives the tunnel and the replies.
    #[arg(long, default_value = "eth0")]
    pub interface: String,
    /// File listing client pod IPv4 addresses, one a line (optionally followed
    /// by a name); re-read on change. Without it, clients come from the
    /// Kubernetes API (in-cluster service account, or KUBECONFIG).
    #[arg(long)]
    pub pods_file: Option<PathBuf>,
    /// Label selector of the client pods (Kubernetes source).
    #[arg(long, default_value = "egress=external")]
    pub selector: String,
    /// Only pods in these namespaces are clients (comma-separated or
    /// repeated); one watch per namespace. Default: all namespaces.
    #[arg(long, value_delimiter = ',', value_name = "NAMESPACE")]
    pub namespaces: Vec<String>,
    /// Only pods in namespaces whose labels match this selector are clients.
    #[arg(long, value_name = "SELECTOR")]
    pub namespace_selector: Option<String>,
    /// Where /metrics, /healthz and /readyz are served (to the kubelet and
    /// Prometheus; nothing there names a flow). `[::]` takes both families.
    #[arg(long, default_value = "[::]:9090")]
    pub metrics_addr: String,
    /// Where `egress-agent status` reads the flows (who talks to whom, NAT
    /// ports): a loopback address, so only processes inside the gateway
    /// pod (`kubectl exec`) can read them.
    #[arg(long, default_value = DEFAULT_STATUS_ADDR)]
    pub status_addr: String,
    /// Destination CIDR never to NAT, IPv4 or IPv6 (repeatable); such
    /// packets are dropped.
    #[arg(long = "exclude-cidr", value_name = "CIDR")]
    pub exclude_cidrs: Vec<String>,
    /// VXLAN network identifier the workers use.
    #[arg(long, default_value_t = DEFAULT_VNI)]
    pub vni: u32,
    /// UDP port the tunnel arrives on.
    #[arg(long, default_value_t = DEFAULT_VXLAN_PORT)]
    pub vxlan_port: u16,
    /// NAT source port range, inclusive; must not overlap the pod's
    /// net.ipv4.ip_local_port_range.
    #[arg(long, value_name = "LO-HI", default_value_t = format!("{DEFAULT_NAT_PORT_MIN}-{DEFAULT_NAT_PORT_MAX}"))]
    pub nat_ports: String,
    /// Random NAT ports a new flow tries before it is dropped as exhausted.
    #[arg(long, default_value_t = DEFAULT_PORT_RETRIES)]
    pub port_retries: u32,
    /// Size of each conntrack half (flows held at once).
    #[arg(long, default_value_t = egress_common::maps::CT_MAX_DEFAULT)]
    pub conntrack_size: u32,
    /// Flows one client pod may hold at once; beyond it, its new flows
    /// replace its own ended or unreplied ones, or are refused; nobody
    /// else's are touched [default: an eighth of --conntrack-size].
    #[arg(long, value_name = "N")]
    pub max_flows_per_client: Option<u32>,
    #[arg(long, default_value_t = DEFAULT_TCP_SYN_TIMEOUT_S)]
    pub tcp_syn_timeout_s: u32,
    #[arg(long, default_value_t = DEFAULT_TCP_ESTABLISHED_TIMEOUT_S)]
    pub tcp_established_timeout_s: u32,
    #[arg(long, default_value_t = DEFAULT_TCP_CLOSING_TIMEOUT_S)]
    pub tcp_closing_timeout_s: u32,
    /// How long a closed TCP flow keeps its NAT port when the remote closed
    /// first and so holds TIME_WAIT on it (Linux servers: 60 s).
    #[arg(long, default_value_t = DEFAULT_TCP_TIME_WAIT_TIMEOUT_S)]
    pub tcp_time_wait_timeout_s: u32,
    #[arg(long, default_value_t = DEFAULT_UDP_TIMEOUT_S)]
    pub udp_timeout_s: u32,
    #[arg(long, default_value_t = DEFAULT_ICMP_TIMEOUT_S)]
    pub icmp_timeout_s: u32,
    /// Development only: load this eBPF object instead of the embedded one.
    #[arg(long, hide = true)]
    pub ebpf_object: Option<PathBuf>,
    /// Seconds between sweeps that remove expired flows.
    #[arg(long, default_value_t = 10)]
    pub gc_interval_s: u64,
    /// No veth pair inside the pod: uploads go straight out instead of
    /// being re-aggregated with GRO (docs/benchmarks.md), and replies too
    /// big for one tunnel packet are dropped instead of being resegmented
    /// (aggregates) or sent as two fragments (replies without DF).
    #[arg(long)]
    pub no_gro_stage: bool,
    /// The state keeper's socket (`egress-agent keep`): the datapath is
    /// handed to it, and taken back from it at start, so a restarted agent
    /// carries on with the running program's flows.
    #[arg(long, value_name = "PATH")]
    pub keeper_socket: Option<PathBuf>,
}

#[derive(Args, Clone, Debug)]
pub struct KeepArgs {
    /// Where to listen (a volume shared with the gateway container).
    #[arg(long, value_name = "PATH", default_value = crate::keeper::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Args, Clone, Debug)]
pub struct DetachArgs {
    /// The state keeper's socket, if one runs.
    #[arg(long, value_name = "PATH", default_value = crate::keeper::DEFAULT_SOCKET)]
    pub keeper_socket: PathBuf,
    /// The interface the gateway is attached to.
    #[arg(long, default_value = "eth0")]
    pub interface: String,
}

#[derive(Args, Clone, Debug)]
pub struct JoinArgs {
    /// The gateway's tunnel address: the Service's ClusterIP or DNS name
    /// (e.g. egress-gateway.egress-system.svc).
    #[arg(long)]
    pub gateway: String,
    /// Destinations that stay on eth0 (pod and service CIDRs, IPv4 or IPv6;
    /// repeatable). Other IPv6 destinations go where --ipv6 says.
    #[arg(long = "cluster-cidr", value_name = "CIDR")]
    pub cluster_cidrs: Vec<String>,
    /// A labeled pod's external IPv6 (a dual-stack pod's): unreachable
    /// (fails at once), or routed into the tunnel like its IPv4, to leave
    /// from the gateway's IPv6 address. Route it only to a gateway that has
    /// one: a gateway without drops it (drop_ipv6_disabled) and the pod's
    /// connections hang instead of failing.
    #[arg(long, value_enum, default_value_t = Ipv6Egress::Unreachable)]
    pub ipv6: Ipv6Egress,
    #[arg(long, default_value_t = DEFAULT_VNI)]
    pub vni: u32,
    #[arg(long, default_value_t = DEFAULT_VXLAN_PORT)]
    pub vxlan_port: u16,
    /// The pod's own interface.
    #[arg(long, default_value = "eth0")]
    pub interface: String,
    /// Name of the tunnel device to create.
    #[arg(long, default_value = "egress0")]
    pub device: String,
    /// The pod's labels as a Downward API file: when given, the pod joins
    /// only while its labels match --selector and otherwise leaves (removes
    /// the tunnel, restores direct egress).
    #[arg(long, value_name = "PATH")]
    pub labels_file: Option<PathBuf>,
    /// The labels that put a pod behind the gateway (with --labels-file).
    #[arg(long, default_value = "egress=external")]
    pub selector: String,
    /// Another gateway, for the pods whose labels match SELECTOR (with
    /// --labels-file; repeatable; the first match wins, --selector's
    /// --gateway before these): teams or destinations with their own
    /// egress address.
    #[arg(long = "gateway-for", num_args = 2, value_names = ["SELECTOR", "ADDRESS"])]
    pub gateway_for: Vec<String>,
    /// Keep running and re-apply the decision whenever the labels change
    /// (a native sidecar), instead of applying it once.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: the headless Service whose DNS name lists the ready
    /// replicas of --gateway. The sidecar then points the tunnel at one of
    /// them itself, probes it through the tunnel ten times a second and
    /// moves to another when it stops answering (needs NET_RAW).
    #[arg(long, value_name = "NAME")]
    pub replicas: Option<String>,
}

/// What `join` does with a labeled pod's external IPv6 (`--ipv6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ipv6Egress {
    /// Unreachable: sending fails at once (ENETUNREACH).
    Unreachable,
    /// Into the tunnel, through the gateway's IPv6 address.
    Route,
}

#[derive(Args, Clone, Debug)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The interface the gateway is attached to.
    #[arg(long, default_value = "eth0")]
    pub interface: String,
    /// The agent's --status-addr; `status` asks the agent there first.
    #[arg(long, default_value = DEFAULT_STATUS_ADDR)]
    pub agent_addr: String,
}
