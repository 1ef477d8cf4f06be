//! The HTTP endpoints, on two listeners:
//!
//! - `--metrics-addr` (the pod network): `/healthz`, `/readyz`, `/metrics`
//!   for the kubelet and Prometheus. Nothing there names a flow. Its
//!   default, `[::]`, takes both families, so the kubelet reaches it in a
//!   pod of any family (an IPv6-only cluster's gateway pod has no IPv4).
//! - `--status-addr` (loopback only): `/status`, what `egress-agent status`
//!   prints: every flow, who talks to whom and on which NAT port, so only
//!   processes inside the gateway pod can read it; and `POST /drain`, what
//!   `egress-agent drain` (the pod's preStop hook) asks for.
//!
//! Probes and scrapes only read shared state. A flow listing walks the
//! conntrack map on a blocking thread through its own map handles: nothing
//! here can slow the datapath or the loop that applies client changes.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};
use axum::{
    extract::State,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
    Router,
};
use prometheus_client::registry::Registry;

use super::Health;
use crate::{
    datapath::{conntrack, maps::DatapathMaps},
    status,
};

struct Probes {
    health: Arc<Health>,
    registry: Registry,
}

/// Binds `addr` now (so a taken port fails the start with one line) and
/// returns the task that serves the probes and the metrics.
pub async fn serve_metrics(
    addr: SocketAddr,
    health: Arc<Health>,
    registry: Registry,
) -> Result<impl std::future::Future<Output = ()>> {
    let listener = bind_metrics(addr).await?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(Probes { health, registry }));
    Ok(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {err}");
        }
    })
}

/// What `/status` reads: its own handles on the datapath's maps (one
/// listing at a time) and the interface's name.
pub struct StatusSource {
    pub maps: Mutex<DatapathMaps>,
    pub interface: String,
}

/// Binds `--status-addr` (a loopback address; the settings refuse
/// others) early, so a taken port fails the start before the datapath
/// loads; [`serve_status`] serves it once the maps exist.
pub async fn bind_status(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    bind(addr, "--status-addr").await
}

/// The task that serves `/status` on `listener`.
pub fn serve_status(
    listener: tokio::net::TcpListener,
    source: Arc<StatusSource>,
) -> impl std::future::Future<Output = ()> {
    let app = Router::new()
        .route("/status", get(flow_status))
        .route("/drain", post(start_drain))
        .with_state(source);
    async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!("status server stopped: {err}");
        }
    }
}

/// `POST /drain`: from now on the answers to the workers' probes say this
/// pod is draining (CONFIG's `draining`), so the workers take their new
/// connections elsewhere; everything goes on being forwarded. Idempotent:
/// `egress-agent drain` asks again each time it polls. Answers with the
/// number of TCP connections the pod still carries.
async fn start_drain(State(source): State<Arc<StatusSource>>) -> axum::response::Response {
    let marked = tokio::task::spawn_blocking(move || {
        let mut maps = source.maps.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut cfg = maps.read_config()?;
        let first = cfg.draining == 0;
        if first {
            cfg.draining = 1;
            maps.write_config(&cfg)?;
        }
        anyhow::Ok((first, conntrack::open_tcp_connections(&maps)?))
    })
    .await;
    match marked {
        Ok(Ok((first, open))) => {
            if first {
                tracing::info!(open, "draining: probe answers tell the workers to move their new connections; forwarding goes on");
            }
            (StatusCode::OK, format!("{open}\n")).into_response()
        }
        Ok(Err(why)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{why:#}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the gateway is shutting down\n").into_response(),
    }
}

/// The metrics listener. `[::]` takes both families whatever
/// `net.ipv6.bindv6only` says (IPV6_V6ONLY off); on a kernel without IPv6
/// it is `0.0.0.0`, said in a log line. Any other address is bound as it
/// is.
async fn bind_metrics(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    if addr.ip() != IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        return bind(addr, "--metrics-addr").await;
    }
    match listen_on_both_families(addr.port()) {
        Ok(listener) => Ok(listener),
        Err(err) if err.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            let ipv4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
            tracing::info!("--metrics-addr {addr}: this kernel has no IPv6; listening on {ipv4}");
            bind(ipv4, "--metrics-addr").await
        }
        Err(err) => {
            Err(err).with_context(|| format!("cannot listen on --metrics-addr {addr}: pick a free address"))
        }
    }
}

/// A listener on `[::]:port` that takes IPv4 too (as IPv4-mapped).
fn listen_on_both_families(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v6()?;
    let off: libc::c_int = 0;
    // SAFETY: setsockopt on a socket we own, with an int option value.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            &off as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port))?;
    socket.listen(1024)
}

async fn bind(addr: SocketAddr, flag: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {flag} {addr}: pick a free address"))
}

fn probe(result: Result<(), String>) -> (StatusCode, String) {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn healthz(State(state): State<Arc<Probes>>) -> impl IntoResponse {
    probe(state.health.liveness())
}

async fn readyz(State(state): State<Arc<Probes>>) -> impl IntoResponse {
    probe(state.health.readiness())
}

async fn metrics(State(state): State<Arc<Probes>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "encoding the metrics failed\n".to_string(),
        ),
    }
}

/// The same JSON as `egress-agent status --json`, read on a blocking
/// thread (a million flows take seconds to walk).
async fn flow_status(State(source): State<Arc<StatusSource>>) -> axum::response::Response {
    let listing = tokio::task::spawn_blocking(move || {
        let maps = source.maps.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        status::collect(&maps, &source.interface).map_err(|e| format!("{e:#}"))
    })
    .await;
    match listing {
        Ok(Ok(status)) => axum::Json(status).into_response(),
        Ok(Err(why)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the gateway is shutting down\n").into_response(),
    }
}
