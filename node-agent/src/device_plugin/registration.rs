//! Dialling a gRPC server on a unix socket, and `Register` with kubelet.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::api::v1beta1::RegisterRequest;
use super::api::v1beta1::registration_client::RegistrationClient;
use super::{API_VERSION, options};

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("connecting to {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("kubelet refused the registration: {0}")]
    Refused(#[from] tonic::Status),
    #[error("no answer from kubelet within {0:?}")]
    Timeout(Duration),
}

/// A gRPC channel to the server listening on the unix socket `path`. Also what a test
/// (or kubelet) uses to call our plugin: `DevicePluginClient::new(connect_unix(p, t).await?)`.
pub async fn connect_unix(path: &Path, timeout: Duration) -> Result<Channel, RegistrationError> {
    let target = path.to_path_buf();
    // The URI is required by tonic but unused: the connector below ignores it.
    Endpoint::from_static("http://localhost")
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let target = target.clone();
            async move { UnixStream::connect(target).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|source| RegistrationError::Connect {
            path: path.to_path_buf(),
            source,
        })
}

/// The request virt-handler sends too (generic_device.go:186-205): our socket's *name*
/// (kubelet joins it to its own directory) and the resource.
pub fn register_request(endpoint: &str, resource: &str) -> RegisterRequest {
    RegisterRequest {
        version: API_VERSION.to_string(),
        endpoint: endpoint.to_string(),
        resource_name: resource.to_string(),
        options: Some(options()),
    }
}

/// One `Register` call on `kubelet_socket`, bounded by `timeout` as a whole.
pub async fn register(
    kubelet_socket: &Path,
    request: RegisterRequest,
    timeout: Duration,
) -> Result<(), RegistrationError> {
    let call = async {
        let channel = connect_unix(kubelet_socket, timeout).await?;
        RegistrationClient::new(channel).register(request).await?;
        Ok(())
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| RegistrationError::Timeout(timeout))?
}
