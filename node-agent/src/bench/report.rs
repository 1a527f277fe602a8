//! The human table of a [`BenchReport`] (`--json` serialises the report itself).

use std::fmt::Write as _;

use super::{BenchReport, HypervisorKind, Scenario};

/// Seconds as a short human figure (ns, µs, ms, s).
pub fn human_seconds(s: f64) -> String {
    if s < 1e-6 {
        format!("{:.1} ns", s * 1e9)
    } else if s < 1e-3 {
        format!("{:.2} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

pub fn human(report: &BenchReport) -> String {
    let mut out = String::new();
    for h in &report.hypervisors {
        let _ = write!(out, "{}: {} ({})", h.hypervisor, h.result, h.device);
        if let Some(reason) = &h.reason {
            let _ = write!(out, ": {reason}");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "  environment: {}", h.environment);
    }
    let ran: Vec<_> = report
        .hypervisors
        .iter()
        .filter(|h| h.run.as_ref().is_some_and(|r| !r.scenarios.is_empty()))
        .collect();
    if ran.is_empty() {
        let _ = writeln!(out, "no hypervisor ran a guest");
        return out;
    }
    let _ = writeln!(out);
    let _ = write!(out, "| scenario (per operation) |");
    for h in &ran {
        let _ = write!(out, " {0} median | {0} p99 |", h.hypervisor);
    }
    let both = ran.len() == 2;
    if both {
        let _ = write!(out, " mshv/kvm |");
    }
    let _ = writeln!(out);
    let _ = write!(out, "|---|");
    for _ in &ran {
        let _ = write!(out, "---|---|");
    }
    if both {
        let _ = write!(out, "---|");
    }
    let _ = writeln!(out);
    for s in Scenario::ALL {
        let _ = write!(out, "| {} ({}) |", s.as_str(), s.per());
        for h in &ran {
            let r = h.run.as_ref().and_then(|r| r.get(s));
            match r {
                Some(r) if r.error.is_none() => {
                    let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), human_seconds);
                    let _ = write!(out, " {} | {} |", f(r.median_s), f(r.p99_s));
                }
                Some(r) => {
                    let _ = write!(out, " failed: {} | |", r.error.as_deref().unwrap_or("-"));
                }
                None => {
                    let _ = write!(out, " not run | |");
                }
            }
        }
        if both {
            let ratio = report.ratios.iter().find(|r| r.scenario == s);
            let _ = write!(
                out,
                " {} |",
                ratio.map_or_else(|| "-".to_string(), |r| format!("{:.2}", r.mshv_over_kvm))
            );
        }
        let _ = writeln!(out);
    }
    for h in &ran {
        if let Some(run) = &h.run
            && let (Some(ratio), Some(host)) = (run.guest_compute_ratio, run.host_loop_median_s)
        {
            let _ = writeln!(
                out,
                "{}: guest-compute / host loop = {ratio:.1} (host {} per iteration)",
                h.hypervisor,
                human_seconds(host)
            );
        }
    }
    let kvm_pvm = report
        .get(HypervisorKind::Kvm)
        .is_some_and(|h| h.environment.starts_with("kvm_pvm"));
    if kvm_pvm {
        let _ = writeln!(
            out,
            "note: this KVM is kvm_pvm (software nested virtualization in a microVM): its numbers are not those of KVM on hardware, nor of nested KVM on Azure"
        );
    }
    let _ = writeln!(out, "wall time: {:.2} s", report.wall_seconds);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_units() {
        assert_eq!(human_seconds(1.5e-9), "1.5 ns");
        assert_eq!(human_seconds(12.346e-6), "12.35 µs");
        assert_eq!(human_seconds(2.5e-3), "2.50 ms");
        assert_eq!(human_seconds(3.0), "3.00 s");
    }
}
