//! The `DevicePlugin` gRPC service kubelet calls on our socket, and [`serve`] to run it on a
//! unix socket. Nothing here panics or ends the process on a bad request: errors become
//! gRPC statuses.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use super::api::v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use super::api::v1beta1::{
    AllocateRequest, AllocateResponse, DevicePluginOptions, Empty, ListAndWatchResponse,
    PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
    PreferredAllocationResponse,
};
use super::{AllocateError, allocate_response, device_list, options, preferred_allocation};
use crate::health::AgentState;

/// The `DevicePlugin` service for one shared device node.
#[derive(Clone)]
pub struct MshvDevicePlugin {
    resource: Arc<str>,
    devices: u32,
    device_path: PathBuf,
    /// Follows the probe: `true` while capable.
    capable: watch::Receiver<bool>,
    /// Becomes `true` when this server instance is being stopped: open ListAndWatch
    /// streams send an empty list and end, so a graceful shutdown does not wait forever.
    stop: watch::Receiver<bool>,
    metrics: Option<Arc<dyn AllocationObserver>>,
}

/// Where `Allocate` calls are counted (the agent's metrics; tests may pass none).
pub trait AllocationObserver: Send + Sync {
    fn allocated(&self);
}

/// Counts into `mshv_node_agent_device_plugin_allocations_total`.
impl AllocationObserver for AgentState {
    fn allocated(&self) {
        self.metrics.observe_allocation();
    }
}

impl MshvDevicePlugin {
    pub fn new(
        resource: &str,
        devices: u32,
        device_path: PathBuf,
        capable: watch::Receiver<bool>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            resource: Arc::from(resource),
            devices,
            device_path,
            capable,
            stop,
            metrics: None,
        }
    }

    pub fn with_observer(mut self, observer: Arc<dyn AllocationObserver>) -> Self {
        self.metrics = Some(observer);
        self
    }

    fn list(&self, healthy: bool) -> ListAndWatchResponse {
        ListAndWatchResponse {
            devices: device_list(&self.resource, self.devices, healthy),
        }
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for MshvDevicePlugin {
    async fn get_device_plugin_options(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    type ListAndWatchStream = ListStream;

    /// The full list at once, then again on every change of the probe's verdict, as
    /// virt-handler does on device health changes (generic_device.go:207-221); an empty
    /// list when the server stops, which makes kubelet drop the devices at once
    /// (generic_device.go:229-234).
    async fn list_and_watch(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let mut capable = self.capable.clone();
        let mut stop = self.stop.clone();
        let this = self.clone();
        tokio::spawn(async move {
            let mut current = *capable.borrow_and_update();
            if tx.send(Ok(this.list(current))).await.is_err() {
                return;
            }
            debug!(healthy = current, "ListAndWatch: initial list sent");
            loop {
                tokio::select! {
                    changed = capable.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let now = *capable.borrow_and_update();
                        if now == current {
                            continue;
                        }
                        current = now;
                        info!(healthy = now, "ListAndWatch: device health changed");
                        if tx.send(Ok(this.list(now))).await.is_err() {
                            return;
                        }
                    }
                    changed = stop.changed() => {
                        if changed.is_err() || *stop.borrow() {
                            break;
                        }
                    }
                    () = tx.closed() => return,
                }
            }
            let _ = tx
                .send(Ok(ListAndWatchResponse {
                    devices: Vec::new(),
                }))
                .await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        Ok(Response::new(preferred_allocation(request.get_ref())))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        match allocate_response(
            &self.resource,
            self.devices,
            &self.device_path,
            request.get_ref(),
        ) {
            Ok(resp) => {
                if let Some(m) = &self.metrics {
                    m.allocated();
                }
                info!(
                    containers = resp.container_responses.len(),
                    device = %self.device_path.display(),
                    "Allocate"
                );
                Ok(Response::new(resp))
            }
            Err(e @ (AllocateError::UnknownDevice(_) | AllocateError::NoDevices)) => {
                warn!(error = %e, "Allocate refused");
                Err(Status::invalid_argument(e.to_string()))
            }
        }
    }

    async fn pre_start_container(
        &self,
        _request: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        // Nothing to prepare (pre_start_required is false); answer kindly if called.
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

/// Serve `plugin` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    plugin: MshvDevicePlugin,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(DevicePluginServer::new(plugin))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
}
