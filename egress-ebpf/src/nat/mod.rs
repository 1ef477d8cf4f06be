//! The two directions of the NAT: `snat` for what clients send, `rev_nat`
//! for what remotes answer, and `icmp_error` for the errors routers send
//! about a client's flow; `time_exceeded` is the gateway's own answer to a
//! client's packet that expires here.
pub mod icmp_error;
pub mod rev_nat;
pub mod snat;
pub mod time_exceeded;
