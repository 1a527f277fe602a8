//! Replay sessions: the YAML files `kwctl run --replay-host-capabilities-interactions` reads,
//! parsed and matched the way kwctl does, so e2e.bats and the Rust tests share one set of fixtures.
//!
//! Format, from kubewarden/kubewarden-controller `crates/kwctl/src/callback_handler/proxy.rs`
//! (`struct Exchange`, `enum Response`, `produce_recorded_response`):
//!
//! ```yaml
//! - type: Exchange            # Exchange is a struct with #[serde(tag = "type")]
//!   request: |                # a *string*: serde_yaml of policy-evaluator's CallbackRequestType
//!     !KubernetesListResourceAll
//!     api_version: v1
//!     kind: Node
//!     label_selector: mshv.node.hyperv-layered.io/capable=true
//!     field_selector: null
//!     field_masks:            # Option<BTreeSet<String>>: a YAML sequence (or null)
//!     - metadata.name
//!   response:                 # enum Response, #[serde(tag = "type")]
//!     type: Success           # Success { payload: String } | Error { message: String }
//!     payload: '{"items":[]}'
//! ```
//!
//! kwctl replay semantics mirrored here:
//! - exchanges are consumed strictly in order (`VecDeque::pop_front`), one per host call;
//! - the recorded request string is parsed into `CallbackRequestType` and compared with `==` to the
//!   request built from the guest's JSON, so field order and YAML layout do not matter but every
//!   value does (a `BTreeSet` for `field_masks`: order-insensitive, duplicates collapse);
//! - a mismatch still consumes the exchange and answers the guest with the error
//!   "Replay error: unexpected request. Was expecting {expected:?}, got {got:?} instead";
//! - a call after the last exchange gets "the list of recorded responses is empty";
//! - `Error { message }` becomes an `Err` to the guest; leftover exchanges only produce a `warn!`
//!   in kwctl ("Some of the recorded exchanges have not been replayed"). Here both a mismatch, an
//!   extra call and a leftover are recorded as failures so a test cannot pass on a stale fixture.
//!
//! Variant and field names: `crates/policy-evaluator/src/callback_requests.rs` (now re-exported
//! from the SDK) and the newest constructors in policy-evaluator (e.g. its CEL `kw.k8s` extension,
//! which builds `KubernetesGetResource { .., disable_cache, field_masks }` and
//! `KubernetesListResourceAll { .., field_selector, field_masks }`). `KubernetesCanI` follows the
//! variant `{ subject_access_review, disable_cache }` (SDK `CanIRequest`); no recorded can_i
//! session with the newest kwctl was available to confirm it.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kubewarden_policy_sdk::host_capabilities::kubernetes::{
    CanIRequest, GetResourceRequest, ListAllResourcesRequest, ListResourcesByNamespaceRequest,
    SubjectAccessReview,
};
use serde::{Deserialize, Serialize};

/// The Kubernetes subset of policy-evaluator's `CallbackRequestType`, with the same variant and
/// field names so `serde_yaml` reads the `!Tag` form kwctl writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallbackRequest {
    KubernetesListResourceNamespace {
        api_version: String,
        kind: String,
        namespace: String,
        label_selector: Option<String>,
        field_selector: Option<String>,
        // Older kwctl recordings predate field masks; serde reads a missing Option as None,
        // which is also what kwctl does with them.
        #[serde(default)]
        field_masks: Option<BTreeSet<String>>,
    },
    KubernetesListResourceAll {
        api_version: String,
        kind: String,
        label_selector: Option<String>,
        field_selector: Option<String>,
        #[serde(default)]
        field_masks: Option<BTreeSet<String>>,
    },
    KubernetesGetResource {
        api_version: String,
        kind: String,
        name: String,
        namespace: Option<String>,
        disable_cache: bool,
        #[serde(default)]
        field_masks: Option<BTreeSet<String>>,
    },
    KubernetesCanI {
        // Boxed: it is several times larger than the other variants.
        subject_access_review: Box<SubjectAccessReview>,
        disable_cache: bool,
    },
}

impl CallbackRequest {
    /// The waPC operation and payload a guest sends for this request (the inverse of
    /// [`CallbackRequest::from_guest`]); `None` for `can_i`, which no session here records.
    /// The benchmark's floor policy replays a session's requests with it.
    pub fn to_guest(&self) -> Option<(&'static str, Vec<u8>)> {
        let (operation, body) = match self {
            Self::KubernetesListResourceNamespace {
                api_version,
                kind,
                namespace,
                label_selector,
                field_selector,
                field_masks,
            } => (
                "list_resources_by_namespace",
                serde_json::json!({"api_version": api_version, "kind": kind,
                    "namespace": namespace, "label_selector": label_selector,
                    "field_selector": field_selector, "field_masks": field_masks}),
            ),
            Self::KubernetesListResourceAll {
                api_version,
                kind,
                label_selector,
                field_selector,
                field_masks,
            } => (
                "list_resources_all",
                serde_json::json!({"api_version": api_version, "kind": kind,
                    "label_selector": label_selector, "field_selector": field_selector,
                    "field_masks": field_masks}),
            ),
            Self::KubernetesGetResource {
                api_version,
                kind,
                name,
                namespace,
                disable_cache,
                field_masks,
            } => (
                "get_resource",
                serde_json::json!({"api_version": api_version, "kind": kind, "name": name,
                    "namespace": namespace, "disable_cache": disable_cache,
                    "field_masks": field_masks}),
            ),
            Self::KubernetesCanI { .. } => return None,
        };
        Some((operation, serde_json::to_vec(&body).ok()?))
    }

    /// Builds the request from what the guest sent to `kubewarden/kubernetes/<operation>`,
    /// deserializing into the SDK's request structs exactly as policy-evaluator does
    /// (`crates/policy-evaluator/src/runtimes/callback.rs`, `host_callback`): unknown JSON fields
    /// are ignored, a missing required field is an error the guest receives.
    pub fn from_guest(operation: &str, payload: &[u8]) -> Result<Self, String> {
        fn parse<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, String> {
            serde_json::from_slice(payload).map_err(|e| e.to_string())
        }
        Ok(match operation {
            "list_resources_by_namespace" => {
                let r: ListResourcesByNamespaceRequest = parse(payload)?;
                Self::KubernetesListResourceNamespace {
                    api_version: r.api_version,
                    kind: r.kind,
                    namespace: r.namespace,
                    label_selector: r.label_selector,
                    field_selector: r.field_selector,
                    field_masks: r.field_masks,
                }
            }
            "list_resources_all" => {
                let r: ListAllResourcesRequest = parse(payload)?;
                Self::KubernetesListResourceAll {
                    api_version: r.api_version,
                    kind: r.kind,
                    label_selector: r.label_selector,
                    field_selector: r.field_selector,
                    field_masks: r.field_masks,
                }
            }
            "get_resource" => {
                let r: GetResourceRequest = parse(payload)?;
                Self::KubernetesGetResource {
                    api_version: r.api_version,
                    kind: r.kind,
                    name: r.name,
                    namespace: r.namespace,
                    disable_cache: r.disable_cache,
                    field_masks: r.field_masks,
                }
            }
            "can_i" => {
                let r: CanIRequest = parse(payload)?;
                Self::KubernetesCanI {
                    subject_access_review: Box::new(r.subject_access_review),
                    disable_cache: r.disable_cache,
                }
            }
            other => return Err(format!("unknown operation: {other}")),
        })
    }

    /// `(apiVersion, kind)` for the context-aware allow-list check; `can_i` has none.
    pub fn resource(&self) -> Option<(&str, &str)> {
        match self {
            Self::KubernetesListResourceNamespace {
                api_version, kind, ..
            }
            | Self::KubernetesListResourceAll {
                api_version, kind, ..
            }
            | Self::KubernetesGetResource {
                api_version, kind, ..
            } => Some((api_version, kind)),
            Self::KubernetesCanI { .. } => None,
        }
    }

    /// The `request: |` text kwctl would record for this request.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("<unprintable request: {e}>"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Response {
    Success { payload: String },
    Error { message: String },
}

/// One recorded exchange, already parsed.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub request: CallbackRequest,
    pub response: Response,
}

/// The on-disk shape: kwctl's `Exchange` is a struct tagged `type: Exchange` whose request is a
/// YAML document inside a string.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
struct RawExchange {
    request: String,
    response: Response,
}

/// A parsed replay session. Immutable and cheap to clone (the exchanges are shared), because
/// every `validate` call replays it from the first exchange, 20,000 times in the benchmark.
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub name: String,
    pub exchanges: Arc<Vec<Exchange>>,
    /// Answer each call with the first exchange whose request matches, in any order and any
    /// number of times, with no leftover check: for fuzzing, where which calls a case makes is
    /// itself random. kwctl has no such mode; e2e cases always replay strictly.
    pub any_order: bool,
}

impl Session {
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read replay session {}", path.display()))?;
        Self::parse(&path.display().to_string(), &text)
    }

    pub fn parse(name: &str, yaml: &str) -> Result<Self> {
        let raw: Vec<RawExchange> = serde_yaml::from_str(yaml)
            .with_context(|| format!("{name}: not a list of `type: Exchange` entries"))?;
        let exchanges = raw
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let request: CallbackRequest =
                    serde_yaml::from_str(&e.request).with_context(|| {
                        format!(
                            "{name}: exchange #{i}: request is not a supported \
                         !Kubernetes* CallbackRequestType:\n{}",
                            e.request
                        )
                    })?;
                Ok(Exchange {
                    request,
                    response: e.response,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            name: name.to_owned(),
            exchanges: Arc::new(exchanges),
            any_order: false,
        })
    }

    pub fn new(name: &str, exchanges: Vec<Exchange>) -> Self {
        Self {
            name: name.to_owned(),
            exchanges: Arc::new(exchanges),
            any_order: false,
        }
    }

    /// The same exchanges, answered in any order (see `any_order`).
    pub fn in_any_order(mut self) -> Self {
        self.any_order = true;
        self
    }

    /// A session in kwctl's on-disk format (what `--record-host-capabilities-interactions` writes).
    pub fn to_yaml(&self) -> Result<String> {
        let raw: Vec<RawExchange> = self
            .exchanges
            .iter()
            .map(|e| RawExchange {
                request: e.request.to_yaml(),
                response: e.response.clone(),
            })
            .collect();
        Ok(serde_yaml::to_string(&raw)?)
    }
}

/// Why a host call did not get the answer the session had for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayFailure {
    /// The guest asked for something other than the next exchange's request.
    Mismatch {
        index: usize,
        expected: CallbackRequest,
        got: CallbackRequest,
    },
    /// The guest made a Kubernetes call after the session ran out (or without any session).
    Extra { index: usize, got: CallbackRequest },
    /// The guest's request JSON did not deserialize into the SDK request struct.
    BadRequest {
        operation: String,
        error: String,
        payload: String,
    },
    /// A call the harness does not serve (oci, net, crypto, unknown binding/operation).
    Unsupported {
        binding: String,
        namespace: String,
        operation: String,
    },
    /// The policy's metadata does not list the kind it tried to read.
    NotAllowed { api_version: String, kind: String },
    /// Exchanges the guest never asked for.
    Leftover {
        index: usize,
        expected: CallbackRequest,
    },
}

impl fmt::Display for ReplayFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mismatch {
                index,
                expected,
                got,
            } => write!(
                f,
                "host call #{index} does not match the session.\n--- session expects:\n{}--- policy sent:\n{}",
                expected.to_yaml(),
                got.to_yaml()
            ),
            Self::Extra { index, got } => write!(
                f,
                "host call #{index} has no exchange left in the session.\n--- policy sent:\n{}",
                got.to_yaml()
            ),
            Self::BadRequest {
                operation,
                error,
                payload,
            } => write!(
                f,
                "kubernetes/{operation}: request JSON rejected by the SDK struct: {error}\n--- payload: {payload}"
            ),
            Self::Unsupported {
                binding,
                namespace,
                operation,
            } => write!(
                f,
                "host call {binding}/{namespace}/{operation} is not served by the harness"
            ),
            Self::NotAllowed { api_version, kind } => write!(
                f,
                "policy read {api_version}/{kind}, which metadata.yml contextAwareResources does not grant"
            ),
            Self::Leftover { index, expected } => write!(
                f,
                "session exchange #{index} was never requested.\n--- session expects:\n{}",
                expected.to_yaml()
            ),
        }
    }
}

/// Replays one session for one `validate` call.
#[derive(Debug, Default)]
pub struct Replayer {
    session: Option<Session>,
    cursor: usize,
    pub failures: Vec<ReplayFailure>,
}

impl Replayer {
    pub fn new(session: Option<Session>) -> Self {
        Self {
            session,
            cursor: 0,
            failures: Vec::new(),
        }
    }

    /// Answers one Kubernetes host call as kwctl's replay proxy would, recording any failure.
    /// The `Err` string is what the guest receives (see `host_error_for_guest`). The payload is
    /// copied because the waPC host callback must return an owned buffer.
    pub fn answer(&mut self, got: CallbackRequest) -> Result<Vec<u8>, String> {
        let index = self.cursor;
        // A clone of the shared list (one refcount bump) so `self` stays free to record failures.
        let exchanges = self.session.as_ref().map(|s| Arc::clone(&s.exchanges));
        if self.session.as_ref().is_some_and(|s| s.any_order) {
            let found = exchanges
                .iter()
                .flat_map(|e| e.iter())
                .find(|e| e.request == got);
            return match found.map(|e| &e.response) {
                Some(Response::Success { payload }) => Ok(payload.as_bytes().to_vec()),
                Some(Response::Error { message }) => Err(host_error_for_guest(message)),
                None => {
                    self.failures.push(ReplayFailure::Extra { index, got });
                    Err(host_error_for_guest(
                        "no recorded response for this request",
                    ))
                }
            };
        }
        let Some(exchange) = exchanges.as_ref().and_then(|e| e.get(index)) else {
            self.failures.push(ReplayFailure::Extra { index, got });
            return Err(host_error_for_guest(
                "the list of recorded responses is empty",
            ));
        };
        // kwctl pops the exchange before comparing, so a mismatch consumes it too.
        self.cursor += 1;
        if exchange.request != got {
            let message = format!(
                "Replay error: unexpected request. Was expecting {:?}, got {:?} instead",
                exchange.request, got
            );
            self.failures.push(ReplayFailure::Mismatch {
                index,
                expected: exchange.request.clone(),
                got,
            });
            return Err(host_error_for_guest(&message));
        }
        match &exchange.response {
            Response::Success { payload } => Ok(payload.as_bytes().to_vec()),
            Response::Error { message } => Err(host_error_for_guest(message)),
        }
    }

    /// Records every exchange after the cursor as a failure; returns how many there were.
    pub fn finish(&mut self) -> usize {
        let Some(session) = self.session.as_ref().filter(|s| !s.any_order) else {
            return 0;
        };
        let leftovers: Vec<_> = session.exchanges[self.cursor.min(session.exchanges.len())..]
            .iter()
            .enumerate()
            .map(|(i, e)| ReplayFailure::Leftover {
                index: self.cursor + i,
                expected: e.request.clone(),
            })
            .collect();
        let n = leftovers.len();
        self.failures.extend(leftovers);
        n
    }
}

/// The text the guest's `host_call` error carries when the callback handler fails: policy-evaluator
/// wraps it as `format!("Callback evaluation failure: {e:?}")` (`runtimes/callback.rs`,
/// `send_request_and_wait_for_response`); waPC stores `format!("{e}")` of the host callback's
/// `Err` (wapc 2.2 `ModuleState::do_host_call`) and the guest reads it back via `__host_error`;
/// wapc-guest wraps it as "Host error: ..." and the SDK as
/// "error invoking host capability kubernetes.<op>: Host error: Callback evaluation failure: ...".
pub fn host_error_for_guest(message: &str) -> String {
    format!("Callback evaluation failure: {message}")
}

/// Fails with every replay failure spelled out, both requests shown for mismatches.
pub fn check(failures: &[ReplayFailure]) -> Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    let mut text = format!("{} replay failure(s):\n", failures.len());
    for f in failures {
        text.push_str(&format!("\n* {f}\n"));
    }
    bail!(text)
}
