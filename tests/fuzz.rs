//! Property-based fuzzing of the policy entry point (native build of the same code as the .wasm).
//!
//! Inputs: arbitrary JSON and bytes; admission requests built from the fixture launchers with
//! fields removed, retyped or enlarged; random settings; random lookup replies (errors, garbage,
//! empty and huge lists). Properties: never a panic; always a well-formed response; no `remove`
//! op but the KVM device the mshv device replaces; the policy on its own output changes nothing;
//! the hypervisor device agrees with the launcher's `--hypervisor` (every layout of
//! `fuzzgen::LAYOUTS`).
//!
//! Case count: `PROPTEST_CASES` (default 256 per property here, so `cargo test` stays quick;
//! `make fuzz` and CI run 100,000+). The count actually run is printed.

mod fuzzgen;

use fuzzgen::*;
use hyperv_layered::cluster::Host;
use hyperv_layered::policy::{evaluate, evaluate_to_bytes, evaluate_whole_pod, validate_settings};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use std::cell::Cell;
use std::collections::HashMap;

/// A host whose answer depends only on (operation, kind): deterministic within a case, so the
/// idempotence property compares like with like.
#[derive(Debug, Clone)]
struct RandomHost {
    answers: HashMap<String, Result<Vec<u8>, String>>,
    fallback: Result<Vec<u8>, String>,
    calls: Cell<usize>,
}

impl Host for RandomHost {
    fn call(&self, operation: &str, request: &[u8]) -> Result<Vec<u8>, String> {
        self.calls.set(self.calls.get() + 1);
        let kind = serde_json::from_slice::<Value>(request)
            .ok()
            .and_then(|v| v["kind"].as_str().map(str::to_string))
            .unwrap_or_default();
        self.answers
            .get(&format!("{operation}/{kind}"))
            .cloned()
            .unwrap_or_else(|| self.fallback.clone())
    }
}

fn arb_host() -> impl Strategy<Value = RandomHost> {
    (
        arb_reply(),
        arb_reply(),
        arb_reply(),
        arb_reply(),
        arb_reply(),
    )
        .prop_map(|(kv, nodes, pods, vmi, fb)| {
            let mut answers = HashMap::new();
            answers.insert("get_resource/KubeVirt".to_string(), kv);
            answers.insert("list_resources_all/Node".to_string(), nodes);
            answers.insert("list_resources_by_namespace/Pod".to_string(), pods);
            answers.insert("get_resource/VirtualMachineInstance".to_string(), vmi);
            RandomHost {
                answers,
                fallback: fb,
                calls: Cell::new(0),
            }
        })
}

/// Checks one evaluation; true when the policy mutated the Pod.
fn check(request: &Value, settings: &Value, host: &RandomHost) -> Result<bool, TestCaseError> {
    let payload = json!({"request": request, "settings": settings}).to_string();
    let r = evaluate(payload.as_bytes(), host);
    // Well-formed: it serializes, and a rejection says why.
    let wire = serde_json::to_value(&r).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(wire.get("accepted").is_some());
    same_as_guest_bytes(payload.as_bytes(), host, &wire)?;
    same_as_whole_pod(payload.as_bytes(), host, &wire)?;
    if !r.accepted {
        prop_assert!(r.message.as_deref().is_some_and(|m| !m.is_empty()));
        prop_assert!(r.mutated_object.is_none());
    }
    let Some(mutated) = r.mutated_object else {
        return Ok(false);
    };
    let original = request.get("object").cloned().unwrap_or(Value::Null);
    switched_only_listed_images(&original, &mutated, settings)?;
    device_agrees_with_flag(&original, &mutated, settings)?;
    let patch = json_patch::diff(&original, &mutated);
    for op in &patch.0 {
        if let json_patch::PatchOperation::Remove(rm) = op {
            let p = rm.path.to_string();
            prop_assert!(p.ends_with("/devices.kubevirt.io~1kvm"), "removed {p}");
        }
    }
    // Idempotence on the same cluster state.
    let mut again = request.clone();
    again["object"] = mutated;
    let payload = json!({"request": again, "settings": settings}).to_string();
    let r2 = evaluate(payload.as_bytes(), host);
    let wire2 = serde_json::to_value(&r2).map_err(|e| TestCaseError::fail(e.to_string()))?;
    same_as_whole_pod(payload.as_bytes(), host, &wire2)?;
    if let Some(m2) = r2.mutated_object {
        let p2 = json_patch::diff(&again["object"], &m2);
        prop_assert!(p2.0.is_empty(), "second run patched: {:?}", p2);
    }
    Ok(true)
}

/// The compute container of a Pod (the policy only ever edits that one).
fn compute(pod: &Value) -> Option<&Value> {
    pod.pointer("/spec/containers")?
        .as_array()?
        .iter()
        .find(|c| c["name"] == "compute")
}

/// An independent statement of the `launcherImages` rule (src/images.rs): exact reference, a
/// repository without tag or digest (any tag or digest of it), or a prefix ending in `*`.
fn image_listed(settings: &Value, image: &str) -> bool {
    let Some(list) = settings["launcherImages"].as_array() else {
        return false;
    };
    list.iter()
        .filter_map(Value::as_str)
        .any(|p| match p.strip_suffix('*') {
            Some(prefix) => image.starts_with(prefix),
            None => {
                image == p
                    || (!p.contains('@')
                        && !p.rsplit('/').next().unwrap_or(p).contains(':')
                        && image
                            .strip_prefix(p)
                            .is_some_and(|r| r.starts_with(':') || r.starts_with('@')))
            }
        })
        && !image.is_empty()
}

/// Issue "mshv only for launcher images that can run it": whatever the settings and the Pod,
/// a launcher whose compute image is not listed is never switched (no mshv device added, no
/// `--hypervisor` value changed).
fn switched_only_listed_images(
    original: &Value,
    mutated: &Value,
    settings: &Value,
) -> Result<(), TestCaseError> {
    let (Some(before), Some(after)) = (compute(original), compute(mutated)) else {
        return Ok(());
    };
    let mshv = |c: &Value| {
        ["limits", "requests"]
            .iter()
            .any(|m| c["resources"][m].get("devices.kubevirt.io/mshv").is_some())
    };
    let switched = (mshv(after) && !mshv(before)) || before["command"] != after["command"];
    if switched {
        let image = before["image"].as_str().unwrap_or_default();
        prop_assert!(
            image_listed(settings, image),
            "switched a launcher whose image {image:?} is not in {}",
            settings["launcherImages"]
        );
    }
    Ok(())
}

/// Every `--hypervisor` value of a compute container, over `command` then `args`, in both
/// forms (an independent reading: not the policy's `launcher` module).
fn hypervisor_values(c: &Value) -> Vec<Option<String>> {
    let items: Vec<&Value> = ["command", "args"]
        .iter()
        .filter_map(|k| c[*k].as_array())
        .flatten()
        .collect();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some("--hypervisor") => out.push(
                items
                    .get(i + 1)
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
            ),
            Some(s) if s.starts_with("--hypervisor=") => {
                out.push(Some(s["--hypervisor=".len()..].to_string()))
            }
            _ => {}
        }
    }
    out
}

/// Issue 16 item 1: no Pod the policy writes has a hypervisor device that disagrees with the
/// launcher's `--hypervisor` value. Where the policy switched the launcher (added the mshv
/// device or changed the command line): the flag occurs at most once; present, it says the
/// mshv hypervisor (`hypervisorArg`, never `kvm`) exactly when the mshv device is requested; the
/// KVM device stays exactly in mixed mode (and goes otherwise); and the entrypoint is one
/// KubeVirt renders. A Pod whose layout is refused is never half-edited: its command line and
/// devices are exactly as rendered.
fn device_agrees_with_flag(
    original: &Value,
    mutated: &Value,
    settings: &Value,
) -> Result<(), TestCaseError> {
    let (Some(before), Some(after)) = (compute(original), compute(mutated)) else {
        return Ok(());
    };
    let has = |c: &Value, r: &str| {
        ["limits", "requests"]
            .iter()
            .any(|m| c["resources"][m].get(r).is_some())
    };
    let (mshv, kvm) = ("devices.kubevirt.io/mshv", "devices.kubevirt.io/kvm");
    let lists_changed = before["command"] != after["command"] || before["args"] != after["args"];
    let switched = (has(after, mshv) && !has(before, mshv)) || lists_changed;
    let reason = mutated
        .pointer("/metadata/annotations/hyperv-layered.io~1reason")
        .and_then(Value::as_str);
    if reason == Some("launcher-layout-unknown") {
        prop_assert!(!switched, "a refused layout was edited");
        prop_assert_eq!(&before["resources"], &after["resources"]);
        return Ok(());
    }
    if !switched {
        return Ok(());
    }
    let arg = settings["hypervisorArg"]
        .as_str()
        .unwrap_or("hyperv-direct");
    let values = hypervisor_values(after);
    prop_assert!(values.len() <= 1, "--hypervisor {values:?} after a switch");
    let entry = after["command"][0].as_str().unwrap_or_default();
    prop_assert!(
        entry.ends_with("/virt-launcher-monitor")
            || entry.ends_with("/virt-launcher")
            || entry == "virt-launcher-monitor"
            || entry == "virt-launcher",
        "switched a launcher with entrypoint {entry:?}"
    );
    prop_assert!(has(after, mshv), "switched without the mshv device");
    if let Some(value) = values.first() {
        prop_assert_eq!(
            value.as_deref(),
            Some(arg),
            "the mshv device with --hypervisor {:?}",
            value
        );
        prop_assert!(value.as_deref() != Some("kvm"));
        // Mixed mode keeps the KVM device for virt-handler; a per-Pod switch replaces it.
        let mixed = settings["mixedMode"] == json!(true);
        prop_assert_eq!(
            has(after, kvm),
            mixed && has(before, kvm),
            "kvm device with mixedMode={}",
            mixed
        );
    }
    Ok(())
}

/// What the guest writes (`evaluate_to_bytes`, the overlay writer) is JSON and means exactly
/// what `evaluate` returns.
fn same_as_guest_bytes(
    payload: &[u8],
    host: &RandomHost,
    wire: &Value,
) -> Result<(), TestCaseError> {
    let bytes = evaluate_to_bytes(payload, host);
    let guest: Value = serde_json::from_slice(&bytes).map_err(|e| {
        TestCaseError::fail(format!(
            "guest bytes are not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        ))
    })?;
    prop_assert_eq!(&guest, wire);
    Ok(())
}

/// `PodDoc`'s contract: the overlay (only the paths in its tables parsed) gives exactly the
/// answer a whole-`Value` parse of the same Pod gives. A read of a path missing from the tables
/// finds nothing in the overlay and so shows up here as a difference.
fn same_as_whole_pod(payload: &[u8], host: &RandomHost, wire: &Value) -> Result<(), TestCaseError> {
    let whole = serde_json::to_value(evaluate_whole_pod(payload, host))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&whole, wire, "overlay and whole-Value answers differ");
    Ok(())
}

fn report(name: &str, runner: &TestRunner) {
    println!("fuzz {name}: {} cases passed", runner.config().cases);
}

#[test]
fn arbitrary_bytes_and_json_never_panic() {
    let mut r = runner(256);
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        arb_json().prop_map(|v| v.to_string().into_bytes()),
        arb_json().prop_map(|v| json!({"request": v, "settings": {}})
            .to_string()
            .into_bytes()),
    ];
    r.run(&(strategy, arb_host()), |(bytes, host)| {
        let resp = evaluate(&bytes, &host);
        let wire = serde_json::to_value(&resp).map_err(|e| TestCaseError::fail(e.to_string()))?;
        same_as_guest_bytes(&bytes, &host, &wire)?;
        same_as_whole_pod(&bytes, &host, &wire)?;
        Ok(())
    })
    .unwrap();
    report("arbitrary bytes/json", &r);
}

#[test]
fn mangled_launchers_random_settings_and_replies() {
    let mut r = runner(256);
    let strategy = (arb_request(), arb_settings(), arb_host());
    let mutated = Cell::new(0u32);
    r.run(&strategy, |(request, settings, host)| {
        mutated.set(mutated.get() + u32::from(check(&request, &settings, &host)?));
        Ok(())
    })
    .unwrap();
    println!("fuzz mangled launchers: {} of them mutated", mutated.get());
    report("mangled launchers", &r);
}

#[test]
fn random_settings_are_valid_or_name_a_field() {
    let mut r = runner(256);
    r.run(&arb_settings(), |settings| {
        let resp = validate_settings(settings.to_string().as_bytes());
        if !resp.valid {
            let m = resp.message.unwrap_or_default();
            prop_assert!(m.starts_with("settings field `"), "{m}");
        }
        Ok(())
    })
    .unwrap();
    report("settings", &r);
}

/// The differential check over every fixture with every case's settings and session answers
/// (deterministic, so each fixture x settings pair is seen, not just sampled).
#[test]
fn every_fixture_overlay_equals_whole_pod() {
    let cases: Vec<Value> = serde_json::from_value(fixture("cases.json")).unwrap();
    let mut settings: Vec<Value> = cases.iter().map(|c| c["settings"].clone()).collect();
    settings.dedup();
    let node_list = json!({"items": (0..3).map(node).collect::<Vec<_>>()}).to_string();
    let hosts = [
        RandomHost {
            answers: HashMap::from([
                (
                    "list_resources_all/Node".to_string(),
                    Ok(node_list.clone().into_bytes()),
                ),
                (
                    "get_resource/VirtualMachineInstance".to_string(),
                    Ok(fixture("vmi-testvm.json").to_string().into_bytes()),
                ),
            ]),
            fallback: Err("forbidden".to_string()),
            calls: Cell::new(0),
        },
        RandomHost {
            answers: HashMap::new(),
            fallback: Err("forbidden".to_string()),
            calls: Cell::new(0),
        },
    ];
    let mut compared = 0;
    for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data")).unwrap() {
        let name = f.unwrap().file_name().to_string_lossy().to_string();
        if !name.ends_with(".json") {
            continue;
        }
        let request = fixture(&name);
        if request.get("object").is_none() {
            continue;
        }
        for s in &settings {
            for host in &hosts {
                let payload = json!({"request": request, "settings": s}).to_string();
                let first = evaluate(payload.as_bytes(), host);
                let wire = serde_json::to_value(&first).unwrap();
                same_as_whole_pod(payload.as_bytes(), host, &wire)
                    .unwrap_or_else(|e| panic!("{name} with {s}: {e}"));
                compared += 1;
                // And on the policy's own output, where its record and edits are already there.
                if let Some(mutated) = first.mutated_object {
                    let mut again = request.clone();
                    again["object"] = mutated;
                    let payload = json!({"request": again, "settings": s}).to_string();
                    let wire = serde_json::to_value(evaluate(payload.as_bytes(), host)).unwrap();
                    same_as_whole_pod(payload.as_bytes(), host, &wire)
                        .unwrap_or_else(|e| panic!("{name} with {s}, second run: {e}"));
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 300, "{compared}");
    println!("overlay = whole-Value parse on {compared} fixture/settings/host combinations");
}
