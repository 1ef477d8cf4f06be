//! Why the kernel refused a bpf(2) call with EPERM, said in one line with
//! what to do. Two causes look the same from here: a missing capability,
//! and a container runtime's seccomp profile that allows bpf(2) only with
//! CAP_SYS_ADMIN (CRI-O's and podman's default, containerd's before 1.7),
//! which no capability we ask for can pass.
use anyhow::anyhow;

/// Capability numbers (linux/capability.h).
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Whether this process has `cap` in its effective set.
pub fn has_effective_capability(cap: u32) -> bool {
    status_field("CapEff:")
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|mask| mask & (1 << cap) != 0)
}

/// Whether a seccomp filter applies to this process (`Seccomp: 2`).
pub fn seccomp_filtered() -> bool {
    status_field("Seccomp:").as_deref() == Some("2")
}

fn status_field(prefix: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| line.strip_prefix(prefix)).map(|value| value.trim().to_string())
}

/// The errno of the first I/O error in `err`'s chain, if any.
pub fn errno_of(err: &anyhow::Error) -> Option<i32> {
    err.chain().find_map(|cause| cause.downcast_ref::<std::io::Error>()).and_then(|io| io.raw_os_error())
}

/// The error for `doing` (e.g. "creating the program's maps") refused with
/// EPERM, naming its likely cause.
pub fn bpf_refused(doing: &str) -> anyhow::Error {
    let capable = (has_effective_capability(CAP_BPF) && has_effective_capability(CAP_NET_ADMIN))
        || has_effective_capability(CAP_SYS_ADMIN);
    if capable && seccomp_filtered() {
        anyhow!(
            "bpf(2) was refused while {doing} although CAP_BPF and CAP_NET_ADMIN are there: the container's seccomp profile blocks it; add the component deploy/components/seccomp-unconfined to the overlay (or give the pod a profile that allows bpf)"
        )
    } else {
        anyhow!("the kernel did not allow {doing}: a TC classifier needs CAP_BPF and CAP_NET_ADMIN")
    }
}
