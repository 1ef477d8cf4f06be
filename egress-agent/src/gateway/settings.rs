//! Turning command-line arguments into a validated configuration. Every
//! mistake is refused here, with one line saying what to change.
use std::{net::SocketAddr, path::PathBuf};

use anyhow::{bail, Result};
use egress_common::{
    config::{
        default_max_flows_per_client, GatewayConfig, CONFIG_LAYOUT_VERSION, GATEWAY_EPHEMERAL_PORTS,
        MAX_PORT_RETRIES, MIN_TIMEOUT_S,
    },
    ports::ranges_overlap,
};

use crate::{
    cli::GatewayArgs,
    netdev,
    pods::{kubernetes::Selection, selector::LabelSelector},
};

/// Where the clients come from.
pub enum SourceSettings {
    File(PathBuf),
    Kubernetes(Selection),
}

pub struct Settings {
    pub interface: netdev::Interface,
    pub excluded: netdev::Cidrs,
    pub conntrack_size: u32,
    /// `--max-flows-per-client` was not given: the share follows the size
    /// of the table actually used (a running one may be kept).
    pub default_share: bool,
    pub gc_interval_s: u64,
    pub ebpf_object: Option<std::path::PathBuf>,
    pub datapath_config: GatewayConfig,
    pub source: SourceSettings,
    pub metrics_addr: SocketAddr,
    /// Loopback only: the flow list stays inside the pod.
    pub status_addr: SocketAddr,
    /// Whether to set up the GRO stage (`egress_common::gro`).
    pub gro_stage: bool,
    pub keeper_socket: Option<std::path::PathBuf>,
}

pub fn parse_port_range(text: &str) -> Result<(u16, u16)> {
    let parsed = text
        .split_once('-')
        .and_then(|(lo, hi)| Some((lo.trim().parse::<u16>().ok()?, hi.trim().parse::<u16>().ok()?)));
    match parsed {
        Some((lo, hi)) if lo >= 1024 && lo <= hi => Ok((lo, hi)),
        _ => bail!("invalid --nat-ports {text:?}: expected LO-HI with 1024 <= LO <= HI <= 65535"),
    }
}

impl Settings {
    pub fn from_args(args: &GatewayArgs) -> Result<Settings> {
        let (nat_min, nat_max) = parse_port_range(&args.nat_ports)?;
        let ephemeral = netdev::ephemeral_port_range()?;
        if ranges_overlap((nat_min, nat_max), ephemeral) {
            bail!(
                "--nat-ports {nat_min}-{nat_max} overlaps this pod's ephemeral ports {}-{}: set net.ipv4.ip_local_port_range to \"{} {}\" as the manifests do, or pick --nat-ports outside it",
                ephemeral.0,
                ephemeral.1,
                GATEWAY_EPHEMERAL_PORTS.0,
                GATEWAY_EPHEMERAL_PORTS.1
            );
        }
        if (nat_min..=nat_max).contains(&args.vxlan_port) {
            bail!(
                "--vxlan-port {} is inside --nat-ports {nat_min}-{nat_max}: move one of them",
                args.vxlan_port
            );
        }
        if args.port_retries == 0 || args.port_retries > MAX_PORT_RETRIES {
            bail!("invalid --port-retries {}: must be 1-{MAX_PORT_RETRIES}", args.port_retries);
        }
        if args.vni == 0 || args.vni > 0x00ff_ffff {
            bail!("invalid --vni {}: must be 1-16777215", args.vni);
        }
        if args.conntrack_size < 1024 {
            bail!("--conntrack-size {} is too small: use at least 1024", args.conntrack_size);
        }
        let max_flows_per_client =
            args.max_flows_per_client.unwrap_or(default_max_flows_per_client(args.conntrack_size));
        if max_flows_per_client == 0 || max_flows_per_client > args.conntrack_size {
            bail!(
                "invalid --max-flows-per-client {max_flows_per_client}: must be 1 to --conntrack-size ({})",
                args.conntrack_size
            );
        }
        check_timeouts(args)?;
        let excluded = netdev::Cidrs::parse(&args.exclude_cidrs)?;
        let source = source_settings(args)?;
        let metrics_addr: SocketAddr = args.metrics_addr.parse().map_err(|_| {
            anyhow::anyhow!(
                "invalid --metrics-addr {:?}: expected ADDRESS:PORT, like 0.0.0.0:9090",
                args.metrics_addr
            )
        })?;
        if (nat_min..=nat_max).contains(&metrics_addr.port()) {
            bail!(
                "--metrics-addr port {} is inside --nat-ports {nat_min}-{nat_max}: the datapath would take scrapes and probes for replies; move one of them",
                metrics_addr.port()
            );
        }
        let status_addr: SocketAddr = args.status_addr.parse().map_err(|_| {
            anyhow::anyhow!(
                "invalid --status-addr {:?}: expected ADDRESS:PORT, like 127.0.0.1:9091",
                args.status_addr
            )
        })?;
        if !status_addr.ip().is_loopback() {
            bail!(
                "--status-addr {status_addr} is not a loopback address: the flow list (who talks to whom, NAT ports) must stay inside the gateway pod; use 127.0.0.1:PORT"
            );
        }
        let interface = netdev::Interface::lookup(&args.interface)?;
        let datapath_config = GatewayConfig {
            layout_version: CONFIG_LAYOUT_VERSION,
            // 0 in an IPv6-only gateway pod (`GatewayConfig::has_ipv4`):
            // its clients tunnel over IPv6 and send IPv6 alone.
            gateway_ip_be: interface.ipv4.map_or(0, |ip| u32::from(ip).to_be()),
            netns_inode: netdev::netns_inode()?,
            ifindex: interface.ifindex,
            vni: args.vni,
            vxlan_port_be: args.vxlan_port.to_be(),
            nat_port_min: nat_min,
            nat_port_max: nat_max,
            draining: 0,
            port_retries: args.port_retries,
            tcp_syn_timeout_s: args.tcp_syn_timeout_s,
            tcp_established_timeout_s: args.tcp_established_timeout_s,
            tcp_closing_timeout_s: args.tcp_closing_timeout_s,
            udp_timeout_s: args.udp_timeout_s,
            icmp_timeout_s: args.icmp_timeout_s,
            mtu: interface.mtu,
            // Set once the stage exists (`gateway::serve`).
            gro_ifindex: 0,
            tcp_time_wait_timeout_s: args.tcp_time_wait_timeout_s,
            max_flows_per_client,
            // Set once the resegmentation pair exists (`gateway::serve`).
            resegment_ifindex: 0,
            gateway_ip6: interface.ipv6.map_or([0; 16], |address| address.octets()),
        };
        Ok(Settings {
            interface,
            excluded,
            conntrack_size: args.conntrack_size,
            default_share: args.max_flows_per_client.is_none(),
            gc_interval_s: args.gc_interval_s,
            ebpf_object: args.ebpf_object.clone(),
            datapath_config,
            source,
            metrics_addr,
            status_addr,
            gro_stage: !args.no_gro_stage,
            keeper_socket: args.keeper_socket.clone(),
        })
    }
}

/// Every idle timeout is at least `MIN_TIMEOUT_S`: the datapath refreshes a
/// flow's timestamp at most once a second, so a shorter timeout could end
/// a flow that is busy.
fn check_timeouts(args: &GatewayArgs) -> Result<()> {
    for (flag, seconds) in [
        ("--tcp-syn-timeout-s", args.tcp_syn_timeout_s),
        ("--tcp-established-timeout-s", args.tcp_established_timeout_s),
        ("--tcp-closing-timeout-s", args.tcp_closing_timeout_s),
        ("--tcp-time-wait-timeout-s", args.tcp_time_wait_timeout_s),
        ("--udp-timeout-s", args.udp_timeout_s),
        ("--icmp-timeout-s", args.icmp_timeout_s),
    ] {
        if seconds < MIN_TIMEOUT_S {
            bail!(
                "{flag} {seconds} is too short: flows are refreshed once a second, use at least {MIN_TIMEOUT_S}"
            );
        }
    }
    Ok(())
}

fn source_settings(args: &GatewayArgs) -> Result<SourceSettings> {
    if let Some(path) = &args.pods_file {
        return Ok(SourceSettings::File(path.clone()));
    }
    let pod_selector = LabelSelector::parse(&args.selector)
        .map_err(|e| anyhow::anyhow!("invalid --selector {:?}: {e}", args.selector))?;
    if pod_selector == LabelSelector::parse("")? {
        bail!("--selector is empty: it would make every pod in the cluster a client; give a label such as egress=external");
    }
    let namespace_selector = match &args.namespace_selector {
        Some(text) => Some(
            LabelSelector::parse(text)
                .map_err(|e| anyhow::anyhow!("invalid --namespace-selector {text:?}: {e}"))?,
        ),
        None => None,
    };
    let mut namespaces = Vec::new();
    for ns in &args.namespaces {
        let ns = ns.trim();
        let valid = !ns.is_empty()
            && ns.len() <= 63
            && ns.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !valid {
            bail!("invalid --namespaces entry {ns:?}: a namespace name is lowercase letters, digits and '-'");
        }
        if !namespaces.iter().any(|n| n == ns) {
            namespaces.push(ns.to_string());
        }
    }
    Ok(SourceSettings::Kubernetes(Selection { pod_selector, namespaces, namespace_selector }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("10240-32767").unwrap(), (10240, 32767));
        assert!(parse_port_range("32767-10240").is_err());
        assert!(parse_port_range("80-90").is_err());
        assert!(parse_port_range("10240").is_err());
        assert!(parse_port_range("a-b").is_err());
    }
}
