//! Memory sizing of a virt-launcher Pod for mshv: the extra memory the Hyper-V layered
//! hypervisor needs on top of what KubeVirt reserved, added where KubeVirt put its own overhead.
//!
//! - [`mshv`]: the operator's mshv terms (`memoryOverhead.mshv.*`) and the delta they add.
//! - [`vmi`]: what the delta reads from the VMI (vCPU count, guest memory), read as KubeVirt
//!   reads them.
//! - [`ratio`]: the KubeVirt CR's `additionalGuestMemoryOverheadRatio`, applied to the delta as
//!   KubeVirt applies it to its overhead.
//! - [`pod`]: the idempotent edit of the Pod JSON ([`apply`]).
//!
//! KubeVirt's own overhead is not recomputed: KubeVirt already added it to the Pod, reports it
//! itself (`kubevirt.io/memory-overhead-bytes`) and changes its formula between releases (the
//! passt term in v1.8, `QemuOverhead` 30Mi -> 50Mi on main). What this module adds is the same
//! for a launcher of any release: see `docs/memory-overhead.md`.
//!
//! Everything is pure: JSON in, numbers or JSON edits out; no panics, no overflow (u128/i128
//! with checked or saturating arithmetic).

use std::fmt;

use serde_json::Value;

use crate::quantity::{self, Quantity, QuantityError};

pub mod mshv;
pub mod pod;
pub mod ratio;
pub mod vmi;

pub use mshv::MshvTerms;
#[cfg(test)]
use pod::ReportIssue;
pub use pod::{ADDED_ANNOTATION, KUBEVIRT_OVERHEAD_ANNOTATION, apply};

#[cfg(test)]
mod tests;

/// The delta for a VMI: the mshv terms (`fixed + perVcpu × vCPUs + guestMemoryPercent of the
/// guest memory`) scaled by the KubeVirt CR's overhead ratio (`None`: unset).
///
/// The vCPU count is read (and must decode) only when `terms.per_vcpu > 0`, the guest memory
/// only when `terms.guest_memory_ppm > 0`.
pub fn delta(
    vmi: &Value,
    terms: &MshvTerms,
    overhead_ratio: Option<f64>,
) -> Result<u64, MemoryError> {
    let vcpus = if terms.per_vcpu == 0 {
        0
    } else {
        vmi::vcpu_count(vmi)?
    };
    let guest = if terms.guest_memory_ppm == 0 {
        0
    } else {
        vmi::guest_memory_bytes(vmi)?
    };
    ratio::scale(mshv::mshv_delta(terms, vcpus, guest), overhead_ratio)
}

/// Why a VMI, a KubeVirt CR or a Pod cannot be sized. Every variant names the JSON path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryError {
    /// A string that should be a Kubernetes quantity is not one.
    InvalidQuantity {
        path: String,
        value: String,
        source: QuantityError,
    },
    /// A field has a JSON type (or value) the computation cannot use.
    InvalidField {
        path: String,
        expected: &'static str,
    },
    /// A memory amount below zero.
    NegativeQuantity { path: String, value: String },
    /// Neither `spec.domain.memory.guest` nor `spec.domain.resources.requests.memory` is set.
    MissingGuestMemory,
    /// `spec.containers[index]` is missing or not an object.
    MissingContainer { index: usize },
    /// One of the annotations this module maintains holds something else than a byte count.
    InvalidAnnotation { key: &'static str, value: String },
    /// The VMI carries an annotation this module maintains on the Pod; KubeVirt copies VMI
    /// annotations to the Pod, so the Pod's value cannot be trusted as "already applied".
    ReservedAnnotationOnVmi { key: &'static str },
    /// Removing a previously added delta would make a memory amount negative.
    NegativeResult { path: String },
    /// A sum exceeds the representable range.
    Overflow { what: &'static str },
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryError::InvalidQuantity {
                path,
                value,
                source,
            } => write!(f, "{path}: {value:?} is not a quantity: {source}"),
            MemoryError::InvalidField { path, expected } => {
                write!(f, "{path}: expected {expected}")
            }
            MemoryError::NegativeQuantity { path, value } => {
                write!(f, "{path}: {value:?} is negative")
            }
            MemoryError::MissingGuestMemory => write!(
                f,
                "the VMI sets neither spec.domain.memory.guest nor spec.domain.resources.requests.memory"
            ),
            MemoryError::MissingContainer { index } => {
                write!(f, "spec.containers[{index}] is missing or not an object")
            }
            MemoryError::InvalidAnnotation { key, value } => {
                write!(f, "annotation {key}: {value:?} is not a byte count")
            }
            MemoryError::ReservedAnnotationOnVmi { key } => write!(
                f,
                "the VMI carries annotation {key}, which hyperv-layered maintains on the Pod; remove it from the VMI"
            ),
            MemoryError::NegativeResult { path } => {
                write!(
                    f,
                    "{path}: removing an earlier mshv delta would make it negative"
                )
            }
            MemoryError::Overflow { what } => write!(f, "{what}: value out of range"),
        }
    }
}

impl std::error::Error for MemoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MemoryError::InvalidQuantity { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `v[a][b]...`, `None` as soon as a key is missing or a value is not an object.
pub(crate) fn at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter()
        .try_fold(v, |cur, key| cur.as_object()?.get(*key))
}

/// Like [`at`], but JSON `null` counts as absent (a nil pointer in Go).
pub(crate) fn present<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    at(v, path).filter(|x| !x.is_null())
}

/// Parses a quantity found at `path`: a JSON string, or a JSON number (Go's
/// `Quantity.UnmarshalJSON` accepts unquoted numbers too). `None` when absent or null.
pub(crate) fn quantity_at(v: &Value, path: &[&str]) -> Result<Option<Quantity>, MemoryError> {
    match present(v, path) {
        None => Ok(None),
        Some(x) => quantity_value(x, &path.join(".")).map(Some),
    }
}

/// A JSON value as a quantity (string or number), errors naming `path`.
pub(crate) fn quantity_value(x: &Value, path: &str) -> Result<Quantity, MemoryError> {
    let text = match x {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(MemoryError::InvalidField {
                path: path.to_string(),
                expected: "a quantity string",
            });
        }
    };
    quantity::parse(&text).map_err(|source| MemoryError::InvalidQuantity {
        path: path.to_string(),
        value: text,
        source,
    })
}

/// A non-negative quantity at `path` (absent is `None`).
pub(crate) fn memory_at(v: &Value, path: &[&str]) -> Result<Option<Quantity>, MemoryError> {
    match quantity_at(v, path)? {
        Some(q) if q.is_negative() => Err(MemoryError::NegativeQuantity {
            path: path.join("."),
            value: q.to_string(),
        }),
        other => Ok(other),
    }
}
