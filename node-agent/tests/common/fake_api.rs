//! A FAKE Kubernetes API server for tests and the bench: real HTTP on 127.0.0.1, but it
//! only knows the requests the agent makes: on one Node (server-side apply, GET, JSON merge
//! patch), imitating server-side-apply ownership for a single field manager; and on one
//! Lease per namespace (`coordination.k8s.io/v1`, server-side apply, which creates it when
//! absent, and GET). It is not kube-apiserver: no auth, no admission, no managedFields, no
//! resourceVersion.
//!
//! Every request is recorded and checked (method, path, query, content type, body); any
//! deviation is recorded as a violation and answered with 400. Faults (status codes,
//! delays) can be queued to exercise retries and backoff, separately for Node PATCHes
//! (`push_faults`) and Lease PATCHes (`push_lease_faults`).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const FIELD_MANAGER: &str = "mshv-node-agent";
/// The uid the fake Node has (the Lease's ownerReference must name it).
pub const NODE_UID: &str = "0b5e2f7c-fake-node-uid";

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer the next PATCH with this status (and a Kubernetes Status body).
    Status(u16),
    /// Sleep this long before handling the next PATCH normally.
    Delay(Duration),
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: String,
    pub body: Option<Value>,
    /// 0 while (or if) no answer was sent.
    pub status: u16,
    /// When the request arrived (before any injected delay).
    pub received: Instant,
}

#[derive(Default)]
struct Inner {
    node: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    /// Keys the agent's field manager owns (label:<k> / annotation:<k>).
    owned: BTreeSet<String>,
    faults: VecDeque<Fault>,
    lease_faults: VecDeque<Fault>,
    /// Leases by (namespace, name), as last applied.
    leases: BTreeMap<(String, String), Value>,
    requests: Vec<Recorded>,
    violations: Vec<String>,
}

pub struct FakeApi {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeApi {
    /// Start on 127.0.0.1:<free port>, on its own thread and runtime, so it serves both
    /// in-process async tests and child processes.
    pub fn start(node: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            node: node.to_string(),
            ..Inner::default()
        }));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::clone(&inner);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("fake api runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind fake api");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let app = Router::new().fallback(handle).with_state(state);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("serve fake api");
            });
        });
        let addr = addr_rx.recv().expect("fake api address");
        Self {
            addr,
            inner,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.inner).faults.extend(faults);
    }

    /// Faults for the next Lease PATCHes (Node requests are not affected).
    pub fn push_lease_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.inner).lease_faults.extend(faults);
    }

    /// Every request, Node and Lease alike.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner).requests.clone()
    }

    /// Requests on the Node (the ones every Node watcher would see when they write).
    pub fn node_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| !is_lease_path(&r.path))
            .collect()
    }

    /// Requests on Leases.
    pub fn lease_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| is_lease_path(&r.path))
            .collect()
    }

    /// Server-side apply requests on the Node received (any outcome).
    pub fn apply_count(&self) -> usize {
        self.node_requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.content_type == "application/apply-patch+yaml")
            .count()
    }

    /// Writes of any kind on the Node (apply or merge patch, any outcome).
    pub fn node_write_count(&self) -> usize {
        self.node_requests()
            .iter()
            .filter(|r| r.method != "GET")
            .count()
    }

    /// Lease applies answered 200 (renewals that took effect).
    pub fn lease_renewals(&self) -> usize {
        self.lease_requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.status == 200)
            .count()
    }

    /// The Lease `namespace/name` as last applied.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.inner)
            .leases
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.inner).violations.clone()
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        lock(&self.inner).labels.clone()
    }

    pub fn annotations(&self) -> BTreeMap<String, String> {
        lock(&self.inner).annotations.clone()
    }

    /// A label set by someone else (not owned by the agent's field manager).
    pub fn set_foreign_label(&self, key: &str, value: &str) {
        lock(&self.inner)
            .labels
            .insert(key.to_string(), value.to_string());
    }

    /// A client built exactly like the agent's (`publish::api::client`).
    pub fn kube_client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("uri"));
        mshv_node_agent::publish::api::client(config, Duration::from_secs(30)).expect("kube client")
    }

    /// A kubeconfig pointing at this server (for child processes via KUBECONFIG).
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn status_body(code: u16, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": "FakeApi", "code": code})
}

fn node_json(inner: &Inner) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": inner.node, "uid": NODE_UID, "labels": inner.labels, "annotations": inner.annotations}})
}

const LEASES_PREFIX: &str = "/apis/coordination.k8s.io/v1/namespaces/";

fn is_lease_path(path: &str) -> bool {
    path.starts_with(LEASES_PREFIX)
}

/// `(namespace, name)` of `/apis/coordination.k8s.io/v1/namespaces/<ns>/leases/<name>`.
fn lease_key(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix(LEASES_PREFIX)?;
    let (ns, rest) = rest.split_once('/')?;
    let name = rest.strip_prefix("leases/")?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .then(|| (ns.to_string(), name.to_string()))
}

/// Is `v` a MicroTime as the API server parses it (RFC 3339 with a `Z` or offset)?
fn is_micro_time(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.parse::<jiff::Timestamp>().is_ok())
}

/// A Lease apply: checks the body, then stores it (server-side apply creates when absent).
fn lease_apply(
    inner: &mut Inner,
    key: (String, String),
    query: &BTreeMap<String, String>,
    body: Option<&Value>,
    problems: &mut Vec<String>,
) -> (u16, Value) {
    if query.get("fieldManager").map(String::as_str) != Some(FIELD_MANAGER) {
        problems.push(format!(
            "lease apply without fieldManager={FIELD_MANAGER}: {query:?}"
        ));
    }
    if query.get("force").map(String::as_str) != Some("true") {
        problems.push(format!("lease apply without force=true: {query:?}"));
    }
    let Some(b) = body else {
        problems.push("lease apply body is not JSON".into());
        return (400, status_body(400, "not JSON"));
    };
    if b["apiVersion"] != "coordination.k8s.io/v1" || b["kind"] != "Lease" {
        problems.push(format!(
            "lease apply body is not a coordination.k8s.io/v1 Lease: {b}"
        ));
    }
    if b["metadata"]["name"] != json!(key.1) || b["metadata"]["namespace"] != json!(key.0) {
        problems.push(format!(
            "lease body names {}/{}, the path {}/{}",
            b["metadata"]["namespace"], b["metadata"]["name"], key.0, key.1
        ));
    }
    let spec = &b["spec"];
    if spec["holderIdentity"].as_str().is_none_or(str::is_empty) {
        problems.push(format!("lease without holderIdentity: {spec}"));
    }
    if spec["leaseDurationSeconds"].as_i64().is_none_or(|d| d <= 0) {
        problems.push(format!(
            "lease without a positive leaseDurationSeconds: {spec}"
        ));
    }
    if !is_micro_time(&spec["renewTime"]) {
        problems.push(format!("lease renewTime is not a MicroTime: {spec}"));
    }
    match &b["metadata"]["ownerReferences"] {
        Value::Null => {}
        Value::Array(owners) => {
            for o in owners {
                let ok = o["apiVersion"] == "v1"
                    && o["kind"] == "Node"
                    && o["name"] == json!(inner.node)
                    && o["uid"] == NODE_UID;
                if !ok {
                    problems.push(format!(
                        "lease owner is not this Node (uid {NODE_UID}): {o}"
                    ));
                }
            }
        }
        other => problems.push(format!("ownerReferences is not a list: {other}")),
    }
    if !problems.is_empty() {
        return (400, status_body(400, &problems.join("; ")));
    }
    inner.leases.insert(key, b.clone());
    (200, b.clone())
}

fn reply(code: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn parse_query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

fn string_map(
    v: &Value,
    what: &str,
    problems: &mut Vec<String>,
) -> BTreeMap<String, Option<String>> {
    match v {
        Value::Null => BTreeMap::new(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k.clone(), Some(s.clone())),
                Value::Null => (k.clone(), None),
                other => {
                    problems.push(format!("{what}.{k} is not a string: {other}"));
                    (k.clone(), None)
                }
            })
            .collect(),
        other => {
            problems.push(format!("{what} is not an object: {other}"));
            BTreeMap::new()
        }
    }
}

/// The API server's label value check, from the crate the agent and the policy share.
fn valid_label_value(v: &str) -> bool {
    vocab::names::is_label_value(v)
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Instant::now();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let query = parse_query(&uri);
    let path = uri.path().to_string();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();

    // Record on arrival: a request whose client gives up during an injected delay is
    // dropped mid-handler and keeps status 0 ("no answer was sent").
    let (index, fault) = {
        let mut guard = lock(&inner);
        guard.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: parsed.clone(),
            status: 0,
            received,
        });
        // Faults apply to PATCHes only (the agent's writes), from the queue of their kind.
        let fault = match (method == Method::PATCH, is_lease_path(&path)) {
            (true, false) => guard.faults.pop_front(),
            (true, true) => guard.lease_faults.pop_front(),
            (false, _) => None,
        };
        (guard.requests.len() - 1, fault)
    };
    if let Some(Fault::Delay(d)) = fault {
        tokio::time::sleep(d).await;
    }

    let mut guard = lock(&inner);
    let node_path = format!("/api/v1/nodes/{}", guard.node);
    let mut problems = Vec::new();
    let (code, response) = if let Some(Fault::Status(code)) = fault {
        (code, status_body(code, "injected by the fake API server"))
    } else if is_lease_path(&path) {
        match (lease_key(&path), method.clone()) {
            (None, _) => {
                problems.push(format!("malformed Lease path {path}"));
                (404, status_body(404, "not found"))
            }
            (Some(key), Method::GET) => match guard.leases.get(&key) {
                Some(l) => (200, l.clone()),
                None => (404, status_body(404, "lease not found")),
            },
            (Some(key), Method::PATCH) if content_type == "application/apply-patch+yaml" => {
                lease_apply(&mut guard, key, &query, parsed.as_ref(), &mut problems)
            }
            (Some(_), m) => {
                problems.push(format!(
                    "unexpected {m} on a Lease, content-type {content_type:?} (the agent only applies)"
                ));
                (405, status_body(405, "method not allowed"))
            }
        }
    } else if path != node_path {
        problems.push(format!("unexpected path {path} (want {node_path})"));
        (404, status_body(404, "not found"))
    } else if method == Method::GET {
        (200, node_json(&guard))
    } else if method == Method::PATCH && content_type == "application/apply-patch+yaml" {
        if query.get("fieldManager").map(String::as_str) != Some(FIELD_MANAGER) {
            problems.push(format!(
                "apply without fieldManager={FIELD_MANAGER}: {query:?}"
            ));
        }
        if query.get("force").map(String::as_str) != Some("true") {
            problems.push(format!("apply without force=true: {query:?}"));
        }
        match &parsed {
            None => problems.push("apply body is not JSON".into()),
            Some(b) => {
                if b["apiVersion"] != "v1" || b["kind"] != "Node" {
                    problems.push(format!("apply body is not a v1 Node: {b}"));
                }
                if b["metadata"]["name"] != json!(guard.node) {
                    problems.push(format!(
                        "apply body names another node: {}",
                        b["metadata"]["name"]
                    ));
                }
                let labels = string_map(&b["metadata"]["labels"], "labels", &mut problems);
                let annotations =
                    string_map(&b["metadata"]["annotations"], "annotations", &mut problems);
                for (k, v) in &labels {
                    match v {
                        Some(v) if valid_label_value(v) => {}
                        other => problems.push(format!("invalid label value {k}={other:?}")),
                    }
                }
                for (k, v) in &annotations {
                    if let Some(v) = v
                        && k.ends_with("/probe")
                        && serde_json::from_str::<Value>(v).is_err()
                    {
                        problems.push(format!("annotation {k} is not JSON: {v}"));
                    }
                }
                if problems.is_empty() {
                    // Server-side apply for one manager: fields it owned and left out go away.
                    let inner = &mut *guard;
                    let old_owned = std::mem::take(&mut inner.owned);
                    for key in old_owned {
                        match (key.strip_prefix("label:"), key.strip_prefix("annotation:")) {
                            (Some(k), _) if !labels.contains_key(k) => {
                                inner.labels.remove(k);
                            }
                            (_, Some(k)) if !annotations.contains_key(k) => {
                                inner.annotations.remove(k);
                            }
                            _ => {}
                        }
                    }
                    for (k, v) in labels {
                        inner.labels.insert(k.clone(), v.unwrap_or_default());
                        inner.owned.insert(format!("label:{k}"));
                    }
                    for (k, v) in annotations {
                        inner.annotations.insert(k.clone(), v.unwrap_or_default());
                        inner.owned.insert(format!("annotation:{k}"));
                    }
                }
            }
        }
        if problems.is_empty() {
            (200, node_json(&guard))
        } else {
            (400, status_body(400, &problems.join("; ")))
        }
    } else if method == Method::PATCH && content_type == "application/merge-patch+json" {
        match &parsed {
            None => problems.push("merge patch body is not JSON".into()),
            Some(b) => {
                let labels = string_map(&b["metadata"]["labels"], "labels", &mut problems);
                let annotations =
                    string_map(&b["metadata"]["annotations"], "annotations", &mut problems);
                let inner = &mut *guard;
                for (k, v) in labels {
                    match v {
                        Some(v) => inner.labels.insert(k, v),
                        None => inner.labels.remove(&k),
                    };
                }
                for (k, v) in annotations {
                    match v {
                        Some(v) => inner.annotations.insert(k, v),
                        None => inner.annotations.remove(&k),
                    };
                }
            }
        }
        if problems.is_empty() {
            (200, node_json(&guard))
        } else {
            (400, status_body(400, &problems.join("; ")))
        }
    } else {
        problems.push(format!(
            "unexpected {method} {path} content-type {content_type:?}"
        ));
        (405, status_body(405, "method not allowed"))
    };

    guard.violations.extend(problems);
    guard.requests[index].status = code;
    drop(guard);
    reply(code, response)
}
