//! A throwaway two-node kind cluster (control-plane + worker) with its own
//! kubeconfig file, so the user's ~/.kube/config is never touched.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::run::{output, status};

/// kind's default networks, written out so they visibly match the CIDRs in
/// deploy/overlays/example and deploy/examples/worker.
const CLUSTER_CONFIG: &str = "\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  podSubnet: \"10.244.0.0/16\"
  serviceSubnet: \"10.96.0.0/12\"
nodes:
  - role: control-plane
  - role: worker
";

pub struct Cluster {
    pub name: String,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

impl Cluster {
    /// The cluster's handle; nothing is created yet.
    pub fn new(name: &str, work_dir: &Path, kubectl: PathBuf) -> Cluster {
        Cluster { name: name.to_string(), kubeconfig: work_dir.join("kubeconfig"), kubectl }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn create(&self) -> Result<()> {
        let config = self.kubeconfig.with_file_name("kind-config.yaml");
        std::fs::write(&config, CLUSTER_CONFIG)?;
        status(
            Command::new("kind")
                .args(["create", "cluster", "--name", &self.name, "--wait", "180s", "--config"])
                .arg(&config)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig),
        )
        .context("creating the kind cluster")
    }

    /// Removes the cluster; a cluster that was never created is fine.
    pub fn delete(&self) -> Result<()> {
        status(
            Command::new("kind")
                .args(["delete", "cluster", "--name", &self.name, "--kubeconfig"])
                .arg(&self.kubeconfig),
        )
    }

    /// Copies a local docker image onto every node.
    pub fn load_image(&self, image: &str) -> Result<()> {
        status(Command::new("kind").args(["load", "docker-image", image, "--name", &self.name]))
            .with_context(|| format!("loading {image} into the kind cluster"))
    }

    pub fn control_plane_node(&self) -> String {
        format!("{}-control-plane", self.name)
    }

    pub fn worker_node(&self) -> String {
        format!("{}-worker", self.name)
    }

    /// `kubectl` against this cluster.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// Runs kubectl with `args`, output shown; fails if it fails.
    pub fn kubectl_run(&self, args: &[&str]) -> Result<()> {
        status(self.kubectl().args(args))
    }

    /// Runs kubectl with `args` and returns its stdout.
    pub fn kubectl_output(&self, args: &[&str]) -> Result<String> {
        output(self.kubectl().args(args))
    }

    /// The node's InternalIP (its address on the `kind` docker network):
    /// what a server outside the cluster sees for traffic that the node
    /// masquerades.
    pub fn node_ip(&self, node: &str) -> Result<Ipv4Addr> {
        let text = self.kubectl_output(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
        ])?;
        text.split_whitespace()
            .find_map(|a| a.parse().ok())
            .with_context(|| format!("node {node} has no IPv4 InternalIP (got {text:?})"))
    }

    /// What a person would look at first when the test fails.
    pub fn print_diagnostics(&self) {
        println!("kind-test: ---- diagnostics ----");
        let commands: &[&[&str]] = &[
            &["get", "nodes", "-o", "wide"],
            &["get", "pods", "-A", "-o", "wide"],
            &["-n", "egress-system", "describe", "pods"],
            &["-n", "egress-system", "logs", "deployment/egress-gateway", "--tail=100"],
            &["-n", "egress-demo", "describe", "pods"],
            &[
                "-n",
                "egress-demo",
                "logs",
                "-l",
                "app.kubernetes.io/name=egress-demo-app",
                "-c",
                "egress-follow",
                "--prefix",
                "--tail=30",
            ],
        ];
        for args in commands {
            println!("kind-test: $ kubectl {}", args.join(" "));
            let _ = self.kubectl().args(*args).status();
        }
    }
}
