#!/usr/bin/env python3
"""Minimal reproduction for docs/policy-server-lookup-hang.md (Python 3.11 stdlib only).

    python3 tests/policy_server/repro_hang.py --policy-server PATH --module annotated-floor.wasm \
        [--answer 403|404|500|slow] [--workers 2] [--timeout-eval 2] [--client-timeout 6]

One policy (any waPC policy that makes one `list_resources_all` host call; the default is this
repository's floor policy, told by its settings to list `kubevirt.io/v1 KubeVirt`) in
policy-server on 127.0.0.1, a fake API server that answers that LIST with the chosen error, and:

  t=0.0  two AdmissionReviews for the policy (clients give up after --client-timeout)
  t=0.5  one AdmissionReview for a second policy that makes no host call at all
  then   the fault is cleared, and the first request is sent again

Prints when each answer arrived and how many LISTs policy-server sent meanwhile.
"""
import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakeapi  # noqa: E402
import pslib  # noqa: E402

LIST_KUBEVIRT = {"api_version": "kubevirt.io/v1", "kind": "KubeVirt", "label_selector": None,
                 "field_selector": None, "field_masks": None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy-server", required=True)
    ap.add_argument("--module", required=True, help="annotated floor module (or any policy, with --settings)")
    ap.add_argument("--settings", default=json.dumps(
        {"hostCalls": [{"operation": "list_resources_all", "payload": json.dumps(LIST_KUBEVIRT)}]}))
    ap.add_argument("--answer", choices=["403", "404", "500", "slow"], default="403")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout-eval", type=int, default=2)
    ap.add_argument("--client-timeout", type=float, default=6.0)
    args = ap.parse_args()
    module = os.path.abspath(args.module)
    fault = {"delay": 3600.0} if args.answer == "slow" else {"code": int(args.answer)}

    api = fakeapi.FakeApi()
    port = api.start()
    api.set_fault("kubevirts", fault)
    policies = {
        "lookup": pslib.policy_entry(module, json.loads(args.settings), timeout_eval=args.timeout_eval,
                                     mutating=False),
        "no-lookup": pslib.policy_entry(module, {}, timeout_eval=args.timeout_eval, mutating=False),
    }
    body = pslib.review_body(pslib.load_request("plain-pod.json"))
    try:
        with pslib.PolicyServer(args.policy_server, policies, port, workers=args.workers) as ps:
            t0 = time.monotonic()
            out = {}

            def send(name, pid, delay, timeout):
                time.sleep(delay)
                out[name] = pslib.validate(ps.port, pid, body, timeout=timeout)
                print(f"t={time.monotonic() - t0:6.2f}s  {name:28} {out[name]}", flush=True)

            threads = [threading.Thread(target=send, args=a) for a in (
                ("lookup #1", "lookup", 0.0, args.client_timeout),
                ("lookup #2", "lookup", 0.1, args.client_timeout),
                ("no-lookup (other policy)", "no-lookup", 0.5, 3 * args.client_timeout))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            lists = [r for r in api.requests(since=t0, contains="/kubevirts") if "watch=" not in r[2]]
            print(f"LIST requests answered {args.answer} meanwhile: {len(lists)}")
            api.set_fault("kubevirts", None)
            t1 = time.monotonic()
            r = pslib.validate(ps.port, "lookup", body, timeout=args.client_timeout)
            print(f"fault cleared; lookup again: {r} (after {time.monotonic() - t1:.2f}s)")
            print(f"policy-server log: {ps.log_path} (KEEP_TMP=1 keeps it)")
    finally:
        api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
