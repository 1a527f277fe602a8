//! KubeVirt's `additionalGuestMemoryOverheadRatio`, applied to the mshv delta the way
//! KubeVirt applies it to its own overhead.
//!
//! `GetMemoryOverhead` ends with `overhead = MultiplyMemory(overhead, ratio)` when the KubeVirt
//! CR sets `spec.configuration.additionalGuestMemoryOverheadRatio`
//! (kubevirt/kubevirt@v1.9.0 pkg/hypervisor/kvm/hypervisorbackend.go:165-177, the same in
//! pkg/hypervisor/mshv/hypervisorbackend.go and on main at d923fdb8): `MultiplyMemory` (:203-209)
//! adds `int64(float64(mem.ScaledValue(resource.Kilo)) * (ratio - 1.0))` kilobytes (10^3).
//! The mshv delta is memory of the same kind (the hypervisor's, per VM), so it is scaled the same
//! way; the network memory KubeVirt adds after the ratio is not the delta's business.
//!
//! Scaling the delta on its own instead of KubeVirt's overhead plus the delta differs from what
//! KubeVirt would compute for the sum by at most the kilobyte rounding of the two products (a
//! few kB), never by the ratio itself.

use serde_json::Value;

use super::{MemoryError, present};

/// Where the ratio lives in the KubeVirt CR.
pub const RATIO_PATH: &str = "spec.configuration.additionalGuestMemoryOverheadRatio";

/// The ratio of a KubeVirt CR, `None` when unset or empty (KubeVirt then scales nothing).
///
/// Only a plain decimal number (`1.5`, `2`, `1.25e0`) is taken: for that grammar Go's
/// `strconv.ParseFloat` and Rust's `f64` parser are both correctly rounded and so agree. Go
/// also accepts hexadecimal floats, `_` digit separators, `Inf` and `NaN`, and ignores a
/// string it cannot parse; rather than reproducing Go's parser for values no operator writes,
/// any other string is an error: the Pod is then left as rendered (`memory-unsized`) with a
/// warning naming the field. KubeVirt's own webhook, which refuses such values, runs on UPDATE
/// of the CR only (kubevirt/kubevirt@v1.9.0
/// pkg/virt-operator/webhooks/kubevirt-update-admitter.go:482), so a created CR can hold one.
pub fn from_kubevirt_cr(kv: &Value) -> Result<Option<f64>, MemoryError> {
    let invalid = |expected| MemoryError::InvalidField {
        path: RATIO_PATH.into(),
        expected,
    };
    match present(
        kv,
        &[
            "spec",
            "configuration",
            "additionalGuestMemoryOverheadRatio",
        ],
    ) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if is_plain_decimal(s) => match s.parse::<f64>() {
            Ok(r) if r.is_finite() => Ok(Some(r)),
            _ => Err(invalid("a finite decimal number such as \"1.5\"")),
        },
        Some(Value::String(_)) => Err(invalid("a decimal number such as \"1.5\"")),
        Some(_) => Err(invalid("a string")),
    }
}

/// `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`, nothing else.
fn is_plain_decimal(s: &str) -> bool {
    let b = s.strip_prefix(['+', '-']).unwrap_or(s).as_bytes();
    let digits = |b: &[u8]| b.iter().take_while(|c| c.is_ascii_digit()).count();
    let int = digits(b);
    let mut i = int;
    let mut frac = 0;
    if b.get(i) == Some(&b'.') {
        frac = digits(&b[i + 1..]);
        i += 1 + frac;
    }
    if int + frac == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp = digits(&b[i..]);
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

/// `MultiplyMemory(delta, ratio)`: the delta plus `int64(float64(ceil(delta / 1000)) ×
/// (ratio − 1))` kilobytes, as KubeVirt scales its overhead; `delta` unchanged without a ratio.
///
/// A ratio below 1 shrinks the delta as it shrinks KubeVirt's overhead, but never below zero:
/// the policy only ever adds memory. Errors when the product is outside Go's int64 (where
/// Go's conversion is platform-dependent) or the delta is beyond KubeVirt's int64 quantities.
pub fn scale(delta: u64, ratio: Option<f64>) -> Result<u64, MemoryError> {
    let Some(r) = ratio else {
        return Ok(delta);
    };
    let overflow = MemoryError::Overflow {
        what: "the mshv delta times additionalGuestMemoryOverheadRatio",
    };
    if i64::try_from(delta).is_err() {
        return Err(overflow);
    }
    // `ScaledValue(Kilo)` rounds up.
    let kilobytes = delta.div_ceil(1000);
    // Precision: kilobytes < 2^63 / 1000 < 2^54; Go converts the same int64 to float64.
    #[allow(clippy::cast_precision_loss)]
    let addition = (kilobytes as f64) * (r - 1.0);
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if !(-TWO_POW_63..TWO_POW_63).contains(&addition) {
        return Err(overflow);
    }
    // Go's int64(f) truncates toward zero, as `as` does for a value in range.
    #[allow(clippy::cast_possible_truncation)]
    let addition_kb = i128::from(addition as i64);
    let scaled = i128::from(delta) + addition_kb * 1000;
    if scaled > i128::from(i64::MAX) {
        return Err(overflow);
    }
    Ok(u64::try_from(scaled.max(0)).unwrap_or(0))
}
