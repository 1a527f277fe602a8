//! The device plugin's life: wait for kubelet, step aside for virt-handler, serve our
//! socket, register, and start again whenever kubelet restarts. Never returns early and
//! never panics on gRPC or file errors: each becomes the `error` state and a retry with the
//! agent's capped backoff.
//!
//! Signals, all polled every `poll` (a few `stat`s; no inotify dependency):
//! - kubelet restarted: it wipes its device-plugins directory, our socket included, then
//!   re-creates `kubelet.sock`. Our socket gone (or replaced: another inode) means "register
//!   again", exactly the signal virt-handler uses (generic_device.go:333-336).
//! - virt-handler serves the resource: its `kubevirt-<device>.sock` exists and accepts
//!   connections. Two plugins for one resource would replace each other's registration at
//!   kubelet, so the agent does not register (or stops serving) while that is so.
//! - agent restart: a stale socket of ours from the previous process is removed first.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tracing::{Instrument, info, warn};

use super::registration::{register, register_request};
use super::service::{AllocationObserver, MshvDevicePlugin, serve};
use super::{PluginConfig, PluginState};
use crate::backoff::Backoff;
use crate::health::AgentState;
use crate::status::now;

/// Why a registered period ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Our socket vanished or was replaced: kubelet restarted.
    SocketGone,
    /// virt-handler started serving the resource.
    VirtHandler,
    /// Our gRPC server stopped by itself (its task has been awaited already).
    ServerStopped,
    /// Serving or registering failed and the backoff delay has passed: check again.
    Retry,
    Shutdown,
}

/// Reports state changes to metrics, `/status` and the log (once per change).
struct Reporter<'a> {
    health: &'a AgentState,
    cfg: &'a PluginConfig,
    last: Option<(PluginState, String)>,
}

impl Reporter<'_> {
    fn set(&mut self, state: PluginState, detail: String) {
        if self
            .last
            .as_ref()
            .is_some_and(|(s, d)| *s == state && *d == detail)
        {
            return;
        }
        match state {
            PluginState::Error => warn!(state = state.as_str(), detail = %detail, "device plugin"),
            _ => info!(state = state.as_str(), detail = %detail, "device plugin"),
        }
        self.health.metrics.set_plugin_state(state.as_str());
        let (resource, socket, devices) = (
            self.cfg.resource.clone(),
            self.cfg.socket_path().display().to_string(),
            self.cfg.devices,
        );
        let d = detail.clone();
        self.health.update_status(|s| {
            s.device_plugin.state = state.as_str();
            s.device_plugin.resource = Some(resource);
            s.device_plugin.socket = Some(socket);
            s.device_plugin.devices = devices;
            s.device_plugin.detail = d.clone();
            s.device_plugin.since = Some(now());
            if state == PluginState::Error {
                s.record_error("device-plugin", d);
            }
        });
        self.last = Some((state, detail));
    }

    fn healthy_devices(&self, n: u32) {
        self.health.metrics.set_healthy_devices(n);
        self.health
            .update_status(|s| s.device_plugin.healthy_devices = n);
    }
}

/// Report the plugin as switched off (`--device-plugin=false`).
pub fn report_disabled(health: &AgentState) {
    health
        .metrics
        .set_plugin_state(PluginState::Disabled.as_str());
    health.metrics.set_healthy_devices(0);
    health.update_status(|s| {
        s.device_plugin.state = PluginState::Disabled.as_str();
        s.device_plugin.detail = "switched off (--device-plugin=false)".into();
        s.device_plugin.since = Some(now());
    });
}

/// Is a server listening on `path`? A leftover socket file of a dead process refuses.
async fn socket_alive(path: &Path) -> bool {
    if !path.exists() {
        return false;
    }
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::UnixStream::connect(path)
        )
        .await,
        Ok(Ok(_))
    )
}

/// "Does virt-handler serve the resource here?": its socket exists and, checked at most
/// every `recheck`, accepts a connection. A vanished socket is noticed on the next poll.
struct VirtHandlerWatch {
    path: std::path::PathBuf,
    recheck: Duration,
    last: Option<(std::time::Instant, bool)>,
}

impl VirtHandlerWatch {
    async fn present(&mut self) -> bool {
        if !self.path.exists() {
            self.last = None;
            return false;
        }
        if let Some((at, alive)) = self.last
            && at.elapsed() < self.recheck
        {
            return alive;
        }
        let alive = socket_alive(&self.path).await;
        self.last = Some((std::time::Instant::now(), alive));
        alive
    }
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// Remove a socket file at `path` if there is one (ours from an earlier run or instance).
fn remove_socket(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sleep `d`, or return `true` at once when shutting down.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        r = stop.changed() => r.is_err() || *stop.borrow(),
    }
}

/// Run the device plugin until `stop` becomes `true` (or its sender is dropped).
pub async fn run(cfg: PluginConfig, health: Arc<AgentState>, mut stop: watch::Receiver<bool>) {
    let mut rep = Reporter {
        health: &health,
        cfg: &cfg,
        last: None,
    };
    let own = cfg.socket_path();
    let kubelet = cfg.kubelet_socket();
    let virt_handler = cfg.virt_handler_socket();
    let mut vh = VirtHandlerWatch {
        path: virt_handler.clone(),
        recheck: cfg.virt_handler_recheck,
        last: None,
    };
    let mut backoff = Backoff::new(cfg.backoff_base, cfg.backoff_cap);
    info!(
        resource = %cfg.resource,
        devices = cfg.devices,
        socket = %own.display(),
        "device plugin started"
    );
    rep.healthy_devices(0);

    loop {
        if *stop.borrow() {
            break;
        }
        if vh.present().await {
            rep.set(
                PluginState::DeferredToVirtHandler,
                format!(
                    "virt-handler serves {} on this node ({} is live): not registering; re-checking every {:?}",
                    cfg.resource,
                    virt_handler.display(),
                    cfg.poll
                ),
            );
            if sleep_or_stop(cfg.poll, &mut stop).await {
                break;
            }
            continue;
        }
        if !kubelet.exists() {
            rep.set(
                PluginState::WaitingForKubelet,
                format!("{} does not exist yet", kubelet.display()),
            );
            if sleep_or_stop(cfg.poll, &mut stop).await {
                break;
            }
            continue;
        }

        match serve_and_register(&cfg, &health, &mut rep, &mut backoff, &mut vh, &mut stop).await {
            Ended::Shutdown => break,
            Ended::Retry => {}
            Ended::SocketGone => info!(
                socket = %own.display(),
                "our socket was removed: kubelet restarted; registering again"
            ),
            Ended::VirtHandler => info!(
                socket = %virt_handler.display(),
                "virt-handler now serves the resource; stepping aside"
            ),
            Ended::ServerStopped => {
                let delay = backoff.next_delay();
                warn!(
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "device plugin server stopped; restarting"
                );
                if sleep_or_stop(delay, &mut stop).await {
                    break;
                }
            }
        }
    }
    rep.healthy_devices(0);
    // The socket was removed when its period ended (only if it was still ours: during a
    // rolling update the next agent's socket may already have the same name).
    info!("device plugin stopped");
}

/// One serve+register period. Returns when it ends; errors before registration are
/// reported and waited out here with backoff (returning `Retry` to re-check everything).
async fn serve_and_register(
    cfg: &PluginConfig,
    health: &Arc<AgentState>,
    rep: &mut Reporter<'_>,
    backoff: &mut Backoff,
    vh: &mut VirtHandlerWatch,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let own = cfg.socket_path();
    // A socket left by an earlier run of the agent (or an earlier period): bind fails with
    // EADDRINUSE on an existing path.
    if let Err(e) = remove_socket(&own) {
        return retry_after_error(
            rep,
            backoff,
            stop,
            format!("removing stale {}: {e}", own.display()),
        )
        .await;
    }
    let listener = match UnixListener::bind(&own) {
        Ok(l) => l,
        Err(e) => {
            return retry_after_error(
                rep,
                backoff,
                stop,
                format!("binding {}: {e}", own.display()),
            )
            .await;
        }
    };
    let bound = inode(&own);

    let (server_stop_tx, server_stop_rx) = watch::channel(false);
    let plugin = MshvDevicePlugin::new(
        &cfg.resource,
        cfg.devices,
        cfg.device_path.clone(),
        health.subscribe_capable(),
        server_stop_rx.clone(),
    )
    .with_observer(Arc::clone(health) as Arc<dyn AllocationObserver>);
    let mut server_stop = server_stop_rx;
    let mut server = tokio::spawn(
        serve(listener, plugin, async move {
            let _ = server_stop.wait_for(|s| *s).await;
        })
        .in_current_span(),
    );

    let request = register_request(&cfg.socket_name(), &cfg.resource);
    let ended = match register(&cfg.kubelet_socket(), request, cfg.register_timeout).await {
        Err(e) => {
            health.metrics.observe_registration(false);
            let _ = server_stop_tx.send(true);
            stop_server(&mut server).await;
            let _ = remove_socket(&own);
            return retry_after_error(rep, backoff, stop, format!("registering with kubelet: {e}"))
                .await;
        }
        Ok(()) => {
            health.metrics.observe_registration(true);
            backoff.reset();
            rep.set(
                PluginState::Registered,
                format!(
                    "serving {} ({} devices) on {}",
                    cfg.resource,
                    cfg.devices,
                    own.display()
                ),
            );
            watch_registered(cfg, rep, &own, bound, &mut server, vh, stop).await
        }
    };
    rep.healthy_devices(0);
    let _ = server_stop_tx.send(true);
    if ended != Ended::ServerStopped {
        stop_server(&mut server).await;
    }
    // Remove the socket only if it is still the one we bound (kubelet may have wiped it and
    // something else may own the name now — never another process's socket).
    if bound.is_some()
        && inode(&own) == bound
        && let Err(e) = remove_socket(&own)
    {
        warn!(error = %e, socket = %own.display(), "could not remove the plugin socket");
    }
    ended
}

async fn retry_after_error(
    rep: &mut Reporter<'_>,
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
    detail: String,
) -> Ended {
    let delay = backoff.next_delay();
    rep.set(
        PluginState::Error,
        format!("{detail}; retry {} in {delay:?}", backoff.failures()),
    );
    if sleep_or_stop(delay, stop).await {
        Ended::Shutdown
    } else {
        Ended::Retry
    }
}

async fn watch_registered(
    cfg: &PluginConfig,
    rep: &mut Reporter<'_>,
    own: &Path,
    bound: Option<u64>,
    server: &mut tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    vh: &mut VirtHandlerWatch,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let mut capable = rep.health.subscribe_capable();
    loop {
        let healthy = *capable.borrow_and_update();
        rep.healthy_devices(if healthy { cfg.devices } else { 0 });
        tokio::select! {
            () = tokio::time::sleep(cfg.poll) => {
                if bound.is_none() || inode(own) != bound {
                    return Ended::SocketGone;
                }
                if vh.present().await {
                    return Ended::VirtHandler;
                }
            }
            r = capable.changed() => {
                if r.is_err() {
                    // The agent dropped its side: only happens on shutdown.
                    return Ended::Shutdown;
                }
            }
            r = &mut *server => {
                match r {
                    Ok(Ok(())) => warn!("device plugin server ended"),
                    Ok(Err(e)) => warn!(error = %e, "device plugin server failed"),
                    Err(e) => warn!(error = %e, "device plugin server task failed"),
                }
                return Ended::ServerStopped;
            }
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    return Ended::Shutdown;
                }
            }
        }
    }
}

/// Let the server finish its graceful shutdown (open streams end at once on the stop
/// signal); abort it if that takes unreasonably long.
/// Must not be called on a handle that has already been awaited to completion.
async fn stop_server(server: &mut tokio::task::JoinHandle<Result<(), tonic::transport::Error>>) {
    if tokio::time::timeout(Duration::from_secs(5), &mut *server)
        .await
        .is_err()
    {
        server.abort();
    }
}
