//! The two directions of the NAT: `snat` for what clients send, `rev_nat`
//! for what remotes answer.
pub mod rev_nat;
pub mod snat;
