"""Running the real policy-server against the fake API server (Python 3.11 stdlib only).

Shared by tests/policy_server/run_tests.py and bench/policy-server/bench.py. Every file goes to
a mktemp directory, every port is a free loopback port, and the policy-server process is
killed (its id only) when the `PolicyServer` context ends.
"""
import base64
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# HL_TEST_DATA: another copy of tests/data (e.g. of another commit, with its matching module).
DATA = os.environ.get("HL_TEST_DATA") or os.path.join(ROOT, "tests", "data")

# The kinds and host capabilities hyperv-layered uses (metadata.yml).
CONTEXT_AWARE = [
    {"apiVersion": "v1", "kind": "Node"},
    {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt"},
    {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance"},
    {"apiVersion": "v1", "kind": "Pod"},
]
HOST_CAPABILITIES = [
    "kubernetes/list_resources_all",
    "kubernetes/list_resources_by_namespace",
    "kubernetes/get_resource",
    "kubernetes/can_i",
]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kubeconfig(api_port):
    return (
        "apiVersion: v1\nkind: Config\n"
        "clusters:\n- name: fake\n  cluster:\n"
        f"    server: http://127.0.0.1:{api_port}\n"
        "users:\n- name: fake\n  user: {}\n"
        "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n"
        "current-context: fake\n"
    )


def policy_entry(module, settings, timeout_eval=None, mutating=True):
    """One policies.yml entry (JSON is YAML)."""
    entry = {
        "module": f"file://{module}",
        "policyMode": "protect",
        "allowedToMutate": mutating,
        "settings": settings,
        "contextAwareResources": CONTEXT_AWARE,
        "hostCapabilities": HOST_CAPABILITIES,
    }
    if timeout_eval is not None:
        entry["timeoutEvalSeconds"] = timeout_eval
    return entry


class PolicyServer:
    """policy-server on 127.0.0.1 with `policies` ({id: entry}) and a kubeconfig for the fake
    API server on `api_port`."""

    def __init__(self, binary, policies, api_port, workers=2, tmp=None, log_level="info"):
        self.binary = binary
        self.policies = policies
        self.api_port = api_port
        self.workers = workers
        self.own_tmp = tmp is None
        self.tmp = tmp or tempfile.mkdtemp(prefix="hl-policy-server-")
        self.log_level = log_level
        self.proc = None
        self.log = None
        self.port = None
        self.started_in = None

    def __enter__(self):
        try:
            return self._start()
        except BaseException:
            # __exit__ does not run when __enter__ raises: clean up here.
            self.__exit__(None, None, None)
            raise

    def _start(self):
        with open(os.path.join(self.tmp, "policies.yml"), "w") as f:
            json.dump(self.policies, f, indent=1)
        with open(os.path.join(self.tmp, "kubeconfig"), "w") as f:
            f.write(kubeconfig(self.api_port))
        self.port, ready = free_port(), free_port()
        env = dict(os.environ, KUBECONFIG=os.path.join(self.tmp, "kubeconfig"), NO_COLOR="1")
        args = [
            self.binary,
            "--addr", "127.0.0.1", "--port", str(self.port), "--readiness-probe-port", str(ready),
            "--policies", os.path.join(self.tmp, "policies.yml"),
            "--policies-download-dir", self.tmp,
            "--sigstore-cache-dir", os.path.join(self.tmp, "sigstore"),
            # A missing file: no Sigstore trust root is fetched (offline).
            "--sigstore-trust-config", os.path.join(self.tmp, "no-trust-config.json"),
            "--workers", str(self.workers),
            "--log-level", self.log_level, "--log-no-color",
        ]
        self.log_path = os.path.join(self.tmp, "policy-server.log")
        self.log = open(self.log_path, "w")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.tmp)
        for _ in range(600):  # bounded: 60 s
            if self.proc.poll() is not None:
                raise RuntimeError(f"policy-server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", ready, timeout=1)
                c.request("GET", "/readiness")
                if c.getresponse().status == 200:
                    c.close()
                    break
                c.close()
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"policy-server not ready after 60 s:\n{self.tail()}")
        self.started_in = time.monotonic() - t0
        return self

    def tail(self, n=40):
        try:
            with open(self.log_path) as f:
                # policy-server colours its log even with --log-no-color: strip the escapes.
                return re.sub(r"\x1b\[[0-9;]*m", "", "".join(f.readlines()[-n:]))
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.log and not self.log.closed:
            self.log.close()

    def __exit__(self, *exc):
        self.stop()
        if self.own_tmp and not os.environ.get("KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)


def review_body(request, uid=None):
    req = dict(request)
    if uid:
        req["uid"] = uid
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": req}).encode()


class Result:
    def __init__(self, elapsed, status=None, review=None, error=None):
        self.elapsed = elapsed
        self.status = status
        self.review = review or {}
        self.error = error  # a client-side timeout or connection error

    @property
    def response(self):
        return self.review.get("response") or {}

    @property
    def allowed(self):
        return self.response.get("allowed")

    @property
    def patch(self):
        p = self.response.get("patch")
        return json.loads(base64.b64decode(p)) if p else None

    @property
    def warnings(self):
        return self.response.get("warnings") or []

    @property
    def message(self):
        return (self.response.get("status") or {}).get("message", "")

    @property
    def reason(self):
        for op in self.patch or []:
            if op.get("path") == "/metadata/annotations/hyperv-layered.io~1reason":
                return op.get("value")
        return None

    def __repr__(self):
        if self.error:
            return f"<no answer after {self.elapsed:.2f}s: {self.error}>"
        return (f"<HTTP {self.status} in {self.elapsed * 1000:.1f} ms allowed={self.allowed} "
                f"reason={self.reason} warnings={self.warnings} message={self.message!r}>")


def validate(port, policy_id, body, timeout=10.0, conn=None):
    """POSTs an AdmissionReview to /validate/<policy_id>; a fresh connection unless `conn`."""
    t0 = time.monotonic()
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", f"/validate/{policy_id}", body=body,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        elapsed = time.monotonic() - t0
        try:
            review = json.loads(data)
        except ValueError:
            review = {"raw": data.decode(errors="replace")}
        return Result(elapsed, r.status, review)
    except (OSError, http.client.HTTPException) as e:
        return Result(time.monotonic() - t0, error=f"{type(e).__name__}: {e}")
    finally:
        if own:
            c.close()


def load_request(name, namespace=None):
    with open(os.path.join(DATA, name)) as f:
        req = json.load(f)
    if req.get("kind") == "AdmissionReview":
        req = req["request"]
    if namespace:
        req["namespace"] = namespace
        if isinstance(req.get("object"), dict):
            req["object"].setdefault("metadata", {})["namespace"] = namespace
    return req


def expected_patch(case_id):
    path = os.path.join(DATA, "expected", f"{case_id}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
