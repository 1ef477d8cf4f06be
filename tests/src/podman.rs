//! Podman, as the container test drives it: containers joined to the test
//! cluster's pod namespaces (`--network ns:/run/netns/NAME`), every one
//! removed again on drop.
//!
//! This machine's settings live in one containers.conf that every command
//! reads (`CONTAINERS_CONF`): runc with cgroupfs (crun refuses the hybrid
//! cgroup layout) and ulimits at or below the caller's hard limits (root
//! here lacks CAP_SYS_RESOURCE, and podman's defaults are higher). It
//! replaces Debian's default file rather than adding to it.
use std::{
    process::{Command, Output},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::util::TempDir;

const CONTAINERS_CONF: &str = "\
[containers]
default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]
[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
";

/// A podman with this machine's settings; removes its containers on drop.
pub struct Podman {
    conf: TempDir,
    /// Prefix of every container name, so two test runs never meet.
    prefix: String,
    started: std::sync::Mutex<Vec<String>>,
}

impl Podman {
    pub fn new(prefix: &str) -> Result<Podman> {
        crate::tools::ensure_tools(crate::tools::PODMAN)?;
        let conf = TempDir::new("podman")?;
        std::fs::write(conf.path().join("containers.conf"), CONTAINERS_CONF)?;
        let podman = Podman { conf, prefix: prefix.to_string(), started: Default::default() };
        podman.remove_stale();
        Ok(podman)
    }

    /// Containers and /dev/shm folders left by test processes that were
    /// killed before they could remove them.
    fn remove_stale(&self) {
        let listed = self.run(&["ps".into(), "--all".into(), "--format".into(), "{{.Names}}".into()]);
        let stale: Vec<String> = listed
            .unwrap_or_default()
            .lines()
            .filter(|n| crate::netns::is_stale(n))
            .map(str::to_string)
            .collect();
        self.remove(stale);
        for entry in std::fs::read_dir("/dev/shm").into_iter().flatten().flatten() {
            if crate::netns::is_stale(&entry.file_name().to_string_lossy()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Removes containers `names` now, running or not. `--ignore`: a
    /// `--rm` container is gone already, and one missing name must not
    /// keep the others.
    fn remove(&self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        let mut args =
            vec!["rm".to_string(), "--force".into(), "--ignore".into(), "--time".into(), "0".into()];
        args.extend(names);
        let _ = self.output(&args);
    }

    /// The full name of container `name`.
    pub fn name(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.conf.path().join("containers.conf"));
        cmd
    }

    /// `podman ARGS`, failing with its stderr.
    pub fn run(&self, args: &[String]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!("`podman {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn output(&self, args: &[String]) -> Result<Output> {
        self.command().args(args).output().context("running podman")
    }

    /// `podman run --name NAME FLAGS IMAGE ARGS` (detached with `-d` in
    /// `flags`); the container is removed on drop.
    pub fn start(&self, name: &str, flags: &[String], image: &str, args: &[String]) -> Result<String> {
        let full = self.name(name);
        let _ = self.output(&["rm".into(), "--force".into(), full.clone()]);
        self.started.lock().unwrap().push(full.clone());
        let mut all = vec!["run".to_string(), "--name".into(), full];
        all.extend_from_slice(flags);
        all.push(image.to_string());
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// Everything container `name` printed, stdout and stderr.
    pub fn logs(&self, name: &str) -> String {
        match self.output(&["logs".into(), self.name(name)]) {
            Ok(out) => {
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
            }
            Err(e) => format!("(no logs: {e:#})"),
        }
    }

    /// Whether container `name` is running.
    pub fn running(&self, name: &str) -> bool {
        self.run(&["inspect".into(), "--format".into(), "{{.State.Running}}".into(), self.name(name)])
            .is_ok_and(|state| state.trim() == "true")
    }

    /// Waits until container `name` has exited; its exit code.
    pub fn wait_exit(&self, name: &str, timeout: Duration) -> Result<i32> {
        crate::util::wait_for(
            &format!("container {name} to exit"),
            timeout,
            Duration::from_millis(200),
            || Ok((!self.running(name)).then_some(())),
        )?;
        let code =
            self.run(&["inspect".into(), "--format".into(), "{{.State.ExitCode}}".into(), self.name(name)])?;
        code.trim().parse().with_context(|| format!("exit code {code:?}"))
    }

    /// Waits until container `name` printed a line that satisfies `ready`;
    /// fails with its log if it exits first or the time runs out.
    pub fn wait_for_line(&self, name: &str, timeout: Duration, ready: impl Fn(&str) -> bool) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let logs = self.logs(name);
            if logs.lines().any(&ready) {
                return Ok(());
            }
            if !self.running(name) {
                bail!("container {name} exited before it was ready; its output:\n{logs}");
            }
            if std::time::Instant::now() > deadline {
                bail!("container {name} not ready after {timeout:?}; its output:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `podman exec NAME COMMAND`: its stdout, or its stderr as the error.
    pub fn exec(&self, name: &str, command: &[&str]) -> Result<String> {
        let mut all = vec!["exec".to_string(), self.name(name)];
        all.extend(command.iter().map(|s| s.to_string()));
        self.run(&all)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.started.lock().unwrap());
        self.remove(names);
    }
}

/// What the kubelet would give container `c` of `workload`, as podman
/// flags: user, privilege escalation, read-only root, capabilities, the
/// seccomp profile (the container's, else the pod's; none at all is
/// Unconfined, as on a kubelet without SeccompDefault), the pod's sysctls,
/// and each volume mount from `volumes` (name → host folder standing in for
/// it). The container joins the network namespace `netns`. A setting this
/// cannot reproduce is an error, so a manifest change never slips past.
pub fn kubelet_flags(
    workload: &serde_json::Value,
    c: &serde_json::Value,
    netns: &str,
    volumes: &std::collections::BTreeMap<&str, std::path::PathBuf>,
) -> Result<Vec<String>> {
    let pod = crate::kustomize::pod_spec(workload);
    let name = c["name"].as_str().unwrap_or("?");
    let security = &c["securityContext"];
    let pod_security = &pod["securityContext"];
    let mut flags = vec!["--network".to_string(), format!("ns:/run/netns/{netns}")];

    if security["privileged"] == true {
        bail!("{name}: privileged containers are not emulated (nor allowed by the manifests' rules)");
    }
    let user = security["runAsUser"].as_u64().or(pod_security["runAsUser"].as_u64());
    let non_root = security["runAsNonRoot"].as_bool().or(pod_security["runAsNonRoot"].as_bool());
    if non_root == Some(true) && user.unwrap_or(0) == 0 {
        bail!("{name}: runAsNonRoot with uid 0: the kubelet would refuse to start it");
    }
    if let Some(user) = user {
        flags.extend(["--user".into(), user.to_string()]);
    }
    if security["allowPrivilegeEscalation"] == false {
        flags.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    if security["readOnlyRootFilesystem"] == true {
        // Kubernetes adds no writable tmpfs; podman would, on /tmp and /run.
        flags.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    for cap in crate::kustomize::strings(&security["capabilities"]["drop"]) {
        flags.extend(["--cap-drop".into(), cap]);
    }
    for cap in crate::kustomize::strings(&security["capabilities"]["add"]) {
        flags.extend(["--cap-add".into(), cap]);
    }
    let seccomp =
        security["seccompProfile"]["type"].as_str().or(pod_security["seccompProfile"]["type"].as_str());
    match seccomp {
        // Podman's default profile is the one CRI-O uses (containers-common).
        Some("RuntimeDefault") => {}
        Some("Unconfined") | None => flags.extend(["--security-opt".into(), "seccomp=unconfined".into()]),
        Some(other) => bail!("{name}: seccompProfile {other} is not emulated"),
    }
    for sysctl in pod_security["sysctls"].as_array().into_iter().flatten() {
        let (Some(key), Some(value)) = (sysctl["name"].as_str(), sysctl["value"].as_str()) else {
            bail!("{name}: a sysctl without name or value: {sysctl}");
        };
        flags.extend(["--sysctl".into(), format!("{key}={value}")]);
    }
    for mount in c["volumeMounts"].as_array().into_iter().flatten() {
        let volume = mount["name"].as_str().unwrap_or_default();
        let Some(host) = volumes.get(volume) else {
            bail!("{name}: the volume {volume} has no stand-in in this test");
        };
        let path = mount["mountPath"].as_str().context("a volumeMount without mountPath")?;
        let mode = if mount["readOnly"] == true { ":ro" } else { "" };
        flags.extend(["--volume".into(), format!("{}:{path}{mode}", host.display())]);
    }
    if c["command"].is_array() {
        bail!("{name}: a command that replaces the image's entrypoint is not emulated");
    }
    Ok(flags)
}
