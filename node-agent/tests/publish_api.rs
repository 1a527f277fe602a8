//! Label publication against the loopback FAKE API server (tests/common/fake_api.rs):
//! request shape, server-side-apply removal semantics, retries with backoff on 500/409/
//! timeouts, write-only-on-change (zero Node writes on an idle node), the liveness Lease
//! (renewals, owner, recovery from 500/409/timeouts with backoff), cleanup, and the NFD
//! file.

mod common;

use std::time::Duration;

use common::fake_api::{FakeApi, Fault, NODE_UID};
use common::fake_sys::{FakeRoot, SwitchSys};
use mshv_node_agent::agent::{self, RunConfig};
use mshv_node_agent::backoff::Backoff;
use mshv_node_agent::health::AgentState;
use mshv_node_agent::labels::{self, LabelPrefix};
use mshv_node_agent::metrics::Metrics;
use mshv_node_agent::probe::cpuid::HV_CREATE_PARTITIONS;
use mshv_node_agent::probe::{ProbeOptions, Prober};
use mshv_node_agent::publish::Publisher;
use mshv_node_agent::publish::api::ApiPublisher;
use mshv_node_agent::publish::lease::{self, LeaseConfig, LeaseRenewer};
use mshv_node_agent::publish::nfd::{self, NfdPublisher};

const NODE: &str = "node-a";
const CAPABLE: &str = "mshv.node.hyperv-layered.io/capable";
const PTYPE: &str = "mshv.node.hyperv-layered.io/partition-type";
const PROBE: &str = "mshv.node.hyperv-layered.io/probe";

fn prober(root: &FakeRoot, sys: SwitchSys) -> Prober<SwitchSys> {
    Prober::new(
        sys,
        ProbeOptions {
            host_root: root.path().to_path_buf(),
            self_query: true,
            fingerprint_max_age: Duration::from_secs(3600),
        },
    )
}

fn cfg(interval_ms: u64, refresh: Option<Duration>) -> RunConfig {
    RunConfig {
        interval: Duration::from_millis(interval_ms),
        refresh,
        prefix: LabelPrefix::default(),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(160),
        device_access: None,
    }
}

/// Poll `cond` every 10 ms for up to 10 s (a generous bound so slow CI does not flake; the
/// assertions that follow are about what happened, not how fast).
async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn apply_has_the_right_shape_and_sets_labels() {
    let api = FakeApi::start(NODE);
    let root = FakeRoot::new().with_driver(58);
    let report = prober(&root, SwitchSys::l1vh()).probe();
    assert!(report.capable, "{report:#?}");
    let desired = labels::desired(&report, &LabelPrefix::default());
    let publisher = ApiPublisher::new(api.kube_client(), NODE, Duration::from_secs(5));
    publisher.apply(&desired).await.expect("apply");

    assert_eq!(api.violations(), Vec::<String>::new());
    let reqs = api.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "PATCH");
    assert_eq!(r.path, "/api/v1/nodes/node-a");
    assert_eq!(
        r.query.get("fieldManager").map(String::as_str),
        Some("mshv-node-agent")
    );
    assert_eq!(r.query.get("force").map(String::as_str), Some("true"));
    assert_eq!(r.content_type, "application/apply-patch+yaml");
    let body = r.body.as_ref().expect("json body");
    assert_eq!(body["metadata"]["labels"][CAPABLE], "true");

    let labels = api.labels();
    assert_eq!(labels.get(CAPABLE).map(String::as_str), Some("true"));
    assert_eq!(labels.get(PTYPE).map(String::as_str), Some("l1vh"));
    assert_eq!(
        labels
            .get("mshv.node.hyperv-layered.io/hv-build")
            .map(String::as_str),
        Some("26102")
    );
    assert_eq!(
        labels
            .get("mshv.node.hyperv-layered.io/uapi")
            .map(String::as_str),
        Some("mainline")
    );
    let ann: serde_json::Value = serde_json::from_str(&api.annotations()[PROBE]).expect("json");
    assert_eq!(ann["state"], "capable");
    assert_eq!(ann["errno_name"], "EINVAL");
    assert_eq!(ann["kernel"], "6.18.0-test");
    // No timestamp in the annotation: nothing on the Node changes unless the probe does.
    assert!(ann.get("heartbeat").is_none(), "{ann}");
}

#[tokio::test]
async fn losing_capability_removes_the_label_but_keeps_foreign_ones() {
    let api = FakeApi::start(NODE);
    api.set_foreign_label("team", "blue");
    let root = FakeRoot::new().with_driver(58);
    let sys = SwitchSys::l1vh();
    let switch = sys.features.clone();
    let mut prober = prober(&root, sys);
    let publisher = Publisher::Api(Box::new(ApiPublisher::new(
        api.kube_client(),
        NODE,
        Duration::from_secs(5),
    )));
    let health = AgentState::new(Metrics::new());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = cfg(20, None);

    let driver = async {
        assert!(
            wait_for(|| api.labels().contains_key(CAPABLE)).await,
            "capable label never set"
        );
        // The host stops being a parent partition (e.g. a different VM size after resize).
        switch.set(0);
        assert!(
            wait_for(|| api.labels().get(PTYPE).map(String::as_str) == Some("guest")).await,
            "state change never published"
        );
        let _ = tx.send(());
    };
    let run = agent::run(&mut prober, &publisher, &cfg, &health, async {
        let _ = rx.await;
    });
    tokio::join!(driver, run);

    let labels = api.labels();
    assert!(
        !labels.contains_key(CAPABLE),
        "capable must be gone: {labels:?}"
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("blue"));
    assert!(
        !labels.contains_key("mshv.node.hyperv-layered.io/uapi"),
        "uapi must follow: {labels:?}"
    );
    assert_eq!(api.violations(), Vec::<String>::new());
    // Restore to show the label comes back too.
    switch.set(HV_CREATE_PARTITIONS);
}

#[tokio::test]
async fn retries_500_409_and_timeouts_with_growing_backoff() {
    let api = FakeApi::start(NODE);
    api.push_faults([
        Fault::Status(500),
        Fault::Status(409),
        Fault::Delay(Duration::from_millis(400)), // longer than the 100 ms request timeout
        Fault::Status(503),
    ]);
    let root = FakeRoot::new().with_driver(58);
    let mut prober = prober(&root, SwitchSys::l1vh());
    let publisher = Publisher::Api(Box::new(ApiPublisher::new(
        api.kube_client(),
        NODE,
        Duration::from_millis(100),
    )));
    let health = AgentState::new(Metrics::new());
    // A long interval: every request after the first is a retry driven by the backoff.
    let cfg = cfg(60_000, None);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // Stop once the agent has counted the write it got a 200 for, not when the fake has
    // stored it: otherwise the stop signal can win against the agent's handling of the answer.
    let driver = async {
        assert!(
            wait_for(|| api.labels().contains_key(CAPABLE)
                && health
                    .metrics
                    .encode()
                    .is_ok_and(|t| t.contains("label_syncs_total{result=\"applied\"} 1")))
            .await,
            "never succeeded"
        );
        let _ = tx.send(());
    };
    let run = agent::run(&mut prober, &publisher, &cfg, &health, async {
        let _ = rx.await;
    });
    tokio::join!(driver, run);

    let reqs = api.requests();
    let statuses: Vec<u16> = reqs.iter().map(|r| r.status).collect();
    // 0: the agent gave up on the delayed request (timeout) before the fake answered.
    assert_eq!(statuses, vec![500, 409, 0, 503, 200], "{reqs:#?}");
    // Retry n waits at least half of min(cap, base * 2^n): check the lower bounds only.
    let base = Duration::from_millis(20);
    let cap = Duration::from_millis(160);
    for (n, pair) in reqs.windows(2).enumerate() {
        let gap = pair[1].received.duration_since(pair[0].received);
        let floor = Backoff::ceiling(base, cap, n as u32) / 2;
        assert!(
            gap >= floor,
            "retry {n}: gap {gap:?} < backoff floor {floor:?}"
        );
    }
    let text = health.metrics.encode().expect("metrics");
    assert_eq!(
        metric(&text, "mshv_node_agent_label_syncs_total{result=\"error\"}"),
        4.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "mshv_node_agent_label_syncs_total{result=\"applied\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(api.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn never_exits_while_the_api_fails() {
    let api = FakeApi::start(NODE);
    api.push_faults(std::iter::repeat_n(Fault::Status(500), 1000));
    let root = FakeRoot::new().with_driver(58);
    let mut prober = prober(&root, SwitchSys::l1vh());
    let publisher = Publisher::Api(Box::new(ApiPublisher::new(
        api.kube_client(),
        NODE,
        Duration::from_secs(1),
    )));
    let health = AgentState::new(Metrics::new());
    let cfg = cfg(10, None);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let driver = async {
        assert!(wait_for(|| api.apply_count() >= 6).await, "retries stopped");
        let _ = tx.send(());
    };
    let run = agent::run(&mut prober, &publisher, &cfg, &health, async {
        let _ = rx.await;
    });
    let (_, ()) =
        tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(driver, run) })
            .await
            .expect("run returns once shutdown is signalled");
    assert!(api.labels().is_empty());
    assert!(health.is_ready());
}

#[tokio::test]
async fn writes_only_on_change_not_every_probe() {
    let api = FakeApi::start(NODE);
    let root = FakeRoot::new().with_driver(58);
    let sys = SwitchSys::l1vh();
    let mut prober = prober(&root, sys);
    let publisher = Publisher::Api(Box::new(ApiPublisher::new(
        api.kube_client(),
        NODE,
        Duration::from_secs(5),
    )));
    let health = AgentState::new(Metrics::new());
    let cfg = cfg(5, None);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let driver = async {
        let probes = || {
            let text = health.metrics.encode().unwrap_or_default();
            metric(&text, "mshv_node_agent_probes_total{result=\"capable\"}")
        };
        assert!(wait_for(|| probes() >= 20.0).await, "probes did not run");
        let _ = tx.send(());
    };
    let run = agent::run(&mut prober, &publisher, &cfg, &health, async {
        let _ = rx.await;
    });
    tokio::join!(driver, run);
    assert_eq!(api.apply_count(), 1, "one write for 20+ identical probes");
    let text = health.metrics.encode().expect("metrics");
    assert!(
        metric(
            &text,
            "mshv_node_agent_label_syncs_total{result=\"unchanged\"}"
        ) >= 19.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "mshv_node_agent_capable{state=\"capable\",partition_type=\"l1vh\"}"
        ),
        1.0,
        "{text}"
    );
}

fn lease_cfg(renew: Duration, base: Duration, cap: Duration) -> LeaseConfig {
    LeaseConfig {
        namespace: "agents".into(),
        name: lease::lease_name(NODE),
        holder: "mshv-node-agent-abcde".into(),
        node: NODE.into(),
        duration: renew * 4,
        renew_interval: renew,
        backoff_base: base,
        backoff_cap: cap,
    }
}

#[tokio::test]
async fn an_idle_node_gets_no_node_writes_while_the_lease_is_renewed() {
    let api = FakeApi::start(NODE);
    let root = FakeRoot::new().with_driver(58);
    let mut prober = prober(&root, SwitchSys::l1vh());
    let publisher = Publisher::Api(Box::new(ApiPublisher::new(
        api.kube_client(),
        NODE,
        Duration::from_secs(5),
    )));
    let mut renewer = LeaseRenewer::new(
        api.kube_client(),
        lease_cfg(
            Duration::from_millis(20),
            Duration::from_millis(20),
            Duration::from_millis(160),
        ),
        Duration::from_secs(5),
    );
    let health = AgentState::new(Metrics::new());
    let cfg = cfg(5, None);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let driver = async {
        let probes = || {
            let text = health.metrics.encode().unwrap_or_default();
            metric(&text, "mshv_node_agent_probes_total{result=\"capable\"}")
        };
        // Many probe cycles and several renewals, with nothing changing on the host.
        assert!(
            wait_for(|| probes() >= 200.0 && api.lease_renewals() >= 5).await,
            "probes {} renewals {}",
            probes(),
            api.lease_renewals()
        );
        let _ = tx.send(true);
    };
    tokio::join!(
        driver,
        agent::run(&mut prober, &publisher, &cfg, &health, stop(rx.clone())),
        lease::run(&mut renewer, &health, stop(rx.clone())),
    );

    assert_eq!(api.violations(), Vec::<String>::new());
    // Exactly one Node write: the first publication. The rest is reads (the owner uid).
    assert_eq!(api.node_write_count(), 1, "{:#?}", api.node_requests());
    assert_eq!(api.apply_count(), 1);
    let node_gets = api
        .node_requests()
        .iter()
        .filter(|r| r.method == "GET")
        .count();
    assert_eq!(node_gets, 1, "the Node's uid is read once");

    let l = api
        .lease("agents", "mshv-node-agent-node-a")
        .expect("the Lease exists");
    assert_eq!(l["spec"]["holderIdentity"], "mshv-node-agent-abcde");
    assert_eq!(
        l["spec"]["leaseDurationSeconds"], 1,
        "80 ms rounds up to 1 s"
    );
    assert_eq!(l["metadata"]["ownerReferences"][0]["uid"], NODE_UID);
    assert_eq!(l["metadata"]["ownerReferences"][0]["kind"], "Node");
    // renewTime moves, acquireTime stays.
    let renewals: Vec<serde_json::Value> = api
        .lease_requests()
        .into_iter()
        .filter_map(|r| r.body)
        .collect();
    let first = &renewals[0]["spec"];
    let last = &renewals[renewals.len() - 1]["spec"];
    assert_eq!(first["acquireTime"], last["acquireTime"]);
    assert_ne!(first["renewTime"], last["renewTime"]);

    let text = health.metrics.encode().expect("metrics");
    let ok = metric(&text, "mshv_node_agent_lease_renewals_total{result=\"ok\"}");
    // A renewal in flight at shutdown may be answered after the agent stopped listening.
    let answered = api.lease_renewals() as f64;
    assert!(
        ok >= 5.0 && ok <= answered && ok >= answered - 1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "mshv_node_agent_lease_renewals_total{result=\"error\"}"
        ),
        0.0
    );
    let last_renewal = metric(
        &text,
        "mshv_node_agent_lease_last_renewal_timestamp_seconds",
    );
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!(
        last_renewal > now - 600.0 && last_renewal <= now,
        "{last_renewal} vs {now}"
    );
    let status = health.status().lease.expect("/status has the lease");
    assert_eq!(status.last_result, Some("renewed"));
    assert_eq!(status.owner_node_uid.as_deref(), Some(NODE_UID));
    assert_eq!(status.name, "mshv-node-agent-node-a");
}

#[tokio::test]
async fn lease_renewal_retries_500_409_and_timeouts_with_growing_backoff() {
    let api = FakeApi::start(NODE);
    api.push_lease_faults([
        Fault::Status(500),
        Fault::Status(409),
        Fault::Delay(Duration::from_millis(400)), // longer than the 100 ms request timeout
        Fault::Status(503),
    ]);
    let base = Duration::from_millis(20);
    let cap = Duration::from_millis(160);
    // A long renew interval: every request after the first is a retry driven by the backoff.
    let mut renewer = LeaseRenewer::new(
        api.kube_client(),
        lease_cfg(Duration::from_secs(60), base, cap),
        Duration::from_millis(100),
    );
    let health = AgentState::new(Metrics::new());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // Stop only once the agent has recorded the renewal: the fake counting its own 200 is not
    // enough (the stop signal could then win against the agent's handling of the answer).
    let driver = async {
        assert!(
            wait_for(|| health
                .status()
                .lease
                .is_some_and(|l| l.last_result == Some("renewed")))
            .await,
            "never renewed"
        );
        let _ = tx.send(());
    };
    tokio::join!(
        driver,
        lease::run(&mut renewer, &health, async {
            let _ = rx.await;
        })
    );

    let reqs = api.lease_requests();
    let statuses: Vec<u16> = reqs.iter().map(|r| r.status).collect();
    // 0: the agent gave up on the delayed request (timeout) before the fake answered.
    assert_eq!(statuses, vec![500, 409, 0, 503, 200], "{reqs:#?}");
    for (n, pair) in reqs.windows(2).enumerate() {
        let gap = pair[1].received.duration_since(pair[0].received);
        let floor = Backoff::ceiling(base, cap, n as u32) / 2;
        assert!(
            gap >= floor,
            "retry {n}: gap {gap:?} < backoff floor {floor:?}"
        );
    }
    let text = health.metrics.encode().expect("metrics");
    assert_eq!(
        metric(
            &text,
            "mshv_node_agent_lease_renewals_total{result=\"error\"}"
        ),
        4.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "mshv_node_agent_lease_renewals_total{result=\"ok\"}"),
        1.0,
        "{text}"
    );
    let status = health.status();
    let lease = status.lease.expect("lease status");
    assert_eq!(lease.last_result, Some("renewed"));
    assert_eq!(lease.consecutive_failures, 0);
    assert_eq!(
        status.last_error.map(|e| e.component),
        Some("lease"),
        "the failures are on record"
    );
    // The Node was only read (owner uid), never written.
    assert_eq!(api.node_write_count(), 0);
    assert_eq!(api.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn lease_renewal_never_exits_while_the_api_fails() {
    let api = FakeApi::start(NODE);
    api.push_lease_faults(std::iter::repeat_n(Fault::Status(500), 1000));
    let mut renewer = LeaseRenewer::new(
        api.kube_client(),
        lease_cfg(
            Duration::from_millis(50),
            Duration::from_millis(5),
            Duration::from_secs(10),
        ),
        Duration::from_secs(1),
    );
    let health = AgentState::new(Metrics::new());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let driver = async {
        assert!(
            wait_for(|| api.lease_requests().len() >= 8).await,
            "retries stopped"
        );
        let _ = tx.send(());
    };
    let run = lease::run(&mut renewer, &health, async {
        let _ = rx.await;
    });
    tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(driver, run) })
        .await
        .expect("run returns once shutdown is signalled");
    assert_eq!(api.lease_renewals(), 0);
    let text = health.metrics.encode().expect("metrics");
    // Present but 0: an alert on its age fires for an agent that never renewed.
    assert!(
        text.contains("\nmshv_node_agent_lease_last_renewal_timestamp_seconds"),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "mshv_node_agent_lease_last_renewal_timestamp_seconds"
        ),
        0.0,
        "{text}"
    );
}

#[tokio::test]
async fn cleanup_releases_owned_keys_and_removes_leftovers_by_prefix() {
    let api = FakeApi::start(NODE);
    let root = FakeRoot::new().with_driver(58);
    let report = prober(&root, SwitchSys::l1vh()).probe();
    let prefix = LabelPrefix::default();
    let publisher = ApiPublisher::new(api.kube_client(), NODE, Duration::from_secs(5));
    publisher
        .apply(&labels::desired(&report, &prefix))
        .await
        .expect("apply");
    // Keys with the agent prefix set by someone else (an older agent, a person) and an
    // unrelated label.
    api.set_foreign_label("mshv.node.hyperv-layered.io/legacy", "x");
    api.set_foreign_label("team", "blue");

    let outcome = publisher.cleanup(&prefix).await.expect("cleanup");
    assert_eq!(
        outcome.removed_by_merge_patch,
        vec!["mshv.node.hyperv-layered.io/legacy".to_string()]
    );
    let labels = api.labels();
    assert_eq!(labels.len(), 1, "{labels:?}");
    assert_eq!(labels.get("team").map(String::as_str), Some("blue"));
    assert!(api.annotations().is_empty());
    let kinds: Vec<String> = api
        .requests()
        .iter()
        .map(|r| r.content_type.clone())
        .collect();
    assert_eq!(
        kinds,
        [
            "application/apply-patch+yaml",
            "application/apply-patch+yaml",
            "application/merge-patch+json"
        ]
    );
    assert_eq!(api.violations(), Vec::<String>::new());
}

#[test]
fn nfd_file_is_written_atomically_with_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = FakeRoot::new().with_driver(58);
    let report = prober(&root, SwitchSys::l1vh()).probe();
    let desired = labels::desired(&report, &LabelPrefix::default());
    let publisher = NfdPublisher::new(dir.path(), Duration::from_secs(900));
    let now: jiff::Timestamp = "2026-03-04T05:06:07.5Z".parse().expect("ts");
    publisher.write(&desired, now).expect("write");

    let text = std::fs::read_to_string(dir.path().join(nfd::FEATURES_FILE)).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    let expiry = lines
        .iter()
        .position(|l| *l == "# +expiry-time=2026-03-04T05:21:07Z");
    let first_label = lines.iter().position(|l| l.starts_with(CAPABLE));
    assert!(expiry.is_some() && first_label.is_some(), "{text}");
    assert!(
        expiry < first_label,
        "the directive must precede the labels:\n{text}"
    );
    assert!(
        lines.contains(&"mshv.node.hyperv-layered.io/capable=true"),
        "{text}"
    );
    assert!(
        lines.contains(&"mshv.node.hyperv-layered.io/partition-type=l1vh"),
        "{text}"
    );
    // Only the target file remains: the dot-file was renamed over it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![nfd::FEATURES_FILE.to_string()]);
    assert!(publisher.remove().expect("remove"));
    assert!(!publisher.remove().expect("remove again"));
}
