#!/usr/bin/env python3
"""Admission latency of hyperv-layered through the real policy-server, next to the floor policy
in the same run (Python 3.11 stdlib only). `make bench-policy-server` runs it:

    python3 bench/policy-server/bench.py --policy-server PATH --policy annotated-policy.wasm \
        --floor annotated-floor.wasm [--policy-whole-pod annotated-policy-whole-pod.wasm] \
        [--requests 2000] [--concurrency 2]

One policy-server on 127.0.0.1 (plain HTTP, random free ports) serves three policies: `hl`
(hyperv-layered with the scenario's settings), `floor` (bench/floor-policy: parse the request,
accept) and `floor-calls` (the floor making the very host calls hyperv-layered makes in the
scenario, answers dropped); with --policy-whole-pod also `hl-whole` (hyperv-layered built with
the `whole-pod` feature: the Pod parsed into one `serde_json::Value` instead of the overlay of
src/pod_doc.rs, same settings), to measure what the overlay saves end to end. The loopback fake API server (tests/policy_server/fakeapi.py) holds
the cluster state of the scenario's replay session; lookups are served from policy-server's
watch caches, so the API server is not on the measured path after the warm-up.

Scenarios are cases of tests/data/cases.json (settings, request, session), so the bench follows
the case table:
- launcher -> mshv:        v18-per-pod-selected (KubeVirt CR + Node list)
- launcher stays on KVM:   v18-launcher-pins-kvm (KubeVirt CR)
- non-launcher Pod:        plain-pod (no lookup)
- diagnostic: the launcher of the KVM scenario with gate.mode disabled (gate-disabled: no
  lookup, no patch)

Each policy gets the same number of requests, sent in interleaved blocks (hl, floor,
floor-calls, hl, ...) over `--concurrency` keep-alive connections, so machine noise hits all
three alike. Latency is measured by the client (request sent -> full answer read): it includes
Python's HTTP client, identical for all policies. Nothing is asserted: the numbers are printed,
with the ratios to the floor; targets are launcher p99 <= 1.2x and non-launcher <= 1.05x the
floor's p99. The run is bounded (requests x 3 policies x 3 scenarios) and stops by itself.
"""
import argparse
import gc
import http.client
import json
import os
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "policy_server"))

import fakeapi  # noqa: E402
import pslib  # noqa: E402
import sessions  # noqa: E402

SCENARIOS = [
    ("launcher -> mshv", "v18-per-pod-selected"),
    ("launcher stays on KVM", "v18-launcher-pins-kvm"),
    ("non-launcher Pod", "plain-pod"),
    # Diagnostic, no target: the same launcher with the gate disabled (no lookup, no patch), to
    # tell the policy's request handling apart from its lookups and its mutation.
    ("launcher, gate disabled", "gate-disabled"),
]
OPERATION = {"KubernetesListResourceAll": "list_resources_all",
             "KubernetesListResourceNamespace": "list_resources_by_namespace",
             "KubernetesGetResource": "get_resource"}
REQUEST_FIELDS = {
    "list_resources_all": ["api_version", "kind", "label_selector", "field_selector", "field_masks"],
    "list_resources_by_namespace": ["api_version", "kind", "namespace", "label_selector",
                                    "field_selector", "field_masks"],
    "get_resource": ["api_version", "kind", "name", "namespace", "disable_cache", "field_masks"],
}


def host_calls(session):
    """The host calls a session records, as the floor's `hostCalls` setting."""
    calls = []
    for ex in sessions.parse(session) if session else []:
        req = ex["request"]
        op = OPERATION[req["tag"]]
        payload = {k: (req.get(k) if req.get(k) != [] else None) for k in REQUEST_FIELDS[op]}
        calls.append({"operation": op, "payload": json.dumps(payload)})
    return calls


def run_block(port, policy_id, body, n, concurrency):
    """n requests over `concurrency` keep-alive connections; returns (latencies, seconds, errors)."""
    lat = []
    errors = []
    lock = threading.Lock()
    counter = iter(range(n))

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        try:
            while True:
                with lock:
                    if next(counter, None) is None:
                        break
                t0 = time.perf_counter()
                conn.request("POST", f"/validate/{policy_id}", body=body,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                mine.append(time.perf_counter() - t0)
                if r.status != 200 or b'"allowed":true' not in data.replace(b" ", b""):
                    errors.append(r.status)
        except (OSError, http.client.HTTPException) as e:
            errors.append(repr(e))
        finally:
            conn.close()
            with lock:
                lat.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, time.perf_counter() - t0, errors


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy-server", required=True)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--floor", required=True)
    ap.add_argument("--policy-whole-pod", help="hyperv-layered built with --features whole-pod")
    ap.add_argument("--requests", type=int, default=2000, help="per policy and scenario")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="policy-server --workers")
    ap.add_argument("--blocks", type=int, default=10, help="interleaved blocks per policy")
    args = ap.parse_args()
    with open(os.path.join(pslib.DATA, "cases.json")) as f:
        cases = {c["id"]: c for c in json.load(f)}

    api = fakeapi.FakeApi()
    api_port = api.start()
    rows = []
    try:
        for label, case_id in SCENARIOS:
            c = cases[case_id]
            st = sessions.state(c["session"]) if c["session"] else {"lists": {}, "gets": {}}
            for (resource, ns), items in st["lists"].items():
                api.set_objects(resource, items, namespace=ns)
            for (resource, ns, name), obj in st["gets"].items():
                api.set_objects(resource, [obj], namespace=ns)
            policies = {
                "hl": pslib.policy_entry(os.path.abspath(args.policy), c["settings"], timeout_eval=5),
                "floor": pslib.policy_entry(os.path.abspath(args.floor), {}, timeout_eval=5, mutating=False),
                "floor-calls": pslib.policy_entry(os.path.abspath(args.floor),
                                                  {"hostCalls": host_calls(c["session"])},
                                                  timeout_eval=5, mutating=False),
            }
            if args.policy_whole_pod:
                policies["hl-whole"] = pslib.policy_entry(os.path.abspath(args.policy_whole_pod),
                                                          c["settings"], timeout_eval=5)
            body = pslib.review_body(pslib.load_request(c["request"]), uid=f"bench-{case_id}")
            # A fresh policy-server per scenario: same start state (caches, instances) for each.
            with pslib.PolicyServer(args.policy_server, policies, api_port, workers=args.workers,
                                    log_level="warn") as ps:
                want = pslib.expected_patch(case_id)
                for pid in [p for p in ("hl", "hl-whole") if p in policies]:
                    first = pslib.validate(ps.port, pid, body)
                    same = json.dumps(first.patch, sort_keys=True) == json.dumps(want, sort_keys=True)
                    print(f"{label}: {case_id}: {pid}: first answer {first}; "
                          f"{'patch as tests/data/expected' if same else 'PATCH DIFFERS from tests/data/expected'}",
                          flush=True)
                for pid in policies:  # warm-up: reflectors, instance pools, connections
                    run_block(ps.port, pid, body, 200, args.concurrency)
                per = args.requests // args.blocks
                res = {pid: ([], 0.0, []) for pid in policies}
                # The client's garbage collector would add its pauses to random requests.
                gc.disable()
                try:
                    for _ in range(args.blocks):
                        for pid in policies:
                            lat, secs, errs = run_block(ps.port, pid, body, per, args.concurrency)
                            old = res[pid]
                            res[pid] = (old[0] + lat, old[1] + secs, old[2] + errs)
                finally:
                    gc.enable()
                for pid, (lat, secs, errs) in res.items():
                    rows.append((label, pid, len(lat), statistics.median(lat), pct(lat, 99),
                                 len(lat) / secs if secs else 0.0, len(errs)))
    finally:
        api.stop()

    print(f"\nadmission latency through policy-server {args.requests} requests per policy and "
          f"scenario, {args.concurrency} connections, --workers {args.workers}, client-side "
          "(python http.client on loopback)")
    hdr = (f"{'scenario':24} {'policy':12} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
           f"{'p50/floor':>9} {'p99/floor':>9} {'p99/floor+calls':>15} {'errors':>6}")
    print(hdr)
    print("-" * len(hdr))
    by = {(r[0], r[1]): r for r in rows}
    for r in rows:
        floor = by[(r[0], "floor")]
        calls = by[(r[0], "floor-calls")]
        print(f"{r[0]:24} {r[1]:12} {r[2]:5d} {r[3] * 1000:8.3f} {r[4] * 1000:8.3f} {r[5]:8.0f} "
              f"{r[3] / floor[3]:9.3f} {r[4] / floor[4]:9.3f} {r[4] / calls[4]:15.3f} {r[6]:6d}")
    if args.policy_whole_pod:
        print("\nPod overlay (hl) against a whole-Value parse of the Pod (hl-whole), same run:")
        print(f"  {'scenario':24} {'hl p50':>8} {'whole p50':>9} {'p50 cut':>8} "
              f"{'hl p99':>8} {'whole p99':>9} {'p99 cut':>8}")
        for label, _ in SCENARIOS:
            hl, whole = by[(label, "hl")], by[(label, "hl-whole")]
            print(f"  {label:24} {hl[3] * 1000:8.3f} {whole[3] * 1000:9.3f} "
                  f"{(1 - hl[3] / whole[3]) * 100:7.1f}% {hl[4] * 1000:8.3f} {whole[4] * 1000:9.3f} "
                  f"{(1 - hl[4] / whole[4]) * 100:7.1f}%")
    print("\ntargets: launcher p99 <= 1.2x the floor's p99; non-launcher p99 <= 1.05x (reported, not asserted)")
    for label, _ in SCENARIOS[:3]:
        hl, floor = by[(label, "hl")], by[(label, "floor")]
        target = 1.05 if label == "non-launcher Pod" else 1.2
        verdict = "meets" if hl[4] / floor[4] <= target else "MISSES"
        print(f"  {label:24} p99 ratio {hl[4] / floor[4]:.3f} (target {target}): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
