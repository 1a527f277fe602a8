//! The agent's small HTTP server: `/metrics`, `/healthz` (the process is serving),
//! `/readyz` (a first probe has completed, so the metrics and labels mean something) and
//! `/status` (JSON: see [`crate::status::Status`]).
//!
//! [`AgentState`] is also the hub between the tasks: the agent loop records probes here,
//! and the device plugin follows the probe through [`AgentState::subscribe_capable`].

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::probe::ProbeReport;
use crate::status::Status;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The agent's state shared by its tasks and its HTTP endpoints: metrics, readiness and status.
#[derive(Debug)]
pub struct AgentState {
    pub metrics: Metrics,
    ready: AtomicBool,
    status: Mutex<Status>,
    /// `true` while the last probe said `capable`; the device plugin's health.
    capable: watch::Sender<bool>,
    /// The last guest verification (`None`: not tried); the agent loop's guest-verified label.
    guest_verified: watch::Sender<Option<bool>>,
}

impl Default for AgentState {
    fn default() -> Self {
        Self::new(Metrics::new())
    }
}

impl AgentState {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            ready: AtomicBool::new(false),
            status: Mutex::new(Status::default()),
            capable: watch::Sender::new(false),
            guest_verified: watch::Sender::new(None),
        }
    }

    /// Record one probe: metrics, `/status`, and the capable channel (which wakes the
    /// device plugin's ListAndWatch streams only when the value actually changes).
    pub fn record_probe(&self, report: &ProbeReport) {
        self.metrics.observe_probe(report);
        self.update_status(|s| s.record_probe(report));
        self.capable.send_if_modified(|c| {
            let changed = *c != report.capable;
            *c = report.capable;
            changed
        });
        self.set_ready();
    }

    /// Follow "the node is capable" (the current value first, then every change).
    pub fn subscribe_capable(&self) -> watch::Receiver<bool> {
        self.capable.subscribe()
    }

    /// Record a guest verification (`None`: withdrawn, e.g. the device node went away):
    /// metrics, `/status`, and the channel the agent loop turns into the label.
    pub fn record_guest_verification(&self, v: Option<&crate::guest_verify::GuestVerification>) {
        self.metrics.observe_guest_verification(v);
        self.update_status(|s| s.guest_verification = v.cloned());
        let value = v.map(|v| v.verified);
        self.guest_verified.send_if_modified(|g| {
            let changed = *g != value;
            *g = value;
            changed
        });
    }

    /// Follow the guest verification result (the current value first, then every change).
    pub fn subscribe_guest_verified(&self) -> watch::Receiver<Option<bool>> {
        self.guest_verified.subscribe()
    }

    /// Record a finished bench: metrics and `/status`.
    pub fn record_bench(&self, report: &crate::bench::BenchReport) {
        self.metrics.observe_bench(report);
        self.update_status(|s| s.bench = Some(crate::status::BenchStatus::from(report)));
    }

    /// Change the `/status` document. A poisoned lock (a panic elsewhere while holding it)
    /// still holds usable data: keep serving it rather than failing.
    pub fn update_status(&self, f: impl FnOnce(&mut Status)) {
        let mut guard = self.status.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(state)
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AgentState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], body),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding metrics failed: {e}\n"),
        ),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AgentState>>) -> (StatusCode, &'static str) {
    if state.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no probe has completed yet\n",
        )
    }
}

async fn status(State(state): State<Arc<AgentState>>) -> axum::response::Response {
    match serde_json::to_string_pretty(&state.status()) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body + "\n",
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding the status failed: {e}\n"),
        )
            .into_response(),
    }
}
