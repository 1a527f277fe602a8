//! Host-side harness: runs the built policy `.wasm` the way policy-server and `kwctl run` do
//! (waPC over wasmtime, WASI preview 1), answering Kubernetes host calls from the same replay
//! session files e2e.bats hands to `kwctl run --replay-host-capabilities-interactions`.
//!
//! A workspace crate (`crates/test-harness`, library name `harness`): the policy's integration
//! tests, `benches/policy.rs` and `examples/evaluate.rs` take it as a dev-dependency.
//!
//! ```ignore
//! let policy = harness::Policy::release()?;          // compiles the module once
//! let instance = policy.instance()?;                 // warm waPC host, reuse across calls
//! let session = harness::Session::load(harness::data_path("sessions/nodes-capable.yml"))?;
//! let out = instance.validate(&request, &json!({"gate": {"mode": "enabled"}}), Some(&session));
//! assert!(out.allowed());
//! ```
//!
//! The `.wasm` is NOT built here. A test process that runs `cargo build` while `cargo test` (or
//! `cargo bench`) holds the build-directory lock blocks forever, and a separate target dir would
//! mean a second full build. `make policy.wasm` (and `.ci/run`) build the module first; the
//! harness fails with that instruction when it is missing, and refuses a module older than
//! `src/` so a test never silently exercises stale code (override: HYPERV_LAYERED_ALLOW_STALE_WASM=1).
//!
//! Paths: `$CARGO_TARGET_DIR` (default `<repo>/target`) `/wasm32-wasip1/release/hyperv_layered.wasm`;
//! `HYPERV_LAYERED_WASM=<file>` runs another module instead (e.g. `annotated-policy.wasm`).

pub mod admission;
pub mod session;

pub use session::{CallbackRequest, Exchange, ReplayFailure, Replayer, Response, Session};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use json_patch::Patch;
use serde_json::{Value, json};
use wapc::{WapcHost, WasiParams};
use wasmtime_provider::{
    EpochDeadlines, WasmtimeEngineProviderBuilder, WasmtimeEngineProviderPre, wasmtime,
};

/// The workspace root: this crate lives at `<repo>/crates/test-harness`.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// `$CARGO_TARGET_DIR` when set (relative paths are taken from the repo root, as cargo does when
/// run there), else `<repo>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// The release module `cargo build --release --target wasm32-wasip1 --lib -p hyperv-layered` writes,
/// or `$HYPERV_LAYERED_WASM`.
pub fn policy_wasm_path() -> PathBuf {
    match std::env::var_os("HYPERV_LAYERED_WASM") {
        Some(p) => repo_root().join(p),
        None => target_dir().join("wasm32-wasip1/release/hyperv_layered.wasm"),
    }
}

/// The floor policy module (`cargo build --release --target wasm32-wasip1 -p floor-policy`).
pub fn floor_wasm_path() -> PathBuf {
    target_dir().join("wasm32-wasip1/release/floor_policy.wasm")
}

/// `<repo>/tests/data/<rel>`.
pub fn data_path(rel: impl AsRef<Path>) -> PathBuf {
    repo_root().join("tests/data").join(rel)
}

/// Reads a JSON fixture.
pub fn load_json(path: impl AsRef<Path>) -> Result<Value> {
    let path = path.as_ref();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Epoch interruption is on in policy-server by default (timeout protection), and it costs a
/// check on every loop back-edge and call, so the harness pays it too. Nothing ever increments
/// the epoch here, so these deadlines are never reached.
const NEVER: EpochDeadlines = EpochDeadlines {
    wapc_init: 1 << 40,
    wapc_func: 1 << 40,
};

/// A compiled policy module. Compile once, then take as many instances as needed.
pub struct Policy {
    pub path: PathBuf,
    /// Size of the `.wasm` file in bytes.
    pub size: u64,
    /// `wasmtime::Module::new` time (Cranelift, no wasmtime cache).
    pub compile_time: Duration,
    pre: WasmtimeEngineProviderPre,
    /// `(apiVersion, kind)` the policy may read; `None` = no check.
    allow_list: Option<Arc<BTreeSet<(String, String)>>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("compile_time", &self.compile_time)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Compiles a `.wasm` (or `.wat`) file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| {
            anyhow!(
                "cannot read policy module {}: {e}\n\
                 Build it first: `make policy.wasm` (hyperv-layered) or \
                 `cargo build --release --target wasm32-wasip1 -p floor-policy` (floor). \
                 The harness does not run cargo itself: it would deadlock on the build lock \
                 held by `cargo test`.",
                path.display()
            )
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// Compiles module bytes (binary wasm, or WAT text: wasmtime is built with `wat`).
    pub fn from_bytes(name: impl AsRef<Path>, bytes: &[u8]) -> Result<Self> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        // wasmtime 48 has its own error type (not std::error::Error), hence map_err, not context.
        let engine = wasmtime::Engine::new(&config)
            .map_err(|e| anyhow!("cannot create wasmtime engine: {e:?}"))?;
        let start = Instant::now();
        let module = wasmtime::Module::new(&engine, bytes)
            .map_err(|e| anyhow!("cannot compile {}: {e:?}", name.as_ref().display()))?;
        let compile_time = start.elapsed();
        let pre = WasmtimeEngineProviderBuilder::new()
            .engine(engine)
            .module(module)
            .wasi_params(WasiParams::default())
            .build_pre()
            .with_context(|| format!("cannot link {}", name.as_ref().display()))?;
        Ok(Self {
            path: name.as_ref().to_path_buf(),
            size: bytes.len() as u64,
            compile_time,
            pre,
            allow_list: None,
        })
    }

    /// hyperv-layered's release module, checked for staleness against `src/`, with the
    /// context-aware allow-list from `metadata.yml` when that file exists (what
    /// `kwctl run --allow-context-aware annotated-policy.wasm` enforces).
    pub fn release() -> Result<Self> {
        let path = policy_wasm_path();
        if std::env::var_os("HYPERV_LAYERED_WASM").is_none() {
            ensure_fresh(&path, &module_inputs("POLICY_INPUTS")?)?;
        }
        let policy = Self::load(&path)?;
        let metadata = repo_root().join("metadata.yml");
        if metadata.exists() {
            let resources = context_aware_resources(&metadata)?;
            Ok(policy.with_context_aware_resources(resources))
        } else {
            Ok(policy)
        }
    }

    /// The floor policy's release module.
    pub fn floor() -> Result<Self> {
        let path = floor_wasm_path();
        ensure_fresh(&path, &module_inputs("FLOOR_INPUTS")?)?;
        Self::load(&path)
    }

    /// Restricts Kubernetes reads to these `(apiVersion, kind)` pairs, like policy-evaluator's
    /// `can_access_kubernetes_resource`: anything else is answered with its "Policy has not been
    /// granted access ..." error and recorded as a replay failure.
    pub fn with_context_aware_resources(
        mut self,
        resources: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        self.allow_list = Some(Arc::new(resources.into_iter().collect()));
        self
    }

    /// A fresh, initialized waPC host (`wapc_init` has run). Reuse it: this is the warm instance
    /// policy-server keeps per policy.
    pub fn instance(&self) -> Result<Instance> {
        let provider = self
            .pre
            .rehydrate(Some(NEVER))
            .context("cannot instantiate module")?;
        let state = Arc::new(Mutex::new(HostState {
            allow_list: self.allow_list.clone(),
            ..HostState::default()
        }));
        let cb_state = Arc::clone(&state);
        let callback = move |_id: u64,
                             binding: &str,
                             namespace: &str,
                             operation: &str,
                             payload: &[u8]|
              -> std::result::Result<
            Vec<u8>,
            Box<dyn std::error::Error + Send + Sync>,
        > {
            lock(&cb_state)
                .host_call(binding, namespace, operation, payload)
                .map_err(Into::into)
        };
        let host = WapcHost::new(Box::new(provider), Some(Box::new(callback)))
            .with_context(|| format!("waPC init of {} failed", self.path.display()))?;
        Ok(Instance { host, state })
    }
}

/// The host-call side of one instance.
#[derive(Default)]
struct HostState {
    replayer: Replayer,
    host_calls: usize,
    log_calls: usize,
    /// The guest's log records of the current call (`kubewarden/tracing/log` payloads).
    logs: Vec<Value>,
    allow_list: Option<Arc<BTreeSet<(String, String)>>>,
}

impl HostState {
    /// Routes a guest host call like policy-evaluator's `host_callback`
    /// (`crates/policy-evaluator/src/runtimes/callback.rs`); the `Err` text reaches the guest.
    fn host_call(
        &mut self,
        binding: &str,
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> std::result::Result<Vec<u8>, String> {
        if binding == "kubewarden" && namespace == "tracing" {
            // Policy logging: not a lookup, not counted, output dropped.
            self.log_calls += 1;
            return if operation == "log" {
                self.logs.push(
                    serde_json::from_slice(payload).unwrap_or_else(
                        |_| json!({"<not JSON>": String::from_utf8_lossy(payload)}),
                    ),
                );
                Ok(Vec::new())
            } else {
                Err(format!("unknown operation: {operation}"))
            };
        }
        self.host_calls += 1;
        if binding != "kubewarden" || namespace != "kubernetes" {
            self.replayer.failures.push(ReplayFailure::Unsupported {
                binding: binding.to_owned(),
                namespace: namespace.to_owned(),
                operation: operation.to_owned(),
            });
            return Err(format!(
                "harness: host capability {binding}/{namespace}/{operation} is not served"
            ));
        }
        let request = match CallbackRequest::from_guest(operation, payload) {
            Ok(r) => r,
            Err(error) => {
                self.replayer.failures.push(ReplayFailure::BadRequest {
                    operation: operation.to_owned(),
                    error: error.clone(),
                    payload: String::from_utf8_lossy(payload).into_owned(),
                });
                return Err(error);
            }
        };
        if let (Some(allowed), Some((api_version, kind))) = (&self.allow_list, request.resource())
            && !allowed.contains(&(api_version.to_owned(), kind.to_owned()))
        {
            self.replayer.failures.push(ReplayFailure::NotAllowed {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
            });
            return Err(format!(
                "Policy has not been granted access to Kubernetes {api_version}/{kind} resources. The violation has been reported."
            ));
        }
        self.replayer.answer(request)
    }
}

fn lock(state: &Mutex<HostState>) -> MutexGuard<'_, HostState> {
    // A panic inside a host call poisons the lock; the state is still usable for reporting.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// One raw waPC call and what the host saw during it.
#[derive(Debug)]
pub struct RawCall {
    /// The guest's reply, or the waPC error text (`wapc::errors::Error` Display).
    pub result: std::result::Result<Vec<u8>, String>,
    /// Kubernetes (and other non-logging) host calls made during the call.
    pub host_calls: usize,
    /// The log records the guest sent during the call.
    pub logs: Vec<Value>,
    pub replay_failures: Vec<ReplayFailure>,
}

/// A warm policy instance.
pub struct Instance {
    host: WapcHost,
    state: Arc<Mutex<HostState>>,
}

impl Instance {
    /// Calls a guest function with `session` armed from its first exchange. Leftover exchanges
    /// are recorded as failures when the call returns.
    pub fn call(&self, operation: &str, payload: &[u8], session: Option<&Session>) -> RawCall {
        {
            let mut st = lock(&self.state);
            st.replayer = Replayer::new(session.cloned());
            st.host_calls = 0;
            st.logs.clear();
        }
        let result = self
            .host
            .call(operation, payload)
            .map_err(|e| e.to_string());
        let mut st = lock(&self.state);
        st.replayer.finish();
        RawCall {
            result,
            host_calls: st.host_calls,
            logs: std::mem::take(&mut st.logs),
            replay_failures: std::mem::take(&mut st.replayer.failures),
        }
    }

    /// Evaluates one admission request and panics, with every mismatch spelled out, when the
    /// session was not replayed exactly (a mismatch, an extra call, a leftover exchange) or the
    /// request is one kwctl would refuse. A guest error is NOT a panic: see `Outcome::guest_error`.
    pub fn validate(
        &self,
        request_json: &Value,
        settings: &Value,
        session: Option<&Session>,
    ) -> Outcome {
        let outcome = self
            .try_validate(request_json, settings, session)
            .unwrap_or_else(|e| panic!("{e:#}"));
        if let Err(e) = session::check(&outcome.replay_failures) {
            let name = session.map_or("<no session>", |s| s.name.as_str());
            panic!("replay of {name}: {e}");
        }
        outcome
    }

    /// Like `validate`, but replay failures are returned in the outcome instead of panicking.
    /// `Err` only when the request cannot be turned into what the host sends the guest.
    pub fn try_validate(
        &self,
        request_json: &Value,
        settings: &Value,
        session: Option<&Session>,
    ) -> Result<Outcome> {
        let request = admission::normalize_request(request_json)?;
        let payload = serde_json::to_vec(&json!({"request": &request, "settings": settings}))?;
        let raw = self.call("validate", &payload, session);
        let original = request.get("object").filter(|o| !o.is_null());
        let uid = request.get("uid").and_then(Value::as_str).unwrap_or("");
        let admission = admission::admission_response(uid, original, &raw.result);
        let (response, guest_error) = match &raw.result {
            Ok(bytes) => (
                serde_json::from_slice(bytes)
                    .unwrap_or_else(|_| json!({"<not JSON>": String::from_utf8_lossy(bytes)})),
                None,
            ),
            Err(e) => (Value::Null, Some(e.clone())),
        };
        let patch = match (response.get("mutated_object"), original) {
            (Some(mutated), Some(original)) if !mutated.is_null() => {
                admission::mutation_patch(original, mutated)
            }
            _ => Patch(Vec::new()),
        };
        Ok(Outcome {
            request,
            response,
            patch,
            host_calls: raw.host_calls,
            logs: raw.logs,
            guest_error,
            replay_failures: raw.replay_failures,
            admission,
        })
    }

    /// `validate_settings` as policy-server runs it at start-up (`runtimes/wapc/runtime.rs`):
    /// the guest's `{valid, message}`, or `{valid: false, message}` built the way the host does
    /// when the guest errors (e.g. settings that do not deserialize).
    pub fn validate_settings(&self, settings: &Value) -> Value {
        let payload = serde_json::to_vec(settings).expect("a JSON value always serializes");
        match self.host.call("validate_settings", &payload) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| json!({"valid": false, "message": format!("error: {e:?}")})),
            Err(err) => json!({
                "valid": false,
                "message": format!("Error invoking settings validation callback: {err:?}"),
            }),
        }
    }

    /// The guest's `protocol_version` reply (`"v1"` for SDK 0.17).
    pub fn protocol_version(&self) -> Result<Value> {
        let bytes = self
            .host
            .call("protocol_version", &[])
            .map_err(|e| anyhow!("protocol_version failed: {e}"))?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// The result of one `validate`.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The AdmissionRequest as the guest received it (after the host's normalization).
    pub request: Value,
    /// The guest's ValidationResponse (`accepted`, `message`, `code`, `mutated_object`,
    /// `audit_annotations`, `warnings`); `Null` when the guest errored.
    pub response: Value,
    /// `json_patch::diff(request.object, mutated_object)`; empty when there is no mutation.
    pub patch: Patch,
    /// Kubernetes host calls made (logging excluded).
    pub host_calls: usize,
    /// The guest's log records (`kubewarden/tracing/log`), in order.
    pub logs: Vec<Value>,
    /// The waPC error when `validate` failed in the guest (SDK error, panic/trap), as
    /// policy-evaluator sees it: e.g. "Guest call failure: error invoking host capability ...".
    pub guest_error: Option<String>,
    pub replay_failures: Vec<ReplayFailure>,
    /// What `kwctl run` prints / policy-server answers (see `admission::admission_response`).
    pub admission: Value,
}

impl Outcome {
    /// The final admission decision, guest errors included (they deny with code 500).
    pub fn allowed(&self) -> bool {
        self.admission["allowed"].as_bool() == Some(true)
    }

    pub fn mutated_object(&self) -> Option<&Value> {
        self.response.get("mutated_object").filter(|v| !v.is_null())
    }

    /// `status.message` of the admission response (rejection reason, or the 500 text).
    pub fn message(&self) -> Option<&str> {
        self.admission["status"]["message"].as_str()
    }

    pub fn warnings(&self) -> Vec<String> {
        self.response["warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `request.object` with the patch applied: what the API server would persist.
    pub fn patched_object(&self) -> Result<Value> {
        let mut obj = self.request.get("object").cloned().unwrap_or(Value::Null);
        json_patch::patch(&mut obj, &self.patch).context("patch does not apply")?;
        Ok(obj)
    }
}

/// Refuses a module older than any file under `sources`.
/// A module's inputs as the Makefile lists them (`POLICY_INPUTS := ...`): files and folders,
/// relative to the repository root. One list, so a change to `vocab/` or a manifest can never
/// leave a stale module that the tests then run silently.
pub fn module_inputs(variable: &str) -> Result<Vec<PathBuf>> {
    let makefile = std::fs::read_to_string(repo_root().join("Makefile"))
        .context("cannot read the Makefile")?;
    let prefix = format!("{variable} :=");
    let line = makefile
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .with_context(|| format!("the Makefile has no `{prefix}` line"))?;
    Ok(line
        .split_whitespace()
        .map(|p| repo_root().join(p))
        .collect())
}

fn ensure_fresh(wasm: &Path, sources: &[PathBuf]) -> Result<()> {
    if std::env::var_os("HYPERV_LAYERED_ALLOW_STALE_WASM").is_some() {
        return Ok(());
    }
    let Ok(built) = std::fs::metadata(wasm).and_then(|m| m.modified()) else {
        return Ok(()); // missing: `Policy::load` explains how to build it
    };
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut stack: Vec<PathBuf> = sources.to_vec();
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        } else if let Ok(m) = meta.modified()
            && newest.as_ref().is_none_or(|(t, _)| m > *t)
        {
            newest = Some((m, p));
        }
    }
    if let Some((t, p)) = newest
        && t > built
    {
        let rel = |p: &Path| {
            p.strip_prefix(repo_root())
                .unwrap_or(p)
                .display()
                .to_string()
        };
        bail!(
            "{} is older than {}: rebuild it (`make policy.wasm floor.wasm`), \
             or set HYPERV_LAYERED_ALLOW_STALE_WASM=1 to use it anyway",
            rel(wasm),
            rel(&p)
        );
    }
    Ok(())
}

/// `contextAwareResources` of a Kubewarden `metadata.yml`.
pub fn context_aware_resources(metadata: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(metadata)
        .with_context(|| format!("cannot read {}", metadata.display()))?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not YAML", metadata.display()))?;
    let Some(list) = doc.get("contextAwareResources") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_sequence()
        .ok_or_else(|| anyhow!("contextAwareResources is not a list"))?;
    list.iter()
        .map(|r| {
            let field = |k: &str| {
                r.get(k)
                    .and_then(serde_yaml::Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("contextAwareResources entry without {k}: {r:?}"))
            };
            Ok((field("apiVersion")?, field("kind")?))
        })
        .collect()
}
