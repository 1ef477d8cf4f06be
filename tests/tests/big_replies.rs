//! Replies too big to be encapsulated whole. A node whose NIC does GRO hands
//! the gateway pod aggregates of up to 65,535 bytes; one longer than 65,485
//! (46 full segments and a short one: the end of an HTTP response) does not
//! fit a 16-bit outer length once the tunnel's 50 bytes are added. Written
//! wrapped, the node would trim the aggregate to that length and lose it.
//! The gateway cuts such a reply into its segments first (`egress_resegmented`).
//!
//! The topology's "NIC" is the node's veth from the outside (GRO turned on);
//! the server sends messages of 46 full segments and one of 1,150 bytes,
//! each in one burst, so GRO builds exactly such aggregates (65,510 bytes). The download must
//! arrive whole, with (almost) no retransmission, as through the Linux
//! reference gateway; with resegmentation off (`--no-gro-stage`), the same
//! aggregates are dropped and counted (`drop_too_big_for_tunnel`): the
//! control that shows the test sees the problem.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use egress_tests::clients;
use egress_tests::netns::Netns;
use egress_tests::reference::TunnelConfig;
use egress_tests::topology::{Cluster, NODE_EXTERNAL, POD_IFACE};

/// 46 segments of 1,398 bytes (MSS 1,410 from the worker's 1,450-byte
/// tunnel MTU, less 12 of TCP timestamps) and one of 1,150: an aggregate of
/// 65,510 bytes of IPv4.
const MESSAGE: usize = 46 * 1398 + 1150;
const MESSAGES: usize = 400;
const SERVER_PORT: u16 = 9600;

/// Makes the node hand the gateway aggregates of one whole message. The
/// server's TCP builds each message as one super-packet (its IPv4 GSO limit
/// raised above 64 KiB: without that, Linux splits a message at 46
/// segments and marks the split with PSH, where GRO stops merging), its
/// device cuts that into the 47 segments in software (TSO and GSO off), and
/// the node's GRO merges them back as they arrive in one burst. Send buffer
/// and receive window take a whole message at once.
fn make_aggregates(cluster: &Cluster, client: &Netns) {
    let outside = cluster.outside();
    let node = cluster.node(cluster.config().outside.node);
    node.ns.exec(&["ethtool", "-K", NODE_EXTERNAL, "gro", "on"]).unwrap();
    outside.exec(&["ethtool", "-K", POD_IFACE, "tso", "off", "gso", "off"]).unwrap();
    outside.ip(&["link", "set", "dev", POD_IFACE, "gso_max_size", "131072"]).unwrap();
    egress_tests::linkattr::set_gso_ipv4_max_size(outside, POD_IFACE, 131_072).unwrap();
    outside.sysctls(&[("net.ipv4.tcp_wmem", "4096 4194304 8388608")]).unwrap();
    client.sysctls(&[("net.ipv4.tcp_rmem", "4096 4194304 8388608")]).unwrap();
}

/// What one download of MESSAGES messages cost.
#[derive(Debug)]
struct Download {
    received: usize,
    seconds: f64,
    retransmitted_segments: u64,
    sent_segments: u64,
}

/// The server (in the outside namespace) writes MESSAGES messages of
/// MESSAGE bytes, each in one write and a moment apart; the client (in
/// `client`) reads them all.
fn download(outside: &Netns, server_ip: std::net::Ipv4Addr, client: &Netns) -> Download {
    let server = SocketAddrV4::new(server_ip, SERVER_PORT);
    let tcp = |ns: &Netns| ns.tcp_counters().unwrap();
    let before = tcp(outside);
    let listener = outside.run(move || Ok(TcpListener::bind(server)?)).unwrap();
    let started = Instant::now();
    let received = std::thread::scope(|scope| {
        scope.spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // The short last segment leaves at once, not after an ACK.
            stream.set_nodelay(true).unwrap();
            let message: Vec<u8> = (0..MESSAGE).map(|i| (i % 251) as u8).collect();
            for _ in 0..MESSAGES {
                stream.write_all(&message).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let mut stream =
            client.run(move || Ok(TcpStream::connect_timeout(&SocketAddr::V4(server), OK_TIMEOUT)?)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut received = 0;
        while received < MESSAGE * MESSAGES {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    for (i, byte) in buf[..n].iter().enumerate() {
                        assert_eq!(
                            *byte,
                            ((received + i) % MESSAGE % 251) as u8,
                            "corrupt byte at {}",
                            received + i
                        );
                    }
                    received += n;
                }
                Err(e) => panic!("the download stalled after {received} bytes: {e}"),
            }
        }
        received
    });
    let after = tcp(outside);
    let delta = |name: &str| after[name] - before[name];
    Download {
        received,
        seconds: started.elapsed().as_secs_f64(),
        retransmitted_segments: delta("RetransSegs"),
        sent_segments: delta("OutSegs"),
    }
}

#[test]
fn replies_too_big_for_one_tunnel_packet_arrive_whole() {
    let s = start(options());
    make_aggregates(&s.cluster, &s.pod("w1").ns);
    let d = download(s.cluster.outside(), s.server_ip(), &s.pod("w1").ns);
    let status = s.status().unwrap();
    let resegmented = status.counter("reply_resegmented").unwrap();
    eprintln!("ebpf: {d:?}; reply_resegmented {resegmented}; {:.2} s", d.seconds);
    assert_eq!(d.received, MESSAGE * MESSAGES);
    assert!(resegmented > 0, "no aggregate needed resegmenting: the test did not make any");
    assert_eq!(status.counter("drop_too_big_for_tunnel").unwrap(), 0);
    assert!(
        d.retransmitted_segments * 100 <= d.sent_segments,
        "{} of {} segments retransmitted",
        d.retransmitted_segments,
        d.sent_segments
    );
}

/// The control: without the resegmentation pair, the same aggregates are
/// dropped (counted), never sent with a wrapped length; TCP recovers by
/// retransmitting.
#[test]
fn without_resegmentation_such_replies_are_dropped_and_counted() {
    let mut opts = options();
    opts.extra_args.push("--no-gro-stage".into());
    let s = start(opts);
    make_aggregates(&s.cluster, &s.pod("w1").ns);
    let d = download(s.cluster.outside(), s.server_ip(), &s.pod("w1").ns);
    let dropped = s.counter("drop_too_big_for_tunnel").unwrap();
    eprintln!("ebpf without resegmentation: {d:?}; drop_too_big_for_tunnel {dropped}");
    assert!(dropped > 0, "no aggregate was too big: the first test proves nothing here");
    assert!(d.retransmitted_segments > 0);
}

#[test]
fn the_linux_reference_gateway_delivers_them_too() {
    let cluster = with_the_linux_gateway(&["w1"], &TunnelConfig::default());
    let _echo = clients::start_echo_server(cluster.outside(), Path::new(ECHO), cluster.server_ips()).unwrap();
    let w1 = cluster.pod("w1");
    make_aggregates(&cluster, &w1.ns);
    let d = download(cluster.outside(), cluster.server_ip(), &w1.ns);
    eprintln!("linux: {d:?}");
    assert_eq!(d.received, MESSAGE * MESSAGES);
}
