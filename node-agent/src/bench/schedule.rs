//! The agent's schedule for guest verification and the bench: both run on a blocking
//! thread (`spawn_blocking`), one after the other, so neither can stall the probe loop, the
//! HTTP server or the device plugin, and they never run at the same time.
//!
//! - guest verification: at start, whenever `/dev/mshv`'s identity changes (appears,
//!   disappears, or is recreated with another inode or device number), and at most every
//!   `guest_interval` otherwise (`None`: off);
//! - bench: at start and every `bench_interval` (`None`: off).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use super::{BenchConfig, HypervisorKind};
use crate::guest_verify::{self, NotTried};
use crate::health::AgentState;

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub host_root: PathBuf,
    pub guest_interval: Option<Duration>,
    pub bench_interval: Option<Duration>,
    /// How often the device node is looked at (the probe interval).
    pub poll: Duration,
    pub bench: BenchConfig,
}

/// `(dev, ino, rdev)` of the device node, `None` when absent.
pub type DeviceId = Option<(u64, u64, u64)>;

pub fn device_id(path: &Path) -> DeviceId {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.rdev()))
}

/// Is a verification due? Never while the node is absent (nothing to try); at once when the
/// node changed or none was made yet; else when `interval` has passed.
pub fn guest_due(
    interval: Option<Duration>,
    last: Option<(Instant, DeviceId)>,
    now_id: DeviceId,
    now: Instant,
) -> bool {
    let Some(interval) = interval else {
        return false;
    };
    if now_id.is_none() {
        return false;
    }
    match last {
        None => true,
        Some((_, id)) if id != now_id => true,
        Some((at, _)) => now.saturating_duration_since(at) >= interval,
    }
}

pub async fn run(cfg: ScheduleConfig, health: Arc<AgentState>, mut stop: watch::Receiver<bool>) {
    let device = cfg.host_root.join(HypervisorKind::Mshv.device());
    let mut last_guest: Option<(Instant, DeviceId)> = None;
    let mut next_bench = cfg.bench_interval.map(|_| Instant::now());
    loop {
        let now = Instant::now();
        let id = device_id(&device);
        if id.is_none() && last_guest.is_some_and(|(_, last)| last.is_some()) {
            // The node went away: a stale `true` would outlive the device; back to "absent".
            info!(device = %device.display(), "device node gone; guest-verified label withdrawn");
            health.record_guest_verification(None);
            last_guest = Some((now, None));
        }
        if guest_due(cfg.guest_interval, last_guest, id, now) {
            let root = cfg.host_root.clone();
            let lock = cfg.bench.lock_path.clone();
            let result = tokio::task::spawn_blocking(move || {
                guest_verify::verify(&root, HypervisorKind::Mshv, &lock)
            })
            .await;
            match result {
                Ok(Ok(v)) => {
                    if v.verified {
                        info!(detail = %v.detail, "guest verification");
                    } else {
                        warn!(detail = %v.detail, errno = v.errno_name.as_deref().unwrap_or("-"), "guest verification failed");
                    }
                    health.record_guest_verification(Some(&v));
                    last_guest = Some((Instant::now(), id));
                }
                Ok(Err(NotTried::Busy(p))) => {
                    info!(lock = %p, "guest verification postponed: a bench holds the lock");
                }
                Ok(Err(NotTried::Absent(_))) => last_guest = Some((Instant::now(), None)),
                Err(e) => warn!(error = %e, "guest verification task failed"),
            }
        }
        if let (Some(at), Some(every)) = (next_bench, cfg.bench_interval)
            && Instant::now() >= at
        {
            let bench = cfg.bench.clone();
            match tokio::task::spawn_blocking(move || super::run(&bench)).await {
                Ok(Ok(report)) => {
                    for h in &report.hypervisors {
                        info!(
                            hypervisor = h.hypervisor.as_str(),
                            result = h.result,
                            reason = h.reason.as_deref().unwrap_or("-"),
                            "bench"
                        );
                    }
                    health.record_bench(&report);
                }
                Ok(Err(e)) => {
                    info!(error = %e, "bench skipped");
                }
                Err(e) => warn!(error = %e, "bench task failed"),
            }
            next_bench = Some(Instant::now() + every);
        }
        tokio::select! {
            () = tokio::time::sleep(cfg.poll) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_is_due_at_start_on_change_and_after_the_interval() {
        let h = Some(Duration::from_secs(3600));
        let t0 = Instant::now();
        let a = Some((1, 2, 3));
        let b = Some((1, 9, 3));
        assert!(guest_due(h, None, a, t0));
        assert!(!guest_due(None, None, a, t0), "0 = off");
        assert!(
            !guest_due(h, None, None, t0),
            "nothing to try without a node"
        );
        assert!(!guest_due(
            h,
            Some((t0, a)),
            a,
            t0 + Duration::from_secs(60)
        ));
        assert!(
            guest_due(h, Some((t0, a)), b, t0 + Duration::from_secs(60)),
            "recreated"
        );
        assert!(
            guest_due(h, Some((t0, None)), a, t0 + Duration::from_secs(1)),
            "appeared"
        );
        assert!(guest_due(
            h,
            Some((t0, a)),
            a,
            t0 + Duration::from_secs(3600)
        ));
    }
}
