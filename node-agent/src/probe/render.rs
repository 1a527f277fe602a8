//! Human rendering of a probe: a verdict, then one row per ladder step.

use std::fmt::Write as _;

use super::{Outcome, ProbeReport};

/// Render for a terminal. Plain text, no colour: it also ends up in bug reports.
pub fn human(report: &ProbeReport) -> String {
    let mut out = String::new();
    let verdict = if report.capable {
        "CAPABLE"
    } else {
        "NOT CAPABLE"
    };
    let _ = writeln!(out, "mshv probe: {verdict} ({})", report.state.as_str());
    let _ = writeln!(out, "  why:        {}", report.reason);
    let _ = writeln!(out, "  meaning:    {}", report.state.meaning());
    let _ = writeln!(out, "  what to do: {}", report.action);
    let _ = writeln!(out);

    let rows: Vec<[String; 4]> = report
        .steps
        .iter()
        .map(|s| {
            let mut detail = s.detail.clone();
            if s.cached {
                detail.push_str(" [cached]");
            }
            let todo = match (s.result, &s.action) {
                (Outcome::Fail, Some(a)) => a.clone(),
                _ => "-".to_string(),
            };
            [
                s.step.as_str().to_string(),
                s.result.as_str().to_string(),
                detail,
                todo,
            ]
        })
        .collect();
    let header = [
        "STEP".to_string(),
        "RESULT".to_string(),
        "MEANING".to_string(),
        "WHAT TO DO".to_string(),
    ];
    let width = |i: usize| {
        rows.iter()
            .chain(std::iter::once(&header))
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    for row in std::iter::once(&header).chain(rows.iter()) {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0], row[1], row[2], row[3]
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = writeln!(out);

    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "partition type: {}   hypervisor: {}   uapi: {}   errno: {}",
        report.partition_type.as_str(),
        dash(report.hv_version.clone()),
        dash(report.uapi.map(|u| u.as_str().to_string())),
        dash(
            report
                .errno_name
                .clone()
                .zip(report.errno)
                .map(|(n, e)| format!("{n} ({e})"))
        ),
    );
    let _ = writeln!(
        out,
        "kernel: {}   host root: {}   probe took {} us",
        dash(report.kernel_release.clone()),
        report.host_root,
        report.duration_us
    );
    if let Some(check) = report.hv_build_check {
        match check.warning() {
            Some(w) => {
                let _ = writeln!(out, "WARNING: {w}.");
            }
            None => {
                let _ = writeln!(
                    out,
                    "hypervisor build {} is in {}..={}, the mshv driver's validated range",
                    check.build, check.min, check.max
                );
            }
        }
    }
    if report.partition_created_and_closed {
        let _ = writeln!(
            out,
            "WARNING: the fingerprint ioctl created a partition; its fd was closed at once."
        );
    }
    out
}
