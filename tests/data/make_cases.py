#!/usr/bin/env python3
"""Writes tests/data/cases.json and ../../e2e.bats from one table (stdlib only).

Each case: an admission request fixture, settings, a replay session, and what must come out.
`tests/policy_wasm.rs` runs every case through the built .wasm in the waPC harness and compares
the JSON Patch with tests/data/expected/<id>.json; `e2e.bats` runs the same cases through
`kwctl run` against `annotated-policy.wasm` and compares the same patch files.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

ENABLED = {"gate": {"mode": "enabled"}}
PER_POD_ANY = {"gate": {"mode": "enabled"}, "perPodHypervisor": True}
MEMORY = {"memoryOverhead": {"mshv": {"fixed": "64Mi", "perVcpu": "2Mi", "guestMemoryPercent": "1.5"}}}


def case(id, request, settings=None, session=None, allowed=True, hypervisor=None, reason=None,
         warning=None, message=None, host_calls=0, doc=""):
    return {"id": id, "doc": doc, "request": request, "settings": settings or {}, "session": session,
            "allowed": allowed, "hypervisor": hypervisor, "reason": reason, "warning": warning,
            "message": message, "host_calls": host_calls}


CASES = [
    # Not launchers, or not ours to touch: accepted unchanged without any host call.
    case("plain-pod", "plain-pod.json", ENABLED, doc="a plain Pod is accepted unchanged"),
    case("hotplug-pod", "hotplug-pod.json", ENABLED, doc="a hotplug Pod is accepted unchanged"),
    case("exporter-pod", "exporter-pod.json", ENABLED, doc="an export Pod is accepted unchanged"),
    case("spoofed-launcher", "launcher-spoofed.json", PER_POD_ANY,
         doc="a launcher lookalike from an ordinary user gets nothing"),
    case("update", "launcher-update.json", PER_POD_ANY, doc="UPDATE is accepted unchanged"),
    # The gate.
    case("gate-disabled", "launcher-v1.8-kvm.json", {"gate": {"mode": "disabled"}},
         doc="gate.mode disabled: no patch, no lookup"),
    case("gate-off-kubevirt", "launcher-v1.8-kvm.json", {}, "kv-off.yml", host_calls=1,
         doc="KubeVirt CR without the gates: no patch at all"),
    # Per-pod mode through the KubeVirt CR.
    case("v15-per-pod-selected", "launcher-v1.5.json", {}, "kv-per-pod.yml",
         hypervisor="mshv", reason="selected", host_calls=2,
         doc="fork gate on, v1.5 launcher (no --hypervisor), capable nodes: mshv"),
    case("v18-launcher-pins-kvm", "launcher-v1.8-kvm.json", {}, "kv-per-pod-only.yml",
         hypervisor="kvm", reason="launcher-pins-kvm", host_calls=1,
         doc="fork gate on, v1.8 launcher with --hypervisor, perPodHypervisor false: stays kvm"),
    case("v18-per-pod-selected", "launcher-v1.8-kvm.json", {"perPodHypervisor": True}, "kv-per-pod.yml",
         hypervisor="mshv", reason="selected", host_calls=2,
         doc="fork gate on, v1.8 launcher, perPodHypervisor true: mshv and --hypervisor hyperv-direct"),
    case("v15-no-capable-node", "launcher-v1.5.json", {}, "kv-per-pod-no-node.yml",
         hypervisor="kvm", reason="no-capable-node", host_calls=2,
         doc="no Ready, allocatable, labelled node: stays kvm"),
    # Cluster-wide mshv (upstream v1.8+ hyperv-direct).
    case("cluster-mshv", "launcher-v1.8-hyperv-direct.json", {}, "kv-cluster-mshv.yml",
         hypervisor="mshv", reason="cluster-mshv", host_calls=2,
         doc="upstream hyperv-direct: only the node affinity and the record"),
    case("cluster-mshv-no-node", "launcher-v1.8-hyperv-direct.json", {}, "kv-cluster-mshv-no-node.yml",
         hypervisor="mshv", reason="no-capable-node", warning="stays Pending", host_calls=2,
         doc="upstream hyperv-direct, no verified node: affinity, record and a warning"),
    # Lookup failures.
    case("kubevirt-lookup-error", "launcher-v1.8-kvm.json", {}, "kv-error.yml",
         hypervisor="kvm", reason="lookup-error", warning="forbidden", host_calls=1,
         doc="KubeVirt CR unreadable, fallback: kvm as rendered with a warning"),
    case("kubevirt-lookup-reject", "launcher-v1.8-kvm.json", {"onLookupError": "reject"}, "kv-error.yml",
         allowed=False, message="forbidden", host_calls=1,
         doc="KubeVirt CR unreadable, reject: refused with the cause"),
    case("node-lookup-error", "launcher-v1.5.json", ENABLED, "nodes-error.yml",
         hypervisor="kvm", reason="lookup-error", warning="forbidden", host_calls=1,
         doc="node list unreadable, fallback: kvm as rendered with a warning"),
    # Launcher shapes.
    case("hook-sidecars", "launcher-hook-sidecars.json", PER_POD_ANY, "nodes-capable.yml",
         hypervisor="mshv", reason="selected", host_calls=1,
         doc="hook sidecars are left alone; only compute changes"),
    case("two-term-affinity", "launcher-two-term-affinity.json", PER_POD_ANY, "nodes-capable.yml",
         hypervisor="mshv", reason="selected", host_calls=1,
         doc="the node requirement is ANDed into both nodeSelectorTerms"),
    case("opt-out", "launcher-opt-out.json", PER_POD_ANY, hypervisor="kvm", reason="opt-out",
         doc="the VMI's opt-out annotation keeps kvm without a lookup"),
    case("sev", "launcher-sev.json", PER_POD_ANY, hypervisor="kvm", reason="incompatible-device",
         doc="a SEV launcher stays kvm without a lookup"),
    # Migration targets.
    case("migration-source-mshv", "launcher-migration-target.json", PER_POD_ANY, "migration-source-mshv.yml",
         hypervisor="mshv", reason="migration-source-mshv", host_calls=2,
         doc="a migration target follows its mshv source"),
    case("migration-source-kvm", "launcher-migration-target.json", PER_POD_ANY, "migration-source-kvm.yml",
         hypervisor="kvm", reason="migration-source-kvm", host_calls=1,
         doc="a migration target follows its kvm source"),
    case("migration-source-missing", "launcher-migration-target.json", PER_POD_ANY,
         "migration-source-missing.yml", hypervisor="kvm", reason="migration-source-unknown",
         warning="not found", host_calls=1,
         doc="a migration target without a running source is left as rendered, with a warning"),
    # Memory.
    case("memory", "launcher-v1.8-kvm.json", {**PER_POD_ANY, **MEMORY}, "memory.yml",
         hypervisor="mshv", reason="selected", host_calls=3,
         doc="mshv memory terms: request, limit and overhead annotations grow by the delta"),
    case("kubevirt-memory", "launcher-v1.8-kvm.json", {"perPodHypervisor": True, **MEMORY},
         "kv-per-pod-memory.yml", hypervisor="mshv", reason="selected", host_calls=3,
         doc="kubevirt gate mode with memory terms: the KubeVirt CR is read once for both"),
    case("memory-hugepages", "launcher-hugepages.json", {**PER_POD_ANY, **MEMORY}, "memory-hugepages.yml",
         hypervisor="mshv", reason="selected", host_calls=3,
         doc="hugepages: the delta goes to the memory request that holds the overhead"),
    case("memory-vmi-error", "launcher-v1.8-kvm.json", {**PER_POD_ANY, **MEMORY}, "memory-vmi-error.yml",
         hypervisor="kvm", reason="lookup-error", warning="not found", host_calls=3,
         doc="VMI unreadable with memory terms set: falls back to kvm"),
]

BATS_HEADER = """#!/usr/bin/env bats
# End-to-end tests with kwctl: every case of tests/data/cases.json, run against
# annotated-policy.wasm with the recorded host interactions. Generated by
# tests/data/make_cases.py (edit that, not this). `make e2e-tests` runs it.

bats_require_minimum_version 1.5.0

setup() {
  command -v kwctl >/dev/null || skip "kwctl not on PATH"
}

# run_case REQUEST SETTINGS [SESSION]
run_case() {
  local args=(run --request-path "tests/data/$1" --settings-json "$2" --allow-context-aware)
  if [ -n "${3:-}" ]; then
    args+=(--replay-host-capabilities-interactions "tests/data/sessions/$3")
  fi
  # kwctl logs on stderr; stdout is the AdmissionResponse JSON.
  run --separate-stderr kwctl "${args[@]}" annotated-policy.wasm
  echo "output = ${output}"
  echo "stderr = ${stderr}"
  [ "$status" -eq 0 ]
}

# The JSON Patch kwctl printed, decoded and normalised, against tests/data/expected/ID.json
# (no file: no patch at all).
check_patch() {
  local got
  got=$(echo "$output" | jq -r '.patch // empty' | { base64 -d 2>/dev/null || true; } | jq -S -c '.' 2>/dev/null || true)
  if [ -f "tests/data/expected/$1.json" ]; then
    [ "$got" = "$(jq -S -c '.' "tests/data/expected/$1.json")" ]
  else
    [ -z "$got" ]
  fi
}
"""


def bats_case(c):
    settings = json.dumps(c["settings"], separators=(",", ":"))
    lines = [f'@test "{c["id"]}: {c["doc"]}" {{',
             f"  run_case {c['request']} '{settings}' {c['session'] or ''}".rstrip()]
    lines.append(f'  [ $(echo "$output" | jq -r .allowed) = "{str(c["allowed"]).lower()}" ]')
    if c["message"]:
        lines.append(f'  [[ $(echo "$output" | jq -r .status.message) == *"{c["message"]}"* ]]')
    if c["warning"]:
        lines.append(f'  [[ $(echo "$output" | jq -r ".warnings[]") == *"{c["warning"]}"* ]]')
    lines.append(f"  check_patch {c['id']}")
    lines.append("}")
    return "\n".join(lines)


def main():
    with open(os.path.join(HERE, "cases.json"), "w") as f:
        json.dump(CASES, f, indent=2)
        f.write("\n")
    with open(os.path.join(ROOT, "e2e.bats"), "w") as f:
        f.write(BATS_HEADER)
        for c in CASES:
            f.write("\n" + bats_case(c) + "\n")
    print(f"wrote {len(CASES)} cases")


if __name__ == "__main__":
    main()
