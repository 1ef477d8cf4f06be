//! `egress-agent detach`: take the datapath off the interface now, whoever
//! holds it. The state keeper closes what it holds and tells the running
//! agent, which detaches and exits; then any netlink filter (kernels before
//! 6.6, where a filter outlives its agent) and the GRO stage's pair go.
use anyhow::Result;

use crate::{
    cli::DetachArgs,
    datapath::{gro_stage, loader},
    keeper::Keeper,
    netdev,
};

/// How long a running agent gets to notice and let go.
const AGENT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

pub fn run(args: DetachArgs) -> Result<()> {
    netdev::ifindex(&args.interface)?;
    if args.keeper_socket.exists() {
        let dropped = Keeper::new(&args.keeper_socket).drop_all()?;
        println!("state keeper at {}: let go of {dropped} objects", args.keeper_socket.display());
        std::thread::sleep(AGENT_GRACE);
    } else {
        println!("no state keeper at {}", args.keeper_socket.display());
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
