//! egress-agent as a library: the binary's modules, also used by the
//! packet-scenario tests to load the real program the same way the agent does.
pub mod cli;
pub mod datapath;
pub mod detach;
pub mod drain;
pub mod gateway;
pub mod join;
pub mod keeper;
pub mod netdev;
pub mod netlink;
pub mod observe;
pub mod pods;
pub mod status;
