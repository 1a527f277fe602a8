//! Server-side apply of the agent's labels and annotation on its own Node.
//!
//! Each apply carries the complete set the agent wants, under the fixed field manager
//! `mshv-node-agent` with `force=true`: a key left out of the next apply (e.g.
//! `<prefix>capable` once the node stops being capable) is removed by the API server,
//! because this manager is its only owner. Request shape (kube-rs `Patch::Apply`):
//! `PATCH /api/v1/nodes/<name>?fieldManager=mshv-node-agent&force=true`,
//! `Content-Type: application/apply-patch+yaml`, JSON body (JSON is YAML).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::PublishError;
use crate::labels::{Desired, FIELD_MANAGER, LabelPrefix};

/// Build the client the agent uses from a kube `Config` (inferred in-cluster, or a test's).
///
/// kube 5 wraps clients in a retry layer for 429/503/504 by default (up to 15 tries). The
/// agent turns it off so there is exactly one retry policy to reason about: each attempt is
/// bounded by `timeout`, and the loop's capped exponential backoff (`backoff.rs`) spaces the
/// attempts.
pub fn client(mut config: kube::Config, timeout: Duration) -> Result<Client, kube::Error> {
    config.default_retry = false;
    config.read_timeout = Some(timeout);
    Client::try_from(config)
}

pub struct ApiPublisher {
    api: Api<Node>,
    node: String,
    timeout: Duration,
}

/// What `cleanup` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CleanupOutcome {
    /// Keys still present after the empty apply (owned by another manager too, e.g. an
    /// older agent or a `kubectl label`), then removed with a merge patch.
    pub removed_by_merge_patch: Vec<String>,
}

/// The apply body (pure, so its exact shape is unit tested).
pub fn apply_body(node: &str, desired: &Desired) -> Value {
    let mut annotations = BTreeMap::new();
    annotations.insert(desired.annotation_key.clone(), desired.annotation_value());
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node,
            "labels": desired.labels,
            "annotations": annotations,
        }
    })
}

/// An apply that owns nothing: the API server drops every field the manager owned alone.
pub fn release_body(node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
}

/// A JSON merge patch deleting the given label and annotation keys.
pub fn removal_merge_patch(labels: &[String], annotations: &[String]) -> Value {
    let nulls = |keys: &[String]| -> serde_json::Map<String, Value> {
        keys.iter().map(|k| (k.clone(), Value::Null)).collect()
    };
    json!({"metadata": {"labels": nulls(labels), "annotations": nulls(annotations)}})
}

impl ApiPublisher {
    pub fn new(client: Client, node: impl Into<String>, timeout: Duration) -> Self {
        Self {
            api: Api::all(client),
            node: node.into(),
            timeout,
        }
    }

    fn apply_params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, PublishError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(PublishError::from),
            Err(_) => Err(PublishError::Timeout(self.timeout)),
        }
    }

    /// One server-side apply of everything the agent wants on the Node. The body is a
    /// pure function of `desired`: applying the same desired state twice changes nothing.
    pub async fn apply(&self, desired: &Desired) -> Result<(), PublishError> {
        let body = apply_body(&self.node, desired);
        self.timed(
            self.api
                .patch(&self.node, &Self::apply_params(), &Patch::Apply(&body)),
        )
        .await
        .map(|_| ())
    }

    /// Uninstall: give up every field this manager owns, then remove whatever agent keys
    /// (by prefix) are still there.
    pub async fn cleanup(&self, prefix: &LabelPrefix) -> Result<CleanupOutcome, PublishError> {
        let body = release_body(&self.node);
        let node = self
            .timed(
                self.api
                    .patch(&self.node, &Self::apply_params(), &Patch::Apply(&body)),
            )
            .await?;
        let with_prefix = |m: Option<&BTreeMap<String, String>>| -> Vec<String> {
            m.map(|m| {
                m.keys()
                    .filter(|k| k.starts_with(prefix.as_str()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
        };
        let labels = with_prefix(node.metadata.labels.as_ref());
        let annotations = with_prefix(node.metadata.annotations.as_ref());
        if labels.is_empty() && annotations.is_empty() {
            return Ok(CleanupOutcome::default());
        }
        let patch = removal_merge_patch(&labels, &annotations);
        self.timed(
            self.api
                .patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await?;
        Ok(CleanupOutcome {
            removed_by_merge_patch: labels.into_iter().chain(annotations).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::ProbeAnnotation;

    #[test]
    fn body_shape() {
        let prefix = LabelPrefix::default();
        let desired = Desired {
            labels: [(prefix.key("capable"), "true".to_string())].into(),
            annotation_key: prefix.key("probe"),
            annotation: ProbeAnnotation {
                state: "capable".into(),
                capable: true,
                errno: Some(22),
                errno_name: Some("EINVAL".into()),
                reason: "r".into(),
                partition_type: "l1vh".into(),
                hv_build: Some(26102),
                uapi: Some("mainline".into()),
                kernel: Some("6.18.0".into()),
                agent_version: "0.1.0".into(),
            },
        };
        let body = apply_body("n1", &desired);
        assert_eq!(body["kind"], "Node");
        assert_eq!(body["metadata"]["name"], "n1");
        assert_eq!(
            body["metadata"]["labels"]["mshv.node.hyperv-layered.io/capable"],
            "true"
        );
        let ann = body["metadata"]["annotations"]["mshv.node.hyperv-layered.io/probe"]
            .as_str()
            .expect("annotation is a string");
        let parsed: Value = serde_json::from_str(ann).expect("annotation is JSON");
        // No timestamp: the same probe result gives the same body, byte for byte.
        assert!(parsed.get("heartbeat").is_none(), "{parsed}");
        assert_eq!(body, apply_body("n1", &desired));
        assert_eq!(parsed["errno_name"], "EINVAL");
    }

    #[test]
    fn removal_patch_nulls_keys() {
        let p = removal_merge_patch(&["a/b".into()], &["a/probe".into()]);
        assert_eq!(
            p,
            json!({"metadata": {"labels": {"a/b": null}, "annotations": {"a/probe": null}}})
        );
    }
}
