//! `make demo`: evaluates one admission request with the built release `.wasm`, exactly as the
//! tests do (waPC over wasmtime, host calls replayed from a session file), and prints the
//! decision, the warnings, the host calls made and the JSON Patch the API server would apply.
//!
//! cargo run --example evaluate -- --request FILE [--settings JSON] [--session FILE]

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

fn main() -> Result<()> {
    let mut request = None;
    let mut settings = json!({});
    let mut session = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--request" => request = Some(value()?),
            "--settings" => {
                settings = serde_json::from_str(&value()?).context("--settings is not JSON")?
            }
            "--session" => session = Some(value()?),
            other => bail!(
                "unknown argument {other}; usage: --request FILE [--settings JSON] [--session FILE]"
            ),
        }
    }
    let request_path = request.context("--request FILE is required")?;
    let request = harness::load_json(&request_path)?;
    let session = session
        .map(|s| harness::Session::load(&s).with_context(|| format!("loading session {s}")))
        .transpose()?;

    let policy = harness::Policy::release()?;
    let out = policy
        .instance()?
        .try_validate(&request, &settings, session.as_ref())?;

    let pod = out.patched_object()?;
    let annotation = |k: &str| {
        pod["metadata"]["annotations"][k]
            .as_str()
            .unwrap_or("-")
            .to_string()
    };
    println!("request:    {request_path}");
    println!("settings:   {settings}");
    println!("allowed:    {}", out.allowed());
    if let Some(m) = out.message() {
        println!("message:    {m}");
    }
    println!("hypervisor: {}", annotation("hyperv-layered.io/hypervisor"));
    println!("reason:     {}", annotation("hyperv-layered.io/reason"));
    println!("host calls: {}", out.host_calls);
    for w in out.warnings() {
        println!("warning:    {w}");
    }
    for f in &out.replay_failures {
        println!("replay:     {f}");
    }
    let patch: Value = serde_json::to_value(&out.patch)?;
    println!("patch ({} ops):", out.patch.0.len());
    println!("{}", serde_json::to_string_pretty(&patch)?);
    Ok(())
}
