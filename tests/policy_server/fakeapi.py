"""A loopback fake of the parts of the Kubernetes API server that policy-server's Kubernetes
client uses for hyperv-layered's lookups (Python 3.11 stdlib only).

What policy-server (kube-rs 3.1 inside policy-evaluator) sends, and what is served here:

- discovery: `GET /api/v1` (core kinds) and `GET /apis/<group>/<version>` (CRD kinds), once per
  kind until it succeeds (policy-evaluator caches only successful discoveries);
- `list_resources_all` / `list_resources_by_namespace`: a kube-rs reflector, i.e. a paginated
  `LIST ?labelSelector=..&limit=500` followed by
  `WATCH ?watch=true&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=..`;
- `get_resource`: a plain `GET` of one object;
- `can_i`: `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`.

State (Nodes, Pods, KubeVirts, VMIs) lives in memory; every change bumps one global
resourceVersion and is delivered to open watches as ADDED / MODIFIED / DELETED (an object that
stops matching a watch's label selector is DELETED for that watch, as the real API server does),
with BOOKMARK events while a watch is idle. Faults are switchable at run time per resource (and
namespace): an HTTP status (403, 404, 500), a delay before the answer, or a watch that is cut.

Only 127.0.0.1 is ever bound.
"""
import json
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# resource plural -> (api group/version prefix, kind, namespaced)
RESOURCES = {
    "nodes": ("v1", "Node", False),
    "pods": ("v1", "Pod", True),
    "namespaces": ("v1", "Namespace", False),
    "kubevirts": ("kubevirt.io/v1", "KubeVirt", True),
    "virtualmachineinstances": ("kubevirt.io/v1", "VirtualMachineInstance", True),
}

DISCOVERY = {
    "/api/v1": {
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
        "resources": [
            {"name": r, "singularName": k.lower(), "namespaced": ns, "kind": k,
             "verbs": ["get", "list", "watch"]}
            for r, (gv, k, ns) in RESOURCES.items() if gv == "v1"
        ],
    },
    "/apis/kubevirt.io/v1": {
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "kubevirt.io/v1",
        "resources": [
            {"name": r, "singularName": k.lower(), "namespaced": ns, "kind": k,
             "verbs": ["get", "list", "watch"]}
            for r, (gv, k, ns) in RESOURCES.items() if gv == "kubevirt.io/v1"
        ],
    },
    "/apis/authorization.k8s.io/v1": {
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "authorization.k8s.io/v1",
        "resources": [{"name": "subjectaccessreviews", "singularName": "subjectaccessreview",
                       "namespaced": False, "kind": "SubjectAccessReview", "verbs": ["create"]}],
    },
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
    "/apis": {
        "kind": "APIGroupList", "apiVersion": "v1",
        "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}}
            for g in ("kubevirt.io", "authorization.k8s.io")
        ],
    },
    "/version": {"major": "1", "minor": "34", "gitVersion": "v1.34.0", "platform": "linux/amd64"},
}

SA_USER = "system:serviceaccount:kubewarden:policy-server"
REASONS = {403: "Forbidden", 404: "NotFound", 500: "InternalError", 410: "Expired"}


def status_body(code, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": REASONS.get(code, "Unknown"), "code": code}


def parse_selector(text):
    """`a=b,c!=d,e`: equality, inequality and existence terms (what the policy sends)."""
    terms = []
    for term in filter(None, (t.strip() for t in (text or "").split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            terms.append((k, "!=", v))
        elif "==" in term:
            k, v = term.split("==", 1)
            terms.append((k, "=", v))
        elif "=" in term:
            k, v = term.split("=", 1)
            terms.append((k, "=", v))
        else:
            terms.append((term, "exists", None))
    return terms


def matches(obj, terms):
    if obj is None:
        return False
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for k, op, v in terms:
        if op == "=" and labels.get(k) != v:
            return False
        if op == "!=" and labels.get(k) == v:
            return False
        if op == "exists" and k not in labels:
            return False
    return True


class FakeApi:
    """The cluster state, the faults, the request log and the HTTP server around them."""

    def __init__(self, bookmark_interval=1.0, watch_max_seconds=60.0):
        self.lock = threading.Condition()
        self.rv = 1
        self.objects = {r: {} for r in RESOURCES}  # resource -> {(ns, name): obj}
        self.events = []  # (rv, resource, old_obj, new_obj)
        self.faults = {}  # (what, ns or "*") -> fault dict; what = resource or a discovery path
        self.log = []  # (monotonic time, method, path, status)
        self.sar_allowed = {}  # (verb, resource) -> bool; default True
        self.bookmark_interval = bookmark_interval
        self.watch_max_seconds = watch_max_seconds
        self.closing = False
        self.server = None
        self.thread = None

    # ---- state -------------------------------------------------------------------------------

    def _put(self, resource, obj):
        md = obj.setdefault("metadata", {})
        ns = md.get("namespace") if RESOURCES[resource][2] else None
        key = (ns, md["name"])
        old = self.objects[resource].get(key)
        self.rv += 1
        md["resourceVersion"] = str(self.rv)
        md.setdefault("uid", f"uid-{resource}-{ns}-{md['name']}")
        self.objects[resource][key] = obj
        self.events.append((self.rv, resource, old, obj))

    def _delete(self, resource, key):
        old = self.objects[resource].pop(key, None)
        if old is not None:
            self.rv += 1
            gone = json.loads(json.dumps(old))
            gone["metadata"]["resourceVersion"] = str(self.rv)
            self.events.append((self.rv, resource, old, None, gone))

    def set_objects(self, resource, items, namespace=None):
        """Makes `items` the whole set of `resource` (in `namespace` when given): objects that
        changed are MODIFIED, new ones ADDED, missing ones DELETED, identical ones untouched.
        Items with a duplicate name get a suffix (fixtures reuse names across Pods)."""
        with self.lock:
            wanted = {}
            for item in items:
                obj = json.loads(json.dumps(item))
                md = obj.setdefault("metadata", {})
                if RESOURCES[resource][2]:
                    md["namespace"] = namespace or md.get("namespace") or "default"
                name, n = md["name"], 2
                while (md.get("namespace"), md["name"]) in wanted:
                    md["name"] = f"{name}-{n}"
                    n += 1
                wanted[(md.get("namespace"), md["name"])] = obj
            current = self.objects[resource]
            for key in list(current):
                if (namespace is None or key[0] == namespace) and key not in wanted:
                    self._delete(resource, key)
            for key, obj in wanted.items():
                old = current.get(key)
                if old is not None:
                    a = {k: v for k, v in old.items() if k != "metadata"}
                    b = {k: v for k, v in obj.items() if k != "metadata"}
                    same_meta = {k: v for k, v in old["metadata"].items()
                                 if k not in ("resourceVersion", "uid")} == obj["metadata"]
                    if a == b and same_meta:
                        continue
                self._put(resource, obj)
            self.lock.notify_all()

    def set_fault(self, what, fault, namespace="*"):
        """`fault`: None (healthy), {"code": 403|404|500}, {"delay": seconds} (LIST/GET answer
        late), {"watch_drop": seconds} (watches are cut after that long, without a final chunk),
        {"watch_code": code} (watch requests refused). `what`: a resource plural or a discovery
        path such as "/apis/kubevirt.io/v1"."""
        with self.lock:
            if fault is None:
                self.faults.pop((what, namespace), None)
            else:
                self.faults[(what, namespace)] = fault

    def fault_for(self, what, ns):
        with self.lock:
            return self.faults.get((what, ns)) or self.faults.get((what, "*"))

    def requests(self, since=0.0, contains=""):
        with self.lock:
            return [r for r in self.log if r[0] >= since and contains in r[2]]

    # ---- server ------------------------------------------------------------------------------

    def start(self):
        api = self

        class Handler(ApiHandler):
            fake = api

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self.server.server_address[1]

    def stop(self):
        with self.lock:
            self.closing = True
            self.lock.notify_all()
        if self.server:
            self.server.shutdown()
            self.server.server_close()


class ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeApi = None

    def log_message(self, *args):  # the request log is kept in FakeApi.log instead
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to some answers, which is not the API server's doing.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _record(self, status):
        with self.fake.lock:
            self.fake.log.append((time.monotonic(), self.command, self.path, status))

    def _send_json(self, code, body):
        data = json.dumps(body).encode()
        self._record(code)
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _apply_fault(self, fault, what):
        """Returns True when the fault produced the answer."""
        if not fault:
            return False
        if "delay" in fault:
            time.sleep(fault["delay"])
        if "code" in fault:
            code = fault["code"]
            if code == 403 and what.startswith("/"):
                # What a real API server says when discovery is not allowed.
                msg = f'forbidden: User "{SA_USER}" cannot get path "{what}"'
            elif code == 403:
                gv = RESOURCES.get(what, ("v1",))[0]
                group = gv.split("/")[0] if "/" in gv else ""
                full = f"{what}.{group}" if group else what
                msg = (f'{full} is forbidden: User "{SA_USER}" cannot list resource "{what}" '
                       f'in API group "{group}" at the cluster scope')
            else:
                msg = {404: "the server could not find the requested resource",
                       500: "Internal error occurred: etcdserver: request timed out"}.get(code, "error")
            self._send_json(code, status_body(code, msg))
            return True
        return False

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        path = urllib.parse.urlsplit(self.path).path
        if path == "/apis/authorization.k8s.io/v1/subjectaccessreviews":
            if self._apply_fault(self.fake.fault_for("subjectaccessreviews", "*"), "subjectaccessreviews"):
                return
            attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
            allowed = self.fake.sar_allowed.get((attrs.get("verb"), attrs.get("resource")), True)
            body["status"] = {"allowed": allowed}
            self._send_json(201, body)
            return
        self._send_json(404, status_body(404, "not found"))

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = dict(urllib.parse.parse_qsl(url.query))
        if path in DISCOVERY:
            if self._apply_fault(self.fake.fault_for(path, "*"), path):
                return
            self._send_json(200, DISCOVERY[path])
            return
        parts = path.strip("/").split("/")
        # /api/v1/<res>[/<name>] | /api/v1/namespaces/<ns>/<res>[/<name>]
        # /apis/<group>/<v>/<res>[/<name>] | /apis/<group>/<v>/namespaces/<ns>/<res>[/<name>]
        if parts[0] == "api":
            gv, rest = "v1", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            self._send_json(404, status_body(404, "the server could not find the requested resource"))
            return
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        if not rest or rest[0] not in RESOURCES or RESOURCES[rest[0]][0] != gv:
            self._send_json(404, status_body(404, "the server could not find the requested resource"))
            return
        resource = rest[0]
        fault = self.fake.fault_for(resource, ns or "*")
        if len(rest) == 2:
            self._get(resource, ns, rest[1], fault)
        elif query.get("watch") in ("true", "1"):
            self._watch(resource, ns, query, fault)
        else:
            self._list(resource, ns, query, fault)

    def _get(self, resource, ns, name, fault):
        if self._apply_fault(fault, resource):
            return
        with self.fake.lock:
            obj = self.fake.objects[resource].get((ns, name))
        if obj is None:
            self._send_json(404, status_body(404, f'{resource}.kubevirt.io "{name}" not found'))
        else:
            self._send_json(200, obj)

    def _selected(self, resource, ns, terms):
        return [o for (ons, _), o in sorted(self.fake.objects[resource].items(), key=lambda kv: str(kv[0]))
                if (ns is None or ons == ns) and matches(o, terms)]

    def _list(self, resource, ns, query, fault):
        if self._apply_fault(fault, resource):
            return
        gv, kind, _ = RESOURCES[resource]
        terms = parse_selector(query.get("labelSelector"))
        with self.fake.lock:
            items = self._selected(resource, ns, terms)
            rv = self.fake.rv
        self._send_json(200, {"kind": f"{kind}List", "apiVersion": gv,
                              "metadata": {"resourceVersion": str(rv)}, "items": items})

    def _chunk(self, obj):
        data = json.dumps(obj).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _watch(self, resource, ns, query, fault):
        if fault and "watch_code" in fault:
            code = fault["watch_code"]
            self._send_json(code, status_body(code, "watch refused"))
            return
        if fault and "code" in fault:
            self._apply_fault(fault, resource)
            return
        gv, kind, _ = RESOURCES[resource]
        terms = parse_selector(query.get("labelSelector"))
        since = int(query.get("resourceVersion") or 0)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        limit = min(float(query.get("timeoutSeconds") or 300), self.fake.watch_max_seconds)
        self._record(200)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            start = time.monotonic()
            last_sent = start
            sent_rv = since
            while True:
                now = time.monotonic()
                # Read on every round, so an open watch can be cut at run time too.
                fault = self.fake.fault_for(resource, ns or "*") or {}
                drop_after = fault.get("watch_drop")
                if drop_after is not None and now - start >= drop_after:
                    # Cut the stream without the final chunk: the client sees a broken body.
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if now - start >= limit or self.fake.closing:
                    break
                out = []
                with self.fake.lock:
                    for ev in self.fake.events:
                        rv, res = ev[0], ev[1]
                        if rv <= sent_rv or res != resource:
                            continue
                        old, new = ev[2], ev[3]
                        gone = ev[4] if len(ev) > 4 else None
                        obj_ns = ((new or old).get("metadata") or {}).get("namespace")
                        if ns is not None and obj_ns != ns:
                            continue
                        was, now_m = matches(old, terms), matches(new, terms)
                        if now_m and not was:
                            out.append({"type": "ADDED", "object": new})
                        elif now_m and was:
                            out.append({"type": "MODIFIED", "object": new})
                        elif was and not now_m:
                            obj = gone if new is None else json.loads(json.dumps(new))
                            obj["metadata"]["resourceVersion"] = str(rv)
                            out.append({"type": "DELETED", "object": obj})
                    latest = self.fake.rv
                    if not out:
                        self.fake.lock.wait(timeout=0.2)
                for ev in out:
                    self._chunk(ev)
                    last_sent = time.monotonic()
                sent_rv = max(sent_rv, latest)
                if bookmarks and time.monotonic() - last_sent >= self.fake.bookmark_interval:
                    self._chunk({"type": "BOOKMARK", "object": {
                        "kind": kind, "apiVersion": gv,
                        "metadata": {"resourceVersion": str(sent_rv)}}})
                    last_sent = time.monotonic()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
