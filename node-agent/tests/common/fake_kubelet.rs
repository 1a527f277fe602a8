//! A FAKE kubelet for the device plugin tests: a real tonic `Registration` server on
//! `kubelet.sock` in a directory, forwarding every `Register` request to the test (and
//! refusing them on demand). Not kubelet: no device manager, no calls back to the plugin.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use mshv_node_agent::device_plugin::api::v1beta1::registration_server::{
    Registration, RegistrationServer,
};
use mshv_node_agent::device_plugin::api::v1beta1::{Empty, RegisterRequest};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

const BOUND: Duration = Duration::from_secs(20);

/// The fake kubelet's Registration service: forwards every request to the test.
pub struct FakeKubelet {
    seen: mpsc::UnboundedSender<RegisterRequest>,
    refuse: bool,
}

#[tonic::async_trait]
impl Registration for FakeKubelet {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let _ = self.seen.send(request.get_ref().clone());
        if self.refuse {
            return Err(Status::invalid_argument("fake kubelet refuses"));
        }
        Ok(Response::new(Empty {}))
    }
}

/// A running fake kubelet; dropping `stop` (or `shutdown`) stops it.
pub struct Kubelet {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Kubelet {
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(BOUND, &mut self.task).await;
    }
}

pub fn start_kubelet(
    dir: &Path,
    refuse: bool,
) -> (Kubelet, mpsc::UnboundedReceiver<RegisterRequest>) {
    let path = dir.join("kubelet.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind kubelet.sock");
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(FakeKubelet { seen: tx, refuse }))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stop_rx.await;
            })
            .await;
    });
    (
        Kubelet {
            stop: Some(stop_tx),
            task,
        },
        rx,
    )
}

/// The same on its own thread (for tests of the built binary, which are not async):
/// registrations arrive on a std channel; dropping the returned sender stops it.
pub fn start_kubelet_thread(
    dir: &Path,
) -> (
    std::sync::mpsc::Receiver<RegisterRequest>,
    tokio::sync::oneshot::Sender<()>,
) {
    let dir = dir.to_path_buf();
    let (out_tx, out_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (kubelet, mut regs) = start_kubelet(&dir, false);
            let _ = ready_tx.send(());
            tokio::pin!(stop_rx);
            loop {
                tokio::select! {
                    r = regs.recv() => match r {
                        Some(r) => { let _ = out_tx.send(r); }
                        None => break,
                    },
                    _ = &mut stop_rx => break,
                }
            }
            kubelet.shutdown().await;
        });
    });
    ready_rx
        .recv_timeout(BOUND)
        .expect("the fake kubelet starts");
    (out_rx, stop_tx)
}
