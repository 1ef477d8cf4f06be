//! The "outside": an HTTP server in a plain docker container on the `kind`
//! network, beside the nodes but not in the cluster, that answers every
//! request with the address it came from.
use std::{net::Ipv4Addr, process::Command};

use anyhow::{Context, Result};

use crate::run::output;

pub const PORT: u16 = 8080;
const IMAGE: &str = "python:3-alpine";

/// Replies with the client's address and nothing else.
const SERVER: &str = r#"
import http.server

class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("0.0.0.0", 8080), Echo).serve_forever()
"#;

/// Starts the container `name` and returns its address on the kind network.
pub fn start(name: &str) -> Result<Ipv4Addr> {
    output(
        Command::new("docker")
            .args(["run", "--detach", "--name", name, "--network", "kind", IMAGE])
            .args(["python3", "-u", "-c", SERVER]),
    )
    .context("starting the echo server container")?;
    let ip = output(Command::new("docker").args([
        "inspect",
        "--format",
        "{{(index .NetworkSettings.Networks \"kind\").IPAddress}}",
        name,
    ]))?;
    ip.trim().parse().with_context(|| format!("echo server address {:?}", ip.trim()))
}

/// Removes the container (if it exists).
pub fn remove(name: &str) {
    let _ = Command::new("docker").args(["rm", "--force", name]).output();
}

pub fn print_logs(name: &str) {
    println!("kind-test: $ docker logs {name}");
    let _ = Command::new("docker").args(["logs", "--tail", "30", name]).status();
}
