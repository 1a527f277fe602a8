//! The built release `.wasm`, run as policy-server runs it, on every case of
//! `tests/data/cases.json` (the same cases `e2e.bats` runs through kwctl).
//!
//! For each case: the session is replayed strictly (every expected host call, in order, nothing
//! more), the JSON Patch the host would compute must equal `tests/data/expected/<id>.json`
//! exactly (no file: no patch at all), the decision record on the patched Pod must say what the
//! case says, and the policy run again on its own output must produce no patch.
//! `UPDATE_EXPECTED=1` rewrites the patch files (then review the diff by hand).

use harness::{Policy, Session, data_path, load_json};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::OnceLock;

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| Policy::release().unwrap_or_else(|e| panic!("{e:#}")))
}

fn cases() -> Vec<Value> {
    match load_json(data_path("cases.json")) {
        Ok(Value::Array(cases)) => cases,
        other => panic!("tests/data/cases.json: {other:?}"),
    }
}

fn expected_path(id: &str) -> PathBuf {
    data_path(format!("expected/{id}.json"))
}

fn session(case: &Value) -> Option<Session> {
    case["session"].as_str().map(|s| {
        Session::load(data_path(format!("sessions/{s}"))).unwrap_or_else(|e| panic!("{s}: {e:#}"))
    })
}

fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod["metadata"]["annotations"][key].as_str()
}

#[test]
fn every_case_gives_its_exact_patch_and_is_idempotent() {
    let instance = policy().instance().expect("instance");
    let update = std::env::var_os("UPDATE_EXPECTED").is_some();
    let mut failures = Vec::new();
    for case in cases() {
        let id = case["id"].as_str().unwrap_or_default().to_string();
        let request = load_json(data_path(case["request"].as_str().unwrap_or_default())).unwrap();
        let session = session(&case);
        let out = instance.validate(&request, &case["settings"], session.as_ref());
        let mut check = |ok: bool, what: String| {
            if !ok {
                failures.push(format!("{id}: {what}"));
            }
        };
        check(
            out.guest_error.is_none(),
            format!("guest error {:?}", out.guest_error),
        );
        check(
            out.allowed() == case["allowed"].as_bool().unwrap_or(true),
            format!("allowed = {}", out.allowed()),
        );
        check(
            out.host_calls as u64 == case["host_calls"].as_u64().unwrap_or(0),
            format!(
                "{} host calls, expected {}",
                out.host_calls, case["host_calls"]
            ),
        );
        if let Some(w) = case["warning"].as_str() {
            check(
                out.warnings().iter().any(|x| x.contains(w)),
                format!("no warning containing {w:?} in {:?}", out.warnings()),
            );
        } else {
            check(
                out.warnings().is_empty(),
                format!("unexpected warnings {:?}", out.warnings()),
            );
        }
        if let Some(absent) = case["not_in_warnings"].as_str() {
            check(
                out.warnings()
                    .iter()
                    .all(|w| !w.to_lowercase().contains(absent) && !w.contains('\n')),
                format!(
                    "{absent:?} or a line break in warnings {:?}",
                    out.warnings()
                ),
            );
        }
        check_log(&case, &out, &mut check);
        if let Some(m) = case["message"].as_str() {
            check(
                out.message().is_some_and(|x| x.contains(m)),
                format!("message {:?} lacks {m:?}", out.message()),
            );
        }

        // The exact patch.
        let got = serde_json::to_value(&out.patch).unwrap();
        let path = expected_path(&id);
        if update {
            if out.patch.0.is_empty() {
                let _ = std::fs::remove_file(&path);
            } else {
                std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
            }
        }
        let want = if path.exists() {
            load_json(&path).unwrap()
        } else {
            json!([])
        };
        check(got == want, format!("patch\n got: {got}\nwant: {want}"));

        // No op removes anything but the KVM device the mshv device replaces.
        for op in out.patch.0.iter() {
            let v = serde_json::to_value(op).unwrap();
            if v["op"] == "remove" {
                let p = v["path"].as_str().unwrap_or_default();
                check(
                    p.ends_with("/devices.kubevirt.io~1kvm"),
                    format!("removes {p}"),
                );
            }
        }

        // The decision record.
        let patched = out.patched_object().unwrap();
        let hv = case["hypervisor"].as_str();
        check(
            annotation(&patched, "hyperv-layered.io/hypervisor") == hv,
            format!(
                "hypervisor annotation {:?}",
                annotation(&patched, "hyperv-layered.io/hypervisor")
            ),
        );
        check(
            patched["metadata"]["labels"]["hyperv-layered.io/hypervisor"].as_str() == hv,
            "hypervisor label".to_string(),
        );
        check(
            annotation(&patched, "hyperv-layered.io/reason") == case["reason"].as_str(),
            format!(
                "reason {:?}",
                annotation(&patched, "hyperv-layered.io/reason")
            ),
        );

        // Idempotence: the policy on its own output, with the same cluster state.
        if out.allowed() && !out.patch.0.is_empty() {
            let mut again = request.clone();
            again["object"] = patched;
            let second = instance.validate(&again, &case["settings"], session.as_ref());
            check(
                second.patch.0.is_empty(),
                format!(
                    "second run patched: {}",
                    serde_json::to_value(&second.patch).unwrap()
                ),
            );
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// One decision record per launcher decision, at the case's level, with the fields an
/// operator filters on; none for Pods the policy leaves alone.
fn check_log(case: &Value, out: &harness::Outcome, check: &mut impl FnMut(bool, String)) {
    let Some(level) = case["log_level"].as_str() else {
        check(
            out.logs.is_empty(),
            format!("unexpected log {:?}", out.logs),
        );
        return;
    };
    let [record] = out.logs.as_slice() else {
        check(
            false,
            format!("expected one log record, got {:?}", out.logs),
        );
        return;
    };
    let field = |k: &str| record[k].as_str().unwrap_or_default();
    let want_level = if level == "warning" {
        "warning"
    } else {
        "info"
    };
    check(
        field("level") == want_level,
        format!("log level in {record}"),
    );
    check(
        field("message") == "launcher decision",
        format!("log message in {record}"),
    );
    check(
        field("namespace") == "default" && field("vmi") == "testvm",
        format!("log namespace/vmi in {record}"),
    );
    check(
        record["host_calls"].as_u64() == case["host_calls"].as_u64(),
        format!("log host_calls in {record}"),
    );
    check(
        (field("hint").is_empty()) == (level == "info"),
        format!("log hint in {record}"),
    );
    check(
        !["gate", "capable_node_found", "outcome"]
            .iter()
            .any(|k| field(k).is_empty()),
        format!("log fields in {record}"),
    );
    if case["allowed"] == true {
        check(
            Some(field("reason")) == case["reason"].as_str()
                && Some(field("hypervisor")) == case["hypervisor"].as_str(),
            format!("log decision in {record}"),
        );
    } else {
        check(
            field("outcome") == "rejected",
            format!("log outcome in {record}"),
        );
    }
}

/// Every expected patch file belongs to a case (a stale golden would otherwise rot unseen).
#[test]
fn no_orphan_expected_patches() {
    let ids: Vec<String> = cases()
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_string))
        .collect();
    for entry in std::fs::read_dir(data_path("expected")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        let id = name.trim_end_matches(".json");
        assert!(
            ids.iter().any(|i| i == id),
            "orphan tests/data/expected/{name}"
        );
    }
}

#[test]
fn settings_validation_names_the_field() {
    let instance = policy().instance().unwrap();
    let ok = instance.validate_settings(&json!({}));
    assert_eq!(ok["valid"], true, "{ok}");
    for (settings, field) in [
        (json!({"gate": {"mode": "sometimes"}}), "gate.mode"),
        (json!({"nodeLabel": "not a label"}), "nodeLabel"),
        (
            json!({"memoryOverhead": {"mshv": {"perVcpu": "lots"}}}),
            "memoryOverhead.mshv.perVcpu",
        ),
        (json!({"surprise": true}), "surprise"),
        (json!([1]), "(root)"),
    ] {
        let r = instance.validate_settings(&settings);
        assert_eq!(r["valid"], false, "{settings} -> {r}");
        let msg = r["message"].as_str().unwrap_or_default();
        assert!(msg.contains(field), "{settings} -> {msg}");
    }
    assert_eq!(instance.protocol_version().unwrap(), json!("v1"));
}
