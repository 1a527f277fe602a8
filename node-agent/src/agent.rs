//! The DaemonSet loop: probe every interval, publish when the probe result changed (and at
//! start), retry failed publications with capped exponential backoff, and never exit on
//! API or device errors. An unchanged result is never written to the Node again: every
//! Node write reaches every Node watcher, so liveness lives in a Lease (`publish::lease`,
//! its own task). Only the NFD file, which is local, is rewritten every `refresh` to keep
//! its expiry ahead. On shutdown it stops without touching the labels: a rolling update
//! must not flap scheduling (uninstall uses `cleanup`).

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::device_access::{self, AccessPolicy, AccessReport};
use crate::health::AgentState;
use crate::labels::{self, Desired, LabelPrefix};
use crate::metrics::SyncResult;
use crate::probe::sys::Sys;
use crate::probe::{ProbeReport, Prober, State};
use crate::publish::{PublishError, Publisher};

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub interval: Duration,
    /// Rewrite an unchanged result this often (`Publisher::refresh`): `None` for the Node,
    /// which is written only on change; the NFD file's refresh period otherwise.
    pub refresh: Option<Duration>,
    pub prefix: LabelPrefix,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Make the host's /dev/mshv usable by uid/gid 107 on every probe tick (`None`: off).
    pub device_access: Option<AccessPolicy>,
}

/// Why a write happens (logged, and useful in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteReason {
    First,
    Changed,
    /// The NFD file's periodic rewrite (never the Node).
    Refresh,
    Retry,
}

impl WriteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteReason::First => "first",
            WriteReason::Changed => "changed",
            WriteReason::Refresh => "refresh",
            WriteReason::Retry => "retry",
        }
    }
}

/// What one label sync does next (the agent's step, not the policy's hypervisor decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStep {
    Write(WriteReason),
    Unchanged,
    /// A failed write is waiting for its backoff delay.
    Backoff,
}

/// Pure bookkeeping of what was last published and when to retry.
#[derive(Debug)]
pub struct SyncState {
    last_applied: Option<Desired>,
    last_write: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl SyncState {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            last_applied: None,
            last_write: None,
            retry_at: None,
            backoff,
        }
    }

    pub fn next_step(
        &self,
        desired: &Desired,
        now: Instant,
        refresh: Option<Duration>,
    ) -> SyncStep {
        if let Some(at) = self.retry_at {
            return if now < at {
                SyncStep::Backoff
            } else {
                SyncStep::Write(WriteReason::Retry)
            };
        }
        match (&self.last_applied, self.last_write) {
            (None, _) | (_, None) => SyncStep::Write(WriteReason::First),
            (Some(last), _) if last != desired => SyncStep::Write(WriteReason::Changed),
            (_, Some(at)) if refresh.is_some_and(|r| now.saturating_duration_since(at) >= r) => {
                SyncStep::Write(WriteReason::Refresh)
            }
            _ => SyncStep::Unchanged,
        }
    }

    pub fn succeeded(&mut self, desired: Desired, now: Instant) {
        self.last_applied = Some(desired);
        self.last_write = Some(now);
        self.retry_at = None;
        self.backoff.reset();
    }

    /// Returns the delay until the retry.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let delay = self.backoff.next_delay();
        self.retry_at = Some(now + delay);
        delay
    }

    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    pub fn failures(&self) -> u32 {
        self.backoff.failures()
    }
}

/// Run until `shutdown` resolves. Never returns early on probe or publish errors.
pub async fn run<S: Sys>(
    prober: &mut Prober<S>,
    publisher: &Publisher,
    cfg: &RunConfig,
    health: &AgentState,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut sync = SyncState::new(Backoff::new(cfg.backoff_base, cfg.backoff_cap));
    let mut next_probe = Instant::now();
    let mut desired: Option<Desired> = None;
    let mut last_state: Option<State> = None;
    let mut last_access: Option<AccessReport> = None;
    let device_node = prober.options().host_root.join("dev/mshv");
    // The guest verification runs on its own schedule (bench::schedule); its result joins
    // the labels here, and a change wakes the loop so the label follows at once.
    let mut guest_rx = health.subscribe_guest_verified();
    announce_start(publisher, cfg, health);

    loop {
        let wake = match sync.retry_at() {
            Some(at) if desired.is_some() => at.min(next_probe),
            _ => next_probe,
        };
        tokio::select! {
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            Ok(()) = guest_rx.changed() => {}
            () = &mut shutdown => break,
        }
        let now = Instant::now();

        if now >= next_probe {
            desired = Some(probe_tick(
                prober,
                cfg,
                health,
                &device_node,
                &mut last_state,
                &mut last_access,
            ));
            // Schedule from `now`, not from the old deadline: after a long stall the agent
            // probes once, it does not catch up with a burst.
            next_probe = now + cfg.interval;
        }

        let Some(want) = desired.as_mut() else {
            continue;
        };
        labels::set_guest_verified(want, &cfg.prefix, *guest_rx.borrow_and_update());
        let want = &*want;
        match sync.next_step(want, now, cfg.refresh) {
            SyncStep::Backoff => {}
            SyncStep::Unchanged => {
                health.metrics.observe_sync(SyncResult::Unchanged);
                health.update_status(|s| s.published.last_result = Some("unchanged"));
            }
            SyncStep::Write(reason) => {
                let result = tokio::select! {
                    r = publisher.publish(want, jiff::Timestamp::now()) => r,
                    () = &mut shutdown => break,
                };
                record_publish(health, &mut sync, want, reason, result);
            }
        }
    }
    info!("shutting down; labels are left in place (use `cleanup` to remove them)");
}

/// `/status` names the publication target, and the start is logged.
fn announce_start(publisher: &Publisher, cfg: &RunConfig, health: &AgentState) {
    let target = publisher.target();
    health.update_status(|s| {
        s.published.target = target.to_string();
        s.published.nfd_file = publisher.nfd_path().map(|p| p.display().to_string());
    });
    info!(
        publish = publisher.target(),
        interval_s = cfg.interval.as_secs_f64(),
        refresh_s = cfg.refresh.map(|r| r.as_secs_f64()),
        prefix = %cfg.prefix,
        "agent started"
    );
}

/// One probe: records and logs the report, applies the device access policy when one is
/// set, and returns the labels the report asks for.
fn probe_tick<S: Sys>(
    prober: &mut Prober<S>,
    cfg: &RunConfig,
    health: &AgentState,
    device_node: &Path,
    last_state: &mut Option<State>,
    last_access: &mut Option<AccessReport>,
) -> Desired {
    let report = prober.probe();
    health.record_probe(&report);
    log_probe(&report, last_state);
    if let Some(policy) = &cfg.device_access {
        let access = device_access::apply(prober.sys(), device_node, policy);
        record_access(health, policy, &access, last_access.as_ref());
        *last_access = Some(access);
    }
    labels::desired(&report, &cfg.prefix)
}

/// Logs a probe report: at info level when the state changed, else at debug level.
fn log_probe(report: &ProbeReport, last_state: &mut Option<State>) {
    if *last_state != Some(report.state) {
        if let Some(w) = report.hv_build_check.and_then(|c| c.warning()) {
            warn!(warning = %w, "hypervisor build");
        }
        info!(
            state = report.state.as_str(),
            capable = report.capable,
            partition_type = report.partition_type.as_str(),
            errno = report.errno_name.as_deref().unwrap_or("-"),
            reason = %report.reason,
            "probe state"
        );
        *last_state = Some(report.state);
    } else {
        debug!(
            state = report.state.as_str(),
            duration_us = report.duration_us,
            "probe"
        );
    }
    if report.partition_created_and_closed {
        error!("the fingerprint ioctl created a partition; its fd was closed at once");
    }
}

/// Metrics, `/status`, the log and the retry bookkeeping for one publication.
fn record_publish(
    health: &AgentState,
    sync: &mut SyncState,
    want: &Desired,
    reason: WriteReason,
    result: Result<(), PublishError>,
) {
    match result {
        Ok(()) => {
            health.metrics.observe_sync(SyncResult::Applied);
            health.update_status(|s| {
                s.published.labels.clone_from(&want.labels);
                s.published.last_write_at = Some(crate::status::now());
                s.published.last_result = Some("applied");
            });
            info!(
                reason = reason.as_str(),
                labels = ?want.labels,
                "labels published"
            );
            sync.succeeded(want.clone(), Instant::now());
        }
        Err(e) => {
            health.metrics.observe_sync(SyncResult::Error);
            health.update_status(|s| {
                s.published.last_result = Some("error");
                s.record_error("publish", format!("{e}"));
            });
            let delay = sync.failed(Instant::now());
            warn!(
                error = %e,
                reason = reason.as_str(),
                failures = sync.failures(),
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "publishing labels failed; will retry"
            );
        }
    }
}

/// Metrics and `/status` for one device access pass; a log line only when something was
/// done or the outcome changed (an unchanged node every minute is not news).
fn record_access(
    health: &AgentState,
    policy: &AccessPolicy,
    access: &AccessReport,
    last: Option<&AccessReport>,
) {
    health
        .metrics
        .observe_device_access(access.result.map(|r| r.as_str()), access.accessible);
    let changed = last.is_none_or(|l| l.result != access.result || l.detail != access.detail);
    match access.result {
        Some(device_access::AccessResult::Applied) => {
            info!(detail = %access.detail, accessible = access.accessible, "device access")
        }
        Some(device_access::AccessResult::Error) if changed => {
            warn!(detail = %access.detail, errno = access.errno_name.as_deref().unwrap_or("-"), "device access")
        }
        _ if changed => {
            info!(detail = %access.detail, accessible = access.accessible, "device access")
        }
        _ => {}
    }
    let want_mode = policy
        .mode
        .map_or_else(|| "keep".to_string(), |m| format!("{m:04o}"));
    health.update_status(|s| {
        if access.result == Some(device_access::AccessResult::Error) {
            s.record_error("device-access", access.detail.clone());
        }
        s.device_access = Some(crate::status::DeviceAccessStatus {
            report: access.clone(),
            want_mode,
            want_group: policy.group,
            at: crate::status::now(),
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::ProbeAnnotation;

    fn desired(state: &str) -> Desired {
        Desired {
            labels: Default::default(),
            annotation_key: "p/probe".into(),
            annotation: ProbeAnnotation {
                state: state.into(),
                capable: false,
                errno: None,
                errno_name: None,
                reason: String::new(),
                partition_type: "none".into(),
                hv_build: None,
                uapi: None,
                kernel: None,
                agent_version: "0".into(),
            },
        }
    }

    #[test]
    fn writes_first_then_only_on_change() {
        let t0 = Instant::now();
        let mut s = SyncState::new(Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
        ));
        let a = desired("not-hyperv");
        assert_eq!(
            s.next_step(&a, t0, None),
            SyncStep::Write(WriteReason::First)
        );
        s.succeeded(a.clone(), t0);
        // The Node is never rewritten for an unchanged result, however long it has been.
        for secs in [60, 299, 300, 3600, 86_400 * 365] {
            assert_eq!(
                s.next_step(&a, t0 + Duration::from_secs(secs), None),
                SyncStep::Unchanged,
                "{secs}s"
            );
        }
        let b = desired("capable");
        assert_eq!(
            s.next_step(&b, t0 + Duration::from_secs(1), None),
            SyncStep::Write(WriteReason::Changed)
        );
    }

    #[test]
    fn the_nfd_file_is_refreshed() {
        let refresh = Some(Duration::from_secs(300));
        let t0 = Instant::now();
        let mut s = SyncState::new(Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
        ));
        let a = desired("capable");
        s.succeeded(a.clone(), t0);
        assert_eq!(
            s.next_step(&a, t0 + Duration::from_secs(299), refresh),
            SyncStep::Unchanged
        );
        assert_eq!(
            s.next_step(&a, t0 + Duration::from_secs(300), refresh),
            SyncStep::Write(WriteReason::Refresh)
        );
    }

    #[test]
    fn failure_backs_off_then_retries() {
        let hb = None;
        let t0 = Instant::now();
        let mut s = SyncState::new(Backoff::new(Duration::from_secs(1), Duration::from_secs(8)));
        let a = desired("capable");
        let d1 = s.failed(t0);
        assert!(d1 <= Duration::from_secs(1));
        assert_eq!(s.next_step(&a, t0, hb), SyncStep::Backoff);
        assert_eq!(
            s.next_step(&a, t0 + d1, hb),
            SyncStep::Write(WriteReason::Retry)
        );
        let d2 = s.failed(t0 + d1);
        assert!(d2 >= Duration::from_secs(1) && d2 <= Duration::from_secs(2));
        for _ in 0..10 {
            assert!(s.failed(t0) <= Duration::from_secs(8));
        }
        s.succeeded(a.clone(), t0 + Duration::from_secs(100));
        assert_eq!(s.failures(), 0);
        assert_eq!(s.retry_at(), None);
        assert_eq!(
            s.next_step(&a, t0 + Duration::from_secs(101), hb),
            SyncStep::Unchanged
        );
    }
}
