//! The two directions of the NAT: `snat` (`snat6`) for what clients send,
//! `rev_nat` (`rev_nat6`) for what remotes answer, and `icmp_error`
//! (`icmp_error6`) for the errors routers send about a client's flow,
//! `client_error6` for those a client sends about its replies;
//! `time_exceeded` (`time_exceeded6`) is the gateway's own answer to a
//! client's packet that expires here. `rewrite` is the header rewrite both
//! directions share, `to_client` the tunnel tail of everything that goes
//! back to a client. `fragments` remembers the flows of datagrams whose
//! later fragments carry no ports; `frag_needed` (`too_big6`) answers a
//! remote whose reply does not fit the tunnel; `probe` answers a worker's
//! ping of the tunnel's gateway address.
pub mod client_error6;
pub mod frag_needed;
pub mod fragments;
pub mod fragments6;
pub mod icmp_error;
pub mod icmp_error6;
pub mod probe;
pub mod rev_nat;
pub mod rev_nat6;
pub mod rewrite;
pub mod snat;
pub mod snat6;
pub mod time_exceeded;
pub mod time_exceeded6;
pub mod to_client;
pub mod too_big6;
