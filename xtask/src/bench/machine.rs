//! What the numbers were measured on, printed with the table and stored in
//! the JSON.

use std::process::Command;

use serde_json::{json, Value};

use crate::run::workspace_root;

#[derive(Clone, Debug)]
pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    /// `git describe --always --dirty` of the checkout that was built.
    pub revision: String,
}

impl Machine {
    pub fn read() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
            .unwrap_or("unknown")
            .to_string();
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let revision = Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu_model,
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_gib: memory_kib / (1024.0 * 1024.0),
            revision,
        }
    }

    /// One line for the table's header.
    pub fn describe(&self) -> String {
        format!(
            "Linux {}, {} ({} cores), {:.0} GiB RAM, revision {}",
            self.kernel, self.cpu_model, self.cores, self.memory_gib, self.revision
        )
    }

    pub fn to_json(&self) -> Value {
        json!({
            "kernel": self.kernel,
            "cpu_model": self.cpu_model,
            "cores": self.cores,
            "memory_gib": self.memory_gib,
            "revision": self.revision,
        })
    }
}
