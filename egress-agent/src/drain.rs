//! `egress-agent drain`: the gateway pod's preStop hook. A terminating
//! replica should cut nothing that ends within the pod's grace period:
//!
//! 1. It asks the agent to mark its probe answers (`POST /drain`): every
//!    worker steering with `--replicas` takes its new connections to
//!    another replica at its first moment without a connection here.
//! 2. It waits, while the datapath forwards as before, until no TCP
//!    connection through this replica is left (and at least `--min-wait-s`,
//!    for the workers that leave only when kube-proxy drops this pod from
//!    the tunnel Service). The kubelet ends the wait at the grace period.
//!
//! Then the kubelet stops the agent, and the datapath goes with it.
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::{cli::DrainArgs, status};

const POLL_INTERVAL: Duration = Duration::from_secs(1);

pub fn run(args: DrainArgs) -> Result<()> {
    let started = Instant::now();
    let min_wait = Duration::from_secs(args.min_wait_s);
    let mut open = ask_to_drain(&args.agent_addr).with_context(|| {
        format!(
            "no gateway agent answered at {} to start draining: is it running in this pod? (pass --agent-addr if its --status-addr is not the default)",
            args.agent_addr
        )
    })?;
    println!("draining: workers move their new connections to other replicas; waiting for this one's to end");
    let mut last = None;
    loop {
        if open == 0 && started.elapsed() >= min_wait {
            println!("drained after {:.1} s: no TCP connection left", started.elapsed().as_secs_f64());
            return Ok(());
        }
        if last != Some(open) {
            println!("{open} TCP connections still open");
            last = Some(open);
        }
        std::thread::sleep(POLL_INTERVAL);
        open = match ask_to_drain(&args.agent_addr) {
            Ok(open) => open,
            Err(err) => {
                println!("the agent no longer answers ({err:#}): nothing left to wait for");
                return Ok(());
            }
        };
    }
}

/// `POST /drain` (idempotent): the TCP connections the gateway still carries.
fn ask_to_drain(agent_addr: &str) -> Result<usize> {
    let body = status::agent_request(agent_addr, "POST", "/drain")?;
    body.trim().parse().with_context(|| format!("the agent's /drain answered {:?}, not a count", body.trim()))
}
