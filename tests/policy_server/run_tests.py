#!/usr/bin/env python3
"""End-to-end tests of hyperv-layered inside the real policy-server (Python 3.11 stdlib only).

`make policy-server-tests` runs this (and `make test` does when policy-server is on PATH):

    python3 tests/policy_server/run_tests.py --policy-server PATH --policy annotated-policy.wasm \
        --floor annotated-floor.wasm

It starts a loopback fake Kubernetes API server (fakeapi.py) and policy-server on 127.0.0.1
(random free ports, plain HTTP: no --cert-file) with a kubeconfig pointing at the fake, and sends
real AdmissionReviews to /validate/<policy-id>:

1. every case of tests/data/cases.json (the case table of make_cases.py), with the cluster state
   its replay session records served by the fake API server; decision, warnings and the exact
   JSON Patch (tests/data/expected/<id>.json) are asserted. A lookup the session records as
   failed is served as a failed discovery of the kind (403), the answer policy-server turns into
   an immediate error (see docs/policy-server-lookup-hang.md for why a failed LIST cannot be used);
2. cluster state changing under the running policy-server: node labels (watch events), the
   KubeVirt CR switching the gate, a cut watch; VMI GET failures; can_i through the floor policy;
3. a second policy-server for the failure answers that make a lookup wait (403/404/500 on LIST,
   slow LIST, refused watch): what the AdmissionReview client sees, how long, and whether
   another request to the same policy-server stalls meanwhile.

Timings are printed, never asserted. Decisions are asserted; behaviours of policy-server itself
(part 3) are reported, and only the recovery after the fault is cleared is asserted.
Exit status: 0 when every assertion held, 1 otherwise.
"""
import argparse
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fakeapi  # noqa: E402
import pslib  # noqa: E402
import sessions  # noqa: E402

CASES_PATH = os.path.join(pslib.DATA, "cases.json")
# A warning that quotes the host's error text: the recorded sessions carry kwctl-style texts;
# policy-server's own differ for a missing object, whose 404 get_resource turns into
# "Cannot find <apiVersion>/<kind> named ..." (kubewarden-controller
# crates/policy-evaluator/src/callback_handler/kubernetes/client.rs:306-309). A failed list is
# served as a failed discovery (403 `forbidden: User ... cannot get path ...`): the recorded
# LIST refusal texts cannot reach a policy through policy-server, whose LIST retries never end.
GET_ERROR_IN_POLICY_SERVER = "Cannot find"
LIST_ERROR_IN_POLICY_SERVER = "forbidden"
# Discovery path served with an error when a session records a failed list of this resource.
DISCOVERY_OF = {"nodes": "/api/v1", "pods": "/api/v1", "kubevirts": "/apis/kubevirt.io/v1",
                "virtualmachineinstances": "/apis/kubevirt.io/v1"}
VMI_CACHE_SECONDS = 5.0  # get_resource_cached (policy-evaluator callback_handler/kubernetes.rs:101-107)


class Report:
    def __init__(self):
        self.failures = []
        self.timings = []

    def check(self, ok, what):
        if ok:
            print(f"  ok    {what}", flush=True)
        else:
            print(f"  FAIL  {what}", flush=True)
            self.failures.append(what)
        return ok

    def timing(self, what, seconds, note=""):
        self.timings.append((what, seconds, note))
        shown = "no answer" if seconds is None else f"{seconds * 1000:9.1f} ms"
        print(f"  time  {what}: {shown} {note}".rstrip(), flush=True)


def norm(patch):
    return None if patch is None else json.dumps(patch, sort_keys=True)


def problems(case, r):
    """What is wrong with result `r` for case `case` (an entry of cases.json)."""
    out = []
    if r.error or r.status != 200:
        return [f"no AdmissionReview answer: {r}"]
    if r.allowed != case["allowed"]:
        out.append(f"allowed {r.allowed}, want {case['allowed']}")
    want = pslib.expected_patch(case["id"])
    if norm(r.patch) != norm(want):
        out.append(f"patch {json.dumps(r.patch)}\n        want  {json.dumps(want)}")
    st = sessions.state(case["session"]) if case.get("session") else None

    def in_policy_server(text):
        """The recorded error text as policy-server words it (see above)."""
        if st and any(text in m for m in st["get_errors"].values()):
            return GET_ERROR_IN_POLICY_SERVER
        if st and any(text in m for m in st["list_errors"].values()):
            return LIST_ERROR_IN_POLICY_SERVER
        return text

    if case.get("message"):
        text = in_policy_server(case["message"])
        if text not in r.message:
            out.append(f"message {r.message!r} lacks {text!r}")
    if case.get("warning"):
        text = in_policy_server(case["warning"])
        if not any(text in w for w in r.warnings):
            out.append(f"warnings {r.warnings} lack {text!r}")
    elif r.warnings:
        out.append(f"unexpected warnings {r.warnings}")
    return out


def settled(case, r):
    """The cluster change has reached policy-server: the answer carries the case's decision
    (its reason, or no patch at all for a case without one). The whole answer is then checked
    once, so a wrong detail fails at once instead of being polled until a deadline."""
    if r.error or r.status != 200:
        return False
    if case.get("reason") is None:
        return r.patch is None or not case.get("allowed", True)
    return r.reason == case["reason"]


def until(fn, ok, deadline_s, pause=0.05):
    """Calls fn() until ok(result) or the deadline; returns (result, seconds, tries)."""
    t0 = time.monotonic()
    tries = 0
    while True:
        tries += 1
        r = fn()
        if ok(r) or time.monotonic() - t0 >= deadline_s:
            return r, time.monotonic() - t0, tries
        time.sleep(pause)


class Cluster:
    """Applies a session's cluster state to the fake API server and remembers what the VMI GET
    cache of policy-server may still hold."""

    def __init__(self, api):
        self.api = api
        self.vmi_served = {}  # (ns, name) -> (object json, monotonic time of last success)

    def apply(self, session):
        st = sessions.state(session)
        for (resource, ns), items in st["lists"].items():
            self.api.set_objects(resource, items, namespace=ns)
        for resource in st["list_errors"]:
            self.api.set_fault(DISCOVERY_OF[resource], {"code": 403})
        for (resource, ns, name), obj in st["gets"].items():
            self._wait_vmi_cache(ns, name, obj)
            self.api.set_objects(resource, [obj], namespace=ns)
        for (resource, ns, name) in st["get_errors"]:
            self._wait_vmi_cache(ns, name, None)
            self.api.set_objects(resource, [], namespace=ns)
        return st

    def clear_faults(self):
        with self.api.lock:
            self.api.faults.clear()

    def _wait_vmi_cache(self, ns, name, obj):
        """policy-server caches a successful get_resource for 5 s: a case that needs another
        answer for the same VMI waits for the entry to expire."""
        prev = self.vmi_served.get((ns, name))
        if prev and prev[0] != json.dumps(obj, sort_keys=True):
            left = VMI_CACHE_SECONDS + 0.5 - (time.monotonic() - prev[1])
            if left > 0:
                print(f"  (waiting {left:.1f} s for policy-server's 5 s VMI cache)", flush=True)
                time.sleep(left)

    def note_vmi(self, st):
        for (_, ns, name), obj in st["gets"].items():
            self.vmi_served[(ns, name)] = (json.dumps(obj, sort_keys=True), time.monotonic())


def settings_ids(cases):
    ids = {}
    for c in cases:
        key = json.dumps(c["settings"], sort_keys=True)
        ids.setdefault(key, f"hl{len(ids)}")
    return ids


def phase_cases(rep, api, ps, cases, ids, cluster):
    print("\n== 1. the case table through policy-server", flush=True)
    # Failed lookups first: policy-server caches a kind's discovery once it succeeds, after
    # which only a failed LIST could fail the lookup, and a failed LIST never answers (part 3).
    # Then cases that get the same VMI answer side by side, so that the wait for policy-server's
    # 5 s get cache (ClusterState._wait_vmi_cache) is paid once per distinct answer, not per case.
    # Failed lookups keep the table's order among themselves (a later one's successful LIST of a
    # kind would cache that kind's discovery for an earlier one).
    def order_key(c):
        st = sessions.state(c["session"]) if c["session"] else None
        if st and (st["list_errors"] or st["get_errors"]):
            return (0, "", "")
        gets = json.dumps(sorted((list(k), v) for k, v in st["gets"].items()), sort_keys=True) if st else ""
        return (1, gets, "")
    order = sorted(cases, key=order_key)
    for c in order:
        st = cluster.apply(c["session"])
        body = pslib.review_body(pslib.load_request(c["request"]), uid=f"case-{c['id']}")
        pid = ids[json.dumps(c["settings"], sort_keys=True)]
        r, secs, tries = until(lambda: pslib.validate(ps.port, pid, body),
                               lambda r: settled(c, r), 1.0)
        cluster.clear_faults()
        cluster.note_vmi(st)
        bad = problems(c, r)
        rep.check(not bad, f"{c['id']}: {c['doc']}" + "".join(f"\n        {p}" for p in bad))
        rep.timing(f"{c['id']} answer", r.elapsed, f"(converged after {secs * 1000:.0f} ms, {tries} request(s))")


def phase_changes(rep, api, ps, cases, ids, cluster):
    by_id = {c["id"]: c for c in cases}
    print("\n== 2. cluster changes under the running policy-server", flush=True)

    def converge(case_id, request, what, pid=None, deadline=2.0):
        c = by_id[case_id]
        pid = pid or ids[json.dumps(c["settings"], sort_keys=True)]
        body = pslib.review_body(pslib.load_request(request), uid=f"change-{case_id}")
        t0 = time.monotonic()
        r, secs, tries = until(lambda: pslib.validate(ps.port, pid, body),
                               lambda r: settled(c, r), deadline)
        bad = problems(c, r)
        rep.check(not bad, f"{what}: decision of {case_id}" + "".join(f"\n        {p}" for p in bad))
        rep.timing(f"{what}: change -> new decision", time.monotonic() - t0, f"({tries} request(s))")

    # Node labels (v1.5 launcher, per-pod gate via the KubeVirt CR).
    cluster.apply("kv-per-pod.yml")
    converge("v15-per-pod-selected", "launcher-v1.5.json", "nodes capable")
    unlabelled = []
    for n in sessions.state("kv-per-pod.yml")["lists"][("nodes", None)]:
        n = json.loads(json.dumps(n))
        n["metadata"]["labels"].pop("mshv.node.hyperv-layered.io/capable", None)
        unlabelled.append(n)
    api.set_objects("nodes", unlabelled)
    converge("v15-no-capable-node", "launcher-v1.5.json", "every node loses the label (watch DELETED)")
    cluster.apply("kv-per-pod.yml")
    converge("v15-per-pod-selected", "launcher-v1.5.json", "nodes labelled again (watch ADDED)")

    # The KubeVirt CR switching the gate (v1.8 hyperv-direct launcher).
    cluster.apply("kv-cluster-mshv.yml")
    converge("cluster-mshv", "launcher-v1.8-hyperv-direct.json", "KubeVirt CR: cluster-mshv")
    cluster.apply("kv-off.yml")
    off = dict(by_id["cluster-mshv"], id="gate-off-kubevirt", allowed=True, warning=None, message=None,
               reason=None)
    by_id["_off"] = off
    converge("_off", "launcher-v1.8-hyperv-direct.json", "KubeVirt CR: gates removed (no patch)",
             pid=ids[json.dumps(by_id["cluster-mshv"]["settings"], sort_keys=True)])
    cluster.apply("kv-cluster-mshv.yml")
    converge("cluster-mshv", "launcher-v1.8-hyperv-direct.json", "KubeVirt CR: cluster-mshv again")

    # A cut watch: policy-server keeps answering from its cache (stale) and catches up once the
    # watch is back.
    cluster.apply("kv-per-pod.yml")
    converge("v15-per-pod-selected", "launcher-v1.5.json", "before the watch is cut")
    api.set_fault("nodes", {"watch_drop": 0.0})
    time.sleep(0.5)
    api.set_objects("nodes", unlabelled)
    pid = ids[json.dumps(by_id["v15-per-pod-selected"]["settings"], sort_keys=True)]
    body = pslib.review_body(pslib.load_request("launcher-v1.5.json"), uid="watch-cut")
    r = pslib.validate(ps.port, pid, body)
    rep.timing("node watch cut, labels removed meanwhile: answer", r.elapsed,
               f"(reason {r.reason}: the cache is stale while the watch is down)")
    time.sleep(2.0)
    api.set_fault("nodes", None)
    converge("v15-no-capable-node", "launcher-v1.5.json", "watch restored after 2.5 s cut", deadline=45.0)
    cluster.apply("kv-per-pod.yml")

    # VMI GET answers (memory terms): each failure is an immediate lookup-error fallback.
    mem = by_id["memory"]
    mem_err = by_id["memory-vmi-error"]
    pid = ids[json.dumps(mem["settings"], sort_keys=True)]
    cluster.apply(mem["session"])
    for fault, label in (({"code": 403}, "VMI GET 403"), ({"code": 500}, "VMI GET 500"),
                         ({"delay": 2.0, "code": 500}, "VMI GET 500 after 2 s")):
        cluster._wait_vmi_cache("default", "testvm", {"fault": label})
        api.set_fault("virtualmachineinstances", fault)
        body = pslib.review_body(pslib.load_request(mem_err["request"]), uid=f"vmi-{fault}")
        r = pslib.validate(ps.port, pid, body)
        api.set_fault("virtualmachineinstances", None)
        case = dict(mem_err, warning=None)
        bad = [p for p in problems(case, r) if not p.startswith("unexpected warnings")]
        rep.check(not bad and bool(r.warnings), f"{label}: lookup-error fallback with a warning"
                  + "".join(f"\n        {p}" for p in bad))
        rep.timing(f"{label}: answer", r.elapsed)
    cluster.vmi_served.pop(("default", "testvm"), None)
    api.set_fault("virtualmachineinstances", {"delay": 2.0})
    body = pslib.review_body(pslib.load_request(mem["request"]), uid="vmi-slow")
    r = pslib.validate(ps.port, pid, body)
    api.set_fault("virtualmachineinstances", None)
    bad = problems(mem, r)
    rep.check(not bad, "VMI GET answered after 2 s: memory decision" + "".join(f"\n        {p}" for p in bad))
    rep.timing("VMI GET answered after 2 s: answer", r.elapsed)


def phase_can_i(rep, api, ps):
    print("\n== 2b. can_i (SubjectAccessReview) through the floor policy", flush=True)
    body = pslib.review_body(pslib.load_request("plain-pod.json"), uid="can-i")
    for fault, label in ((None, "SAR allowed"), ({"code": 403}, "SAR create 403 (no RBAC for subjectaccessreviews)"),
                         ({"code": 500}, "SAR create 500"), ({"delay": 2.0}, "SAR answered after 2 s")):
        api.set_fault("subjectaccessreviews", fault)
        t_log = time.monotonic()
        r = pslib.validate(ps.port, "floor-can-i", body)
        api.set_fault("subjectaccessreviews", None)
        sars = len(api.requests(since=t_log, contains="subjectaccessreviews"))
        rep.check(r.allowed is True, f"{label}: the floor answers (can_i never blocks the answer)")
        rep.timing(f"can_i, {label}: answer", r.elapsed, f"({sars} SAR request(s); disable_cache)")


def hang_probe(rep, api, ps, label, policy_id, request, fault_key, fault, namespace, client_timeout,
               stall_check=False, recover_case=None):
    """Sends one AdmissionReview while the API answers with `fault`; optionally a no-lookup
    request meanwhile (does it stall?); then clears the fault and measures the recovery."""
    api.set_fault(fault_key, fault, namespace=namespace)
    body = pslib.review_body(pslib.load_request(request, namespace=None if namespace == "*" else namespace),
                             uid=f"probe-{label}")
    out = {}
    t_start = time.monotonic()

    def hung(name, delay):
        time.sleep(delay)
        out[name] = pslib.validate(ps.port, policy_id, body, timeout=client_timeout)

    threads = [threading.Thread(target=hung, args=("a", 0.0))]
    if stall_check:
        # A second lookup of the same kind (takes the second worker) and, 0.5 s later, a Pod
        # that needs no lookup at all, for a policy of the same policy-server.
        threads.append(threading.Thread(target=hung, args=("b", 0.2)))
        plain = pslib.review_body(pslib.load_request("plain-pod.json"), uid="stall")

        def other():
            time.sleep(0.5)
            out["other"] = pslib.validate(ps.port, "enabled", plain, timeout=client_timeout * 3)
        threads.append(threading.Thread(target=other))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a = out["a"]
    lists = [x for x in api.requests(since=t_start) if "watch=" not in x[2] and x[3] != 200]
    note = f"-> {a}; {len(lists)} failed API request(s) meanwhile"
    rep.timing(f"{label}: AdmissionReview", None if a.error else a.elapsed, note)
    if stall_check:
        o = out["other"]
        rep.timing(f"{label}: meanwhile a no-lookup request to another policy (workers=2)",
                   None if o.error else o.elapsed,
                   "(stalled until the hung clients disconnected)" if not o.error and o.elapsed > 1.0 else "")
    api.set_fault(fault_key, None, namespace=namespace)
    if recover_case is not None:
        t0 = time.monotonic()
        r, secs, tries = until(lambda: pslib.validate(ps.port, policy_id, body, timeout=client_timeout),
                               lambda r: not r.error, 45.0, pause=0.2)
        bad = problems(recover_case, r)
        rep.check(not bad, f"{label}: after the fault is cleared the decision is {recover_case['id']}"
                  + "".join(f"\n        {p}" for p in bad))
        rep.timing(f"{label}: fault cleared -> answer", time.monotonic() - t0, f"({tries} request(s))")
    return a


def get_cache_probe(rep, api, ps):
    """get_resource with the 5 s cache (disable_cache false) runs under one cache-wide lock
    (`sync_writes = "default"`, policy-evaluator callback_handler/kubernetes.rs:101-107): one slow
    GET delays every cached GET of any object, of any policy, until it completes."""
    body = pslib.review_body(pslib.load_request("plain-pod.json"), uid="get-cache")
    # Two rounds of two requests (policy-server has 2 slots here, so each request has one): a
    # slow cached GET, and 0.5 s later a GET of another object, cached then uncached.
    for slow, other in (("slow", "fast"), ("slow2", "fast-nocache")):
        api.set_fault("virtualmachineinstances", {"delay": 3.0}, namespace=f"get-{slow}")
        out = {}

        def send(pid, delay):
            time.sleep(delay)
            out[pid] = pslib.validate(ps.port, pid, body, timeout=10.0)

        threads = [threading.Thread(target=send, args=(f"get-{slow}", 0.0)),
                   threading.Thread(target=send, args=(f"get-{other}", 0.5))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        api.set_fault("virtualmachineinstances", None, namespace=f"get-{slow}")
        for pid in (f"get-{slow}", f"get-{other}"):
            r = out[pid]
            rep.check(not r.error and r.allowed, f"{pid}: answered")
        r = out[f"get-{other}"]
        rep.timing(f"cached GET answered after 3 s; meanwhile a GET of another object, "
                   f"disable_cache {other.endswith('nocache')}", None if r.error else r.elapsed)


def phase_hangs(rep, args, cases):
    print("\n== 3. failure answers that make a lookup wait (fresh policy-server, --workers 2)", flush=True)
    by_id = {c["id"]: c for c in cases}
    api = fakeapi.FakeApi()
    port = api.start()
    cluster = Cluster(api)
    try:
        cluster.apply("kv-per-pod.yml")
        pol = {
            # timeoutEvalSeconds as in policy.yaml (5 s)
            "kv": pslib.policy_entry(args.policy, by_id["v18-launcher-pins-kvm"]["settings"], timeout_eval=5),
            "any": pslib.policy_entry(args.policy, by_id["migration-source-kvm"]["settings"], timeout_eval=5),
            "enabled": pslib.policy_entry(args.policy, {"gate": {"mode": "enabled"}}, timeout_eval=5),
        }
        # The floor making one get_resource each: a slow GET of one object, then a GET of another.
        for name, cache in (("slow", True), ("slow2", True), ("fast", True), ("fast-nocache", False)):
            obj = name.split("-")[0]
            req = {"api_version": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": obj,
                   "namespace": f"get-{obj}", "disable_cache": not cache, "field_masks": None}
            pol[f"get-{name}"] = pslib.policy_entry(
                args.floor, {"hostCalls": [{"operation": "get_resource", "payload": json.dumps(req)}]},
                timeout_eval=10, mutating=False)
            api.set_objects("virtualmachineinstances", [{
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "metadata": {"name": obj, "namespace": f"get-{obj}"}}], namespace=f"get-{obj}")
        with pslib.PolicyServer(args.policy_server, pol, port) as ps:
            print(f"  policy-server ready in {ps.started_in:.2f} s", flush=True)
            # KubeVirt not installed: discovery of kubevirt.io/v1 answers 404 and the lookup fails
            # at once (policy-evaluator client.rs:60-64), before any LIST.
            api.set_fault("/apis/kubevirt.io/v1", {"code": 404})
            r = pslib.validate(ps.port, "kv", pslib.review_body(pslib.load_request("launcher-v1.8-kvm.json")),
                               timeout=6.0)
            api.set_fault("/apis/kubevirt.io/v1", None)
            case = dict(by_id["kubevirt-lookup-error"], warning=None)
            bad = [p for p in problems(case, r) if not p.startswith("unexpected warnings")]
            rep.check(not bad and bool(r.warnings), "KubeVirt CRD missing (discovery 404): lookup-error fallback"
                      + "".join(f"\n        {p}" for p in bad))
            rep.timing("KubeVirt CRD missing (discovery 404): AdmissionReview", None if r.error else r.elapsed,
                       f"warnings {r.warnings}")
            # KubeVirt CR list refused (the kubevirts grant is missing): the gate lookup.
            hang_probe(rep, api, ps, "KubeVirt GET 403", "kv", "launcher-v1.8-kvm.json", "kubevirts",
                       {"code": 403}, "*", 6.0, stall_check=True, recover_case=by_id["v18-launcher-pins-kvm"])
            # Pod lists of migration targets, one fresh namespace (= fresh reflector) per answer.
            cluster.apply("migration-source-kvm.yml")
            src = sessions.state("migration-source-kvm.yml")["lists"][("pods", "default")]
            for ns, fault, label, client_timeout in (
                    ("probe-404", {"code": 404}, "Pod LIST 404", 4.0),
                    ("probe-500", {"code": 500}, "Pod LIST 500", 4.0),
                    ("probe-slow2", {"delay": 2.0}, "Pod LIST answered after 2 s", 4.0),
                    ("probe-slow7", {"delay": 7.0},
                     "Pod LIST answered after 7 s (timeoutEvalSeconds 5, client waits 9 s)", 9.0),
                    ("probe-watch", {"watch_code": 500}, "Pod LIST ok, every WATCH 500", 4.0)):
                api.set_objects("pods", src, namespace=ns)
                want = dict(by_id["migration-source-kvm"])
                hang_probe(rep, api, ps, label, "any", "launcher-migration-target.json", "pods", fault, ns,
                           client_timeout, recover_case=want)
            get_cache_probe(rep, api, ps)
            # policy-server still serves everything else.
            r = pslib.validate(ps.port, "enabled", pslib.review_body(pslib.load_request("plain-pod.json")))
            rep.check(not r.error and r.allowed, "policy-server still answers after the probes")
    finally:
        api.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy-server", required=True)
    ap.add_argument("--policy", required=True, help="annotated hyperv-layered module")
    ap.add_argument("--floor", required=True, help="annotated floor module")
    ap.add_argument("--skip-hangs", action="store_true", help="skip part 3")
    args = ap.parse_args()
    args.policy = os.path.abspath(args.policy)
    args.floor = os.path.abspath(args.floor)
    t_all = time.monotonic()
    rep = Report()
    with open(CASES_PATH) as f:
        cases = json.load(f)
    ids = settings_ids(cases)
    policies = {pid: pslib.policy_entry(args.policy, json.loads(s), timeout_eval=5) for s, pid in ids.items()}
    sar = {"subject_access_review": {
        "groups": None, "user": "system:serviceaccount:kubewarden:policy-server",
        "resource_attributes": {"group": "", "name": None, "namespace": None, "resource": "nodes",
                                "subresource": None, "verb": "list", "version": "v1"}},
        "disable_cache": True}
    policies["floor-can-i"] = pslib.policy_entry(
        args.floor, {"hostCalls": [{"operation": "can_i", "payload": json.dumps(sar)}]},
        timeout_eval=5, mutating=False)
    api = fakeapi.FakeApi()
    port = api.start()
    cluster = Cluster(api)
    try:
        with pslib.PolicyServer(args.policy_server, policies, port) as ps:
            print(f"policy-server on 127.0.0.1:{ps.port} ({len(policies)} policies), fake API on "
                  f"127.0.0.1:{port}; ready in {ps.started_in:.2f} s", flush=True)
            try:
                phase_cases(rep, api, ps, cases, ids, cluster)
                phase_changes(rep, api, ps, cases, ids, cluster)
                phase_can_i(rep, api, ps)
            finally:
                if rep.failures:
                    print("\n-- policy-server log (tail) --\n" + ps.tail(30))
    finally:
        api.stop()
    if not args.skip_hangs:
        phase_hangs(rep, args, cases)
    print(f"\npolicy-server tests: {len(rep.failures)} failure(s), wall time {time.monotonic() - t_all:.1f} s")
    for f in rep.failures:
        print(f"  FAILED: {f.splitlines()[0]}")
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
