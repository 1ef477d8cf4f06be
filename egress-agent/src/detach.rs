//! `egress-agent detach`: take the datapath off the interface now, whoever
//! holds it. The state keeper closes what it holds and tells the running
//! agent, which detaches and exits, cleaning up after itself. With no agent
//! running, what one left behind goes here: a netlink filter (kernels
//! before 6.6, where a filter outlives its agent) and the GRO stage's pair.
use anyhow::Result;

use crate::{
    cli::DetachArgs,
    datapath::{gro_stage, loader},
    keeper::Keeper,
    netdev,
};

pub fn run(args: DetachArgs) -> Result<()> {
    netdev::ifindex(&args.interface)?;
    let mut agents = 0;
    if args.keeper_socket.exists() {
        match Keeper::new(&args.keeper_socket).drop_all() {
            Ok(dropped) => {
                println!(
                    "state keeper at {}: let go of {} objects, told {} running agent(s) to detach",
                    args.keeper_socket.display(),
                    dropped.objects,
                    dropped.agents
                );
                agents = dropped.agents;
            }
            // A socket left by a keeper that is gone: nothing holds anything.
            Err(err) => println!("{err:#}: going on without it"),
        }
    } else {
        println!("no state keeper at {}", args.keeper_socket.display());
    }
    if agents > 0 {
        // The agent removes its own filters and GRO pair as it exits; doing
        // it here could race with its successor's new ones.
        println!("detaching from {}: the running agent finishes it", args.interface);
        return Ok(());
    }
    for program in loader::ATTACHED_PROGRAMS {
        for interface in [args.interface.as_str(), gro_stage::RX] {
            if netdev::ifindex(interface).is_ok() && loader::remove_netlink_filter(interface, program) {
                println!("removed the {program} filter from {interface}");
            }
        }
    }
    if gro_stage::remove_leftover() {
        println!("removed the GRO stage ({} / {})", gro_stage::TX, gro_stage::RX);
    }
    println!("detached from {}", args.interface);
    Ok(())
}
