//! The standard egress setup on top of a [`Cluster`]: the echo server in the
//! outside namespace, `egress-agent gateway` in the gateway pod fed by a
//! pods file, and `egress-agent join` in the worker pods.
//!
//! Every integration test and the demo start from this, so it lives in one
//! place; options cover what tests vary (listed pods, excluded CIDRs, extra
//! agent flags, the topology itself).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::agent::{self, Agent, GatewayArgs, JoinArgs, Status};
use crate::clients::{self, EchoReply, ECHO_UDP_PORT};
use crate::process::Daemon;
use crate::topology::{Cluster, ClusterConfig, Pod};
use crate::util::TempDir;

/// What to start.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// The topology.
    pub cluster: ClusterConfig,
    /// Pods written to the pods file (the allowed clients).
    pub listed: Vec<String>,
    /// Pods that run `egress-agent join`.
    pub joined: Vec<String>,
    /// `--exclude-cidr` values.
    pub exclude_cidrs: Vec<String>,
    /// More `gateway` flags, appended verbatim.
    pub extra_args: Vec<String>,
    /// The agent binary; `None` means [`agent::agent_binary`].
    pub agent_binary: Option<PathBuf>,
    /// The echo server binary; `None` means [`clients::echo_server_binary`].
    pub echo_server: Option<PathBuf>,
    /// Run `egress-agent keep` in the gateway pod before the agent, and
    /// give the agent `--keeper-socket` (as the Deployment's sidecar does).
    pub state_keeper: bool,
    /// Give every pod and the outside IPv6 twins of their addresses
    /// ([`crate::dual_stack`]) before the agent starts (so the gateway has
    /// an IPv6 address to translate to), and list the pods with theirs.
    /// Needs `cluster.disable_ipv6: false`. `join` still runs as
    /// [`EgressSetup::join_args`] says (`--ipv6 unreachable`).
    pub dual_stack: bool,
}

impl Default for GatewayOptions {
    /// The default cluster; `w1` and `w3` listed; `w1`, `w2`, `w3` joined.
    fn default() -> Self {
        GatewayOptions {
            cluster: ClusterConfig::default(),
            listed: vec!["w1".into(), "w3".into()],
            joined: vec!["w1".into(), "w2".into(), "w3".into()],
            exclude_cidrs: Vec::new(),
            extra_args: Vec::new(),
            agent_binary: None,
            echo_server: None,
            state_keeper: false,
            dual_stack: false,
        }
    }
}

impl GatewayOptions {
    /// Defaults with an explicit echo server binary (integration tests pass
    /// `env!("CARGO_BIN_EXE_echo-server")`).
    pub fn with_echo_server(path: &str) -> GatewayOptions {
        GatewayOptions { echo_server: Some(PathBuf::from(path)), ..Default::default() }
    }
}

/// The pods file read by `egress-agent gateway --pods-file`.
#[derive(Debug)]
pub struct PodsFile {
    path: PathBuf,
    _dir: TempDir,
}

impl PodsFile {
    /// Creates an empty pods file in a fresh temporary directory.
    pub fn create() -> Result<PodsFile> {
        let dir = TempDir::new("pods")?;
        let path = dir.path().join("pods.txt");
        let file = PodsFile { path, _dir: dir };
        file.write(&[])?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the content with one `IP name` line per entry. The new
    /// content is written to a sibling file and renamed over the old one, so
    /// the agent never reads a half-written list (this is also how
    /// Kubernetes updates mounted ConfigMaps: the file is replaced, not
    /// rewritten in place).
    pub fn write(&self, entries: &[(Ipv4Addr, &str)]) -> Result<()> {
        let entries: Vec<_> = entries.iter().map(|(ip, name)| (*ip, None, *name)).collect();
        self.write_dual(&entries)
    }

    /// [`PodsFile::write`] with each pod's IPv6 address, if it has one
    /// (`IPv4 IPv6 name`).
    pub fn write_dual(&self, entries: &[(Ipv4Addr, Option<Ipv6Addr>, &str)]) -> Result<()> {
        let mut text =
            String::from("# egress clients: one IPv4 address a line, its IPv6 if any, then a name\n");
        for (ip, ipv6, name) in entries {
            match ipv6 {
                Some(ipv6) => text.push_str(&format!("{ip} {ipv6} {name}\n")),
                None => text.push_str(&format!("{ip} {name}\n")),
            }
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).with_context(|| format!("replacing {}", self.path.display()))
    }
}

/// `egress-agent keep` in the gateway pod, its socket in a directory of
/// its own (the emptyDir of the Deployment).
#[derive(Debug)]
pub struct StateKeeper {
    pub daemon: Daemon,
    pub socket: PathBuf,
    _dir: TempDir,
}

impl StateKeeper {
    pub fn start(ns: &crate::netns::Netns, agent_binary: &Path) -> Result<StateKeeper> {
        let dir = TempDir::new("keeper")?;
        let socket = dir.path().join("keeper.sock");
        let daemon = Self::spawn(ns, agent_binary, &socket)?;
        Ok(StateKeeper { daemon, socket, _dir: dir })
    }

    /// A new keeper on the same socket (the sidecar restarted).
    pub fn restart(&mut self, ns: &crate::netns::Netns, agent_binary: &Path) -> Result<()> {
        let _ = self.daemon.stop();
        self.daemon = Self::spawn(ns, agent_binary, &self.socket)?;
        Ok(())
    }

    fn spawn(ns: &crate::netns::Netns, agent_binary: &Path, socket: &Path) -> Result<Daemon> {
        let argv = [
            agent_binary.display().to_string(),
            "keep".into(),
            "--socket".into(),
            socket.display().to_string(),
        ];
        let mut daemon = Daemon::spawn(ns, "egress-agent keep", &argv)?;
        daemon.wait_for_line("the keeper's listening line", Duration::from_secs(10), |l| {
            l.contains("listening")
        })?;
        Ok(daemon)
    }
}

/// A cluster with the echo server, the gateway agent and joined workers.
/// Dropping it stops the agent first (SIGTERM), then the servers, then
/// deletes the namespaces.
#[derive(Debug)]
pub struct EgressSetup {
    // Field order is drop order.
    pub agent: Agent,
    pub keeper: Option<StateKeeper>,
    pub echo: Daemon,
    pub pods_file: PodsFile,
    pub cluster: Cluster,
    pub agent_binary: PathBuf,
    /// What the agent was started with (to start another the same way).
    pub agent_args: GatewayArgs,
    /// Whether the pods have IPv6 twins ([`GatewayOptions::dual_stack`]).
    pub dual_stack: bool,
}

impl EgressSetup {
    /// Builds the cluster, starts the echo server on every outside server
    /// address, writes the pods file, starts the gateway agent (waiting for
    /// its ready line) and joins the workers.
    pub fn start(opts: GatewayOptions) -> Result<EgressSetup> {
        crate::util::require_root()?;
        // Resolve binaries first: a missing binary is the likeliest failure
        // and should not cost a cluster build.
        let agent_binary = match opts.agent_binary {
            Some(p) => p,
            None => agent::agent_binary()?,
        };
        let echo_binary = match opts.echo_server {
            Some(p) => p,
            None => clients::echo_server_binary()?,
        };
        let cluster = Cluster::build(opts.cluster)?;
        if opts.dual_stack {
            crate::dual_stack::add_ipv6(&cluster)?;
        }
        let echo = clients::start_echo_server(cluster.outside(), &echo_binary, cluster.server_ips())?;
        let pods_file = PodsFile::create()?;
        let entries: Vec<_> =
            opts.listed.iter().map(|n| listed_entry(&cluster, n, opts.dual_stack)).collect();
        pods_file.write_dual(&entries)?;

        let mut args = GatewayArgs::new(pods_file.path());
        args.exclude_cidrs = opts.exclude_cidrs.clone();
        args.extra = opts.extra_args.clone();
        let keeper = match opts.state_keeper {
            true => Some(StateKeeper::start(&cluster.gateway().ns, &agent_binary)?),
            false => None,
        };
        if let Some(keeper) = &keeper {
            args.extra.extend(["--keeper-socket".into(), keeper.socket.display().to_string()]);
        }
        let agent = Agent::start_gateway(&cluster.gateway().ns, &agent_binary, &args)?;

        let setup = EgressSetup {
            agent,
            keeper,
            echo,
            pods_file,
            cluster,
            agent_binary,
            agent_args: args,
            dual_stack: opts.dual_stack,
        };
        for name in &opts.joined {
            setup.join(name)?;
        }
        Ok(setup)
    }

    /// Runs `egress-agent join` in pod `name` (idempotent on the agent side).
    pub fn join(&self, name: &str) -> Result<()> {
        let args = self.join_args();
        agent::join(&self.pod(name).ns, &self.agent_binary, &args)
            .with_context(|| format!("joining pod {name}"))?;
        Ok(())
    }

    /// The `join` arguments for this cluster: the Service VIP as gateway and
    /// the pod and Service CIDRs kept on eth0.
    pub fn join_args(&self) -> JoinArgs {
        JoinArgs {
            gateway: self.cluster.service_vip().to_string(),
            cluster_cidrs: self.cluster.cluster_cidrs().iter().map(ToString::to_string).collect(),
            vni: None,
            vxlan_port: None,
        }
    }

    /// Rewrites the pods file to list exactly `names`.
    pub fn set_listed(&self, names: &[&str]) -> Result<()> {
        let entries: Vec<_> = names.iter().map(|n| listed_entry(&self.cluster, n, self.dual_stack)).collect();
        self.pods_file.write_dual(&entries)
    }

    pub fn pod(&self, name: &str) -> &Pod {
        self.cluster.pod(name)
    }

    /// Another gateway pod beside the first (same node, same ephemeral
    /// port range, so the same agent flags fit it), at host `host` of the
    /// node's pod CIDR. No agent is started in it.
    pub fn add_gateway_pod(&mut self, name: &str, host: u32) -> Result<Pod> {
        let first = self.cluster.gateway().clone();
        let port_range =
            self.cluster.config().pods.iter().find(|p| p.name == first.name).and_then(|p| p.local_port_range);
        let ip = self.cluster.node(first.node).pod_cidr.host(host)?;
        self.cluster.add_pod_with(crate::topology::PodConfig {
            name: name.into(),
            node: first.node,
            ip,
            local_port_range: port_range,
        })
    }

    pub fn gateway_ip(&self) -> Ipv4Addr {
        self.cluster.gateway().ip
    }

    pub fn server_ip(&self) -> Ipv4Addr {
        self.cluster.server_ip()
    }

    /// The echo server's UDP address on the main server IP.
    pub fn udp_server(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.server_ip(), ECHO_UDP_PORT)
    }

    /// Parsed `status --json`.
    pub fn status(&self) -> Result<Status> {
        self.agent.status()
    }

    /// One counter from `status --json`.
    pub fn counter(&self, name: &str) -> Result<u64> {
        self.status()?.counter(name)
    }

    /// curl from pod `name` to the echo server (main address).
    pub fn curl_from(&self, name: &str, timeout: Duration) -> Result<EchoReply> {
        clients::curl_echo(&self.pod(name).ns, self.server_ip(), timeout)
    }
}

/// Pod `name`'s pods-file line: its IPv4 address, its IPv6 twin in a
/// dual-stack setup, its name.
fn listed_entry<'a>(
    cluster: &Cluster,
    name: &'a str,
    dual_stack: bool,
) -> (Ipv4Addr, Option<Ipv6Addr>, &'a str) {
    let ip = cluster.pod(name).ip;
    (ip, dual_stack.then(|| crate::dual_stack::twin(ip)), name)
}
