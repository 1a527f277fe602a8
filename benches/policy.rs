//! `cargo bench --bench policy` (or `make bench`): wall time of `validate` on a warm instance of
//! the release hyperv-layered module, next to the floor policy (parse the request, accept) measured
//! in the same run, plus module sizes and compile times. One table, no assertions on timings.
//!
//! Method: both modules get the same host-side payload (the scenario's AdmissionRequest after the
//! host's normalization, and its settings). After a warm-up, calls run in blocks that alternate
//! floor, policy, floor, ... so machine noise lands on both sides alike. One sample is one
//! `WapcHost::call("validate")` including every host call it makes (answered from the replay
//! session, rewound for every call); host-side request serialization and the patch diff are
//! outside the timing. The replay answer is a copy of a string already in memory, cheaper than
//! policy-server serializing its reflector cache, so context-aware rows are a lower bound.
//!
//! Knobs (environment): BENCH_ITERS (timed calls per module per scenario, default 20000),
//! BENCH_WARMUP (default 2000), BENCH_BLOCK (default 250), BENCH_BUDGET_SECS (per scenario,
//! default 20: fewer calls are timed when a scenario is slow, and the table says how many).
//! The module is never built here: `make policy.wasm floor.wasm` first.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use harness::{Instance, Policy, Session};
use serde_json::{Value, json};

/// One benchmark scenario: paths are relative to the repository root; `settings` is JSON text.
struct Scenario {
    name: &'static str,
    request: &'static str,
    settings: &'static str,
    session: Option<&'static str>,
}

/// Edit this list to add or adjust scenarios.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "non-launcher",
        request: "tests/data/plain-pod.json",
        settings: r#"{"gate":{"mode":"enabled"}}"#,
        session: None,
    },
    Scenario {
        name: "gate-off",
        request: "tests/data/launcher-v1.8-kvm.json",
        settings: r#"{"gate":{"mode":"disabled"}}"#,
        session: None,
    },
    Scenario {
        name: "full-mshv",
        request: "tests/data/launcher-v1.8-kvm.json",
        settings: r#"{"gate":{"mode":"enabled"},"perPodHypervisor":true,"launcherImages":["quay.io/kubevirt/virt-launcher"]}"#,
        session: Some("tests/data/sessions/nodes-capable.yml"),
    },
    Scenario {
        name: "record-only (opt-out)",
        request: "tests/data/launcher-opt-out.json",
        settings: r#"{"gate":{"mode":"enabled"}}"#,
        session: None,
    },
    Scenario {
        name: "full-mshv-default-settings",
        request: "tests/data/launcher-v1.5.json",
        settings: r#"{"launcherImages":["quay.io/kubevirt/virt-launcher"]}"#,
        session: Some("tests/data/sessions/kv-per-pod.yml"),
    },
    Scenario {
        name: "mixed-mode (kvm kept, mshv added)",
        request: "tests/data/launcher-v1.8-kvm.json",
        settings: r#"{"gate":{"mode":"enabled"},"mixedMode":true,"launcherImages":["quay.io/kubevirt/virt-launcher"]}"#,
        session: Some("tests/data/sessions/nodes-mixed.yml"),
    },
    Scenario {
        name: "full-mshv-1000-nodes",
        request: "tests/data/launcher-v1.8-kvm.json",
        settings: r#"{"gate":{"mode":"enabled"},"perPodHypervisor":true,"launcherImages":["quay.io/kubevirt/virt-launcher"]}"#,
        session: Some("tests/data/sessions/nodes-1000.yml"),
    },
];

struct Knobs {
    iters: usize,
    warmup: usize,
    block: usize,
    budget: Duration,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

/// What one row of the table shows.
enum Row {
    Measured {
        n: usize,
        policy: Stats,
        floor: Stats,
        /// The floor making the same host calls (scenarios with a session).
        floor_calls: Option<Stats>,
        host_calls: usize,
        note: String,
    },
    Skipped(String),
}

struct Stats {
    median: Duration,
    p99: Duration,
}

fn stats(samples: &mut [Duration]) -> Stats {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p99: at(0.99),
    }
}

fn fmt_dur(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{:.2} µs", ns as f64 / 1e3)
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this binary takes no arguments of its own.
    let knobs = Knobs {
        iters: env_usize("BENCH_ITERS", 20_000),
        warmup: env_usize("BENCH_WARMUP", 2_000),
        block: env_usize("BENCH_BLOCK", 250),
        budget: Duration::from_secs(env_usize("BENCH_BUDGET_SECS", 20) as u64),
    };
    let root = harness::repo_root();

    let policy = Policy::release().map_err(|e| format!("{e:#}"));
    let floor = Policy::floor().map_err(|e| format!("{e:#}"));
    let policy_instance = policy
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|p| p.instance().map_err(|e| format!("{e:#}")));
    let floor_instance = floor
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|p| p.instance().map_err(|e| format!("{e:#}")));

    let mut rows = Vec::new();
    for s in SCENARIOS {
        let row = match (&policy_instance, &floor_instance) {
            (Err(e), _) => Row::Skipped(format!("skipped (policy module: {})", first_line(e))),
            (_, Err(e)) => Row::Skipped(format!("skipped (floor module: {})", first_line(e))),
            (Ok(p), Ok(f)) => match prepare(&root, s) {
                Err(Prepare::Missing(path)) => Row::Skipped(format!("skipped (missing {path})")),
                Err(Prepare::Broken(e)) => Row::Skipped(format!("skipped ({})", first_line(&e))),
                Ok(prepared) => run(p, f, &prepared, &knobs, s.name),
            },
        };
        rows.push((s.name, row));
    }

    print_table(&knobs, &rows);
    print_modules(&root, policy.as_ref().ok(), floor.as_ref().ok());
    print_overlay(&root, &knobs);
}

/// A native host that answers every list with one fixed node list (what the full-path
/// scenario's session answers), and drops the log.
struct FixedNodes(Vec<u8>);

impl hyperv_layered::cluster::Host for FixedNodes {
    fn call(&self, _operation: &str, _request: &[u8]) -> Result<Vec<u8>, String> {
        Ok(self.0.clone())
    }
}

/// Does the Pod overlay (src/pod_doc.rs) still pay? The same native entry point with the Pod
/// parsed into the overlay and parsed whole, alternating, on the full mshv path.
fn print_overlay(root: &Path, knobs: &Knobs) {
    let read = |p: &str| std::fs::read_to_string(root.join(p));
    let (Ok(request), Ok(nodes)) = (
        read("tests/data/launcher-v1.8-kvm.json"),
        read("tests/data/sessions/nodes-capable.yml"),
    ) else {
        println!("overlay vs whole-Value parse: skipped (fixtures missing)");
        return;
    };
    // The reply payload is the quoted JSON after `payload: '` in the session file.
    let Some(reply) = nodes
        .split("payload: '")
        .nth(1)
        .and_then(|r| r.rsplit_once('\'').map(|(body, _)| body.replace("''", "'")))
    else {
        println!("overlay vs whole-Value parse: skipped (no payload in the session)");
        return;
    };
    let settings = r#"{"gate":{"mode":"enabled"},"perPodHypervisor":true,"launcherImages":["quay.io/kubevirt/virt-launcher"]}"#;
    let payload = format!(r#"{{"request":{request},"settings":{settings}}}"#);
    let host = FixedNodes(reply.into_bytes());
    let overlay = || hyperv_layered::policy::evaluate_to_bytes(payload.as_bytes(), &host);
    let whole = || {
        serde_json::to_vec(&hyperv_layered::policy::evaluate_whole_pod(
            payload.as_bytes(),
            &host,
        ))
        .unwrap_or_default()
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < knobs.iters {
        for _ in 0..knobs.block {
            let t = Instant::now();
            std::hint::black_box(overlay());
            a.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(whole());
            b.push(t.elapsed());
        }
        done += knobs.block;
    }
    let (sa, sb) = (stats(&mut a), stats(&mut b));
    println!();
    println!(
        "Pod overlay vs whole-Value parse (native, full mshv path, {done} calls each, alternating)"
    );
    println!("| parse | median | p99 |");
    println!("|---|---:|---:|");
    println!(
        "| overlay (src/pod_doc.rs) | {} | {} |",
        fmt_dur(sa.median),
        fmt_dur(sa.p99)
    );
    println!(
        "| whole `Value` | {} | {} |",
        fmt_dur(sb.median),
        fmt_dur(sb.p99)
    );
    println!(
        "overlay / whole (median): {:.2}x",
        sa.median.as_secs_f64() / sb.median.as_secs_f64().max(f64::MIN_POSITIVE)
    );
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

enum Prepare {
    Missing(String),
    Broken(String),
}

/// What one scenario sends: the exact bytes the host passes to `validate`, the parsed session,
/// and (with a session) the floor's payload that makes the same host calls.
struct Prepared {
    payload: Vec<u8>,
    session: Option<Session>,
    floor_calls_payload: Option<Vec<u8>>,
}

fn prepare(root: &Path, s: &Scenario) -> Result<Prepared, Prepare> {
    for p in std::iter::once(s.request).chain(s.session) {
        if !root.join(p).exists() {
            return Err(Prepare::Missing(p.to_owned()));
        }
    }
    let build = || -> Result<Prepared> {
        let request = harness::load_json(root.join(s.request))?;
        let request = harness::admission::normalize_request(&request)
            .with_context(|| s.request.to_owned())?;
        let settings: Value = serde_json::from_str(s.settings).context("settings")?;
        let payload = serde_json::to_vec(&json!({"request": request, "settings": settings}))?;
        let session = s.session.map(|p| Session::load(root.join(p))).transpose()?;
        let floor_calls_payload = match &session {
            None => None,
            Some(session) => {
                let calls = session
                    .exchanges
                    .iter()
                    .map(|e| {
                        let (operation, body) = e.request.to_guest().context("a can_i exchange")?;
                        Ok(json!({"operation": operation,
                                  "payload": String::from_utf8(body)?}))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some(serde_json::to_vec(
                    &json!({"request": request, "settings": {"hostCalls": calls}}),
                )?)
            }
        };
        Ok(Prepared {
            payload,
            session,
            floor_calls_payload,
        })
    };
    build().map_err(|e| Prepare::Broken(format!("{e:#}")))
}

fn run(policy: &Instance, floor: &Instance, prepared: &Prepared, knobs: &Knobs, name: &str) -> Row {
    let payload = prepared.payload.as_slice();
    let session = prepared.session.as_ref();
    let floor_calls = prepared.floor_calls_payload.as_deref();
    // One checked call first: timing a call whose replay mismatches, or that fails in the
    // guest, would measure an error path, not the scenario.
    let probe = policy.call("validate", payload, session);
    if let Some(f) = probe.replay_failures.first() {
        return Row::Skipped(format!(
            "not timed: replay failure: {}",
            first_line(&f.to_string())
        ));
    }
    let note = match &probe.result {
        Err(e) => return Row::Skipped(format!("not timed: guest error: {}", first_line(e))),
        Ok(bytes) => describe(bytes),
    };
    if let Err(e) = floor.call("validate", payload, None).result {
        return Row::Skipped(format!("not timed: floor guest error: {}", first_line(&e)));
    }
    if let Some(fc) = floor_calls {
        let raw = floor.call("validate", fc, session);
        if let Some(f) = raw.replay_failures.first() {
            return Row::Skipped(format!(
                "not timed: floor host calls: {}",
                first_line(&f.to_string())
            ));
        }
    }

    let time_payload = |inst: &Instance, payload: &[u8], session: Option<&Session>| {
        let t = Instant::now();
        let raw = inst.call("validate", payload, session);
        let d = t.elapsed();
        (d, raw.result.is_ok() && raw.replay_failures.is_empty())
    };
    let time = |inst: &Instance, session: Option<&Session>| time_payload(inst, payload, session);

    // Warm-up, also the estimate of how many calls fit the budget. A slow scenario stops
    // warming up after a quarter of its budget (and at least 10 pairs).
    let start = Instant::now();
    let mut pairs = 0u32;
    while (pairs as usize) < knobs.warmup && (pairs < 10 || start.elapsed() < knobs.budget / 4) {
        time(floor, None);
        if let Some(fc) = floor_calls {
            time_payload(floor, fc, session);
        }
        time(policy, session);
        pairs += 1;
    }
    let per_pair = start.elapsed() / pairs;
    let fit = (knobs.budget.as_secs_f64() / per_pair.as_secs_f64().max(1e-9)) as usize;
    let n = knobs.iters.min(fit.max(200));

    let mut p_samples = Vec::with_capacity(n);
    let mut f_samples = Vec::with_capacity(n);
    let mut fc_samples = Vec::with_capacity(if floor_calls.is_some() { n } else { 0 });
    let mut bad = 0usize;
    while p_samples.len() < n {
        let k = knobs.block.min(n - p_samples.len());
        for _ in 0..k {
            let (d, ok) = time(floor, None);
            f_samples.push(d);
            bad += usize::from(!ok);
        }
        if let Some(fc) = floor_calls {
            for _ in 0..k {
                let (d, ok) = time_payload(floor, fc, session);
                fc_samples.push(d);
                bad += usize::from(!ok);
            }
        }
        for _ in 0..k {
            let (d, ok) = time(policy, session);
            p_samples.push(d);
            bad += usize::from(!ok);
        }
    }
    let note = if bad > 0 {
        format!("{note}; {bad} calls failed during timing")
    } else {
        note
    };
    eprintln!("{name}: {n} calls timed per module");
    Row::Measured {
        n,
        policy: stats(&mut p_samples),
        floor: stats(&mut f_samples),
        floor_calls: floor_calls.map(|_| stats(&mut fc_samples)),
        host_calls: probe.host_calls,
        note,
    }
}

/// A short summary of the guest's answer, so the table shows what was measured.
fn describe(bytes: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return "unparsable response".to_owned();
    };
    let verdict = if v["accepted"] == json!(true) {
        "accepted"
    } else {
        "rejected"
    };
    let mutated = if v["mutated_object"].is_null() {
        ", unchanged"
    } else {
        ", mutated"
    };
    let warnings = v["warnings"].as_array().map_or(0, Vec::len);
    if warnings > 0 {
        format!("{verdict}{mutated}, {warnings} warning(s)")
    } else {
        format!("{verdict}{mutated}")
    }
}

fn print_table(knobs: &Knobs, rows: &[(&str, Row)]) {
    println!();
    println!(
        "hyperv-layered `validate` on a warm instance vs the floor policy (same run, alternating blocks of {}, up to {} warm-up pairs)",
        knobs.block, knobs.warmup
    );
    println!();
    println!(
        "| scenario | calls | policy median | policy p99 | floor median | floor p99 | ratio (median) | floor + same host calls, median | ratio to that | host calls/call | outcome |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (name, row) in rows {
        match row {
            Row::Measured {
                n,
                policy,
                floor,
                floor_calls,
                host_calls,
                note,
            } => {
                let ratio = |base: &Stats| policy.median.as_secs_f64() / base.median.as_secs_f64();
                let (fc_median, fc_ratio) = match floor_calls {
                    Some(fc) => (fmt_dur(fc.median), format!("{:.2}x", ratio(fc))),
                    None => ("-".to_owned(), "-".to_owned()),
                };
                println!(
                    "| {name} | {n} | {} | {} | {} | {} | {:.2}x | {fc_median} | {fc_ratio} | {host_calls} | {note} |",
                    fmt_dur(policy.median),
                    fmt_dur(policy.p99),
                    fmt_dur(floor.median),
                    fmt_dur(floor.p99),
                    ratio(floor)
                )
            }
            Row::Skipped(why) => {
                println!("| {name} | - | - | - | - | - | - | - | - | - | {why} |")
            }
        }
    }
}

fn print_modules(root: &Path, policy: Option<&Policy>, floor: Option<&Policy>) {
    // Compile time is noisy: take the median of three fresh compiles (no wasmtime cache).
    let compile = |path: &Path| -> Result<(u64, Duration)> {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..3 {
            let p = Policy::load(path)?;
            size = p.size;
            times.push(p.compile_time);
        }
        times.sort_unstable();
        Ok((size, times[1]))
    };
    let annotated = root.join("annotated-policy.wasm");
    // A module that failed to load above (stale, say) still gets its size and compile time.
    let existing = |p: std::path::PathBuf| p.exists().then_some(p);
    let modules = [
        (
            "policy",
            policy
                .map(|p| p.path.clone())
                .or_else(|| existing(harness::policy_wasm_path())),
        ),
        (
            "floor",
            floor
                .map(|p| p.path.clone())
                .or_else(|| existing(harness::floor_wasm_path())),
        ),
        (
            "annotated-policy.wasm",
            annotated.exists().then_some(annotated),
        ),
    ];
    println!();
    for (label, path) in modules {
        let line = match path {
            None => "not present".to_owned(),
            Some(path) => match compile(&path) {
                Ok((size, t)) => format!(
                    "{} bytes ({:.1} KiB), compile {} (median of 3, Cranelift)  [{}]",
                    size,
                    size as f64 / 1024.0,
                    fmt_dur(t),
                    path.strip_prefix(root).unwrap_or(&path).display()
                ),
                Err(e) => format!("error: {}", first_line(&format!("{e:#}"))),
            },
        };
        println!("module {label}: {line}");
    }
}
