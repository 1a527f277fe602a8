//! Making /dev/mshv usable by uid/gid 107, through the `Sys` seam with a fake node:
//! 0600 → 0666 applied, then unchanged; EROFS reported (not applied, not fatal); re-applied
//! after the node is re-created; a group policy; and the agent loop doing it on every tick
//! with metrics and `/status` saying what happened.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::fake_sys::{FakeRoot, SwitchSys};
use mshv_node_agent::agent::{self, RunConfig};
use mshv_node_agent::device_access::{self, AccessPolicy, AccessResult, QEMU_ID};
use mshv_node_agent::health::AgentState;
use mshv_node_agent::labels::LabelPrefix;
use mshv_node_agent::metrics::Metrics;
use mshv_node_agent::probe::{ProbeOptions, Prober};
use mshv_node_agent::publish::Publisher;
use mshv_node_agent::publish::nfd::NfdPublisher;

const NODE: &str = "/host/dev/mshv";

#[test]
fn chmod_0600_to_0666_then_unchanged() {
    let sys = SwitchSys::l1vh();
    let policy = AccessPolicy::default();
    let r = device_access::apply(&sys, Path::new(NODE), &policy);
    assert_eq!(r.result, Some(AccessResult::Applied));
    assert_eq!(r.detail, "mode 0600 → 0666 applied");
    assert_eq!(r.mode.as_deref(), Some("0666"));
    assert!(r.accessible);
    assert_eq!(sys.node.borrow().mode, 0o666);

    let again = device_access::apply(&sys, Path::new(NODE), &policy);
    assert_eq!(again.result, Some(AccessResult::Unchanged));
    assert!(again.accessible);
    assert_eq!(
        sys.node.borrow().chmod_calls,
        1,
        "no write when already right"
    );
}

#[test]
fn erofs_is_reported_and_nothing_changes() {
    let sys = SwitchSys::l1vh();
    sys.node.borrow_mut().chmod_errno = Some(libc::EROFS);
    let r = device_access::apply(&sys, Path::new(NODE), &AccessPolicy::default());
    assert_eq!(r.result, Some(AccessResult::Error));
    assert_eq!(r.errno_name.as_deref(), Some("EROFS"));
    assert!(r.detail.starts_with("not applied: chmod"), "{}", r.detail);
    assert!(r.detail.ends_with("EROFS"), "{}", r.detail);
    assert!(!r.accessible);
    assert_eq!(r.mode.as_deref(), Some("0600"));
}

#[test]
fn re_created_node_gets_the_mode_again() {
    let sys = SwitchSys::l1vh();
    let policy = AccessPolicy::default();
    device_access::apply(&sys, Path::new(NODE), &policy);
    sys.node.borrow_mut().recreate();
    let r = device_access::apply(&sys, Path::new(NODE), &policy);
    assert_eq!(r.result, Some(AccessResult::Applied));
    assert_eq!(r.inode, Some(2));
    assert_eq!(sys.node.borrow().mode, 0o666);
    assert_eq!(sys.node.borrow().chmod_calls, 2);
}

#[test]
fn absent_node_is_not_an_error() {
    let sys = SwitchSys::l1vh();
    sys.node.borrow_mut().present = false;
    let r = device_access::apply(&sys, Path::new(NODE), &AccessPolicy::default());
    assert_eq!(r.result, None);
    assert!(!r.accessible);
    assert_eq!(sys.node.borrow().chmod_calls, 0);
}

#[test]
fn group_policy_chowns_and_sets_0660() {
    let sys = SwitchSys::l1vh();
    let policy = AccessPolicy {
        mode: Some(0o660),
        group: Some(QEMU_ID),
    };
    let r = device_access::apply(&sys, Path::new(NODE), &policy);
    assert_eq!(r.result, Some(AccessResult::Applied));
    assert_eq!(r.detail, "group 0 → 107, mode 0600 → 0660 applied");
    assert!(r.accessible);
    assert_eq!(
        (sys.node.borrow().gid, sys.node.borrow().mode),
        (107, 0o660)
    );
}

#[test]
fn inspect_never_writes() {
    let sys = SwitchSys::l1vh();
    let r = device_access::inspect(&sys, Path::new(NODE), &AccessPolicy::default());
    assert!(r.detail.contains("cannot read+write"), "{}", r.detail);
    assert!(
        r.detail.contains("would apply mode 0600 → 0666"),
        "{}",
        r.detail
    );
    assert_eq!(sys.node.borrow().chmod_calls, 0);
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// The agent loop applies the mode on its probe ticks and re-applies it after the node is
/// re-created; metrics and /status record each pass.
#[tokio::test]
async fn agent_loop_applies_and_reapplies_with_metrics_and_status() {
    let root = FakeRoot::new().with_driver(58);
    let nfd = tempfile::tempdir().expect("nfd dir");
    let sys = SwitchSys::l1vh();
    let mut prober = Prober::new(
        sys.clone(),
        ProbeOptions {
            host_root: root.path().to_path_buf(),
            self_query: false,
            fingerprint_max_age: Duration::from_secs(3600),
        },
    );
    let publisher = Publisher::Nfd(NfdPublisher::new(nfd.path(), Duration::from_secs(60)));
    let cfg = RunConfig {
        interval: Duration::from_millis(20),
        refresh: None,
        prefix: LabelPrefix::default(),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(100),
        device_access: Some(AccessPolicy::default()),
    };
    let health = Arc::new(AgentState::new(Metrics::new()));
    let node = std::rc::Rc::clone(&sys.node);
    let h = Arc::clone(&health);
    let run = agent::run(&mut prober, &publisher, &cfg, &health, async move {
        let applied = "mshv_node_agent_device_access_total{result=\"applied\"}";
        let wait = |want: f64| {
            let h = Arc::clone(&h);
            async move {
                for _ in 0..1000 {
                    let text = h.metrics.encode().expect("encode");
                    if metric(&text, applied) == Some(want) {
                        return text;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("never saw {applied} {want}");
            }
        };
        let text = wait(1.0).await;
        assert_eq!(
            metric(&text, "mshv_node_agent_device_accessible"),
            Some(1.0)
        );
        let status = h.status();
        let access = status.device_access.expect("device access in /status");
        assert_eq!(access.want_mode, "0666");
        assert_eq!(node.borrow().mode, 0o666);
        // Later ticks find it right and write nothing.
        let unchanged = "mshv_node_agent_device_access_total{result=\"unchanged\"}";
        let mut seen = false;
        for _ in 0..1000 {
            if metric(&h.metrics.encode().expect("encode"), unchanged).is_some() {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen, "no unchanged pass");
        assert_eq!(node.borrow().chmod_calls, 1);
        // udev re-creates the node (0600 again); the next tick fixes it once.
        node.borrow_mut().recreate();
        wait(2.0).await;
        assert_eq!(node.borrow().mode, 0o666);
        // A read-only /dev: reported as an error, the loop goes on.
        node.borrow_mut().recreate();
        node.borrow_mut().chmod_errno = Some(libc::EROFS);
        for _ in 0..1000 {
            let text = h.metrics.encode().expect("encode");
            if metric(
                &text,
                "mshv_node_agent_device_access_total{result=\"error\"}",
            )
            .is_some()
            {
                assert_eq!(
                    metric(&text, "mshv_node_agent_device_accessible"),
                    Some(0.0)
                );
                let status = h.status();
                let err = status.last_error.expect("last error");
                assert_eq!(err.component, "device-access");
                assert!(err.message.contains("EROFS"), "{}", err.message);
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the EROFS pass was never counted");
    });
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the loop test ends within the bound");
}
