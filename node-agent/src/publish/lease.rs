//! The agent's liveness: one `coordination.k8s.io/v1` Lease per node in the agent's own
//! namespace, renewed every `--lease-renew-interval`.
//!
//! Why a Lease and not a heartbeat on the Node: every Node write is sent to every Node
//! watcher in the cluster (kubelet, kube-proxy, every controller and DaemonSet that
//! watches Nodes), which is why kubelet moved its own heartbeat to Leases in
//! `kube-node-lease` (KEP-589). A Lease in the agent's namespace is watched by nobody but
//! whoever asks, so the Node is written only when the probe result changes
//! (`agent::SyncState`).
//!
//! Shape, after kubelet's node lease (`kubernetes/kubernetes@1f22a173
//! pkg/kubelet/util/nodelease.go:32`, `SetNodeOwnerFunc`): name `mshv-node-agent-<node>`,
//! `holderIdentity` the agent Pod (`POD_NAME`, else the node name), `leaseDurationSeconds`,
//! `renewTime`, `acquireTime` (when this process first renewed it), and an ownerReference
//! to the Node (apiVersion v1, kind Node, name, uid; no `blockOwnerDeletion`, which would
//! need `update` on `nodes/finalizers`): the garbage collector deletes the Lease with its
//! Node, so a scaled-down cluster leaves no stale Leases behind. Like kubelet, the Node's
//! uid is read (GET, not a write) until it is known, and the Lease is renewed without the
//! owner meanwhile.
//!
//! Each renewal is one server-side apply (`PATCH ...?fieldManager=mshv-node-agent&force=true`)
//! that creates the Lease when absent, so there is no get-then-create/update race and no
//! resourceVersion to carry. kube-client 5 has no Lease helper, and the Lease crates on
//! crates.io (kube-leader-election, kube-lease-manager) elect a leader among replicas,
//! which this is not; so this is the plain typed `Api<Lease>` (kube-runtime, not a
//! dependency here, was not checked). Errors never end the loop: a failed renewal is retried with
//! the capped exponential backoff of `backoff.rs`, never later than a regular renewal.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tracing::{info, warn};

use super::PublishError;
use crate::backoff::Backoff;
use crate::health::AgentState;
use crate::labels::FIELD_MANAGER;

/// Prefix of every Lease name (`mshv-node-agent-<node>`).
pub const NAME_PREFIX: &str = "mshv-node-agent-";
/// Longest object name the API server accepts (a DNS subdomain).
const MAX_NAME: usize = 253;

/// The Lease name of `node`. Node names are DNS subdomains of up to 253 characters, so
/// the prefixed name is cut to 253 (and trailing dots/dashes trimmed to stay valid); two
/// nodes whose names agree in their first 237 characters would share a Lease.
pub fn lease_name(node: &str) -> String {
    let full = format!("{NAME_PREFIX}{node}");
    // Cut on a character boundary: a node name is ASCII, but this must not panic on
    // whatever `--node-name` says.
    let mut end = full.len().min(MAX_NAME);
    while !full.is_char_boundary(end) {
        end -= 1;
    }
    full[..end].trim_end_matches(['.', '-']).to_string()
}

/// Everything the renewal loop needs to know (from the command line).
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub holder: String,
    pub node: String,
    /// `leaseDurationSeconds`: how long the Lease counts as held after a renewal.
    pub duration: Duration,
    pub renew_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl LeaseConfig {
    pub fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// The apply body (pure, so its exact shape is unit tested).
pub fn lease_body(
    cfg: &LeaseConfig,
    node_uid: Option<&str>,
    acquired: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Lease {
    let owner = node_uid.map(|uid| OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: cfg.node.clone(),
        uid: uid.to_string(),
        ..OwnerReference::default()
    });
    Lease {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            namespace: Some(cfg.namespace.clone()),
            labels: Some(
                [(
                    "app.kubernetes.io/name".to_string(),
                    "mshv-node-agent".to_string(),
                )]
                .into(),
            ),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(cfg.holder.clone()),
            lease_duration_seconds: Some(cfg.duration_seconds()),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

/// Renews one Lease through the API server.
pub struct LeaseRenewer {
    leases: Api<Lease>,
    nodes: Api<Node>,
    cfg: LeaseConfig,
    timeout: Duration,
    node_uid: Option<String>,
    acquired: Option<jiff::Timestamp>,
}

impl LeaseRenewer {
    pub fn new(client: Client, cfg: LeaseConfig, timeout: Duration) -> Self {
        Self {
            leases: Api::namespaced(client.clone(), &cfg.namespace),
            nodes: Api::all(client),
            cfg,
            timeout,
            node_uid: None,
            acquired: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    pub fn node_uid(&self) -> Option<&str> {
        self.node_uid.as_deref()
    }

    async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, PublishError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(PublishError::from),
            Err(_) => Err(PublishError::Timeout(self.timeout)),
        }
    }

    /// One renewal (creating the Lease when absent). The owner's uid is looked up first
    /// while unknown; a failed lookup does not hold up the renewal.
    pub async fn renew(&mut self, now: jiff::Timestamp) -> Result<(), PublishError> {
        if self.node_uid.is_none() {
            let got = self.timed(self.nodes.get(&self.cfg.node)).await;
            match got {
                Ok(node) => self.node_uid = node.metadata.uid,
                Err(e) => {
                    warn!(error = %e, "reading the Node's uid for the Lease owner failed; renewing without it")
                }
            }
        }
        let acquired = *self.acquired.get_or_insert(now);
        let body = lease_body(&self.cfg, self.node_uid.as_deref(), acquired, now);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.timed(
            self.leases
                .patch(&self.cfg.name, &params, &Patch::Apply(&body)),
        )
        .await
        .map(|_| ())
    }
}

/// Renew until `shutdown` resolves; never returns early on errors. A failed renewal is
/// retried after the backoff delay, capped at the renew interval so a flaky API server
/// never makes the Lease lapse sooner than it must.
pub async fn run(
    renewer: &mut LeaseRenewer,
    health: &AgentState,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let cfg = renewer.config().clone();
    let mut backoff = Backoff::new(cfg.backoff_base, cfg.backoff_cap.min(cfg.renew_interval));
    health.metrics.lease_enabled();
    health.update_status(|s| s.lease = Some(crate::status::LeaseStatus::new(&cfg)));
    info!(
        lease = %cfg.name,
        namespace = %cfg.namespace,
        holder = %cfg.holder,
        renew_interval_s = cfg.renew_interval.as_secs_f64(),
        duration_s = cfg.duration_seconds(),
        "renewing the agent's Lease"
    );
    let mut was_failing = false;
    loop {
        let now = jiff::Timestamp::now();
        let result = tokio::select! {
            r = renewer.renew(now) => r,
            () = &mut shutdown => break,
        };
        let owner_uid = renewer.node_uid().map(str::to_string);
        let delay = match result {
            Ok(()) => {
                backoff.reset();
                health.metrics.observe_lease_renewal(true, now.as_second());
                health.update_status(|s| {
                    if let Some(l) = s.lease.as_mut() {
                        l.renewed(now, owner_uid);
                    }
                });
                if was_failing {
                    info!(lease = %cfg.name, "Lease renewed again");
                }
                was_failing = false;
                cfg.renew_interval
            }
            Err(e) => {
                let delay = backoff.next_delay();
                health.metrics.observe_lease_renewal(false, 0);
                health.update_status(|s| {
                    if let Some(l) = s.lease.as_mut() {
                        l.failed(backoff.failures(), owner_uid);
                    }
                    s.record_error("lease", format!("{e}"));
                });
                warn!(
                    error = %e,
                    lease = %cfg.name,
                    failures = backoff.failures(),
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "renewing the Lease failed; will retry"
                );
                was_failing = true;
                delay
            }
        };
        let wake = tokio::time::Instant::from_std(Instant::now() + delay);
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = &mut shutdown => break,
        }
    }
    info!(lease = %cfg.name, "stopped renewing the Lease (it lapses after leaseDurationSeconds)");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LeaseConfig {
        LeaseConfig {
            namespace: "kube-system".into(),
            name: lease_name("n1"),
            holder: "mshv-node-agent-x7k2p".into(),
            node: "n1".into(),
            duration: Duration::from_secs(240),
            renew_interval: Duration::from_secs(60),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(120),
        }
    }

    #[test]
    fn body_shape() {
        let t0: jiff::Timestamp = "2026-01-02T03:04:05Z".parse().expect("ts");
        let t1: jiff::Timestamp = "2026-01-02T03:05:05.25Z".parse().expect("ts");
        let body = serde_json::to_value(lease_body(&cfg(), Some("uid-1"), t0, t1)).expect("json");
        assert_eq!(body["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(body["kind"], "Lease");
        assert_eq!(body["metadata"]["name"], "mshv-node-agent-n1");
        assert_eq!(body["metadata"]["namespace"], "kube-system");
        assert_eq!(
            body["metadata"]["ownerReferences"],
            serde_json::json!([{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "uid-1"}])
        );
        assert_eq!(body["spec"]["holderIdentity"], "mshv-node-agent-x7k2p");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 240);
        assert_eq!(body["spec"]["acquireTime"], "2026-01-02T03:04:05.000000Z");
        assert_eq!(body["spec"]["renewTime"], "2026-01-02T03:05:05.250000Z");
        let without = serde_json::to_value(lease_body(&cfg(), None, t0, t1)).expect("json");
        assert!(without["metadata"]["ownerReferences"].is_null());
    }

    #[test]
    fn names_stay_valid_object_names() {
        assert_eq!(lease_name("worker-1"), "mshv-node-agent-worker-1");
        // kube-apiserver's object name check (IsDNS1123Subdomain): at most 253 characters
        // of [a-z0-9.-], alphanumeric at both ends (no per-label limit).
        let valid = |n: &str| {
            n.len() <= MAX_NAME
                && n.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
                && n.bytes()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric())
        };
        for node in [
            format!(
                "{}.{}.{}.{}",
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(61)
            ),
            format!("{}.{}", "a".repeat(236), "b".repeat(16)),
            format!("{}-{}", "a".repeat(236), "b".repeat(16)),
        ] {
            let name = lease_name(&node);
            assert!(valid(&name), "{name}");
            assert!(name.starts_with(NAME_PREFIX));
        }
    }
}
