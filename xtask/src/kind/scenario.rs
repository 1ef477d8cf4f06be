//! The end-to-end checks, on a cluster whose worker node is the egress node
//! and whose example workload runs on the control-plane node. The echo
//! server tells which node's address a request left with:
//!
//! 1. unlabeled pods egress directly (the control-plane node's address);
//! 2. rollout: labeling one running pod moves it to the gateway (the worker
//!    node's address) through the `join --follow` sidecar; the other pod
//!    stays direct;
//! 3. rollback: removing the label moves it back;
//! 4. the label in the Deployment's template: new pods start inside the
//!    tunnel, set up by the `join` init container before the app runs.
use std::{
    net::Ipv4Addr,
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{cluster::Cluster, echo};
use crate::run::workspace_root;

const DEMO_NAMESPACE: &str = "egress-demo";
const DEMO_SELECTOR: &str = "app.kubernetes.io/name=egress-demo-app";
/// The kubelet refreshes a Downward API file within about a minute of a
/// label change; the sidecar then acts within seconds.
const LABEL_CHANGE_TIMEOUT: Duration = Duration::from_secs(180);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);

pub fn run(cluster: &Cluster, image: &str, echo_ip: Ipv4Addr) -> Result<()> {
    let gateway_node = cluster.worker_node();
    let workload_node = cluster.control_plane_node();
    cluster.load_image(image)?;
    cluster.kubectl_run(&["label", "node", &gateway_node, "egress-gateway.io/node=true"])?;
    cluster.kubectl_run(&["taint", "node", &gateway_node, "egress-gateway.io/node=true:NoSchedule"])?;

    let overlay = workspace_root().join("deploy/overlays/kind");
    cluster.kubectl_run(&["apply", "-k", overlay.to_str().context("non-UTF-8 path")?])?;
    cluster.kubectl_run(&[
        "-n",
        "egress-system",
        "rollout",
        "status",
        "deployment/egress-gateway",
        "--timeout=240s",
    ])?;
    cluster.kubectl_run(&["-n", DEMO_NAMESPACE, "rollout", "status", "deployment/app", "--timeout=240s"])?;

    let gateway_ip = cluster.node_ip(&gateway_node)?;
    let direct_ip = cluster.node_ip(&workload_node)?;
    println!("kind-test: gateway node {gateway_ip}, workload node {direct_ip}, echo server {echo_ip}");
    let probe = Probe { cluster, echo_ip };

    let pods = probe.pods(DEMO_SELECTOR)?;
    let [labeled, unlabeled] = pods.as_slice() else { bail!("expected 2 workload pods, found {pods:?}") };

    println!("kind-test: 1. unlabeled pods egress with their own node's address");
    for pod in &pods {
        probe.wait_until_seen_as(pod, direct_ip, STARTUP_TIMEOUT)?;
    }

    println!("kind-test: 2. labeling {labeled}: it moves to the gateway, {unlabeled} stays direct");
    cluster.kubectl_run(&["-n", DEMO_NAMESPACE, "label", "pod", labeled, "egress=external"])?;
    probe.wait_until_seen_as(labeled, gateway_ip, LABEL_CHANGE_TIMEOUT)?;
    probe.expect_seen_as(unlabeled, direct_ip)?;

    println!("kind-test: 3. removing the label from {labeled}: it moves back");
    cluster.kubectl_run(&["-n", DEMO_NAMESPACE, "label", "pod", labeled, "egress-"])?;
    probe.wait_until_seen_as(labeled, direct_ip, LABEL_CHANGE_TIMEOUT)?;

    println!("kind-test: 4. the label in the pod template: new pods start inside the tunnel");
    cluster.kubectl_run(&[
        "-n",
        DEMO_NAMESPACE,
        "patch",
        "deployment",
        "app",
        "--type=merge",
        "--patch",
        r#"{"spec":{"template":{"metadata":{"labels":{"egress":"external"}}}}}"#,
    ])?;
    cluster.kubectl_run(&["-n", DEMO_NAMESPACE, "rollout", "status", "deployment/app", "--timeout=240s"])?;
    let new_pods = probe.pods(&format!("{DEMO_SELECTOR},egress=external"))?;
    if new_pods.is_empty() {
        bail!("no labeled pods after the rollout");
    }
    for pod in &new_pods {
        probe.wait_until_seen_as(pod, gateway_ip, STARTUP_TIMEOUT)?;
    }
    Ok(())
}

/// Requests to the echo server from inside the workload pods.
struct Probe<'a> {
    cluster: &'a Cluster,
    echo_ip: Ipv4Addr,
}

impl Probe<'_> {
    /// Running pods of the demo workload matching `selector`, by name.
    fn pods(&self, selector: &str) -> Result<Vec<String>> {
        let names = self.cluster.kubectl_output(&[
            "-n",
            DEMO_NAMESPACE,
            "get",
            "pods",
            "-l",
            selector,
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])?;
        let mut names: Vec<String> = names.split_whitespace().map(str::to_string).collect();
        names.sort();
        Ok(names)
    }

    /// The address the echo server saw for one request from `pod`, or None
    /// if the request failed.
    fn seen_as(&self, pod: &str) -> Option<String> {
        let url = format!("http://{}:{}/", self.echo_ip, echo::PORT);
        self.cluster
            .kubectl_output(&[
                "-n",
                DEMO_NAMESPACE,
                "exec",
                pod,
                "-c",
                "app",
                "--",
                "curl",
                "-sS",
                "--max-time",
                "5",
                &url,
            ])
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn expect_seen_as(&self, pod: &str, want: Ipv4Addr) -> Result<()> {
        match self.seen_as(pod) {
            Some(seen) if seen == want.to_string() => Ok(()),
            other => bail!("{pod}: the echo server saw {other:?}, expected {want}"),
        }
    }

    /// Polls until a request from `pod` arrives from `want`. Requests in
    /// between may fail (a label change passes through a moment where the
    /// NetworkPolicy already applies and the tunnel is not there yet: fail
    /// closed) or still show the old address.
    fn wait_until_seen_as(&self, pod: &str, want: Ipv4Addr, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < timeout {
            last = self.seen_as(pod);
            if last.as_deref() == Some(want.to_string().as_str()) {
                println!("kind-test:    {pod} is seen as {want} (after {}s)", start.elapsed().as_secs());
                return Ok(());
            }
            sleep(Duration::from_secs(5));
        }
        bail!("{pod}: after {}s the echo server still sees {last:?}, expected {want}", timeout.as_secs())
    }
}
