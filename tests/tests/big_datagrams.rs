//! Datagrams bigger than the tunnel: what Linux's own NAT delivers, ours
//! delivers too. The worker's tunnel MTU is 1450 (eth0's 1500 − 50) while
//! the server's link carries 1500, so UDP answers that are fine on the
//! internet do not fit one tunnel packet, and anything over 1500 bytes
//! travels as IP fragments, which carry no ports after the first.
//!
//! - A reply with DF that does not fit the tunnel draws fragmentation
//!   needed (MTU 1450) back to the server, whose kernel then fragments its
//!   next answer: the client's retry gets it (`icmp_frag_needed_to_remote`,
//!   `fragment_translated`).
//! - A reply without DF is split into two fragments and arrives at once
//!   (`reply_fragmented`).
//! - 3000-byte datagrams cross as fragments both ways, none left unmatched.
//! - A real DNS answer of about 2 kB over UDP (EDNS, dnsmasq and dig), the
//!   everyday case that breaks when fragments are lost.
//!
//! - A hostile labeled pod spraying fragments (first fragments of datagrams
//!   that never complete, later fragments of datagrams it never began)
//!   gets nothing through, and its neighbour's fragmented datagrams all
//!   arrive meanwhile.
//!
//! Each scenario runs through our gateway (with its counters checked) and
//! through the Linux reference gateway, which must pass it unchanged: so a
//! failure here is the datapath's, never the scenario's.
mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::datagrams::{ask, assert_pattern, pattern, PatternServer, ServerDf};
use common::*;
use egress_tests::{
    craft::{send_raw, udp_first_fragment, udp_later_fragment},
    reference::TunnelConfig,
    Daemon, EgressSetup, Netns,
};

/// The largest UDP payload one 1500-byte packet carries (1500 − 20 − 8):
/// fits the server's link, not the tunnel.
const FULL_LINK_PAYLOAD: usize = 1472;
/// Over the 1500-byte link MTU: fragmented by whichever kernel sends it.
const TWO_LINKS_PAYLOAD: usize = 3000;
/// What the clients of the first two scenarios ask with.
const SMALL_REQUEST: &[u8] = b"send the big answer";

/// A scenario: the outside namespace, the server address there, the client
/// (a worker whose external traffic goes through the gateway under test).
type Scenario = fn(&Netns, Ipv4Addr, &Netns);

/// Runs `scenario` through our gateway, w1 the client; returns the setup so
/// the caller can read the counters.
fn through_our_gateway(scenario: Scenario) -> EgressSetup {
    let s = start(options());
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        scenario(s.cluster.outside(), s.server_ip(), &s.pod("w1").ns)
    }));
    if let Err(panic) = run {
        eprintln!("counters when it failed: {:?}", s.status().map(|st| st.counters));
        std::panic::resume_unwind(panic);
    }
    s
}

/// Runs `scenario` through the Linux reference gateway (VXLAN device,
/// conntrack and MASQUERADE in the gateway pod), w1 the client.
fn through_the_linux_gateway(scenario: Scenario) {
    let cluster = with_the_linux_gateway(&["w1"], &TunnelConfig::default());
    let w1 = cluster.pod("w1");
    scenario(cluster.outside(), cluster.server_ip(), &w1.ns);
}

/// A full-link reply with DF: the first does not fit the tunnel and draws
/// fragmentation needed; the server's kernel learns MTU 1450 and fragments
/// its next answer, which a retry receives.
fn df_reply_arrives_on_a_retry(outside: &Netns, server: Ipv4Addr, client: &Netns) {
    let at = SocketAddrV4::new(server, 7201);
    let replier = PatternServer::start(outside, at, ServerDf::LinuxDefault, FULL_LINK_PAYLOAD);
    let answer = ask(client, at, SMALL_REQUEST, Duration::from_secs(1), 3);
    let (reply, attempt) = answer.expect("the DF reply arrived within 3 tries");
    eprintln!("the {FULL_LINK_PAYLOAD}-byte DF reply arrived on try {attempt}");
    assert_pattern("the DF reply", &reply, FULL_LINK_PAYLOAD);
    replier.stop();
}

/// The same reply without DF: it must be fragmented on the way into the
/// tunnel, and the first request is enough.
fn reply_without_df_arrives_at_once(outside: &Netns, server: Ipv4Addr, client: &Netns) {
    let at = SocketAddrV4::new(server, 7202);
    let replier = PatternServer::start(outside, at, ServerDf::Clear, FULL_LINK_PAYLOAD);
    let answer = ask(client, at, SMALL_REQUEST, Duration::from_secs(2), 1);
    let (reply, _) = answer.expect("the reply without DF arrived on the first try");
    assert_pattern("the reply without DF", &reply, FULL_LINK_PAYLOAD);
    assert_eq!(replier.stop().len(), 1);
}

/// 3000 bytes each way: the worker's kernel fragments the request for the
/// tunnel, the server's kernel fragments the answer for its link.
fn datagrams_cross_as_fragments_both_ways(outside: &Netns, server: Ipv4Addr, client: &Netns) {
    let at = SocketAddrV4::new(server, 7203);
    let replier = PatternServer::start(outside, at, ServerDf::LinuxDefault, TWO_LINKS_PAYLOAD);
    let answer = ask(client, at, &pattern(TWO_LINKS_PAYLOAD), OK_TIMEOUT, 1);
    let (reply, _) = answer.expect("the 3000-byte answer arrived on the first try");
    assert_pattern("the answer", &reply, TWO_LINKS_PAYLOAD);
    let requests = replier.stop();
    assert_eq!(requests.len(), 1, "the server received one request");
    assert_pattern("the request", &requests[0], TWO_LINKS_PAYLOAD);
}

/// The name dnsmasq answers with [`txt_strings`].
const DNS_NAME: &str = "big.egress.test";

/// Eight TXT strings of 250 characters (a string holds at most 255), each
/// its own rotation of the alphabet: an answer of about 2,060 bytes.
fn txt_strings() -> Vec<String> {
    (0..8).map(|k| (0..250).map(|i| char::from(b'a' + ((i + k) % 26) as u8)).collect()).collect()
}

/// dnsmasq in the outside namespace answering [`DNS_NAME`] TXT on
/// `server`:53, with no configuration file, upstream or hosts file, as
/// root (the namespace has no unprivileged user to switch to), up to 4 KiB
/// over UDP.
fn start_dnsmasq(outside: &Netns, server: Ipv4Addr) -> Daemon {
    // Unquoted: on the command line dnsmasq keeps quotes as text; a comma
    // starts the next string.
    let record = format!("--txt-record={DNS_NAME},{}", txt_strings().join(","));
    let listen = format!("--listen-address={server}");
    let args = [
        "dnsmasq",
        "--conf-file=/dev/null",
        "--no-daemon",
        "--no-resolv",
        "--no-hosts",
        "--port=53",
        &listen,
        "--bind-interfaces",
        "--edns-packet-max=4096",
        "--pid-file=",
        "--user=root",
        "--log-queries",
        &record,
    ];
    let dnsmasq = Daemon::spawn(outside, "dnsmasq", &args).unwrap();
    // /proc/net/udp prints the address as the in-memory (network order)
    // u32 in hex, so native-endian here; the port is a plain number.
    let local = format!("{:08X}:0035", u32::from_ne_bytes(server.octets()));
    eventually("dnsmasq listens on port 53", OK_TIMEOUT, || {
        let sockets = outside.exec(&["cat", "/proc/net/udp"]).unwrap();
        String::from_utf8_lossy(&sockets.stdout).contains(&local)
    });
    dnsmasq
}

/// dig's "MSG SIZE  rcvd: N": the size of the answer it received.
fn received_dns_size(dig_output: &str) -> Option<usize> {
    dig_output.lines().find_map(|l| l.split("MSG SIZE  rcvd:").nth(1)).and_then(|n| n.trim().parse().ok())
}

/// A TXT answer of about 2 kB from dnsmasq, over UDP only (`+ignore`: a
/// truncated answer is not retried over TCP, which would hide a loss).
fn big_dns_answer_arrives(outside: &Netns, server: Ipv4Addr, client: &Netns) {
    let _dnsmasq = start_dnsmasq(outside, server);
    let at = format!("@{server}");
    let dig = ["dig", "+bufsize=4096", "+notcp", "+ignore", "+tries=2", "+timeout=2", &at, DNS_NAME, "TXT"];
    let out = client.output(&dig).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "dig failed ({}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for (k, string) in txt_strings().iter().enumerate() {
        assert!(text.contains(string.as_str()), "TXT string {k} missing from the answer:\n{text}");
    }
    let size = received_dns_size(&text).unwrap_or_else(|| panic!("no MSG SIZE in dig's output:\n{text}"));
    eprintln!("dig received {size} bytes");
    assert!(size > 1400, "the answer ({size} bytes) is too small to need fragments");
}

#[test]
fn a_df_reply_too_big_for_the_tunnel_draws_fragmentation_needed_and_the_retry_arrives() {
    let s = through_our_gateway(df_reply_arrives_on_a_retry);
    assert!(s.counter("icmp_frag_needed_to_remote").unwrap() >= 1);
    assert!(s.counter("fragment_translated").unwrap() >= 1, "the server's fragmented answer");
}

#[test]
fn the_linux_reference_gateway_delivers_the_df_reply_on_a_retry_too() {
    through_the_linux_gateway(df_reply_arrives_on_a_retry);
}

#[test]
fn a_reply_without_df_too_big_for_the_tunnel_is_fragmented_and_arrives_at_once() {
    let s = through_our_gateway(reply_without_df_arrives_at_once);
    assert!(s.counter("reply_fragmented").unwrap() >= 1);
    assert_eq!(s.counter("icmp_frag_needed_to_remote").unwrap(), 0);
}

#[test]
fn the_linux_reference_gateway_fragments_the_reply_without_df_too() {
    through_the_linux_gateway(reply_without_df_arrives_at_once);
}

#[test]
fn datagrams_of_3000_bytes_cross_as_fragments_both_ways() {
    let s = through_our_gateway(datagrams_cross_as_fragments_both_ways);
    assert!(s.counter("fragment_translated").unwrap() >= 2, "at least one fragment each way");
    assert_eq!(s.counter("drop_fragment_unmatched").unwrap(), 0);
}

#[test]
fn the_linux_reference_gateway_carries_3000_byte_datagrams_too() {
    through_the_linux_gateway(datagrams_cross_as_fragments_both_ways);
}

#[test]
fn a_2_kb_dns_answer_over_udp_arrives_whole() {
    let s = through_our_gateway(big_dns_answer_arrives);
    // Over the server's 1500-byte link, the answer left it as fragments.
    assert!(s.counter("fragment_translated").unwrap() >= 1);
    assert_eq!(s.counter("drop_fragment_unmatched").unwrap(), 0);
}

#[test]
fn the_linux_reference_gateway_delivers_the_2_kb_dns_answer_too() {
    through_the_linux_gateway(big_dns_answer_arrives);
}

/// The sprayer's datagrams: first fragments with IDs it makes up (more
/// than the gateway's fragment map holds, 16,384), and as many later
/// fragments of datagrams it never began.
const SPRAYED_FIRSTS: u16 = 24_000;
const SPRAYED_LATERS: u16 = 8_000;
/// Fragmented exchanges the neighbour makes during the spray.
const NEIGHBOUR_ROUNDS: usize = 20;

/// w1 sprays fragments at a server port while w3 exchanges 3000-byte
/// datagrams (fragments both ways) with another. Returns the later
/// fragments w1 sent and how many of w3's exchanges succeeded; asserts that
/// no sprayed datagram reached the server (none could ever complete).
fn fragment_spray_beside_a_neighbour(
    outside: &Netns,
    server: Ipv4Addr,
    (attacker, attacker_ip): (&Arc<Netns>, Ipv4Addr),
    neighbour: &Netns,
) -> (usize, usize) {
    let sprayed = SocketAddrV4::new(server, 7210);
    let target = PatternServer::start(outside, sprayed, ServerDf::LinuxDefault, 8);
    let exchanged = SocketAddrV4::new(server, 7211);
    let replier = PatternServer::start(outside, exchanged, ServerDf::LinuxDefault, TWO_LINKS_PAYLOAD);
    let from = SocketAddrV4::new(attacker_ip, 40_000);
    let firsts: Vec<_> = (0..SPRAYED_FIRSTS).map(|id| udp_first_fragment(from, sprayed, id)).collect();
    let laters: Vec<_> =
        (0..SPRAYED_LATERS).map(|id| udp_later_fragment(attacker_ip, server, 40_000 + id, 185)).collect();
    // Round after round until the neighbour is done, so every exchange
    // meets the spray.
    let neighbour_done = Arc::new(AtomicBool::new(false));
    let spray = {
        let (attacker, done) = (Arc::clone(attacker), Arc::clone(&neighbour_done));
        std::thread::spawn(move || {
            let (mut sent_firsts, mut sent_laters, mut rounds) = (0, 0, 0);
            while !done.load(Ordering::Relaxed) || rounds == 0 {
                sent_firsts += send_raw(&attacker, server, firsts.clone()).expect("spraying first fragments");
                sent_laters += send_raw(&attacker, server, laters.clone()).expect("spraying later fragments");
                rounds += 1;
            }
            (sent_firsts, sent_laters, rounds)
        })
    };
    let mut delivered = 0;
    for _ in 0..NEIGHBOUR_ROUNDS {
        if let Some((answer, _)) = ask(neighbour, exchanged, &pattern(TWO_LINKS_PAYLOAD), OK_TIMEOUT, 1) {
            assert_pattern("the neighbour's answer", &answer, TWO_LINKS_PAYLOAD);
            delivered += 1;
        }
    }
    neighbour_done.store(true, Ordering::Relaxed);
    let (firsts, laters, rounds) = spray.join().unwrap();
    eprintln!("sprayed {firsts} first and {laters} later fragments in {rounds} rounds");
    assert_eq!(firsts, rounds * SPRAYED_FIRSTS as usize);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(target.stop().len(), 0, "no sprayed datagram can complete");
    replier.stop();
    (laters, delivered)
}

#[test]
fn a_pod_spraying_fragments_gets_nothing_through_and_its_neighbour_s_datagrams_arrive() {
    let s = start(options());
    let w1 = s.pod("w1");
    let (laters, delivered) = fragment_spray_beside_a_neighbour(
        s.cluster.outside(),
        s.server_ip(),
        (&w1.ns, w1.ip),
        &s.pod("w3").ns,
    );
    let unmatched = s.counter("drop_fragment_unmatched").unwrap();
    let over_budget = s.counter("drop_fragment_over_budget").unwrap();
    eprintln!("the neighbour's exchanges: {delivered}; unmatched later fragments {unmatched} (sprayed {laters}); first fragments over budget {over_budget}");
    assert_eq!(delivered, NEIGHBOUR_ROUNDS, "every one of the neighbour's exchanges");
    // Each of the sprayer's later fragments that reached the gateway, and
    // none of the neighbour's (a spray of 32,000 packets may lose one on
    // the way, under load).
    assert!(unmatched <= laters as u64, "a neighbour's fragment was dropped as unmatched");
    assert!(unmatched * 100 >= laters as u64 * 99, "{unmatched} of {laters} sprayed later fragments counted");
}

#[test]
fn the_linux_reference_gateway_under_the_same_spray() {
    let cluster = with_the_linux_gateway(&["w1", "w3"], &TunnelConfig::default());
    let (w1, w3) = (cluster.pod("w1"), cluster.pod("w3"));
    let (_, delivered) =
        fragment_spray_beside_a_neighbour(cluster.outside(), cluster.server_ip(), (&w1.ns, w1.ip), &w3.ns);
    eprintln!("through Linux: {delivered} of {NEIGHBOUR_ROUNDS} of the neighbour's exchanges");
    assert_eq!(delivered, NEIGHBOUR_ROUNDS, "every one of the neighbour's exchanges");
}
