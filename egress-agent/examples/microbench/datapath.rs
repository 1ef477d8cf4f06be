//! The program under test: loaded the way the agent loads it, with fresh
//! maps for every measurement.
use std::path::Path;

use anyhow::{Context, Result};
use egress_agent::datapath::loader::Datapath;
use egress_common::config::{DEFAULT_NAT_PORT_MAX, DEFAULT_NAT_PORT_MIN};

use crate::common::{self, CLIENT_IP, EXCLUDED_CIDR};

/// The real program with fresh maps: default NAT ports, `conntrack_size`
/// entries per conntrack half (all of them for the one client: the
/// benchmark fills the table from `CLIENT_IP`), `CLIENT_IP` listed, the
/// harness's excluded CIDR set. `object` replaces the embedded object (to
/// time a variant).
pub fn fresh(conntrack_size: u32, object: Option<&Path>) -> Result<Datapath> {
    let mut cfg = common::config((DEFAULT_NAT_PORT_MIN, DEFAULT_NAT_PORT_MAX));
    cfg.max_flows_per_client = conntrack_size;
    let mut datapath = Datapath::load(
        &cfg,
        conntrack_size,
        &egress_agent::netdev::Cidrs { v4: vec![EXCLUDED_CIDR], v6: vec![] },
        object,
        &mut Default::default(),
    )?;
    datapath.maps.add_client(CLIENT_IP, 1)?;
    Ok(datapath)
}

/// A datapath counter, summed over CPUs.
pub fn counter(datapath: &Datapath, name: &str) -> Result<u64> {
    datapath
        .maps
        .counter_totals()?
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .with_context(|| format!("no counter {name}"))
}
