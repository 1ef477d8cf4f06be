//! The pod's own TCP connections that go through the tunnel, found and
//! aborted with the kernel's socket diagnostics (NETLINK_SOCK_DIAG; the
//! sidecar shares the pod's network namespace, so it sees the pod's
//! sockets and nothing else).
//!
//! Moving the tunnel to another replica breaks every such connection (the
//! other replica has no record of its NAT binding). So a worker on a
//! healthy replica moves only while it has none, and after its replica is
//! gone the sidecar aborts them (SOCK_DESTROY, needs NET_ADMIN): the
//! application gets ECONNABORTED at once instead of waiting on a peer that
//! will never answer.
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};

use crate::netlink::{Netlink, Refused, CHANGE};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
/// `struct inet_diag_sockid`: ports, addresses, interface, cookie.
const SOCKID_LEN: usize = 48;
/// `struct inet_diag_req_v2`: family, protocol, extensions, pad, states, id.
const REQUEST_LEN: usize = 8 + SOCKID_LEN;
/// `struct inet_diag_msg` up to and including its id.
const MESSAGE_ID_END: usize = 4 + SOCKID_LEN;

/// TCP states (include/net/tcp_states.h) that hold no connection.
const TCP_TIME_WAIT: u32 = 6;
const TCP_CLOSE: u32 = 7;
const TCP_LISTEN: u32 = 10;
const CONNECTION_STATES: u32 = !(1 << TCP_TIME_WAIT | 1 << TCP_CLOSE | 1 << TCP_LISTEN);

/// One TCP socket as the kernel names it (the raw `inet_diag_sockid`).
#[derive(Clone, Copy)]
pub struct Connection {
    id: [u8; SOCKID_LEN],
}

impl Connection {
    /// The peer's address (the first four bytes of `idiag_dst`).
    pub fn peer(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.id[20], self.id[21], self.id[22], self.id[23])
    }
}

/// The pod's TCP connections whose peer is outside `cluster` and outside
/// loopback: the ones that leave through the gateway.
pub fn through_the_tunnel(cluster: &[(Ipv4Addr, u8)]) -> Result<Vec<Connection>> {
    let mut all = SockDiag::open()?.tcp_connections()?;
    all.retain(|c| leaves_through_the_tunnel(c.peer(), cluster));
    Ok(all)
}

/// Aborts every connection through the tunnel; returns how many.
pub fn abort_through_the_tunnel(cluster: &[(Ipv4Addr, u8)]) -> Result<usize> {
    let connections = through_the_tunnel(cluster)?;
    let diag = SockDiag::open()?;
    let mut aborted = 0;
    for connection in &connections {
        match diag.destroy(connection) {
            Ok(()) => aborted += 1,
            // Closed meanwhile.
            Err(err) if err.errno == libc::ENOENT => {}
            Err(err) if err.errno == libc::EOPNOTSUPP => {
                bail!("cannot abort the pod's connections on the gone replica: this kernel lacks CONFIG_INET_DIAG_DESTROY; they end at their next packet instead")
            }
            Err(err) => return Err(err).context("aborting a connection on the gone replica (SOCK_DESTROY)"),
        }
    }
    Ok(aborted)
}

fn leaves_through_the_tunnel(peer: Ipv4Addr, cluster: &[(Ipv4Addr, u8)]) -> bool {
    let within = |(net, len): &(Ipv4Addr, u8)| {
        let mask = if *len == 0 { 0 } else { u32::MAX << (32 - u32::from(*len)) };
        u32::from(peer) & mask == u32::from(*net) & mask
    };
    !peer.is_loopback() && !peer.is_unspecified() && !cluster.iter().any(within)
}

struct SockDiag {
    netlink: Netlink,
}

impl SockDiag {
    fn open() -> Result<SockDiag> {
        Ok(SockDiag {
            netlink: Netlink::open(NETLINK_SOCK_DIAG).context("opening a sock_diag netlink socket")?,
        })
    }

    /// Every IPv4 TCP socket of this namespace that holds a connection.
    fn tcp_connections(&self) -> Result<Vec<Connection>> {
        let answers = self
            .netlink
            .dump(SOCK_DIAG_BY_FAMILY, &request(CONNECTION_STATES, &[0; SOCKID_LEN]), SOCK_DIAG_BY_FAMILY)
            .context("listing the pod's TCP sockets")?;
        Ok(answers
            .iter()
            .filter_map(|payload| payload.get(4..MESSAGE_ID_END))
            .map(|id| Connection { id: id.try_into().expect("a socket id is SOCKID_LEN bytes") })
            .collect())
    }

    fn destroy(&self, connection: &Connection) -> Result<(), Refused> {
        self.netlink.request(SOCK_DESTROY, CHANGE, &request(u32::MAX, &connection.id))
    }
}

/// `struct inet_diag_req_v2` for IPv4 TCP sockets in `states`, matching `id`.
fn request(states: u32, id: &[u8; SOCKID_LEN]) -> Vec<u8> {
    let mut request = Vec::with_capacity(REQUEST_LEN);
    request.extend_from_slice(&[libc::AF_INET as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    request.extend_from_slice(&states.to_ne_bytes());
    request.extend_from_slice(id);
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn cluster_and_loopback_peers_stay_out() {
        let cluster = [(Ipv4Addr::new(10, 244, 0, 0), 16), (Ipv4Addr::new(10, 96, 0, 0), 12)];
        assert!(leaves_through_the_tunnel(Ipv4Addr::new(10, 10, 10, 10), &cluster));
        assert!(!leaves_through_the_tunnel(Ipv4Addr::new(10, 244, 3, 1), &cluster));
        assert!(!leaves_through_the_tunnel(Ipv4Addr::new(10, 100, 0, 1), &cluster));
        assert!(!leaves_through_the_tunnel(Ipv4Addr::LOCALHOST, &[]));
    }

    /// A loopback connection of this very process (found by its port) is
    /// listed once and, aborted, fails its next read with ECONNABORTED.
    #[test]
    fn lists_and_aborts_a_live_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let port = client.local_addr().unwrap().port();
        let diag = SockDiag::open().unwrap();
        let mine: Vec<Connection> = diag
            .tcp_connections()
            .unwrap()
            .into_iter()
            .filter(|c| u16::from_be_bytes([c.id[0], c.id[1]]) == port)
            .collect();
        assert_eq!(mine.len(), 1, "the client's socket is listed once");
        diag.destroy(&mine[0]).expect("SOCK_DESTROY (needs root and CONFIG_INET_DIAG_DESTROY)");
        let mut buf = [0u8; 1];
        let read = std::io::Read::read(&mut &client, &mut buf);
        assert_eq!(read.unwrap_err().raw_os_error(), Some(libc::ECONNABORTED));
        drop(server);
    }
}
