//! Loading the embedded object, configuring it and attaching it to the
//! interface's TC ingress hook.
use anyhow::{Context, Result};
use aya::{
    programs::{tc, SchedClassifier, TcAttachType},
    Ebpf, EbpfLoader,
};
use egress_common::{config::GatewayConfig, maps as names};

use super::maps::DatapathMaps;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress-ebpf.o"));

/// A loaded and configured datapath. Dropping it detaches the program (if
/// attached) and unloads it.
pub struct Datapath {
    ebpf: Ebpf,
    pub maps: DatapathMaps,
}

impl Datapath {
    /// Loads and verifies the program and writes `cfg` and the excluded
    /// CIDRs, without attaching it anywhere yet.
    pub fn load(
        cfg: &GatewayConfig,
        conntrack_size: u32,
        excluded: &[(std::net::Ipv4Addr, u8)],
        object_override: Option<&std::path::Path>,
    ) -> Result<Datapath> {
        raise_memlock_limit();
        let override_bytes = match object_override {
            Some(path) => Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
            None => None,
        };
        let object = override_bytes.as_deref().unwrap_or(OBJECT);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::CT_ORIGINAL, conntrack_size)
            .map_max_entries(names::CT_REPLY, conntrack_size)
            .load(object)
            .context("loading the eBPF object (is this a BPF-capable kernel, and do we have CAP_BPF/CAP_NET_ADMIN?)")?;
        let mut maps = DatapathMaps::from_maps(|name| ebpf.take_map(name))?;
        maps.write_config(cfg)?;
        for (addr, len) in excluded {
            maps.add_excluded(*addr, *len)?;
        }
        let mut datapath = Datapath { ebpf, maps };
        datapath.program()?.load().map_err(|err| {
            let errno = match &err {
                aya::programs::ProgramError::LoadError { io_error, .. } => io_error.raw_os_error(),
                _ => None,
            };
            // EPERM is a capability check, not the verifier (which says
            // EACCES or EINVAL): say which capabilities, not "refused".
            if errno == Some(libc::EPERM) {
                return anyhow::Error::new(err).context(
                    "the kernel did not allow loading the program: a TC classifier needs CAP_BPF and CAP_NET_ADMIN",
                );
            }
            // Without CAP_PERFMON the verifier also checks speculative
            // paths and stack spills more strictly; on kernels before 6.18
            // that refuses this program. Say what to add, in one line; the
            // verifier's own output is at debug level.
            if errno == Some(libc::EACCES) && !has_effective_capability(CAP_PERFMON) {
                tracing::debug!("verifier output: {err:#}");
                return anyhow::anyhow!(
                    "the kernel verifier refused the program without CAP_PERFMON: add PERFMON to the container's capabilities (with BPF and NET_ADMIN)"
                );
            }
            anyhow::Error::new(err).context("the kernel verifier refused the program")
        })?;
        datapath
            .classifier(names::GRO_STAGE_PROGRAM)?
            .load()
            .context("the kernel verifier refused the GRO stage's program")?;
        Ok(datapath)
    }

    /// The main classifier, for attaching or for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> Result<&mut SchedClassifier> {
        self.classifier(names::PROGRAM)
    }

    fn classifier(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the eBPF object"))?
            .try_into()?)
    }

    /// Attaches to `interface`'s TC ingress. Configuration is written
    /// before this, so no packet ever meets an unconfigured program.
    pub fn attach(&mut self, interface: &str) -> Result<()> {
        self.attach_classifier(names::PROGRAM, interface)
    }

    /// Attaches the GRO stage's classifier to the stage's receiving end.
    pub fn attach_gro_stage(&mut self, interface: &str) -> Result<()> {
        self.attach_classifier(names::GRO_STAGE_PROGRAM, interface)
    }

    fn attach_classifier(&mut self, name: &str, interface: &str) -> Result<()> {
        // Kernels before 6.6 attach through the clsact qdisc; it may exist.
        if let Err(e) = tc::qdisc_add_clsact(interface) {
            tracing::debug!("clsact qdisc on {interface}: {e} (already present is fine)");
        }
        // A netlink filter outlives a killed agent (a TCX link does not): a
        // leftover one would see every packet first, with its stale maps.
        match tc::qdisc_detach_program(interface, TcAttachType::Ingress, name) {
            Ok(()) => tracing::warn!("removed a leftover {name} filter from {interface}"),
            Err(e) => tracing::debug!("no leftover netlink filter on {interface}: {e}"),
        }
        self.classifier(name)?
            .attach(interface, TcAttachType::Ingress)
            .with_context(|| format!("attaching {name} to {interface} ingress"))?;
        Ok(())
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK; fine on 5.11+");
    }
}

/// `CAP_PERFMON` (linux/capability.h).
const CAP_PERFMON: u32 = 38;

/// Whether this process has `cap` in its effective set (/proc/self/status).
fn has_effective_capability(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << cap) != 0)
}
