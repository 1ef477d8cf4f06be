//! The "outside" server of the test topology.
//!
//! Answers every HTTP request on TCP port 80 and every datagram on UDP port
//! 5353 with `<client ip> <client port>\n`: the source address it saw, which
//! is what egress tests assert on. std only, one thread per connection.
//!
//! Usage: `echo-server --bind ADDR [--bind ADDR]... [--http-port P] [--udp-port P]`
//! Prints `echo-server ready` on stderr once every socket is bound.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::exit;
use std::thread;
use std::time::Duration;

/// How long a connection may stay open without completing its request;
/// long enough for tests that hold a connection open to inspect the flow.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let mut binds: Vec<IpAddr> = Vec::new();
    let mut http_port: u16 = 80;
    let mut udp_port: u16 = 5353;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().unwrap_or_else(|| usage(&format!("{name} needs a value")));
        match arg.as_str() {
            "--bind" => {
                binds.push(value("--bind").parse().unwrap_or_else(|e| usage(&format!("--bind: {e}"))))
            }
            "--http-port" => {
                http_port =
                    value("--http-port").parse().unwrap_or_else(|e| usage(&format!("--http-port: {e}")))
            }
            "--udp-port" => {
                udp_port = value("--udp-port").parse().unwrap_or_else(|e| usage(&format!("--udp-port: {e}")))
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if binds.is_empty() {
        usage("at least one --bind ADDR is required");
    }

    let mut handles = Vec::new();
    for ip in binds {
        let tcp = TcpListener::bind(SocketAddr::new(ip, http_port))
            .unwrap_or_else(|e| fail(&format!("bind tcp {ip}:{http_port}: {e}")));
        let udp = UdpSocket::bind(SocketAddr::new(ip, udp_port))
            .unwrap_or_else(|e| fail(&format!("bind udp {ip}:{udp_port}: {e}")));
        eprintln!("echo-server listening on {ip} (http tcp/{http_port}, udp/{udp_port})");
        handles.push(thread::spawn(move || serve_http(tcp)));
        handles.push(thread::spawn(move || serve_udp(udp)));
    }
    eprintln!("echo-server ready");
    for h in handles {
        let _ = h.join();
    }
}

fn serve_http(listener: TcpListener) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                thread::spawn(move || {
                    if let Err(e) = handle_http(stream) {
                        eprintln!("http: {e}");
                    }
                });
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}

/// Reads the request head (up to the blank line), answers, closes.
fn handle_http(stream: TcpStream) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(()); // closed before a full request: nothing to answer
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
    }
    let body = format!("{} {}\n", peer.ip(), peer.port());
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = stream;
    stream.write_all(response.as_bytes())?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Drain until the client closes, so the close is clean (no RST for
    // unread data) whatever the client does.
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut reader, &mut sink);
    Ok(())
}

fn serve_udp(sock: UdpSocket) {
    let mut buf = [0u8; 65535];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((_, peer)) => {
                let reply = format!("{} {}\n", peer.ip(), peer.port());
                if let Err(e) = sock.send_to(reply.as_bytes(), peer) {
                    eprintln!("udp send to {peer}: {e}");
                }
            }
            Err(e) => eprintln!("udp recv: {e}"),
        }
    }
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("echo-server: {msg}");
    }
    eprintln!("usage: echo-server --bind ADDR [--bind ADDR]... [--http-port P] [--udp-port P]");
    exit(2)
}

fn fail(msg: &str) -> ! {
    eprintln!("echo-server: {msg}");
    exit(1)
}
