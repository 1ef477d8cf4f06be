//! The eBPF toolchain, set up from nothing but the installed nightly:
//! rust-src for build-std, and bpf-linker built from crates.io against the
//! nightly's own libLLVM (no system LLVM needed). Built once per machine and
//! cached outside the work tree, so fresh clones reuse it.
use std::{env, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::run::{output, status, workspace_root};

const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM majors bpf-linker 0.13 has a feature for.
const SUPPORTED_LLVM_MAJORS: &[u32] = &[21, 22, 23];

fn cache_dir() -> PathBuf {
    let base = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("egress-gateway")
}

struct Nightly {
    sysroot: PathBuf,
    llvm_major: u32,
    /// e.g. "libLLVM.so.22.1-rust-1.97.0-nightly"
    libllvm_name: String,
}

fn nightly() -> Result<Nightly> {
    let version = output(Command::new("rustc").args(["+nightly", "-vV"])).context(
        "the nightly Rust toolchain is required for the eBPF build: install it with `rustup toolchain install nightly`",
    )?;
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` printed no LLVM version")?;
    let llvm_major: u32 = llvm.split('.').next().unwrap_or("").parse().context("parsing the LLVM major")?;
    let sysroot =
        PathBuf::from(output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?.trim());
    let libllvm_name = std::fs::read_dir(sysroot.join("lib"))
        .with_context(|| format!("reading {}/lib", sysroot.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("libLLVM") && n.contains(".so"))
        // Prefer the versioned soname that the binary will ask for.
        .max_by_key(|n| n.starts_with("libLLVM.so."))
        .with_context(|| {
            format!("no libLLVM in {}/lib: the nightly toolchain looks incomplete", sysroot.display())
        })?;
    Ok(Nightly { sysroot, llvm_major, libllvm_name })
}

fn ensure_rust_src() -> Result<()> {
    let installed =
        output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
            .context("rustup is required to manage the nightly toolchain")?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: adding rust-src to the nightly toolchain");
        status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
            .context("could not add rust-src to nightly (needed for build-std)")?;
    }
    Ok(())
}

/// A folder whose lib/ holds the nightly's libLLVM under both names
/// bpf-linker's build and its runtime rpath look for.
fn llvm_prefix(n: &Nightly) -> Result<PathBuf> {
    let prefix = cache_dir().join(format!("llvm-prefix-{}", n.libllvm_name));
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    let target = n.sysroot.join("lib").join(&n.libllvm_name);
    for name in ["libLLVM.so".to_string(), n.libllvm_name.clone()] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(prefix)
}

/// bpf-linker built for this nightly's LLVM; returns its bin directory.
pub fn ensure_bpf_linker() -> Result<PathBuf> {
    let n = nightly()?;
    if !SUPPORTED_LLVM_MAJORS.contains(&n.llvm_major) {
        bail!(
            "nightly uses LLVM {}, which bpf-linker {BPF_LINKER_VERSION} cannot be built for (supports {SUPPORTED_LLVM_MAJORS:?})",
            n.llvm_major
        );
    }
    let root = cache_dir().join(format!("bpf-linker-{BPF_LINKER_VERSION}-{}", n.libllvm_name));
    let bin = root.join("bin");
    let linker = bin.join("bpf-linker");
    if linker.exists()
        && Command::new(&linker).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
    {
        return Ok(bin);
    }
    let prefix = llvm_prefix(&n)?;
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {} (once per machine)",
        n.llvm_major
    );
    status(
        Command::new("cargo")
            .args([
                "+nightly",
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
            ])
            .args(["--no-default-features", "--features", &format!("llvm-{}", n.llvm_major)])
            .arg("--root")
            .arg(&root)
            .env("LLVM_PREFIX", &prefix),
    )
    .context("building bpf-linker from crates.io failed (is crates.io reachable?)")?;
    Ok(bin)
}

pub fn ebpf_object_path() -> PathBuf {
    workspace_root().join("egress-ebpf/target/bpfel-unknown-none/release/egress-ebpf")
}

pub fn build_ebpf() -> Result<()> {
    ensure_rust_src()?;
    let linker_bin = ensure_bpf_linker()?;
    let path = env::join_paths(
        std::iter::once(linker_bin).chain(env::split_paths(&env::var_os("PATH").unwrap_or_default())),
    )?;
    status(
        Command::new("cargo")
            .args(["+nightly", "build", "--release", "--locked"])
            .current_dir(workspace_root().join("egress-ebpf"))
            .env("PATH", path)
            // The outer cargo's settings are for the host build, not this one.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
    .context("building the eBPF program")?;
    let object = ebpf_object_path();
    if !object.exists() {
        bail!("the eBPF build finished but {} is missing", object.display());
    }
    Ok(())
}

pub fn build_agent() -> Result<PathBuf> {
    status(
        Command::new("cargo")
            .args(["build", "--release", "--locked", "-p", "egress-agent", "-p", "egress-tests"])
            .current_dir(workspace_root()),
    )?;
    Ok(agent_binary())
}

pub fn agent_binary() -> PathBuf {
    workspace_root().join("target/release/egress-agent")
}

pub fn build_all() -> Result<()> {
    build_ebpf()?;
    build_agent()?;
    Ok(())
}

/// The target of the image's binary: static, so the image holds one file;
/// for this machine's architecture.
pub fn static_target() -> String {
    format!("{}-unknown-linux-musl", std::env::consts::ARCH)
}

/// The release agent linked statically against musl, with the eBPF object
/// embedded: what the image ships. Adds the Rust target and Debian's musl
/// compiler (ring's C parts need it) when missing.
pub fn build_static_agent() -> Result<PathBuf> {
    build_ebpf()?;
    let target = static_target();
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed.lines().any(|t| t.trim() == target) {
        eprintln!("xtask: adding the Rust target {target} (once per machine)");
        status(Command::new("rustup").args(["target", "add", &target]))
            .with_context(|| format!("`rustup target add {target}` failed (is the network reachable?)"))?;
    }
    egress_tests::tools::ensure_tools(&[egress_tests::tools::Tool {
        command: "musl-gcc",
        package: "musl-tools",
    }])?;
    status(
        Command::new("cargo")
            .args(["build", "--release", "--locked", "-p", "egress-agent", "--target", &target])
            .current_dir(workspace_root())
            .env(format!("CC_{}", target.replace('-', "_")), "musl-gcc"),
    )
    .context("building the static agent")?;
    Ok(workspace_root().join("target").join(&target).join("release/egress-agent"))
}
