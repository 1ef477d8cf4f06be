//! One path run over and over for a while, for a profiler: e.g.
//! `perf record -C 1 -g` while `microbench --spin to-remote --cpu 1` runs.
//! The established rows say how long a packet takes; a profile of this says
//! which helpers and map operations the time goes to.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::ValueEnum;

use crate::{
    common::TC_ACT_REDIRECT,
    datapath, established,
    flows::Flow,
    timing::{run, run_expecting},
};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Spin {
    /// Established client -> remote data segments of one flow.
    ToRemote,
    /// Established remote -> client data segments of one flow.
    ToClient,
    /// SYNs of new flows (up to a million, into a map that holds them).
    NewFlows,
}

pub fn run_for(spin: Spin, duration: Duration, object: Option<&Path>) -> Result<u64> {
    let deadline = Instant::now() + duration;
    let mut runs = 0u64;
    match spin {
        Spin::ToRemote | Spin::ToClient => {
            let mut dp = datapath::fresh(egress_common::maps::CT_MAX_DEFAULT, object)?;
            let (to_remote, to_client) = established::open_one(&mut dp)?;
            let packet = if spin == Spin::ToRemote { to_remote } else { to_client };
            while Instant::now() < deadline {
                run(&mut dp, &packet, 1)?;
                runs += 1;
            }
        }
        Spin::NewFlows => {
            let mut dp = datapath::fresh(1 << 20, object)?;
            while Instant::now() < deadline && runs < 1_000_000 {
                run_expecting(
                    &mut dp,
                    &Flow::spread(runs as u32).syn(),
                    TC_ACT_REDIRECT,
                    "a new flow's SYN",
                )?;
                runs += 1;
            }
        }
    }
    Ok(runs)
}
