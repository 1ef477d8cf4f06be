//! What the gateway tells its operators: `/healthz`, `/readyz` and
//! Prometheus text `/metrics` on `--metrics-addr`; `/status` (what
//! `egress-agent status` prints) on the loopback `--status-addr`; and the
//! warning lines of the sweep (`exhaustion`, `refusals`).
pub mod exhaustion;
pub mod metrics;
pub mod refusals;
mod server;

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc,
};

pub use server::{bind_status, serve_metrics, serve_status, StatusSource};

use crate::pods::{unix_now_s, SourceHealth};

/// Liveness and readiness, written by the main loop.
pub struct Health {
    /// The datapath is attached and the first full client list applied.
    pub ready: Arc<AtomicBool>,
    /// Unix time the main loop last went round; a loop stuck for longer
    /// than `stall_limit_s` fails liveness, so Kubernetes restarts us.
    pub loop_alive_unix_s: AtomicU64,
    pub stall_limit_s: u64,
    pub source: Arc<SourceHealth>,
}

impl Health {
    pub fn new(source: Arc<SourceHealth>, stall_limit_s: u64) -> Health {
        Health {
            ready: Arc::new(AtomicBool::new(false)),
            loop_alive_unix_s: AtomicU64::new(unix_now_s()),
            stall_limit_s,
            source,
        }
    }

    pub fn loop_alive(&self) {
        self.loop_alive_unix_s.store(unix_now_s(), Ordering::Relaxed);
    }

    /// `Ok` while live, else why not.
    pub fn liveness(&self) -> Result<(), String> {
        let idle = unix_now_s().saturating_sub(self.loop_alive_unix_s.load(Ordering::Relaxed));
        if idle > self.stall_limit_s {
            return Err(format!("the main loop has not run for {idle} s"));
        }
        Ok(())
    }

    /// `Ok` once ready, else what is still missing.
    pub fn readiness(&self) -> Result<(), String> {
        if self.ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !self.source.synced.load(Ordering::Relaxed) {
            return Err(format!(
                "waiting for the first full pod list (pod source {})",
                self.source.state().name()
            ));
        }
        Err("attaching the datapath and applying the client list".to_string())
    }
}
