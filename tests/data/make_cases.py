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
# The fixtures are copies of stock launchers, so their image names are the stock ones; listing
# that repository here stands for an image built with an mshv-capable libvirt/QEMU. Cases that
# check the image rule list another repository instead.
IMAGES = {"launcherImages": ["quay.io/kubevirt/virt-launcher"]}
OTHER_IMAGES = {"launcherImages": ["registry.example/kubevirt-mshv/virt-launcher"]}
PER_POD_ANY = {"gate": {"mode": "enabled"}, "perPodHypervisor": True, **IMAGES}
MIXED = {"gate": {"mode": "enabled"}, "mixedMode": True, **IMAGES}
MEMORY = {"memoryOverhead": {"mshv": {"fixed": "64Mi", "perVcpu": "2Mi", "guestMemoryPercent": "1.5"}}}


# Reasons whose decision log record is a warning with a remediation hint (src/decision_log.rs):
# the VM is not where the operator wanted it, for a cause they can act on.
WARN_REASONS = {"no-capable-node", "lookup-error", "launcher-image", "launcher-pins-kvm",
                "migration-source-unknown", "launcher-layout-unknown", "migration-source-mshv",
                "memory-unsized"}


def log_level(allowed, reason):
    """The level of the one decision log record a case must produce (None: no record)."""
    if not allowed:
        return "warning"
    if reason is None:
        return None
    return "warning" if reason in WARN_REASONS else "info"


def case(id, request, settings=None, session=None, allowed=True, hypervisor=None, reason=None,
         warning=None, message=None, host_calls=0, doc="", not_in_warnings=None):
    return {"id": id, "doc": doc, "request": request, "settings": settings or {}, "session": session,
            "allowed": allowed, "hypervisor": hypervisor, "reason": reason, "warning": warning,
            "message": message, "host_calls": host_calls, "not_in_warnings": not_in_warnings,
            "log_level": log_level(allowed, reason)}


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
    case("v15-per-pod-selected", "launcher-v1.5.json", IMAGES, "kv-per-pod.yml",
         hypervisor="mshv", reason="selected", host_calls=3,
         doc="fork gate on, v1.5 launcher (no --hypervisor), capable nodes: mshv"),
    case("v18-launcher-pins-kvm", "launcher-v1.8-kvm.json", {}, "kv-per-pod-only.yml",
         hypervisor="kvm", reason="launcher-pins-kvm", host_calls=1,
         doc="fork gate on, v1.8 launcher with --hypervisor, perPodHypervisor false: stays kvm"),
    case("v18-per-pod-selected", "launcher-v1.8-kvm.json", {"perPodHypervisor": True, **IMAGES}, "kv-per-pod.yml",
         hypervisor="mshv", reason="selected", host_calls=3,
         doc="fork gate on, v1.8 launcher, perPodHypervisor true: mshv and --hypervisor hyperv-direct"),
    case("v15-no-capable-node", "launcher-v1.5.json", IMAGES, "kv-per-pod-no-node.yml",
         hypervisor="kvm", reason="no-capable-node", host_calls=3,
         doc="no Ready, allocatable, labelled node: stays kvm"),
    # Cluster-wide mshv (upstream v1.8+ hyperv-direct).
    case("cluster-mshv", "launcher-v1.8-hyperv-direct.json", IMAGES, "kv-cluster-mshv.yml",
         hypervisor="mshv", reason="cluster-mshv", host_calls=2,
         doc="upstream hyperv-direct: only the node affinity and the record"),
    case("cluster-mshv-no-node", "launcher-v1.8-hyperv-direct.json", IMAGES, "kv-cluster-mshv-no-node.yml",
         hypervisor="mshv", reason="no-capable-node", warning="stays Pending", host_calls=2,
         doc="upstream hyperv-direct, no verified node: affinity, record and a warning"),
    case("cluster-mshv-launcher-image", "launcher-v1.8-hyperv-direct.json", OTHER_IMAGES,
         "kv-cluster-mshv.yml", hypervisor="mshv", reason="launcher-image",
         warning="unlikely to start", host_calls=2,
         doc="upstream hyperv-direct with an unlisted launcher image: steered, recorded, warned"),
    # launcherImages: only listed images are switched.
    case("per-pod-launcher-image", "launcher-v1.5.json", {}, "kv-per-pod-only.yml",
         hypervisor="kvm", reason="launcher-image", warning="not in launcherImages", host_calls=1,
         doc="fork gate on, no launcher image listed: stays kvm without a node lookup"),
    # Mixed mode: released KubeVirt configured for KVM, mshv-node-agent serving /dev/mshv.
    case("mixed-selected", "launcher-v1.8-kvm.json", MIXED, "nodes-mixed.yml",
         hypervisor="mshv", reason="selected", host_calls=2,
         doc="mixed mode: kvm device kept, mshv device added, --hypervisor hyperv-direct"),
    case("mixed-no-kvm-node", "launcher-v1.8-kvm.json", MIXED, "vmi-nodes-capable.yml",
         hypervisor="kvm", reason="no-capable-node", host_calls=2,
         doc="mixed mode: mshv nodes that do not advertise the kvm device do not count"),
    # Requiring a guest that really ran (issue 17): nodeLabel is mshv-node-agent's guest-verified label.
    case("guest-verified-required-absent", "launcher-v1.8-kvm.json",
         {**PER_POD_ANY, "nodeLabel": "mshv.node.hyperv-layered.io/guest-verified"},
         "vmi-no-guest-verified-node.yml", hypervisor="kvm", reason="no-capable-node", host_calls=2,
         doc="nodeLabel requires guest-verified and no node has it: stays kvm"),
    case("guest-verified-required-present", "launcher-v1.8-kvm.json",
         {**PER_POD_ANY, "nodeLabel": "mshv.node.hyperv-layered.io/guest-verified"},
         "vmi-guest-verified-nodes.yml", hypervisor="mshv", reason="selected", host_calls=2,
         doc="nodeLabel requires guest-verified and a node has it: mshv, affinity on that label"),
    case("mixed-launcher-image", "launcher-v1.8-kvm.json", {**MIXED, **OTHER_IMAGES},
         hypervisor="kvm", reason="launcher-image", warning="not in launcherImages",
         doc="mixed mode, launcher image not listed: stays kvm without a lookup"),
    case("mixed-realtime", "launcher-realtime.json", MIXED, hypervisor="kvm",
         reason="workload-unsupported",
         doc="mixed mode: a realtime VM stays kvm (KubeVirt's KVM runtime would mishandle it)"),
    case("mixed-dedicated-isolated", "launcher-dedicated.json", MIXED, "mixed-dedicated-isolated.yml",
         hypervisor="kvm", reason="workload-unsupported", host_calls=1,
         doc="mixed mode: dedicated CPUs with isolateEmulatorThread (read from the VMI) stay kvm"),
    case("mixed-dedicated", "launcher-dedicated.json", MIXED, "mixed-dedicated.yml",
         hypervisor="mshv", reason="selected", host_calls=2,
         doc="mixed mode: dedicated CPUs without an isolated emulator thread go to mshv"),
    case("mixed-migration-source-mshv", "launcher-migration-target.json", MIXED,
         "mixed-migration-source-mshv.yml", hypervisor="mshv", reason="migration-source-mshv",
         warning="no dirty-page logging", host_calls=2,
         doc="mixed mode: a migration target gets its mshv source's edits, with a warning that it will fail"),
    # Lookup failures.
    case("kubevirt-lookup-error", "launcher-v1.8-kvm.json", {}, "kv-error.yml",
         hypervisor="kvm", reason="lookup-error", warning="forbidden", host_calls=1,
         doc="KubeVirt CR unreadable, fallback: kvm as rendered with a warning"),
    case("kubevirt-lookup-reject", "launcher-v1.8-kvm.json", {"onLookupError": "reject"}, "kv-error.yml",
         allowed=False, message="forbidden", host_calls=1,
         doc="KubeVirt CR unreadable, reject: refused with the cause"),
    case("lookup-error-backtrace", "launcher-v1.8-kvm.json", {}, "kv-error-backtrace.yml",
         hypervisor="kvm", reason="lookup-error", warning="cannot list resource", host_calls=1,
         not_in_warnings="backtrace",
         doc="a host error with a stack trace: only its first line reaches the warning"),
    case("node-lookup-error", "launcher-v1.5.json", {**ENABLED, **IMAGES}, "nodes-error.yml",
         hypervisor="kvm", reason="lookup-error", warning="forbidden", host_calls=2,
         doc="node list unreadable, fallback: kvm as rendered with a warning"),
    # Launcher shapes.
    case("hook-sidecars", "launcher-hook-sidecars.json", PER_POD_ANY, "vmi-nodes-capable.yml",
         hypervisor="mshv", reason="selected", host_calls=2,
         doc="hook sidecars are left alone; only compute changes"),
    case("two-term-affinity", "launcher-two-term-affinity.json", PER_POD_ANY, "vmi-nodes-capable.yml",
         hypervisor="mshv", reason="selected", host_calls=2,
         doc="the node requirement is ANDed into both nodeSelectorTerms"),
    case("opt-out", "launcher-opt-out.json", PER_POD_ANY, hypervisor="kvm", reason="opt-out",
         doc="the VMI's opt-out annotation keeps kvm without a lookup"),
    case("sev", "launcher-sev.json", PER_POD_ANY, hypervisor="kvm", reason="incompatible-device",
         doc="a SEV launcher stays kvm without a lookup"),
    # Migration targets.
    case("migration-source-mshv", "launcher-migration-target.json", PER_POD_ANY, "migration-source-mshv.yml",
         hypervisor="mshv", reason="migration-source-mshv", warning="this migration will fail", host_calls=2,
         doc="a migration target follows its mshv source, with a warning that the migration will fail"),
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
    case("kubevirt-memory", "launcher-v1.8-kvm.json", {"perPodHypervisor": True, **IMAGES, **MEMORY},
         "kv-per-pod-memory.yml", hypervisor="mshv", reason="selected", host_calls=3,
         doc="kubevirt gate mode with memory terms: the KubeVirt CR is read once for both"),
    case("memory-hugepages", "launcher-hugepages.json", {**PER_POD_ANY, **MEMORY}, "memory-hugepages.yml",
         hypervisor="mshv", reason="selected", host_calls=3,
         doc="hugepages: the delta goes to the memory request that holds the overhead"),
    case("memory-vmi-error", "launcher-v1.8-kvm.json", {**PER_POD_ANY, **MEMORY}, "memory-vmi-error.yml",
         hypervisor="kvm", reason="lookup-error", warning="not found", host_calls=1,
         doc="VMI unreadable with memory terms set: falls back to kvm (at the live-migration rule's read)"),
    case("memory-ratio", "launcher-v1.8-kvm.json", {**PER_POD_ANY, **MEMORY}, "memory-ratio.yml",
         hypervisor="mshv", reason="selected", host_calls=3,
         doc="additionalGuestMemoryOverheadRatio 1.5 scales the delta as KubeVirt scales its overhead"),
    case("memory-no-kubevirt-report", "launcher-v1.8-kvm-no-overhead-report.json", {**PER_POD_ANY, **MEMORY},
         "memory.yml", hypervisor="mshv", reason="selected", host_calls=3,
         doc="a launcher without KubeVirt's report (v1.8 defaults): the delta, recorded in the policy's annotation"),
    case("memory-ratio-not-float", "launcher-v1.8-kvm.json", {**PER_POD_ANY, **MEMORY},
         "memory-ratio-not-float.yml", hypervisor="kvm", reason="memory-unsized", host_calls=3,
         warning="additionalGuestMemoryOverheadRatio",
         doc="a ratio that is not a plain decimal number: left as rendered, memory-unsized"),
    case("memory-ratio-nan", "launcher-v1.8-kvm.json", {**PER_POD_ANY, **MEMORY},
         "memory-ratio-nan.yml", hypervisor="kvm", reason="memory-unsized", host_calls=3,
         warning="additionalGuestMemoryOverheadRatio",
         doc="a NaN ratio (Go's result platform-dependent): left as rendered, memory-unsized"),
    case("memory-unsized-never-rejects", "launcher-v1.8-kvm.json",
         {**PER_POD_ANY, **MEMORY, "onLookupError": "reject"}, "memory-ratio-not-float.yml",
         hypervisor="kvm", reason="memory-unsized", host_calls=3, warning="additionalGuestMemoryOverheadRatio",
         doc="memory-unsized is no lookup error: admitted as rendered even with onLookupError: reject"),
    case("memory-kubevirt-cr-error", "launcher-v1.8-kvm.json", {**PER_POD_ANY, **MEMORY},
         "memory-kv-error.yml", hypervisor="kvm", reason="lookup-error", host_calls=3, warning="forbidden",
         doc="KubeVirt CR unreadable (its ratio sizes the delta): a lookup error, falls back to kvm"),
    case("mixed-memory-dedicated", "launcher-dedicated.json", {**MIXED, **MEMORY},
         "mixed-memory-dedicated.yml", hypervisor="mshv", reason="selected", host_calls=3,
         doc="mixed mode, dedicated CPUs and memory terms: the VMI is read once for both rules"),
    # KubeVirt main's launcher layout (PR #18237: command is only the monitor, every flag in
    # args; fixture from kubevirt/kubevirt@d923fdb8 template.go:460-474).
    case("main-launcher-pins-kvm", "launcher-main-kvm.json", {**ENABLED, **IMAGES},
         hypervisor="kvm", reason="launcher-pins-kvm",
         doc="KubeVirt main layout, --hypervisor kvm in args: pins kvm (was taken for a fork launcher)"),
    case("main-per-pod-selected", "launcher-main-kvm.json", PER_POD_ANY, "vmi-nodes-capable.yml",
         hypervisor="mshv", reason="selected", host_calls=2,
         doc="KubeVirt main layout, perPodHypervisor: --hypervisor hyperv-direct rewritten in args"),
    case("main-mixed-selected", "launcher-main-kvm.json", MIXED, "nodes-mixed.yml",
         hypervisor="mshv", reason="selected", host_calls=2,
         doc="KubeVirt main layout, mixed mode: mshv device added, --hypervisor rewritten in args"),
    case("main-mixed-migration-source-mshv", "launcher-main-migration-target.json", MIXED,
         "mixed-migration-source-mshv.yml", hypervisor="mshv", reason="migration-source-mshv",
         warning="no dirty-page logging", host_calls=2,
         doc="KubeVirt main layout, migration target of an mshv source: follows it, warned"),
    case("main-memory", "launcher-main-kvm.json", {**PER_POD_ANY, **MEMORY}, "memory.yml",
         hypervisor="mshv", reason="selected", host_calls=3,
         doc="KubeVirt main layout with its own memory-overhead-bytes (QemuOverhead 50Mi) and mshv memory terms"),
    case("main-mixed-memory", "launcher-main-kvm.json", {**MIXED, **MEMORY}, "mixed-memory.yml",
         hypervisor="mshv", reason="selected", host_calls=3,
         doc="KubeVirt main layout, mixed mode and mshv memory terms"),
    # Layouts no KubeVirt renders: left exactly as rendered, recorded, warned.
    case("layout-both-lists", "launcher-layout-both-lists.json", MIXED,
         hypervisor="kvm", reason="launcher-layout-unknown", warning="occurs 2 times",
         doc="--hypervisor in command and in args: not edited, reason launcher-layout-unknown"),
    case("layout-wrapper", "launcher-layout-wrapper.json", PER_POD_ANY,
         hypervisor="kvm", reason="launcher-layout-unknown", warning="neither virt-launcher-monitor",
         doc="a compute entrypoint that is not virt-launcher-monitor/virt-launcher: not edited"),
    # Host devices: decided from the Pod before any lookup.
    case("mixed-dedicated-gpu", "launcher-dedicated-gpu.json", MIXED,
         hypervisor="kvm", reason="incompatible-device",
         doc="mixed mode, dedicated CPUs and a GPU: incompatible-device without reading the VMI"),
    # Live migration (liveMigration.keepOnKvm, default [LiveMigrate, LiveMigrateIfPossible]).
    case("live-migrate", "launcher-v1.8-kvm.json", PER_POD_ANY, "vmi-live-migrate.yml",
         hypervisor="kvm", reason="needs-live-migration", host_calls=1,
         doc="a VMI with evictionStrategy LiveMigrate stays kvm"),
    case("live-migrate-if-possible", "launcher-v1.8-kvm.json", PER_POD_ANY, "vmi-live-migrate-if-possible.yml",
         hypervisor="kvm", reason="needs-live-migration", host_calls=1,
         doc="LiveMigrateIfPossible stays kvm by default: KubeVirt deems an mshv VMI migratable, so drains would block"),
    case("live-migrate-if-possible-allowed", "launcher-v1.8-kvm.json",
         {**PER_POD_ANY, "liveMigration": {"keepOnKvm": ["LiveMigrate"]}}, "vmi-live-migrate-if-possible-nodes.yml",
         hypervisor="mshv", reason="selected", warning="evictionStrategy LiveMigrateIfPossible", host_calls=2,
         doc="keepOnKvm without LiveMigrateIfPossible: mshv, with a warning that a drain will try to migrate it"),
    case("live-migrate-cluster-default", "launcher-v1.8-kvm.json", PER_POD_ANY, "vmi-unset-kv-live-migrate.yml",
         hypervisor="kvm", reason="needs-live-migration", host_calls=2,
         doc="no strategy on the VMI: the KubeVirt CR's LiveMigrate keeps it on kvm"),
    case("live-migrate-allowed", "launcher-v1.8-kvm.json", {**PER_POD_ANY, "liveMigration": {"keepOnKvm": []}},
         "nodes-capable.yml", hypervisor="mshv", reason="selected", host_calls=1,
         doc="liveMigration.keepOnKvm empty: no VMI read, mshv"),
    case("live-migrate-vmi-error", "launcher-v1.8-kvm.json", PER_POD_ANY, "vmi-error.yml",
         hypervisor="kvm", reason="lookup-error", warning="forbidden", host_calls=1,
         doc="the VMI cannot be read for its eviction strategy: lookup-error"),
    case("live-migrate-vmi-error-reject", "launcher-v1.8-kvm.json", {**PER_POD_ANY, "onLookupError": "reject"},
         "vmi-error.yml", allowed=False, message="forbidden", host_calls=1,
         doc="the VMI cannot be read, onLookupError reject: refused"),
]

BATS_HEADER = """#!/usr/bin/env bats
# End-to-end tests with kwctl: every case of tests/data/cases.json, run against
# annotated-policy.wasm with the recorded host interactions. Generated by
# tests/data/make_cases.py (edit that, not this). `make e2e-tests` runs it.

bats_require_minimum_version 1.5.0

setup() {
  command -v kwctl >/dev/null || skip "kwctl not on PATH"
}

# run_case REQUEST SETTINGS SESSION
# Every case replays a session, so kwctl never builds a Kubernetes client (without
# --replay-host-capabilities-interactions a context-aware run needs a kubeconfig: kwctl
# crates/kwctl/src/command/run/evaluator.rs build_callback_handler). Cases that must make no
# lookup replay sessions/empty.yml (`[]`): any host call would get "the list of recorded
# responses is empty". --sigstore-trust-config on a missing file: the local module is not
# verified, so kwctl needs no Sigstore trust root and fetches nothing (it only warns).
run_case() {
  run --separate-stderr kwctl run --request-path "tests/data/$1" --settings-json "$2" \\
    --allow-context-aware --replay-host-capabilities-interactions "tests/data/sessions/$3" \\
    --sigstore-trust-config /nonexistent annotated-policy.wasm
  # kwctl logs on stderr; stdout is the AdmissionResponse JSON.
  echo "output = ${output}"
  echo "stderr = ${stderr}"
  [ "$status" -eq 0 ]
  # Exactly the recorded host calls, in order: no mismatch, no extra call, no leftover.
  [[ "$output" != *"Replay error"* ]]
  [[ "$output" != *"recorded responses is empty"* ]]
  [[ "$stderr" != *"have not been replayed"* ]]
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


# The session e2e.bats replays for a case without one (`session: None`): no host call allowed,
# as in the wasm harness (crates/test-harness/src/session.rs Replayer: no session, every call a failure).
EMPTY_SESSION = "empty.yml"


def session_exchanges(name):
    """Number of exchanges in tests/data/sessions/NAME (kwctl replays each once, in order)."""
    with open(os.path.join(HERE, "sessions", name)) as f:
        return sum(1 for line in f if line.startswith("- type: Exchange"))


def check_sessions(cases):
    """kwctl only warns about leftovers; e2e.bats fails on them, so a case's session must hold
    exactly its host_calls exchanges (0 for the empty session)."""
    for c in cases:
        n = session_exchanges(c["session"] or EMPTY_SESSION)
        if n != c["host_calls"]:
            raise SystemExit(f'{c["id"]}: session {c["session"]} has {n} exchanges, '
                             f'host_calls is {c["host_calls"]}')


def bats_case(c):
    settings = json.dumps(c["settings"], separators=(",", ":"))
    lines = [f'@test "{c["id"]}: {c["doc"]}" {{',
             f"  run_case {c['request']} '{settings}' {c['session'] or EMPTY_SESSION}"]
    lines.append(f'  [ $(echo "$output" | jq -r .allowed) = "{str(c["allowed"]).lower()}" ]')
    if c["message"]:
        lines.append(f'  [[ $(echo "$output" | jq -r .status.message) == *"{c["message"]}"* ]]')
    if c["warning"]:
        lines.append(f'  [[ $(echo "$output" | jq -r ".warnings[]") == *"{c["warning"]}"* ]]')
    else:
        lines.append('  [ "$(echo "$output" | jq -c \'.warnings // []\')" = "[]" ]')
    lines.append(f"  check_patch {c['id']}")
    lines.append("}")
    return "\n".join(lines)


def main():
    check_sessions(CASES)
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
