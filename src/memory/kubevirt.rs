//! KubeVirt's `GetMemoryOverhead`, recomputed from the VMI JSON exactly as virt-controller does.
//!
//! Sources (kubevirt/kubevirt):
//! - v1.5–v1.7: `pkg/virt-controller/services/renderresources.go` (`GetMemoryOverhead`,
//!   `addProbeOverheads`, `multiplyMemory`) with the process constants in
//!   `pkg/virt-controller/services/template.go` (`VirtLauncherMonitorOverhead` … `QemuOverhead`)
//!   and `CalculateMemoryOverhead` (architecture fallback, network binding plugins).
//! - v1.8+: `pkg/hypervisor/kvm/hypervisorbackend.go` (`KvmHypervisorBackend.GetMemoryOverhead`,
//!   `MultiplyMemory`); `pkg/hypervisor/mshv/hypervisorbackend.go` is the same formula.
//! - Network memory (`MemoryCalculator.Calculate`): `pkg/network/netbinding/memory.go` in
//!   v1.5–v1.7 (binding plugins), `pkg/network/resources/memory.go` in v1.8+ (plus the core
//!   passt binding).
//! - The ratio string as Go's `strconv.ParseFloat` reads it: golang/go `src/strconv/atof.go`.
//! - Predicates: `pkg/util/hardware` (`GetNumberOfVCPUs`), `pkg/tpm/tpm.go` (`HasDevice`),
//!   `pkg/downwardmetrics` (`HasDownwardMetricDisk`), `pkg/util/util.go` /
//!   `pkg/apimachinery/vmitrait` (`IsVFIOVMI`/`HasVFIO`, `IsSEVVMI`, `IsSEVSNPVMI`, `IsSEVESVMI`,
//!   `RequiresMemoryOverheadReservation`), `staging/src/kubevirt.io/api/core/v1`
//!   (`IsCPUDedicated`, `WantsToHaveQOSGuaranteed`).
//!
//! The arithmetic is on exact quantities (nano-units, see [`crate::quantity`]); integer steps
//! round exactly where Go's `Quantity.ScaledValue`/`Value` round (up) and where Go's integer
//! division and `int64(float64)` conversion truncate.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{MemoryError, at, memory_at, present, quantity_value};
use crate::quantity::Quantity;

/// One mebibyte.
pub const MI: u64 = 1 << 20;

/// `VirtLauncherMonitorOverhead = "25Mi"`: template.go (v1.5–v1.7), kvm/hypervisorbackend.go (v1.8+).
pub const VIRT_LAUNCHER_MONITOR: u64 = 25 * MI;
/// `VirtLauncherOverhead = "100Mi"`: same files.
pub const VIRT_LAUNCHER: u64 = 100 * MI;
/// `VirtlogdOverhead = "25Mi"`: same files.
pub const VIRTLOGD: u64 = 25 * MI;
/// `VirtqemudOverhead = "40Mi"`: same files.
pub const VIRTQEMUD: u64 = 40 * MI;
/// `QemuOverhead = "30Mi"`: same files, v1.5–v1.8.
pub const QEMU: u64 = 30 * MI;
/// `QemuOverhead = "50Mi"`: kvm/ and mshv/hypervisorbackend.go on main after PR #18388 (merged
/// 2026-08-18, after `release-1.9` branched; v1.9.0 still has "30Mi" at
/// `pkg/hypervisor/kvm/hypervisorbackend.go:42`).
pub const QEMU_V1_9: u64 = 50 * MI;
/// `coresMemory := resource.MustParse("8Mi")`, times the vCPU count.
pub const PER_VCPU: u64 = 8 * MI;
/// "static overhead for IOThread": `resource.MustParse("8Mi")`.
pub const IOTHREAD: u64 = 8 * MI;
/// Video RAM, v1.6+: `resource.MustParse("32Mi")` unless `autoattachGraphicsDevice: false`.
pub const VIDEO_RAM: u64 = 32 * MI;
/// Video RAM, v1.5: `resource.MustParse("16Mi")`.
pub const VIDEO_RAM_V1_5: u64 = 16 * MI;
/// arm64 UEFI: two 64 MiB pflash devices, `resource.MustParse("128Mi")`.
pub const ARM64_PFLASH: u64 = 128 * MI;
/// VFIO (GPU, host device or SR-IOV interface): `resource.MustParse("1Gi")`.
pub const VFIO: u64 = 1 << 30;
/// A downwardMetrics volume: `resource.MustParse("1Mi")`.
pub const DOWNWARD_METRICS: u64 = MI;
/// `virtProbeOverhead := resource.MustParse("10Mi")`, per exec probe.
pub const EXEC_PROBE_EACH: u64 = 10 * MI;
/// `virtProbeTotalAdditionalOverhead := resource.MustParse("100Mi")`, once when any exec probe.
pub const EXEC_PROBE_ONCE: u64 = 100 * MI;
/// SEV / SEV-ES / SEV-SNP: `resource.MustParse("256Mi")`.
pub const SEV: u64 = 256 * MI;
/// swtpm for a TPM device: `resource.MustParse("53Mi")`.
pub const TPM: u64 = 53 * MI;
/// Dedicated CPUs or guaranteed QoS: `resource.MustParse("100Mi")` (PR #10566).
pub const DEDICATED_OR_GUARANTEED: u64 = 100 * MI;
/// Core passt binding (v1.8+): `passtComputeMemoryOverheadWhenAllPortsAreForwarded = "250Mi"`
/// (pkg/network/resources/memory.go:97-100 at v1.8.0 and v1.9.0).
pub const PASST_BINDING: u64 = 250 * MI;
/// Page tables: "one bit for every 512b of RAM size", `pagetableMemory.Value() / 512`.
pub const PAGE_TABLE_DIVISOR: i128 = 512;

/// Which KubeVirt release's formula to reproduce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OverheadModel {
    /// v1.5 (and v1.4): video RAM 16 MiB; the dedicated-CPU/guaranteed-QoS 100 MiB is added
    /// *after* the ratio (unscaled); a TPM counts whenever `devices.tpm` is set; no
    /// `reservedOverhead`.
    V1_5,
    /// v1.6 – v1.9: video RAM 32 MiB; the 100 MiB is added before the ratio (PR #14933);
    /// `tpm.HasDevice` honours `tpm.enabled: false`; v1.8 adds `reservedOverhead.addedOverhead`
    /// (the field does not exist before v1.8, so its absence keeps v1.6/v1.7 exact).
    #[default]
    V1_6,
    /// main after PR #18388 (2026-08), so expected in v1.10: as [`OverheadModel::V1_6`] with
    /// `QemuOverhead = "50Mi"`.
    V1_9,
}

impl OverheadModel {
    /// The model for a KubeVirt version string such as `v1.8.1` or `1.9.0-rc.0`; `None` when
    /// the string is not `[v]MAJOR.MINOR[...]` with major 1.
    pub fn from_kubevirt_version(version: &str) -> Option<Self> {
        let v = version.trim().trim_start_matches('v');
        let mut parts = v.split(|c: char| !c.is_ascii_digit());
        let major: u32 = parts.next()?.parse().ok()?;
        let minor: u32 = parts.next()?.parse().ok()?;
        if major != 1 {
            return None;
        }
        Some(match minor {
            0..=5 => OverheadModel::V1_5,
            // v1.9.0 keeps QemuOverhead "30Mi" (kvm/hypervisorbackend.go:42 at v1.9.0).
            6..=9 => OverheadModel::V1_6,
            _ => OverheadModel::V1_9,
        })
    }

    /// A short name for the test reports.
    #[cfg(test)]
    pub fn name(&self) -> &'static str {
        match self {
            OverheadModel::V1_5 => "kubevirt-v1.5",
            OverheadModel::V1_6 => "kubevirt-v1.6-v1.9",
            OverheadModel::V1_9 => "kubevirt-v1.10",
        }
    }

    fn qemu(self) -> u64 {
        match self {
            OverheadModel::V1_9 => QEMU_V1_9,
            _ => QEMU,
        }
    }

    fn video_ram(self) -> u64 {
        match self {
            OverheadModel::V1_5 => VIDEO_RAM_V1_5,
            _ => VIDEO_RAM,
        }
    }
}

/// The KubeVirt CR settings that enter the overhead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeVirtMemoryConfig {
    /// `spec.configuration.additionalGuestMemoryOverheadRatio` as written, unvalidated: what
    /// KubeVirt makes of it is decided where it is used, as in `GetMemoryOverhead`.
    pub additional_guest_memory_overhead_ratio: Option<String>,
    /// Registered network binding plugins (`spec.configuration.network.binding`) by name, with
    /// their `computeResourceOverhead.requests.memory` (zero when unset).
    pub network_binding_memory: BTreeMap<String, Quantity>,
    /// Which release's formula.
    pub model: OverheadModel,
    /// Architecture for VMIs without `spec.architecture` (KubeVirt uses virt-controller's
    /// `GetClusterCPUArch()`; the VMI mutator sets `spec.architecture`, so this rarely matters).
    pub cluster_arch: String,
}

impl Default for KubeVirtMemoryConfig {
    fn default() -> Self {
        KubeVirtMemoryConfig {
            additional_guest_memory_overhead_ratio: None,
            network_binding_memory: BTreeMap::new(),
            model: OverheadModel::default(),
            cluster_arch: "amd64".to_string(),
        }
    }
}

impl KubeVirtMemoryConfig {
    /// Reads a `kubevirt.io/v1 KubeVirt` object: `spec.configuration.additionalGuestMemoryOverheadRatio`,
    /// `spec.configuration.network.binding.*.computeResourceOverhead.requests.memory`,
    /// `spec.configuration.architectureConfiguration.defaultArchitecture`, and
    /// `status.observedKubeVirtVersion` (else `status.targetKubeVirtVersion`) for the model.
    ///
    /// The ratio is kept as written, not validated: KubeVirt's webhook
    /// (`validateGuestToRequestHeadroom`, pkg/virt-operator/webhooks/kubevirt-update-admitter.go:482
    /// at v1.9.0) runs on UPDATE only (pkg/virt-operator/resource/generate/components/webhooks.go:120-127
    /// at v1.9.0; the create admitter validates nothing, kubevirt-create-admitter.go:49),
    /// so a CR created with "abc" or "0.5" reaches virt-controller, whose `GetMemoryOverhead`
    /// ignores the first and applies the second. [`kubevirt_overhead`] does the same.
    pub fn from_kubevirt_cr(kv: &Value) -> Result<Self, MemoryError> {
        let mut cfg = KubeVirtMemoryConfig::default();
        let conf = |path: &[&str]| {
            let mut full = vec!["spec", "configuration"];
            full.extend_from_slice(path);
            present(kv, &full)
        };

        match conf(&["additionalGuestMemoryOverheadRatio"]) {
            None => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(s)) => {
                cfg.additional_guest_memory_overhead_ratio = Some(s.clone());
            }
            Some(_) => {
                return Err(MemoryError::InvalidField {
                    path: "spec.configuration.additionalGuestMemoryOverheadRatio".into(),
                    expected: "a string",
                });
            }
        }

        if let Some(binding) = conf(&["network", "binding"]) {
            let plugins = binding
                .as_object()
                .ok_or_else(|| MemoryError::InvalidField {
                    path: "spec.configuration.network.binding".into(),
                    expected: "an object",
                })?;
            for (name, plugin) in plugins {
                let path = ["computeResourceOverhead", "requests", "memory"];
                let memory = memory_at(plugin, &path).map_err(|e| prefix_path(e, name))?;
                cfg.network_binding_memory
                    .insert(name.clone(), memory.unwrap_or(Quantity::ZERO));
            }
        }

        if let Some(Value::String(arch)) =
            conf(&["architectureConfiguration", "defaultArchitecture"])
            && !arch.is_empty()
        {
            cfg.cluster_arch = arch.clone();
        }

        let version = present(kv, &["status", "observedKubeVirtVersion"])
            .or_else(|| present(kv, &["status", "targetKubeVirtVersion"]))
            .and_then(Value::as_str);
        if let Some(model) = version.and_then(OverheadModel::from_kubevirt_version) {
            cfg.model = model;
        }
        Ok(cfg)
    }

    /// The ratio `GetMemoryOverhead` applies (pkg/hypervisor/kvm/hypervisorbackend.go:165-176
    /// at v1.8.0, :166-177 at v1.9.0): none when unset or empty; none when `strconv.ParseFloat` fails
    /// ("cannot add additional overhead", the overhead is returned unscaled; the "not a float"
    /// entry of hypervisorbackend_test.go:279); otherwise the float, whatever its value (a
    /// ratio below 1.0 shrinks the overhead). An error only where Go's result is not
    /// reproducible: NaN and infinities (accepted by ParseFloat, and `int64()` of the product is
    /// platform-dependent) and hexadecimal floats (accepted by Go, not parsed here).
    fn ratio(&self) -> Result<Option<f64>, MemoryError> {
        let Some(s) = self
            .additional_guest_memory_overhead_ratio
            .as_deref()
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        let unreproducible = |why| MemoryError::UnreproducibleRatio {
            value: s.to_string(),
            why,
        };
        match go_parse_float(s) {
            GoFloat::Error => Ok(None),
            GoFloat::Hex => Err(unreproducible("a hexadecimal float")),
            GoFloat::Value(r) if r.is_finite() => Ok(Some(r)),
            GoFloat::Value(_) => Err(unreproducible(
                "NaN or infinite: Go's int64() of the scaled overhead is platform-dependent",
            )),
        }
    }
}

fn prefix_path(e: MemoryError, plugin: &str) -> MemoryError {
    let full = |p: &str| format!("spec.configuration.network.binding.{plugin}.{p}");
    match e {
        MemoryError::InvalidQuantity {
            path,
            value,
            source,
        } => MemoryError::InvalidQuantity {
            path: full(&path),
            value,
            source,
        },
        MemoryError::InvalidField { path, expected } => MemoryError::InvalidField {
            path: full(&path),
            expected,
        },
        MemoryError::NegativeQuantity { path, value } => MemoryError::NegativeQuantity {
            path: full(&path),
            value,
        },
        other => other,
    }
}

/// What Go's `strconv.ParseFloat(s, 64)` returns for a string.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum GoFloat {
    /// An error: a syntax error, or a finite literal that rounds beyond ±MaxFloat64 (ErrRange).
    Error,
    /// A value without error, NaN and ±Inf included ("NaN", "Inf", "-Infinity", any case).
    Value(f64),
    /// A well-formed hexadecimal float ("0x1.8p1"): Go accepts it, this module does not parse it.
    Hex,
}

/// Go's `strconv.ParseFloat(s, 64)` (src/strconv/atof.go `special`, `readFloat`,
/// `underscoreOK`): the special values first, then the decimal or hexadecimal syntax, digits
/// possibly separated by `_`, the whole string consumed. A decimal number is then rounded by
/// Rust's parser, which is correctly rounded like Go's; one that rounds to infinity is Go's
/// ErrRange.
pub(crate) fn go_parse_float(s: &str) -> GoFloat {
    if let Some(v) = go_special(s) {
        return GoFloat::Value(v);
    }
    let b = s.as_bytes();
    let lower = |c: u8| c | 0x20;
    let mut i = 0;
    let mut normalized = String::with_capacity(s.len() + 2);
    if let Some(&c @ (b'+' | b'-')) = b.first() {
        normalized.push(char::from(c));
        i = 1;
    }
    let hex = i + 2 < b.len() && b[i] == b'0' && lower(b[i + 1]) == b'x';
    if hex {
        i += 2;
    }
    let (mut underscores, mut sawdot, mut sawdigits) = (false, false, false);
    while let Some(&c) = b.get(i) {
        if c == b'_' {
            underscores = true;
        } else if c == b'.' {
            if sawdot {
                break;
            }
            sawdot = true;
            normalized.push('.');
        } else if c.is_ascii_digit() || (hex && (b'a'..=b'f').contains(&lower(c))) {
            sawdigits = true;
            normalized.push(char::from(c));
        } else {
            break;
        }
        i += 1;
    }
    if !sawdigits {
        return GoFloat::Error;
    }
    let exp_char = if hex { b'p' } else { b'e' };
    if b.get(i).is_some_and(|&c| lower(c) == exp_char) {
        normalized.push('e');
        i += 1;
        if let Some(&c @ (b'+' | b'-')) = b.get(i) {
            normalized.push(char::from(c));
            i += 1;
        }
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return GoFloat::Error;
        }
        while let Some(&c) = b.get(i) {
            if c == b'_' {
                underscores = true;
            } else if c.is_ascii_digit() {
                normalized.push(char::from(c));
            } else {
                break;
            }
            i += 1;
        }
    } else if hex {
        // "hexadecimal mantissa requires a 'p' exponent"
        return GoFloat::Error;
    }
    // ParseFloat: anything left over is a syntax error.
    if i != b.len() || (underscores && !go_underscore_ok(s)) {
        return GoFloat::Error;
    }
    if hex {
        return GoFloat::Hex;
    }
    match normalized.parse::<f64>() {
        Ok(v) if v.is_finite() => GoFloat::Value(v),
        _ => GoFloat::Error,
    }
}

/// Go's `special`: optionally signed "inf"/"infinity", or unsigned "nan", any case, when it is
/// the whole string (a longer string is a syntax error, which `readFloat` also reports).
fn go_special(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    let (sign, rest, signed) = match lower.as_bytes().first() {
        Some(b'+') => (1.0, &lower[1..], true),
        Some(b'-') => (-1.0, &lower[1..], true),
        _ => (1.0, lower.as_str(), false),
    };
    match rest {
        "inf" | "infinity" => Some(sign * f64::INFINITY),
        "nan" if !signed => Some(f64::NAN),
        _ => None,
    }
}

/// Go's `underscoreOK`: every `_` sits between two digits (or after a base prefix).
fn go_underscore_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let b = match b.first() {
        Some(b'+' | b'-') => &b[1..],
        _ => b,
    };
    let lower = |c: u8| c | 0x20;
    // '^' start, '0' digit or prefix, '_' underscore, '!' anything else.
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(lower(b[1]), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = lower(b[1]) == b'x';
    }
    for &c in &b[i..] {
        if c.is_ascii_digit() || (hex && (b'a'..=b'f').contains(&lower(c))) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
    }
    saw != b'_'
}

/// One term of the overhead, in bytes (rounded up when the term itself is fractional). Signed:
/// a ratio below 1.0, which KubeVirt applies at runtime, makes its term negative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverheadTerm {
    pub name: &'static str,
    pub bytes: i128,
}

/// KubeVirt's overhead, term by term, in the order KubeVirt adds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverheadBreakdown {
    pub terms: Vec<OverheadTerm>,
    /// The `additionalGuestMemoryOverheadRatio` applied, as written in the KubeVirt CR.
    pub ratio: Option<String>,
    /// The overhead KubeVirt adds to the compute container (exact sum of the terms, rounded up).
    pub total: u64,
}

impl OverheadBreakdown {
    /// The bytes of the term `name`, if present.
    #[cfg(test)]
    pub fn term(&self, name: &str) -> Option<i128> {
        self.terms.iter().find(|t| t.name == name).map(|t| t.bytes)
    }
}

/// Accumulates exact terms.
struct Terms {
    terms: Vec<(&'static str, Quantity)>,
    sum: Quantity,
}

impl Terms {
    fn new() -> Self {
        Terms {
            terms: Vec::new(),
            sum: Quantity::ZERO,
        }
    }

    fn add(&mut self, name: &'static str, q: Quantity) -> Result<(), MemoryError> {
        self.sum = self
            .sum
            .checked_add(q)
            .ok_or(MemoryError::Overflow { what: name })?;
        self.terms.push((name, q));
        Ok(())
    }

    fn add_bytes(&mut self, name: &'static str, bytes: u64) -> Result<(), MemoryError> {
        self.add(name, Quantity::from_u64(bytes))
    }
}

const REQUESTS_MEMORY: [&str; 5] = ["spec", "domain", "resources", "requests", "memory"];
const LIMITS_MEMORY: [&str; 5] = ["spec", "domain", "resources", "limits", "memory"];
const REQUESTS_CPU: [&str; 5] = ["spec", "domain", "resources", "requests", "cpu"];
const LIMITS_CPU: [&str; 5] = ["spec", "domain", "resources", "limits", "cpu"];

/// KubeVirt's memory overhead for the VMI (`CalculateMemoryOverhead`: `GetMemoryOverhead` plus
/// the network binding plugins), term by term.
///
/// Errors only on values virt-controller could not have decoded either (a memory or CPU amount
/// that is not a quantity, a negative memory amount, a CPU topology count that is not a uint32)
/// and on an invalid ratio in a hand-built config. Other fields of the wrong JSON type count as
/// absent, or as set for the flags whose absence means "on" (`autoattachGraphicsDevice`,
/// `tpm.enabled`), which errs towards a larger overhead.
pub fn kubevirt_overhead(
    vmi: &Value,
    kv: &KubeVirtMemoryConfig,
) -> Result<OverheadBreakdown, MemoryError> {
    let model = kv.model;
    let mut t = Terms::new();
    add_page_tables(&mut t, vmi)?;
    add_process_terms(&mut t, vmi, model)?;
    let dedicated_or_guaranteed = add_device_and_feature_terms(&mut t, vmi, kv)?;
    let ratio = add_ratio_term(&mut t, kv)?;

    // v1.5 added the 100 MiB after the ratio.
    if dedicated_or_guaranteed && model == OverheadModel::V1_5 {
        t.add_bytes("dedicatedCpuOrGuaranteedQos", DEDICATED_OR_GUARANTEED)?;
    }

    add_network_terms(&mut t, vmi, kv)?;
    into_breakdown(t, ratio, kv)
}

/// The page tables term.
fn add_page_tables(t: &mut Terms, vmi: &Value) -> Result<(), MemoryError> {
    // Page tables: NewScaledQuantity(req.ScaledValue(Kilo), Kilo), then Set(Value()/512):
    // the request rounded up to whole kilobytes, times 1000, integer-divided by 512.
    let request = memory_at(vmi, &REQUESTS_MEMORY)?.unwrap_or(Quantity::ZERO);
    let kilobytes = request.scaled_value_ceil(3);
    let page_tables = kilobytes
        .checked_mul(1000)
        .map(|b| b / PAGE_TABLE_DIVISOR)
        .and_then(Quantity::from_int)
        .ok_or(MemoryError::Overflow { what: "pageTables" })?;
    t.add("pageTables", page_tables)
}

/// The fixed process memory, the vCPUs and the I/O thread.
fn add_process_terms(t: &mut Terms, vmi: &Value, model: OverheadModel) -> Result<(), MemoryError> {
    // Fixed process memory, "as seen in a random run, rounded up to the nearest MiB".
    t.add_bytes("virtLauncherMonitor", VIRT_LAUNCHER_MONITOR)?;
    t.add_bytes("virtLauncher", VIRT_LAUNCHER)?;
    t.add_bytes("virtlogd", VIRTLOGD)?;
    t.add_bytes("virtqemud", VIRTQEMUD)?;
    t.add_bytes("qemu", model.qemu())?;

    // 8 MiB per vCPU.
    let n = vcpu_count(vmi)?;
    t.add(
        "vcpus",
        Quantity::from_int(i128::from(n) * i128::from(PER_VCPU))
            .ok_or(MemoryError::Overflow { what: "vcpus" })?,
    )?;

    t.add_bytes("ioThread", IOTHREAD)
}

/// The terms that depend on devices and features of the VMI, up to (not including) the ratio.
/// Returns whether the VMI has dedicated CPUs or wants the Guaranteed QoS class, whose term
/// v1.5 adds only after the ratio.
fn add_device_and_feature_terms(
    t: &mut Terms,
    vmi: &Value,
    kv: &KubeVirtMemoryConfig,
) -> Result<bool, MemoryError> {
    let model = kv.model;

    // Video RAM unless autoattachGraphicsDevice is explicitly false.
    let graphics = present(
        vmi,
        &["spec", "domain", "devices", "autoattachGraphicsDevice"],
    );
    if graphics != Some(&Value::Bool(false)) {
        t.add_bytes("videoRam", model.video_ram())?;
    }

    // cpuArch: vmi.Spec.Architecture, else the cluster's (CalculateMemoryOverhead).
    let arch = match present(vmi, &["spec", "architecture"]).and_then(Value::as_str) {
        Some(a) if !a.is_empty() => a,
        _ => kv.cluster_arch.as_str(),
    };
    if arch == "arm64" {
        t.add_bytes("arm64Pflash", ARM64_PFLASH)?;
    }

    if has_vfio(vmi) {
        t.add_bytes("vfio", VFIO)?;
    }

    if has_downward_metrics_volume(vmi) {
        t.add_bytes("downwardMetrics", DOWNWARD_METRICS)?;
    }

    // addProbeOverheads: 10 MiB per exec probe, plus 100 MiB once.
    let liveness = present(vmi, &["spec", "livenessProbe", "exec"]).is_some();
    let readiness = present(vmi, &["spec", "readinessProbe", "exec"]).is_some();
    if liveness || readiness {
        let probes = u64::from(liveness) + u64::from(readiness);
        t.add_bytes("execProbes", probes * EXEC_PROBE_EACH + EXEC_PROBE_ONCE)?;
    }

    // IsSEVVMI || IsSEVSNPVMI || IsSEVESVMI: launchSecurity.sev or launchSecurity.snp set
    // (SEV-ES is a policy bit of sev; v1.5 knows only sev, and snp cannot be set there).
    let sev = present(vmi, &["spec", "domain", "launchSecurity", "sev"]).is_some()
        || present(vmi, &["spec", "domain", "launchSecurity", "snp"]).is_some();
    if sev {
        t.add_bytes("sev", SEV)?;
    }

    if has_tpm(vmi, model) {
        t.add_bytes("tpm", TPM)?;
    }

    let dedicated_or_guaranteed = is_cpu_dedicated(vmi) || wants_qos_guaranteed(vmi)?;
    if dedicated_or_guaranteed && model != OverheadModel::V1_5 {
        t.add_bytes("dedicatedCpuOrGuaranteedQos", DEDICATED_OR_GUARANTEED)?;
    }

    // RequiresMemoryOverheadReservation (v1.8+): memory.reservedOverhead.addedOverhead.
    if model != OverheadModel::V1_5 {
        let path = [
            "spec",
            "domain",
            "memory",
            "reservedOverhead",
            "addedOverhead",
        ];
        if let Some(added) = memory_at(vmi, &path)? {
            t.add("reservedOverhead", added)?;
        }
    }
    Ok(dedicated_or_guaranteed)
}

/// The `additionalGuestMemoryOverheadRatio` term; returns the ratio applied.
fn add_ratio_term(t: &mut Terms, kv: &KubeVirtMemoryConfig) -> Result<Option<f64>, MemoryError> {
    // MultiplyMemory: float64(mem.ScaledValue(Kilo)) * (ratio - 1.0), int64() truncation, in
    // kilobytes. "Multiplying the ratio is expected to be the last calculation". A ratio below
    // 1.0 gives a negative addition, as in Go.
    let ratio = kv.ratio()?;
    if let Some(r) = ratio {
        let kilobytes = t.sum.scaled_value_ceil(3);
        #[allow(clippy::cast_precision_loss)]
        let addition = (kilobytes as f64) * (r - 1.0);
        // Go's int64(f) truncates toward zero when f fits in an int64; outside that range the
        // result is implementation-defined (amd64 and arm64 differ), so it is not reproduced.
        const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
        if !(-TWO_POW_63..TWO_POW_63).contains(&addition) {
            return Err(MemoryError::UnreproducibleRatio {
                value: kv
                    .additional_guest_memory_overhead_ratio
                    .clone()
                    .unwrap_or_default(),
                why: "the scaled overhead does not fit in Go's int64",
            });
        }
        #[allow(clippy::cast_possible_truncation)]
        let addition_kb = i128::from(addition as i64);
        let q = addition_kb
            .checked_mul(1000)
            .and_then(Quantity::from_int)
            .ok_or(MemoryError::Overflow {
                what: "additionalGuestMemoryOverheadRatio",
            })?;
        t.add("additionalGuestMemoryOverheadRatio", q)?;
    }
    Ok(ratio)
}

/// The network memory: the passt binding and the network binding plugins.
fn add_network_terms(
    t: &mut Terms,
    vmi: &Value,
    kv: &KubeVirtMemoryConfig,
) -> Result<(), MemoryError> {
    // The network memory calculator, last and unscaled (CalculateMemoryOverhead). v1.8+
    // (pkg/network/resources/memory.go:40-42 at v1.8.0 and v1.9.0): 250 MiB once when any
    // interface uses the core passt binding (`passtBinding`, a field that exists only from
    // v1.8, so its presence needs no model check); then the registered plugins.
    if has_passt_binding(vmi) {
        t.add_bytes("passtBinding", PASST_BINDING)?;
    }
    if let Some(plugins) = network_binding_overhead(vmi, kv)? {
        t.add("networkBindingPlugins", plugins)?;
    }
    Ok(())
}

/// The breakdown of the accumulated terms, with their total.
fn into_breakdown(
    t: Terms,
    ratio: Option<f64>,
    kv: &KubeVirtMemoryConfig,
) -> Result<OverheadBreakdown, MemoryError> {
    // A ratio below 0 can make KubeVirt's overhead negative; no byte count reports that.
    let total = t.sum.value_ceil();
    if total < 0 {
        return Err(MemoryError::NegativeOverhead { bytes: total });
    }
    let total = u64::try_from(total).map_err(|_| MemoryError::Overflow {
        what: "total overhead",
    })?;
    Ok(OverheadBreakdown {
        terms: t
            .terms
            .into_iter()
            .map(|(name, q)| OverheadTerm {
                name,
                bytes: q.value_ceil(),
            })
            .collect(),
        ratio: ratio.and(kv.additional_guest_memory_overhead_ratio.clone()),
        total,
    })
}

/// `netbinding.MemoryCalculator.Calculate`: the memory request of every distinct registered
/// plugin that an interface binds to (`interfaces[].binding.name`). `None` when no interface
/// uses a registered plugin.
fn network_binding_overhead(
    vmi: &Value,
    kv: &KubeVirtMemoryConfig,
) -> Result<Option<Quantity>, MemoryError> {
    let mut seen = BTreeSet::new();
    let mut sum = Quantity::ZERO;
    for iface in array(vmi, &["spec", "domain", "devices", "interfaces"]) {
        let Some(name) = present(iface, &["binding", "name"]).and_then(Value::as_str) else {
            continue;
        };
        if seen.contains(name) {
            continue;
        }
        let Some(memory) = kv.network_binding_memory.get(name) else {
            continue;
        };
        seen.insert(name);
        sum = sum.checked_add(*memory).ok_or(MemoryError::Overflow {
            what: "networkBindingPlugins",
        })?;
    }
    Ok((!seen.is_empty()).then_some(sum))
}

/// The array at `path`, empty when absent or not an array.
fn array<'v>(v: &'v Value, path: &[&str]) -> &'v [Value] {
    present(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `vmispec.HasPasstBinding` (pkg/network/vmispec/interface.go:183 at v1.9.0): an interface
/// with `passtBinding` set.
fn has_passt_binding(vmi: &Value) -> bool {
    array(vmi, &["spec", "domain", "devices", "interfaces"])
        .iter()
        .any(|i| present(i, &["passtBinding"]).is_some())
}

/// `IsVFIOVMI` / `vmitrait.HasVFIO`: any GPU, any host device, or an SR-IOV interface.
fn has_vfio(vmi: &Value) -> bool {
    let devices = ["spec", "domain", "devices"];
    let list = |key: &str| {
        let mut p = devices.to_vec();
        p.push(key);
        array(vmi, &p)
    };
    !list("gpus").is_empty()
        || !list("hostDevices").is_empty()
        || list("interfaces")
            .iter()
            .any(|i| present(i, &["sriov"]).is_some())
}

/// `downwardmetrics.HasDownwardMetricDisk`: a volume with `downwardMetrics` (the
/// `devices.downwardMetrics` virtio-serial device does not count).
fn has_downward_metrics_volume(vmi: &Value) -> bool {
    array(vmi, &["spec", "volumes"])
        .iter()
        .any(|v| present(v, &["downwardMetrics"]).is_some())
}

/// v1.6+: `tpm.HasDevice` (`devices.tpm` set and `enabled` nil or true); v1.5: `TPM != nil`.
fn has_tpm(vmi: &Value, model: OverheadModel) -> bool {
    let Some(tpm) = present(vmi, &["spec", "domain", "devices", "tpm"]) else {
        return false;
    };
    model == OverheadModel::V1_5 || present(tpm, &["enabled"]) != Some(&Value::Bool(false))
}

/// `vmi.IsCPUDedicated()`: `spec.domain.cpu.dedicatedCpuPlacement == true`.
fn is_cpu_dedicated(vmi: &Value) -> bool {
    present(vmi, &["spec", "domain", "cpu", "dedicatedCpuPlacement"]) == Some(&Value::Bool(true))
}

/// A resource quantity of the VMI; absent and null are zero (Go's `ResourceList.Memory()`).
fn resource(vmi: &Value, path: &[&str]) -> Result<Quantity, MemoryError> {
    match at(vmi, path) {
        None | Some(Value::Null) => Ok(Quantity::ZERO),
        Some(x) => quantity_value(x, &path.join(".")),
    }
}

/// `vmi.WantsToHaveQOSGuaranteed()`: memory request (or only a limit) equals the limit and a
/// non-zero CPU request equals the CPU limit (exact comparison, like `Quantity.Cmp`).
fn wants_qos_guaranteed(vmi: &Value) -> Result<bool, MemoryError> {
    let (req_mem, lim_mem) = (
        resource(vmi, &REQUESTS_MEMORY)?,
        resource(vmi, &LIMITS_MEMORY)?,
    );
    let (req_cpu, lim_cpu) = (resource(vmi, &REQUESTS_CPU)?, resource(vmi, &LIMITS_CPU)?);
    let memory =
        (req_mem.is_zero() && !lim_mem.is_zero()) || (!req_mem.is_zero() && req_mem == lim_mem);
    let cpu = !req_cpu.is_zero() && req_cpu == lim_cpu;
    Ok(memory && cpu)
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

/// The vCPU count of `GetMemoryOverhead`, or an error where Go could not decode the VMI.
pub(crate) fn vcpu_count(vmi: &Value) -> Result<u64, MemoryError> {
    let n: i128 = if let Some(cpu) = present(vmi, &["spec", "domain", "cpu"]) {
        if !cpu.is_object() {
            return Err(MemoryError::InvalidField {
                path: "spec.domain.cpu".into(),
                expected: "an object",
            });
        }
        // hardware.GetNumberOfVCPUs: cores, times sockets, times threads, skipping zeros, in
        // uint32 arithmetic (which wraps in Go; reproduced).
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
    // "if neither CPU topology nor request or limits provided, set vcpus to 1"
    Ok(u64::try_from(n.max(1)).unwrap_or(u64::MAX))
}

/// The vCPU count KubeVirt uses for the overhead: `sockets × cores × threads` (zeros skipped,
/// uint32 arithmetic) when `spec.domain.cpu` is set, else the CPU limit, else the CPU request
/// (rounded up), at least 1. A VMI virt-controller could not decode counts as 1.
#[cfg(test)]
pub fn vcpus(vmi: &Value) -> u64 {
    vcpu_count(vmi).unwrap_or(1)
}

/// The guest's memory as KubeVirt's converter sizes the domain (`GetVirtualMemory` in
/// `pkg/virt-launcher/virtwrap/converter`): `spec.domain.memory.guest`, else the memory
/// *limit* when set, else the memory request. Rounded up to whole bytes.
pub fn guest_memory_bytes(vmi: &Value) -> Result<u64, MemoryError> {
    let guest = memory_at(vmi, &["spec", "domain", "memory", "guest"])?;
    let chosen = match guest {
        Some(g) => Some(g),
        None => match memory_at(vmi, &LIMITS_MEMORY)? {
            Some(l) => Some(l),
            None => memory_at(vmi, &REQUESTS_MEMORY)?,
        },
    };
    chosen
        .map(|q| q.to_u64_saturating())
        .ok_or(MemoryError::MissingGuestMemory)
}
