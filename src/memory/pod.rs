//! Adding the mshv delta to a virt-launcher Pod, where KubeVirt put its own overhead.
//!
//! [`apply`] edits the Pod JSON the way KubeVirt's `ResourceRenderer` placed its overhead
//! (kubevirt/kubevirt@v1.9.0 pkg/virt-controller/services/renderresources.go, the same lines on
//! v1.8.0 shifted by 9 and on main):
//! - `WithMemoryOverhead` (:295-307, no hugepages): the overhead is added to the compute
//!   container's `resources.requests.memory` unless the VMI sets
//!   `spec.domain.resources.overcommitGuestOverhead: true`, and to `resources.limits.memory`
//!   when a limit exists;
//! - `WithHugePages` (:220-261): the `memory` request holds only the overhead (guest memory is
//!   in `hugepages-<size>`) and is set whatever `overcommitGuestOverhead` says; an existing
//!   memory limit gets the overhead too.
//!
//! The delta lands in the same places, and in KubeVirt's own report of its overhead
//! ([`KUBEVIRT_OVERHEAD_ANNOTATION`]) when the Pod carries one. The edit is idempotent: the delta
//! added is recorded in [`ADDED_ANNOTATION`] on every Pod it sizes, and a Pod that already
//! carries it receives only the difference.

use std::fmt;

use serde_json::{Map, Value};

use super::{MemoryError, present, quantity_value};
use crate::quantity::Quantity;

/// The mshv delta [`apply`] added to the Pod, in bytes (written on every Pod it sizes, with or
/// without KubeVirt's report); makes [`apply`] idempotent.
pub const ADDED_ANNOTATION: &str = "hyperv-layered.io/memory-overhead-added-bytes";
/// KubeVirt's own overhead report, `kubevirt.io/memory-overhead-bytes`
/// (`MemoryOverheadAnnotationBytes`, kubevirt/kubevirt@v1.9.0
/// staging/src/kubevirt.io/api/core/v1/types.go:1231): virt-controller writes
/// `strconv.FormatInt(memoryOverhead.Value(), 10)`, its whole overhead in bytes, when the feature
/// gate `VmiMemoryOverheadReport` is on (pkg/virt-controller/services/template.go:550-551 at
/// v1.8.0, :631-632 at v1.9.0, :629-630 on main at d923fdb8). The gate is alpha (off unless
/// listed) in v1.8 (pkg/virt-config/featuregate/active.go:275 at v1.8.0), beta (on unless in
/// `disabledFeatureGates`) in v1.9 (active.go:326 at v1.9.0) and GA, always on, on main
/// (pkg/virt-config/featuregate/inactive.go:252, PR #18708); earlier releases never write it.
/// virt-controller reads it back with `strconv.ParseInt(s, 10, 64)` into the VMI's
/// `status.memory.memoryOverhead` (pkg/virt-controller/watch/vmi/lifecycle.go:1165-1178 on
/// main, :1169 at v1.9.0), so it is kept in step with the delta, in the same format.
pub const KUBEVIRT_OVERHEAD_ANNOTATION: &str = "kubevirt.io/memory-overhead-bytes";

/// What [`apply`] could not do; none of it stopped the edit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportIssue {
    /// [`KUBEVIRT_OVERHEAD_ANNOTATION`] holds something KubeVirt does not write (not an int64 in
    /// decimal), or the delta would take it beyond int64; it was left unchanged.
    KubeVirtReportUnchanged { value: String },
}

impl fmt::Display for ReportIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportIssue::KubeVirtReportUnchanged { value } => write!(
                f,
                "annotation {KUBEVIRT_OVERHEAD_ANNOTATION}: {value} is not an int64 byte count \
                 KubeVirt writes; left unchanged"
            ),
        }
    }
}

/// Adds `delta` to the compute container `spec.containers[compute_index]` (see the module
/// documentation for where), to [`KUBEVIRT_OVERHEAD_ANNOTATION`] when present, and records it
/// in [`ADDED_ANNOTATION`].
///
/// Idempotent: with [`ADDED_ANNOTATION`] = P already on the Pod, `delta − P` is added instead,
/// so a second call changes nothing. Memory values that change are written back as plain
/// integer byte strings; values that do not change keep their text. Nothing is removed.
///
/// Errors (and leaves the Pod untouched) when a memory value or [`ADDED_ANNOTATION`] does not
/// parse, when the container is missing, when the VMI itself carries [`ADDED_ANNOTATION`]
/// (KubeVirt copies VMI annotations to the Pod, so it would fake "already applied"), or when
/// taking back an earlier, larger delta would go below zero. KubeVirt's report never errors:
/// what cannot be done to it is returned as a [`ReportIssue`].
pub fn apply(
    pod: &mut Value,
    compute_index: usize,
    vmi: &Value,
    delta: u64,
) -> Result<Vec<ReportIssue>, MemoryError> {
    let previous = previously_added(pod, vmi)?;
    let adjustment = i128::from(delta) - i128::from(previous);

    // Compute every new value before touching the Pod.
    let memory = new_memory_values(pod, compute_index, into_request(vmi), adjustment)?;
    let (kubevirt_report, issues) = new_kubevirt_report(pod, adjustment);
    check_annotations_writable(pod)?;

    write(pod, compute_index, memory, kubevirt_report, delta)?;
    Ok(issues)
}

/// The new value of [`KUBEVIRT_OVERHEAD_ANNOTATION`] (`None`: absent, or unchanged), read and
/// written as virt-controller does (`strconv.ParseInt(s, 10, 64)`, `strconv.FormatInt`).
fn new_kubevirt_report(pod: &Value, adjustment: i128) -> (Option<String>, Vec<ReportIssue>) {
    let Some(v) = present(
        pod,
        &["metadata", "annotations", KUBEVIRT_OVERHEAD_ANNOTATION],
    ) else {
        return (None, Vec::new());
    };
    let new = v
        .as_str()
        .and_then(go_parse_int64)
        .and_then(|old| i64::try_from(i128::from(old) + adjustment).ok());
    match new {
        Some(_) if adjustment == 0 => (None, Vec::new()),
        Some(n) => (Some(n.to_string()), Vec::new()),
        None => (
            None,
            vec![ReportIssue::KubeVirtReportUnchanged {
                value: v.to_string(),
            }],
        ),
    }
}

/// `strconv.ParseInt(s, 10, 64)`: an optional sign and decimal digits (no `_` in base 10),
/// within int64.
fn go_parse_int64(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Rust's i64 parser takes the same optional sign and digits.
    s.parse().ok()
}

/// The delta an earlier [`apply`] recorded in [`ADDED_ANNOTATION`] on the Pod (0 when absent).
///
/// Errors when the VMI carries [`ADDED_ANNOTATION`] or the Pod's value does not parse.
fn previously_added(pod: &Value, vmi: &Value) -> Result<u64, MemoryError> {
    if present(vmi, &["metadata", "annotations", ADDED_ANNOTATION]).is_some() {
        return Err(MemoryError::ReservedAnnotationOnVmi {
            key: ADDED_ANNOTATION,
        });
    }
    match present(pod, &["metadata", "annotations", ADDED_ANNOTATION]) {
        None => Ok(0),
        Some(v) => byte_count(v).ok_or_else(|| MemoryError::InvalidAnnotation {
            key: ADDED_ANNOTATION,
            value: v.to_string(),
        }),
    }
}

/// Whether the delta goes into the memory request (see the module documentation).
fn into_request(vmi: &Value) -> bool {
    let hugepages = present(vmi, &["spec", "domain", "memory", "hugepages"]).is_some();
    let overcommit = present(
        vmi,
        &["spec", "domain", "resources", "overcommitGuestOverhead"],
    ) == Some(&Value::Bool(true));
    hugepages || !overcommit
}

/// The compute container's memory values that change; `None` for one that stays as it is.
struct NewMemory {
    request: Option<String>,
    limit: Option<String>,
}

/// Reads the compute container's memory request and limit and shifts those that take the
/// delta by `adjustment`. Does not change the Pod.
fn new_memory_values(
    pod: &Value,
    compute_index: usize,
    into_request: bool,
    adjustment: i128,
) -> Result<NewMemory, MemoryError> {
    let base = format!("spec.containers[{compute_index}].resources");
    let container = present(pod, &["spec", "containers"])
        .and_then(Value::as_array)
        .and_then(|c| c.get(compute_index))
        .filter(|c| c.is_object())
        .ok_or(MemoryError::MissingContainer {
            index: compute_index,
        })?;
    let resources = match present(container, &["resources"]) {
        None => None,
        Some(r) if r.is_object() => Some(r),
        Some(_) => {
            return Err(MemoryError::InvalidField {
                path: base,
                expected: "an object",
            });
        }
    };
    let current = |list: &str| -> Result<Option<Quantity>, MemoryError> {
        let path = format!("{base}.{list}.memory");
        match resources.and_then(|r| present(r, &[list])) {
            None => Ok(None),
            Some(l) if !l.is_object() => Err(MemoryError::InvalidField {
                path: format!("{base}.{list}"),
                expected: "an object",
            }),
            Some(l) => match present(l, &["memory"]) {
                None => Ok(None),
                Some(m) => quantity_value(m, &path).map(Some),
            },
        }
    };
    let request = current("requests")?;
    let limit = current("limits")?;
    let new_request = if into_request && adjustment != 0 {
        let old = request.unwrap_or(Quantity::ZERO);
        Some(shifted(
            old,
            adjustment,
            &format!("{base}.requests.memory"),
        )?)
    } else {
        None
    };
    let new_limit = match limit {
        Some(old) if adjustment != 0 => {
            Some(shifted(old, adjustment, &format!("{base}.limits.memory"))?)
        }
        _ => None,
    };
    Ok(NewMemory {
        request: new_request,
        limit: new_limit,
    })
}

/// Errors unless `metadata` and `metadata.annotations` are objects or absent.
fn check_annotations_writable(pod: &Value) -> Result<(), MemoryError> {
    // The annotation map must be writable before anything changes.
    if !matches!(present(pod, &["metadata"]), None | Some(Value::Object(_))) {
        return Err(MemoryError::InvalidField {
            path: "metadata".into(),
            expected: "an object",
        });
    }
    if !matches!(
        present(pod, &["metadata", "annotations"]),
        None | Some(Value::Object(_))
    ) {
        return Err(MemoryError::InvalidField {
            path: "metadata.annotations".into(),
            expected: "an object",
        });
    }
    Ok(())
}

/// Writes the new memory values and the annotations into the Pod.
fn write(
    pod: &mut Value,
    compute_index: usize,
    memory: NewMemory,
    kubevirt_report: Option<String>,
    delta: u64,
) -> Result<(), MemoryError> {
    if memory.request.is_some() || memory.limit.is_some() {
        let container = pod
            .get_mut("spec")
            .and_then(|s| s.get_mut("containers"))
            .and_then(|c| c.get_mut(compute_index))
            .ok_or(MemoryError::MissingContainer {
                index: compute_index,
            })?;
        if let Some(v) = memory.request {
            set_resource(container, "requests", v)?;
        }
        if let Some(v) = memory.limit {
            set_resource(container, "limits", v)?;
        }
    }
    let annotations = annotations_mut(pod)?;
    if let Some(v) = kubevirt_report {
        annotations.insert(KUBEVIRT_OVERHEAD_ANNOTATION.into(), Value::String(v));
    }
    annotations.insert(ADDED_ANNOTATION.into(), Value::String(delta.to_string()));
    Ok(())
}

/// A byte count annotation: a string of decimal digits.
fn byte_count(v: &Value) -> Option<u64> {
    let s = v.as_str()?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `old + adjustment` rounded up to whole bytes, as a plain integer string.
fn shifted(old: Quantity, adjustment: i128, path: &str) -> Result<String, MemoryError> {
    if old.is_negative() {
        return Err(MemoryError::NegativeQuantity {
            path: path.to_string(),
            value: old.to_string(),
        });
    }
    let new = old
        .value_ceil()
        .checked_add(adjustment)
        .ok_or(MemoryError::Overflow { what: "memory" })?;
    if new < 0 {
        return Err(MemoryError::NegativeResult {
            path: path.to_string(),
        });
    }
    Ok(new.to_string())
}

/// Sets `container.resources.<list>.memory`, creating the objects it needs.
fn set_resource(container: &mut Value, list: &str, value: String) -> Result<(), MemoryError> {
    let invalid = |path: &str| MemoryError::InvalidField {
        path: path.to_string(),
        expected: "an object",
    };
    let obj = container
        .as_object_mut()
        .ok_or_else(|| invalid("container"))?;
    let resources = object_entry(obj, "resources").ok_or_else(|| invalid("resources"))?;
    let list_obj = object_entry(resources, list).ok_or_else(|| invalid(list))?;
    list_obj.insert("memory".into(), Value::String(value));
    Ok(())
}

/// `obj[key]` as an object, created when absent or null; `None` when it is something else.
fn object_entry<'m>(
    obj: &'m mut Map<String, Value>,
    key: &str,
) -> Option<&'m mut Map<String, Value>> {
    let entry = obj.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut()
}

fn annotations_mut(pod: &mut Value) -> Result<&mut Map<String, Value>, MemoryError> {
    let invalid = |path: &str| MemoryError::InvalidField {
        path: path.to_string(),
        expected: "an object",
    };
    let root = pod.as_object_mut().ok_or_else(|| invalid("pod"))?;
    let metadata = object_entry(root, "metadata").ok_or_else(|| invalid("metadata"))?;
    object_entry(metadata, "annotations").ok_or_else(|| invalid("metadata.annotations"))
}
