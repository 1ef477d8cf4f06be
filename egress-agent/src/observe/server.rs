//! The HTTP endpoints. Probes and scrapes only read shared state; nothing
//! here can slow the datapath or the main loop.
use std::{net::SocketAddr, sync::Arc};

use anyhow::{Context, Result};
use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use prometheus_client::registry::Registry;

use super::Health;
use crate::status::Status;

/// A `/status` request for the main loop, which owns the maps.
pub type StatusRequest = tokio::sync::oneshot::Sender<Result<Status, String>>;

struct Endpoints {
    health: Arc<Health>,
    registry: Registry,
    status_requests: tokio::sync::mpsc::Sender<StatusRequest>,
}

/// Binds `addr` now (so a taken port fails the start with one line) and
/// returns the task that serves it.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    registry: Registry,
    status_requests: tokio::sync::mpsc::Sender<StatusRequest>,
) -> Result<impl std::future::Future<Output = ()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {addr}: pick a free address"))?;
    let state = Arc::new(Endpoints { health, registry, status_requests });
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state);
    Ok(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {err}");
        }
    })
}

fn probe(result: Result<(), String>) -> (StatusCode, String) {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn healthz(State(state): State<Arc<Endpoints>>) -> impl IntoResponse {
    probe(state.health.liveness())
}

async fn readyz(State(state): State<Arc<Endpoints>>) -> impl IntoResponse {
    probe(state.health.readiness())
}

async fn metrics(State(state): State<Arc<Endpoints>>) -> impl IntoResponse {
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

/// The same JSON as `egress-agent status --json`.
async fn status(State(state): State<Arc<Endpoints>>) -> axum::response::Response {
    let (reply, answer) = tokio::sync::oneshot::channel();
    if state.status_requests.send(reply).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the gateway is shutting down\n").into_response();
    }
    match answer.await {
        Ok(Ok(status)) => axum::Json(status).into_response(),
        Ok(Err(why)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the gateway is shutting down\n").into_response(),
    }
}
