//! egress-agent: the userspace half of egress-gateway.
//!
//! - `gateway`: load and attach the TC program on the gateway pod's
//!   interface, keep its client list in sync with a pod source, expire flows.
//! - `join`: inside a worker pod (init container), send everything but the
//!   cluster's own traffic through a VXLAN tunnel to the gateway.
//! - `status`: show the live flows and counters of this pod's gateway.
//! - `keep`: hold the datapath across agent restarts (a sidecar).
//! - `detach`: take the datapath off the interface (rollback).
//! - `drain`: the gateway pod's preStop hook (workers move, flows end).
use clap::Parser;
use egress_agent::{cli, detach, drain, gateway, join, keeper, status};

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    if matches!(cli.command, cli::Command::Status(_)) {
        // `egress-agent status | head` should stop quietly, as any Unix
        // tool does, not panic on the closed pipe (Rust ignores SIGPIPE).
        // Only there: the gateway's sockets must never kill it.
        // SAFETY: restoring the default disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let result = match cli.command {
        cli::Command::Gateway(args) => gateway::run(args),
        cli::Command::Join(args) => join::run(args),
        cli::Command::Status(args) => status::run(args),
        cli::Command::Keep(args) => keeper::server::run(args),
        cli::Command::Detach(args) => detach::run(args),
        cli::Command::Drain(args) => drain::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line, cause chain included: what was wrong and what to do.
            eprintln!("egress-agent: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
