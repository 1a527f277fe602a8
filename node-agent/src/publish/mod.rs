//! Where the desired labels go: the Node object (server-side apply) or a Node Feature
//! Discovery `features.d` file that nfd-worker turns into labels; and where the agent's
//! liveness goes: a `coordination.k8s.io/v1` Lease (`lease`), never the Node.

pub mod api;
pub mod lease;
pub mod nfd;

use std::time::Duration;

use thiserror::Error;

use crate::labels::Desired;

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    #[error("writing the NFD features file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub enum Publisher {
    /// Boxed: the kube client is large and there is one publisher per process.
    Api(Box<api::ApiPublisher>),
    Nfd(nfd::NfdPublisher),
}

impl Publisher {
    pub async fn publish(
        &self,
        desired: &Desired,
        now: jiff::Timestamp,
    ) -> Result<(), PublishError> {
        match self {
            Publisher::Api(p) => p.apply(desired).await,
            Publisher::Nfd(p) => p.write(desired, now),
        }
    }

    /// How often an unchanged result is written again: never for the Node (every Node
    /// write reaches every Node watcher; liveness is in the Lease), every `refresh` for the
    /// NFD file, a local file whose `expiry-time` must not lapse while the agent lives.
    pub fn refresh(&self) -> Option<Duration> {
        match self {
            Publisher::Api(_) => None,
            Publisher::Nfd(p) => Some(p.refresh()),
        }
    }

    pub fn target(&self) -> &'static str {
        match self {
            Publisher::Api(_) => "api",
            Publisher::Nfd(_) => "nfd",
        }
    }

    /// The features file, when publishing through NFD.
    pub fn nfd_path(&self) -> Option<std::path::PathBuf> {
        match self {
            Publisher::Api(_) => None,
            Publisher::Nfd(p) => Some(p.path()),
        }
    }
}
