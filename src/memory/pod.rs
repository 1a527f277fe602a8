//! Planning the mshv delta for a VMI and adding it to its virt-launcher Pod.
//!
//! [`apply`] edits the raw Pod JSON the way KubeVirt's `ResourceRenderer` placed its own overhead
//! (`pkg/virt-controller/services/renderresources.go`):
//! - `WithMemoryOverhead` (no hugepages): the overhead is added to the compute container's
//!   `resources.requests.memory` unless the VMI sets
//!   `spec.domain.resources.overcommitGuestOverhead: true`, and to `resources.limits.memory`
//!   when a limit exists;
//! - `WithHugePages`: the `memory` request holds only the overhead (guest memory is in
//!   `hugepages-<size>`) and is set whatever `overcommitGuestOverhead` says; an existing memory
//!   limit gets the overhead too.
//!
//! The delta lands in the same places. The edit is idempotent: the delta added is recorded in
//! [`ADDED_ANNOTATION`], and a Pod that already carries it receives only the difference.
//!
//! The total in [`TOTAL_ANNOTATION`] is a report: it never decides anything. It is KubeVirt's
//! own [`KUBEVIRT_OVERHEAD_ANNOTATION`] (as KubeVirt wrote it) plus the delta when the Pod
//! carries that annotation, else the recomputed overhead plus the delta; when neither can be had
//! it is left as it is and [`apply`] says why in a [`ReportIssue`].

use std::fmt;

use serde_json::{Map, Value};

use super::kubevirt::{OverheadBreakdown, guest_memory_bytes, kubevirt_overhead, vcpu_count};
use super::mshv::{MshvTerms, mshv_delta};
use super::{KubeVirtMemoryConfig, MemoryError, present, quantity_value};
use crate::quantity::Quantity;

/// KubeVirt's overhead plus the mshv delta, in bytes (written by [`apply`]).
pub const TOTAL_ANNOTATION: &str = "hyperv-layered.io/memory-overhead-bytes";
/// The mshv delta [`apply`] added to the Pod, in bytes; makes [`apply`] idempotent.
pub const ADDED_ANNOTATION: &str = "hyperv-layered.io/memory-overhead-added-bytes";
/// KubeVirt's own overhead report: written by virt-controller when the feature gate
/// `VmiMemoryOverheadReport` is on, as `strconv.FormatInt(memoryOverhead.Value(), 10)` of
/// `CalculateMemoryOverhead` (`GetMemoryOverhead` plus the network memory), i.e. KubeVirt's
/// whole overhead in bytes (pkg/virt-controller/services/template.go:550-551 at v1.8.0,
/// :631-632 at v1.9.0). The gate is new in v1.8 as alpha, off unless listed
/// (pkg/virt-config/featuregate/active.go:275 at v1.8.0), and beta in v1.9, on unless listed
/// in `disabledFeatureGates` (active.go:326 and feature-gates.go:91-111 at v1.9.0); earlier
/// releases never write it. Kept in step with the delta, since virt-controller reads it back
/// with `strconv.ParseInt` into the VMI status (pkg/virt-controller/watch/vmi/lifecycle.go:1169-1173
/// at v1.9.0; a migration target's, pkg/virt-controller/watch/migration/migration.go:1299).
pub const KUBEVIRT_OVERHEAD_ANNOTATION: &str = "kubevirt.io/memory-overhead-bytes";

/// What [`apply`] adds to a Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MshvMemoryPlan {
    /// KubeVirt's overhead recomputed from the VMI, term by term, for the report only; `Err`
    /// says why it cannot be had (the total then comes from the Pod or is left out).
    pub kubevirt: Result<OverheadBreakdown, MemoryError>,
    /// The mshv delta in bytes.
    pub delta: u64,
}

/// [`plan_with`] with a KubeVirt configuration at hand.
#[cfg(test)]
pub fn plan(
    vmi: &Value,
    kv: &KubeVirtMemoryConfig,
    terms: &MshvTerms,
) -> Result<MshvMemoryPlan, MemoryError> {
    plan_with(vmi, Ok(kv), terms)
}

/// The mshv delta for the VMI, and KubeVirt's overhead for the report.
///
/// Errors only where the delta cannot be computed: the vCPU count is read (and must decode)
/// only when `terms.per_vcpu > 0`, the guest memory only when `terms.guest_memory_ppm > 0`.
/// Anything wrong with KubeVirt's overhead, or with `kv` (the KubeVirt CR unreadable or
/// undecodable), lands in `kubevirt` instead.
pub fn plan_with(
    vmi: &Value,
    kv: Result<&KubeVirtMemoryConfig, &MemoryError>,
    terms: &MshvTerms,
) -> Result<MshvMemoryPlan, MemoryError> {
    let vcpus = if terms.per_vcpu == 0 {
        0
    } else {
        vcpu_count(vmi)?
    };
    let guest = if terms.guest_memory_ppm == 0 {
        0
    } else {
        guest_memory_bytes(vmi)?
    };
    let delta = mshv_delta(terms, vcpus, guest);
    let kubevirt = match kv {
        Ok(kv) => kubevirt_overhead(vmi, kv),
        Err(e) => Err(e.clone()),
    };
    Ok(MshvMemoryPlan { kubevirt, delta })
}

/// What [`apply`] did about the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The total written to [`TOTAL_ANNOTATION`]; `None` when it was left as it was.
    pub total: Option<u64>,
    /// Parts of the report left out, and why (for warnings; none of them stopped the edit).
    pub issues: Vec<ReportIssue>,
}

/// A part of the report [`apply`] left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportIssue {
    /// [`TOTAL_ANNOTATION`] was not written (an earlier value stays).
    TotalNotWritten { cause: MemoryError },
    /// [`KUBEVIRT_OVERHEAD_ANNOTATION`] holds something KubeVirt does not write; it was neither
    /// used nor changed.
    KubeVirtReportUnreadable { value: String },
}

impl fmt::Display for ReportIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportIssue::TotalNotWritten { cause } => write!(
                f,
                "annotation {TOTAL_ANNOTATION} not written: KubeVirt's overhead is not known ({cause})"
            ),
            ReportIssue::KubeVirtReportUnreadable { value } => write!(
                f,
                "annotation {KUBEVIRT_OVERHEAD_ANNOTATION}: {value} is not a byte count; left unchanged"
            ),
        }
    }
}

/// Adds `plan.delta` to the compute container `spec.containers[compute_index]` (see the module
/// documentation for where), bumps [`KUBEVIRT_OVERHEAD_ANNOTATION`] when present, and writes
/// [`ADDED_ANNOTATION`] and, when it can be had, [`TOTAL_ANNOTATION`].
///
/// Idempotent: with [`ADDED_ANNOTATION`] = P already on the Pod, `delta − P` is added instead,
/// so a second call changes nothing; KubeVirt's own value is the annotation minus P. Memory
/// values that change are written back as plain integer byte strings; values that do not change
/// keep their text. Nothing is removed.
///
/// Errors (and leaves the Pod untouched) when a memory value or [`ADDED_ANNOTATION`] does not
/// parse, when the container is missing, when the VMI itself carries [`ADDED_ANNOTATION`]
/// (KubeVirt copies VMI annotations to the Pod, so it would fake "already applied"), or when
/// taking back an earlier, larger delta would go below zero. The report never errors: what it
/// cannot do is in [`Applied::issues`].
pub fn apply(
    pod: &mut Value,
    compute_index: usize,
    vmi: &Value,
    plan: &MshvMemoryPlan,
) -> Result<Applied, MemoryError> {
    let previous = previously_added(pod, vmi)?;
    let adjustment = i128::from(plan.delta) - i128::from(previous);

    // Compute every new value before touching the Pod.
    let memory = new_memory_values(pod, compute_index, into_request(vmi), adjustment)?;
    let report = new_report(pod, plan, adjustment);
    check_annotations_writable(pod)?;

    write(pod, compute_index, memory, &report, plan.delta)?;
    Ok(Applied {
        total: report.total,
        issues: report.issues,
    })
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

/// The report [`apply`] writes: a new [`KUBEVIRT_OVERHEAD_ANNOTATION`] value when it changes,
/// the total when it can be had, and what was left out.
struct NewReport {
    kubevirt_report: Option<String>,
    total: Option<u64>,
    issues: Vec<ReportIssue>,
}

/// Works out the report. Never errors: what cannot be had is in [`NewReport::issues`].
fn new_report(pod: &Value, plan: &MshvMemoryPlan, adjustment: i128) -> NewReport {
    // The report. KubeVirt's annotation, when it reads, is KubeVirt's value plus the delta
    // already added (P): its new value, `value + delta − P`, is KubeVirt's value plus the delta,
    // which is the total. Otherwise the recomputed overhead plus the delta.
    let mut issues = Vec::new();
    let mut new_kubevirt_report = None;
    let mut from_pod = None;
    if let Some(v) = present(
        pod,
        &["metadata", "annotations", KUBEVIRT_OVERHEAD_ANNOTATION],
    ) {
        match v.as_str().and_then(|s| crate::quantity::parse(s).ok()) {
            Some(old) => {
                // Signed: a ratio below 0 makes KubeVirt write a negative value.
                let new = old.value_ceil().checked_add(adjustment);
                if adjustment != 0 {
                    new_kubevirt_report = new.map(|n| n.to_string());
                }
                from_pod = Some(new.ok_or(MemoryError::Overflow {
                    what: KUBEVIRT_OVERHEAD_ANNOTATION,
                }));
            }
            None => issues.push(ReportIssue::KubeVirtReportUnreadable {
                value: v.to_string(),
            }),
        }
    }
    let total = match from_pod {
        Some(total) => total.and_then(|t| {
            if t < 0 {
                Err(MemoryError::NegativeOverhead { bytes: t })
            } else {
                u64::try_from(t).map_err(|_| MemoryError::Overflow {
                    what: TOTAL_ANNOTATION,
                })
            }
        }),
        None => match &plan.kubevirt {
            Ok(k) => k
                .total
                .checked_add(plan.delta)
                .ok_or(MemoryError::Overflow {
                    what: TOTAL_ANNOTATION,
                }),
            Err(e) => Err(e.clone()),
        },
    };
    let total = match total {
        Ok(t) => Some(t),
        Err(cause) => {
            issues.push(ReportIssue::TotalNotWritten { cause });
            None
        }
    };
    NewReport {
        kubevirt_report: new_kubevirt_report,
        total,
        issues,
    }
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
    report: &NewReport,
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
    if let Some(v) = &report.kubevirt_report {
        annotations.insert(
            KUBEVIRT_OVERHEAD_ANNOTATION.into(),
            Value::String(v.clone()),
        );
    }
    if let Some(t) = report.total {
        annotations.insert(TOTAL_ANNOTATION.into(), Value::String(t.to_string()));
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
