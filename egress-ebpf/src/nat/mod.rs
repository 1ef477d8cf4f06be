//! The two directions of the NAT: `snat` for what clients send, `rev_nat`
//! for what remotes answer, and `icmp_error` for the errors routers send
//! about a client's flow.
pub mod icmp_error;
pub mod rev_nat;
pub mod snat;
