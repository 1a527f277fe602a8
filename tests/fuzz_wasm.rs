//! The fuzzers' generator (tests/fuzzgen) driven through the real release `.wasm` in the waPC
//! harness: mangled launchers, random settings and random host replies (errors, garbage, empty
//! and huge lists). Property: the guest never traps or errors, always answers a well-formed
//! response, and its patch removes nothing but the KVM device request.
//!
//! Cases: `WASM_FUZZ_CASES` (default 200; `make fuzz` runs 3000).

mod fuzzgen;

use fuzzgen::*;
use harness::{Exchange, Policy, Response, Session, data_path};
use proptest::prelude::*;

/// The requests the policy can make for the fixtures (read from the e2e sessions, so they are
/// the exact fixed requests), each answered with a random reply.
fn sessions_requests() -> Vec<harness::CallbackRequest> {
    let mut out = Vec::new();
    for f in ["kv-per-pod-memory.yml", "migration-source-kvm.yml"] {
        let s = Session::load(data_path(format!("sessions/{f}"))).unwrap();
        out.extend(s.exchanges.iter().map(|e| e.request.clone()));
    }
    out
}

fn to_response(reply: Result<Vec<u8>, String>) -> Response {
    match reply {
        Ok(bytes) => Response::Success {
            payload: String::from_utf8_lossy(&bytes).into_owned(),
        },
        Err(message) => Response::Error { message },
    }
}

#[test]
fn generated_cases_never_trap_the_wasm_guest() {
    let cases: u32 = std::env::var("WASM_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200);
    let policy = Policy::release().unwrap_or_else(|e| panic!("{e:#}"));
    let instance = policy.instance().unwrap();
    let requests = sessions_requests();
    let n = requests.len();
    // How the cases ended, to show the generator reaches the decision and mutation paths.
    let refused = std::cell::Cell::new(0u32);
    let (mutated, rejected, host_calls) = (
        std::cell::Cell::new(0u32),
        std::cell::Cell::new(0u32),
        std::cell::Cell::new(0usize),
    );
    let mut r = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..Default::default()
    });
    let strategy = (
        arb_request(),
        arb_settings(),
        prop::collection::vec(arb_reply(), n..=n),
    );
    r.run(&strategy, |(request, settings, replies)| {
        let exchanges = requests
            .iter()
            .cloned()
            .zip(replies)
            .map(|(request, reply)| Exchange {
                request,
                response: to_response(reply),
            })
            .collect();
        let session = Session::new("fuzz", exchanges).in_any_order();
        let out = match instance.try_validate(&request, &settings, Some(&session)) {
            Ok(out) => out,
            // A request the host itself would refuse before calling the guest (kwctl's checks).
            Err(e) => {
                refused.set(refused.get() + 1);
                if refused.get() == 1 {
                    println!("first request the host refuses: {e:#}");
                }
                return Ok(());
            }
        };
        prop_assert!(
            out.guest_error.is_none(),
            "guest error: {:?}",
            out.guest_error
        );
        let accepted = out
            .response
            .get("accepted")
            .and_then(serde_json::Value::as_bool);
        prop_assert!(accepted.is_some(), "malformed response: {}", out.response);
        host_calls.set(host_calls.get() + out.host_calls);
        if accepted == Some(false) {
            rejected.set(rejected.get() + 1);
        }
        if !out.patch.0.is_empty() {
            mutated.set(mutated.get() + 1);
            // The patch must apply to the object the guest was given (well-formed ops).
            let mut object = out.request["object"].clone();
            prop_assert!(
                json_patch::patch(&mut object, &out.patch).is_ok(),
                "patch does not apply: {:?}",
                out.patch
            );
        }
        for op in serde_json::to_value(&out.patch)
            .unwrap()
            .as_array()
            .into_iter()
            .flatten()
        {
            if op["op"] == "remove" {
                let p = op["path"].as_str().unwrap_or_default();
                prop_assert!(p.ends_with("/devices.kubevirt.io~1kvm"), "removed {p}");
            }
        }
        Ok(())
    })
    .unwrap();
    println!(
        "fuzz wasm: {cases} cases passed ({} refused by the host's request checks, {} mutated, \
         {} rejected, {} host calls)",
        refused.get(),
        mutated.get(),
        rejected.get(),
        host_calls.get()
    );
}
