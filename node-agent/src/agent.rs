//! The DaemonSet loop: probe every interval, publish when something changed or a
//! heartbeat is due, retry failed publications with capped exponential backoff, and never
//! exit on API or device errors. On shutdown it stops without touching the labels: a
//! rolling update must not flap scheduling (uninstall uses `cleanup`).

use std::future::Future;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::health::HealthState;
use crate::labels::{self, Desired, LabelPrefix};
use crate::metrics::SyncResult;
use crate::probe::sys::Sys;
use crate::probe::{Prober, State};
use crate::publish::Publisher;

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub interval: Duration,
    /// Rewrite unchanged labels (and the annotation's heartbeat) this often.
    pub heartbeat: Duration,
    pub prefix: LabelPrefix,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

/// Why a write happens (logged, and useful in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteReason {
    First,
    Changed,
    Heartbeat,
    Retry,
}

impl WriteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteReason::First => "first",
            WriteReason::Changed => "changed",
            WriteReason::Heartbeat => "heartbeat",
            WriteReason::Retry => "retry",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
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

    pub fn decide(&self, desired: &Desired, now: Instant, heartbeat: Duration) -> Decision {
        if let Some(at) = self.retry_at {
            return if now < at {
                Decision::Backoff
            } else {
                Decision::Write(WriteReason::Retry)
            };
        }
        match (&self.last_applied, self.last_write) {
            (None, _) | (_, None) => Decision::Write(WriteReason::First),
            (Some(last), _) if last != desired => Decision::Write(WriteReason::Changed),
            (_, Some(at)) if now.saturating_duration_since(at) >= heartbeat => {
                Decision::Write(WriteReason::Heartbeat)
            }
            _ => Decision::Unchanged,
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
    health: &HealthState,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut sync = SyncState::new(Backoff::new(cfg.backoff_base, cfg.backoff_cap));
    let mut next_probe = Instant::now();
    let mut desired: Option<Desired> = None;
    let mut last_state: Option<State> = None;
    info!(
        publish = publisher.target(),
        interval_s = cfg.interval.as_secs_f64(),
        heartbeat_s = cfg.heartbeat.as_secs_f64(),
        prefix = %cfg.prefix,
        "agent started"
    );

    loop {
        let wake = match sync.retry_at() {
            Some(at) if desired.is_some() => at.min(next_probe),
            _ => next_probe,
        };
        tokio::select! {
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            () = &mut shutdown => break,
        }
        let now = Instant::now();

        if now >= next_probe {
            let report = prober.probe();
            health.metrics.observe_probe(&report);
            health.set_ready();
            if last_state != Some(report.state) {
                info!(
                    state = report.state.as_str(),
                    capable = report.capable,
                    partition_type = report.partition_type.as_str(),
                    errno = report.errno_name.as_deref().unwrap_or("-"),
                    reason = %report.reason,
                    "probe state"
                );
                last_state = Some(report.state);
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
            desired = Some(labels::desired(&report, &cfg.prefix));
            // Schedule from `now`, not from the old deadline: after a long stall the agent
            // probes once, it does not catch up with a burst.
            next_probe = now + cfg.interval;
        }

        let Some(want) = desired.as_ref() else {
            continue;
        };
        match sync.decide(want, now, cfg.heartbeat) {
            Decision::Backoff => {}
            Decision::Unchanged => health.metrics.observe_sync(SyncResult::Unchanged),
            Decision::Write(reason) => {
                let result = tokio::select! {
                    r = publisher.publish(want, jiff::Timestamp::now()) => r,
                    () = &mut shutdown => break,
                };
                match result {
                    Ok(()) => {
                        health.metrics.observe_sync(SyncResult::Applied);
                        info!(
                            reason = reason.as_str(),
                            labels = ?want.labels,
                            "labels published"
                        );
                        sync.succeeded(want.clone(), Instant::now());
                    }
                    Err(e) => {
                        health.metrics.observe_sync(SyncResult::Error);
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
        }
    }
    info!("shutting down; labels are left in place (use `cleanup` to remove them)");
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
    fn writes_first_then_on_change_and_heartbeat_only() {
        let hb = Duration::from_secs(300);
        let t0 = Instant::now();
        let mut s = SyncState::new(Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
        ));
        let a = desired("not-hyperv");
        assert_eq!(s.decide(&a, t0, hb), Decision::Write(WriteReason::First));
        s.succeeded(a.clone(), t0);
        assert_eq!(
            s.decide(&a, t0 + Duration::from_secs(60), hb),
            Decision::Unchanged
        );
        assert_eq!(
            s.decide(&a, t0 + Duration::from_secs(299), hb),
            Decision::Unchanged
        );
        assert_eq!(
            s.decide(&a, t0 + Duration::from_secs(300), hb),
            Decision::Write(WriteReason::Heartbeat)
        );
        let b = desired("capable");
        assert_eq!(
            s.decide(&b, t0 + Duration::from_secs(1), hb),
            Decision::Write(WriteReason::Changed)
        );
    }

    #[test]
    fn failure_backs_off_then_retries() {
        let hb = Duration::from_secs(300);
        let t0 = Instant::now();
        let mut s = SyncState::new(Backoff::new(Duration::from_secs(1), Duration::from_secs(8)));
        let a = desired("capable");
        let d1 = s.failed(t0);
        assert!(d1 <= Duration::from_secs(1));
        assert_eq!(s.decide(&a, t0, hb), Decision::Backoff);
        assert_eq!(
            s.decide(&a, t0 + d1, hb),
            Decision::Write(WriteReason::Retry)
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
            s.decide(&a, t0 + Duration::from_secs(101), hb),
            Decision::Unchanged
        );
    }
}
