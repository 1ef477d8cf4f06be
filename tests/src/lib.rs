//! Test harness for the egress gateway: real kernel, real network namespaces,
//! real traffic.
//!
//! The library builds a namespace "cluster" that mirrors a small Kubernetes
//! cluster (nodes with a pod bridge, pods, a Service VIP implemented with
//! iptables DNAT like kube-proxy does, and an "outside" server), runs the real
//! `egress-agent` binary inside it and drives real clients (curl, nc, ping,
//! iperf3) against it. The integration tests in `tests/tests/` use it, and so
//! does `cargo xtask demo`, which is why it is a library and not a test-only
//! module.
//!
//! Layout:
//! - [`netns`]: one network namespace, commands run inside it, cleanup.
//! - [`topology`]: the cluster (nodes, pods, outside, Service VIP).
//! - [`dual_stack`]: IPv6 twins of the cluster's addresses (dual-stack tests).
//! - [`process`]: background processes with captured logs ([`process::Daemon`]).
//! - [`agent`]: the `egress-agent` binary (gateway, join, status).
//! - `apiserver` (feature `apiserver`): a fake Kubernetes API server for the watcher's tests.
//! - [`scenario`]: the standard gateway setup used by the tests and the demo.
//! - [`mod@reference`]: a plain-Linux gateway (VXLAN + MASQUERADE) as a baseline.
//! - [`clients`]: curl / UDP / ping / iperf3 helpers returning parsed results.
//! - [`craft`]: hand-made TCP segments sent from a pod's raw socket (what a
//!   hostile tenant sends: lone RSTs, FINs, ACKs).
//! - [`load`]: the benchmark's load generators (connections/s, UDP packets/s,
//!   TCP request/response), own binaries started in the namespaces.
//! - [`soak`]: minutes of mixed traffic, then checks that the conntrack
//!   empties and the agent's memory stayed flat (`cargo xtask soak`).
//! - [`tools`]: installs the Debian packages the harness needs.
//! - [`podman`]: containers of the shipped image in the test namespaces.
//! - [`kubectl`]: kubectl from PyPI, for rendering the manifests.
//! - [`kustomize`]: the rendered manifests, and a container's env and args
//!   as the kubelet would make them.
//! - [`linkattr`]: link attributes Debian 12's iproute2 cannot set (the
//!   IPv4 GSO limit, for a sender of super-packets above 64 KiB).
//! - [`cidr`]: a tiny IPv4 CIDR type so addresses stay configuration.
//! - [`tos`]: UDP sockets that send with a TOS byte and report the TOS of
//!   what they receive (ECN across the tunnel).
//! - [`util`]: root check, workspace paths, temp dirs, polling.

pub mod agent;
#[cfg(feature = "apiserver")]
pub mod apiserver;
pub mod cidr;
pub mod clients;
pub mod craft;
pub mod dual_stack;
pub mod kubectl;
pub mod kustomize;
pub mod linkattr;
pub mod load;
pub mod netns;
pub mod podman;
pub mod process;
pub mod reference;
pub mod scenario;
pub mod soak;
pub mod tools;
pub mod topology;
pub mod tos;
pub mod util;

pub use agent::{Agent, Flow, Status};
pub use cidr::Ipv4Cidr;
pub use netns::Netns;
pub use process::Daemon;
pub use scenario::{EgressSetup, GatewayOptions};
pub use topology::{Cluster, ClusterConfig, Pod};
pub use util::require_root;
