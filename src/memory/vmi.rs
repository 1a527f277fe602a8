//! What the mshv delta reads from the VMI: its vCPU count and its guest memory, each read the
//! way KubeVirt reads it, so that "per vCPU" and "of the guest memory" mean what they mean to
//! KubeVirt.

use serde_json::Value;

use super::{MemoryError, at, memory_at, present, quantity_value};

const REQUESTS_MEMORY: [&str; 5] = ["spec", "domain", "resources", "requests", "memory"];
const LIMITS_MEMORY: [&str; 5] = ["spec", "domain", "resources", "limits", "memory"];
const REQUESTS_CPU: [&str; 5] = ["spec", "domain", "resources", "requests", "cpu"];
const LIMITS_CPU: [&str; 5] = ["spec", "domain", "resources", "limits", "cpu"];

/// The vCPU count KubeVirt sizes its per-vCPU overhead with: `hardware.GetNumberOfVCPUs`
/// (kubevirt/kubevirt@v1.9.0 pkg/util/hardware/hw_utils.go:87, cores × sockets × threads, zeros
/// skipped, in uint32 arithmetic that wraps in Go and here) when `spec.domain.cpu` is set, else
/// the CPU limit, else the CPU request (rounded up), at least 1
/// (kubevirt/kubevirt@v1.9.0 pkg/hypervisor/kvm/hypervisorbackend.go:92-110; unchanged on main).
///
/// Errors on a VMI virt-controller could not have decoded either (a topology count that is not
/// a uint32, a CPU amount that is not a quantity).
pub fn vcpu_count(vmi: &Value) -> Result<u64, MemoryError> {
    let n: i128 = if let Some(cpu) = present(vmi, &["spec", "domain", "cpu"]) {
        if !cpu.is_object() {
            return Err(MemoryError::InvalidField {
                path: "spec.domain.cpu".into(),
                expected: "an object",
            });
        }
        let cores = topology_count(cpu, "cores")?;
        let sockets = topology_count(cpu, "sockets")?;
        let threads = topology_count(cpu, "threads")?;
        let mut v = cores;
        for f in [sockets, threads] {
            if f != 0 {
                v = if v == 0 { f } else { v.wrapping_mul(f) };
            }
        }
        i128::from(v)
    } else if let Some(limit) = at(vmi, &LIMITS_CPU) {
        // `resources.Limits[cpu]` present (a JSON null decodes to a zero quantity).
        match limit {
            Value::Null => 0,
            x => quantity_value(x, &LIMITS_CPU.join("."))?.value_ceil(),
        }
    } else if let Some(request) = at(vmi, &REQUESTS_CPU) {
        match request {
            Value::Null => 0,
            x => quantity_value(x, &REQUESTS_CPU.join("."))?.value_ceil(),
        }
    } else {
        0
    };
    Ok(u64::try_from(n.max(1)).unwrap_or(u64::MAX))
}

/// A `uint32` topology field; absent or null is 0.
fn topology_count(cpu: &Value, key: &'static str) -> Result<u32, MemoryError> {
    match present(cpu, &[key]) {
        None => Ok(0),
        Some(x) => x
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| MemoryError::InvalidField {
                path: format!("spec.domain.cpu.{key}"),
                expected: "an integer in 0..=4294967295",
            }),
    }
}

/// The guest's memory as KubeVirt's converter sizes the domain (`GetVirtualMemory`,
/// kubevirt/kubevirt@v1.9.0 pkg/virt-launcher/virtwrap/converter/vcpu/vcpu.go:602-618, same on
/// main): `spec.domain.memory.guest`, else the memory limit when no memory request is set, else
/// the memory request. Rounded up to whole bytes.
///
/// Errors when the VMI sets none of the three (Go would size a zero-memory domain; KubeVirt's
/// webhook never lets such a VMI through, so it is a VMI this policy does not understand).
pub fn guest_memory_bytes(vmi: &Value) -> Result<u64, MemoryError> {
    let chosen = match memory_at(vmi, &["spec", "domain", "memory", "guest"])? {
        Some(g) => Some(g),
        None => match memory_at(vmi, &REQUESTS_MEMORY)? {
            Some(r) => Some(r),
            None => memory_at(vmi, &LIMITS_MEMORY)?,
        },
    };
    chosen
        .map(|q| q.to_u64_saturating())
        .ok_or(MemoryError::MissingGuestMemory)
}
