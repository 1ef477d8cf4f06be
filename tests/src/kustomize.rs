//! The deploy/ manifests as `kubectl kustomize` renders them, and what the
//! kubelet would make of a container: its environment and its args with
//! `$(VAR)` expanded. The manifests test checks the rules on them; the
//! container test runs the image with exactly these settings.
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// One kustomization's output.
pub struct Rendered {
    /// e.g. "overlays/example", or "overlays/example+components".
    pub name: String,
    pub objects: Vec<Value>,
}

impl Rendered {
    pub fn all(&self, kind: &'static str) -> impl Iterator<Item = &Value> + '_ {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    pub fn find(&self, kind: &'static str, name: &str) -> Option<&Value> {
        self.all(kind).find(|o| o["metadata"]["name"] == name)
    }

    /// The gateway Deployment: `egress-gateway`, or a second gateway's
    /// `egress-gateway-<suffix>` (deploy/overlays/second-gateway).
    pub fn gateway(&self) -> Option<&Value> {
        self.all("Deployment").find(|d| {
            d["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("egress-gateway"))
                && all_containers(d).iter().any(|c| c["name"] == "agent")
        })
    }

    /// An object of the gateway's: `base` with the gateway Deployment's
    /// name suffix (`egress-gateway-metrics` → `egress-gateway-metrics-team-b`).
    pub fn gateway_object(&self, kind: &'static str, base: &str) -> Option<&Value> {
        let gateway = self.gateway()?["metadata"]["name"].as_str()?;
        let suffix = gateway.strip_prefix("egress-gateway")?;
        self.find(kind, &format!("{base}{suffix}"))
    }
}

/// `kubectl kustomize DIR`, parsed into one JSON value per object.
pub fn render(kubectl: &Path, dir: &Path) -> anyhow::Result<Vec<Value>> {
    let out = Command::new(kubectl).arg("kustomize").arg(dir).output()?;
    anyhow::ensure!(
        out.status.success(),
        "`kubectl kustomize {}` failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8(out.stdout)?;
    let objects: Vec<Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| anyhow::anyhow!("parsing the output of `kubectl kustomize {}`: {e}", dir.display()))?;
    anyhow::ensure!(!objects.is_empty(), "`kubectl kustomize {}` rendered nothing", dir.display());
    Ok(objects)
}

/// `to` as seen from `from` (both absolute).
pub fn relative(from: &Path, to: &Path) -> String {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to[common..] {
        path.push(part);
    }
    path.to_string_lossy().into_owned()
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

pub fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

/// Containers and init containers of a workload.
pub fn all_containers(workload: &Value) -> Vec<&Value> {
    let spec = pod_spec(workload);
    ["initContainers", "containers"].iter().filter_map(|k| spec[*k].as_array()).flatten().collect()
}

pub fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    all_containers(workload)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{} has no container {name}", workload["metadata"]["name"]))
}

/// The container's environment as the kubelet builds it from `env` and
/// ConfigMap `envFrom`/`valueFrom`, looked up in the same rendering.
pub fn container_env(r: &Rendered, namespace: &str, c: &Value) -> BTreeMap<String, String> {
    let config_map = |name: &str| {
        r.all("ConfigMap")
            .find(|cm| cm["metadata"]["name"] == name && cm["metadata"]["namespace"] == namespace)
            .unwrap_or_else(|| {
                panic!("{}: ConfigMap {namespace}/{name} is referenced but not rendered", r.name)
            })
    };
    let mut env = BTreeMap::new();
    for from in c["envFrom"].as_array().into_iter().flatten() {
        if let Some(name) = from["configMapRef"]["name"].as_str() {
            for (k, v) in config_map(name)["data"].as_object().into_iter().flatten() {
                env.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
    }
    for var in c["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default().to_string();
        if let Some(value) = var["value"].as_str() {
            env.insert(name, value.to_string());
        } else if let Some(key_ref) = var["valueFrom"]["configMapKeyRef"].as_object() {
            let cm = config_map(key_ref["name"].as_str().unwrap_or_default());
            let key = key_ref["key"].as_str().unwrap_or_default();
            env.insert(name, cm["data"][key].as_str().unwrap_or_default().to_string());
        }
    }
    env
}

/// The container's args with `$(VAR)` expanded, failing on an unknown VAR
/// (the kubelet would pass it on literally, and the agent would refuse it).
pub fn expanded_args(r: &Rendered, workload: &Value, c: &Value) -> Vec<String> {
    let namespace = workload["metadata"]["namespace"].as_str().unwrap_or("default");
    let env = container_env(r, namespace, c);
    strings(&c["args"])
        .into_iter()
        .map(|arg| {
            let mut out = arg.clone();
            while let Some(start) = out.find("$(") {
                let end = out[start..].find(')').map(|e| start + e).expect("unclosed $(");
                let var = &out[start + 2..end];
                let value = env.get(var).unwrap_or_else(|| {
                    panic!("{}: {} arg {arg:?} uses ${var} which is not set", r.name, c["name"])
                });
                out.replace_range(start..=end, value);
            }
            out
        })
        .collect()
}

/// Values of `--flag=value` and `--flag value` in `args`.
pub fn flag_values(args: &[String], flag: &str) -> Vec<String> {
    let prefix = format!("{flag}=");
    let mut values = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        if let Some(v) = arg.strip_prefix(&prefix) {
            values.push(v.to_string());
        } else if arg == flag {
            values.extend(args.get(i + 1).cloned());
        }
    }
    values
}
