//! The agent's device plugin served on a unix socket in a temp dir, with no kubelet: what a
//! test needs to call `Allocate` (and the rest of the DevicePlugin service) as kubelet does.

use std::time::Duration;

use mshv_node_agent::device_plugin::api::v1beta1::device_plugin_client::DevicePluginClient;
use mshv_node_agent::device_plugin::registration::connect_unix;
use mshv_node_agent::device_plugin::service::{MshvDevicePlugin, serve};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tonic::transport::Channel;

/// A connected client; the temp dir, the health sender and the stop sender live as long as it.
pub struct PluginOnSocket {
    pub client: DevicePluginClient<Channel>,
    _dir: tempfile::TempDir,
    _capable: watch::Sender<bool>,
    _stop: watch::Sender<bool>,
}

/// Serves a healthy plugin for `resource` (1000 devices, `/dev/mshv`) and dials it.
pub async fn serve_plugin(resource: &str) -> PluginOnSocket {
    let dir = tempfile::tempdir().expect("tempdir");
    let (capable_tx, capable) = watch::channel(true);
    let (stop_tx, stop) = watch::channel(false);
    let plugin = MshvDevicePlugin::new(resource, 1000, "/dev/mshv".into(), capable, stop);
    let sock = dir.path().join("mshv-node-agent-mshv.sock");
    tokio::spawn(serve(
        UnixListener::bind(&sock).expect("bind"),
        plugin,
        std::future::pending(),
    ));
    let client = DevicePluginClient::new(
        connect_unix(&sock, Duration::from_secs(5))
            .await
            .expect("dial the plugin"),
    );
    PluginOnSocket {
        client,
        _dir: dir,
        _capable: capable_tx,
        _stop: stop_tx,
    }
}
