"""Reads tests/data/sessions/*.yml (the generated replay format of make_sessions.py) into
cluster state for the fake API server, so the policy-server test serves exactly the answers the
kwctl and waPC-harness runs replay. Only the subset of YAML that make_sessions.py writes is
understood; anything else raises."""
import json
import os

from pslib import DATA

KIND_RESOURCE = {"Node": "nodes", "Pod": "pods", "KubeVirt": "kubevirts",
                 "VirtualMachineInstance": "virtualmachineinstances"}


def _scalar(text):
    text = text.strip()
    if text.startswith("'") and text.endswith("'"):
        return text[1:-1].replace("''", "'")
    try:
        return json.loads(text)  # null, true/false, numbers and "double-quoted" strings
    except ValueError:
        return text  # a plain scalar (Success, Error, Exchange)


def parse(name):
    """[(request dict with 'tag', response dict)] of one session file."""
    with open(os.path.join(DATA, "sessions", name)) as f:
        lines = [l.rstrip("\n") for l in f if not l.startswith("#")]
    exchanges, cur, section, last_key = [], None, None, None
    for line in lines:
        if not line.strip() or line.strip() == "[]":  # `[]`: a session without any exchange
            continue
        if line.startswith("- type: Exchange"):
            cur = {"request": {}, "response": {}}
            exchanges.append(cur)
            section = None
        elif line.startswith("  request: |"):
            section = "request"
        elif line.startswith("  response:"):
            section = "response"
        elif section == "request" and line.startswith("    !"):
            cur["request"]["tag"] = line.strip()[1:]
        elif section == "request" and line.startswith("    - "):
            cur["request"][last_key].append(_scalar(line[6:]))
        elif section in ("request", "response") and line.startswith("    "):
            key, _, value = line.strip().partition(":")
            if value.strip() == "":
                cur[section][key] = []
            else:
                cur[section][key] = _scalar(value)
            last_key = key
        else:
            raise ValueError(f"{name}: unexpected line {line!r}")
    return exchanges


def state(name):
    """What a session says about the cluster:
    {"lists": {(resource, namespace): items}, "list_errors": {resource: message},
     "gets": {(resource, namespace, name): object or None (error)}, "get_errors": {...}}."""
    out = {"lists": {}, "list_errors": {}, "gets": {}, "get_errors": {}}
    for ex in parse(name) if name else []:
        req, resp = ex["request"], ex["response"]
        resource = KIND_RESOURCE[req["kind"]]
        ok = resp.get("type") == "Success"
        payload = json.loads(resp["payload"]) if ok else None
        if req["tag"] in ("KubernetesListResourceAll", "KubernetesListResourceNamespace"):
            key = (resource, req.get("namespace"))
            if ok:
                out["lists"][key] = payload.get("items") or []
            else:
                out["list_errors"][resource] = resp.get("message", "")
        elif req["tag"] == "KubernetesGetResource":
            key = (resource, req.get("namespace"), req["name"])
            if ok:
                out["gets"][key] = payload
            else:
                out["get_errors"][key] = resp.get("message", "")
        else:
            raise ValueError(f"{name}: unsupported request {req['tag']}")
    return out
