//! The mshv terms: memory the Hyper-V layered hypervisor needs per VM on top of KubeVirt's
//! estimate (settings `memoryOverhead.mshv.fixed|perVcpu|guestMemoryPercent`, all "0" by
//! default, so that the default Pod equals upstream KubeVirt's).

use std::fmt;

use crate::quantity::{self, QuantityError};

/// Parts per million in one percent.
const PPM_PER_PERCENT: u64 = 10_000;
/// 100 %.
const PPM_MAX: u64 = 1_000_000;

/// The validated mshv terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MshvTerms {
    /// Bytes per VM.
    pub fixed: u64,
    /// Bytes per vCPU.
    pub per_vcpu: u64,
    /// Share of the guest memory, in parts per million (0..=1_000_000, i.e. 0–100 %).
    pub guest_memory_ppm: u64,
}

/// Which setting a [`TermError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TermField {
    Fixed,
    PerVcpu,
    GuestMemoryPercent,
}

impl TermField {
    /// The settings key: `"fixed"`, `"perVcpu"` or `"guestMemoryPercent"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TermField::Fixed => "fixed",
            TermField::PerVcpu => "perVcpu",
            TermField::GuestMemoryPercent => "guestMemoryPercent",
        }
    }
}

impl fmt::Display for TermField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is wrong with a term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TermErrorKind {
    /// Not a Kubernetes quantity.
    Quantity(QuantityError),
    /// A quantity below zero.
    Negative,
    /// More bytes than a u64 holds.
    TooLarge,
    /// Not a plain decimal number such as "1.5".
    NotADecimal,
    /// A percentage above 100.
    PercentAbove100,
    /// More than four decimal places that are not zero (the resolution is 1 ppm).
    TooPrecise,
}

/// A term that does not parse, naming the setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermError {
    pub field: TermField,
    pub value: String,
    pub kind: TermErrorKind,
}

impl TermError {
    /// The settings key of the faulty term (`"fixed"`, `"perVcpu"`, `"guestMemoryPercent"`).
    pub fn field(&self) -> &'static str {
        self.field.as_str()
    }
}

impl fmt::Display for TermError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.value;
        match &self.kind {
            TermErrorKind::Quantity(e) => write!(f, "{v:?} is not a Kubernetes quantity: {e}"),
            TermErrorKind::Negative => write!(f, "{v:?} is negative"),
            TermErrorKind::TooLarge => write!(f, "{v:?} is larger than 2^64-1 bytes"),
            TermErrorKind::NotADecimal => {
                write!(
                    f,
                    "{v:?} is not a decimal number of percent such as \"1.5\""
                )
            }
            TermErrorKind::PercentAbove100 => write!(f, "{v:?} is above 100 percent"),
            TermErrorKind::TooPrecise => {
                write!(f, "{v:?} has more than four decimal places")
            }
        }
    }
}

impl std::error::Error for TermError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            TermErrorKind::Quantity(e) => Some(e),
            _ => None,
        }
    }
}

impl MshvTerms {
    /// Parses the three settings: `fixed` and `per_vcpu` are Kubernetes quantities >= 0 (a
    /// fractional byte rounds up), `guest_memory_percent` a decimal 0–100 with at most four
    /// significant decimal places ("1.5", "0.25", "100").
    pub fn parse(
        fixed: &str,
        per_vcpu: &str,
        guest_memory_percent: &str,
    ) -> Result<Self, TermError> {
        Ok(MshvTerms {
            fixed: parse_bytes(TermField::Fixed, fixed)?,
            per_vcpu: parse_bytes(TermField::PerVcpu, per_vcpu)?,
            guest_memory_ppm: parse_percent_ppm(guest_memory_percent)?,
        })
    }

    /// Whether all three terms are zero (the Pod then stays as KubeVirt rendered it).
    pub fn is_zero(&self) -> bool {
        self.fixed == 0 && self.per_vcpu == 0 && self.guest_memory_ppm == 0
    }
}

fn parse_bytes(field: TermField, s: &str) -> Result<u64, TermError> {
    let err = |kind| TermError {
        field,
        value: s.to_string(),
        kind,
    };
    let q = quantity::parse(s).map_err(|e| err(TermErrorKind::Quantity(e)))?;
    if q.is_negative() {
        return Err(err(TermErrorKind::Negative));
    }
    u64::try_from(q.value_ceil()).map_err(|_| err(TermErrorKind::TooLarge))
}

fn parse_percent_ppm(s: &str) -> Result<u64, TermError> {
    let err = |kind| TermError {
        field: TermField::GuestMemoryPercent,
        value: s.to_string(),
        kind,
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return Err(err(TermErrorKind::NotADecimal));
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 4 {
        return Err(err(TermErrorKind::TooPrecise));
    }
    let int = int.trim_start_matches('0');
    if int.len() > 3 {
        return Err(err(TermErrorKind::PercentAbove100));
    }
    let int_value: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| err(TermErrorKind::NotADecimal))?
    };
    let frac_value: u64 = if frac.is_empty() {
        0
    } else {
        // Right-pad to four digits: ".5" % is 5000 ppm, ".0025" % is 25 ppm.
        format!("{frac:0<4}")
            .parse()
            .map_err(|_| err(TermErrorKind::NotADecimal))?
    };
    let ppm = int_value * PPM_PER_PERCENT + frac_value;
    if ppm > PPM_MAX {
        return Err(err(TermErrorKind::PercentAbove100));
    }
    Ok(ppm)
}

/// The mshv delta: `fixed + per_vcpu × vcpus + ceil(guest_memory × ppm / 1_000_000)`,
/// saturating at `u64::MAX`.
pub fn mshv_delta(terms: &MshvTerms, vcpus: u64, guest_memory: u64) -> u64 {
    let per_vcpu = u128::from(terms.per_vcpu) * u128::from(vcpus);
    let share = (u128::from(guest_memory) * u128::from(terms.guest_memory_ppm))
        .div_ceil(u128::from(PPM_MAX));
    let sum = u128::from(terms.fixed)
        .saturating_add(per_vcpu)
        .saturating_add(share);
    u64::try_from(sum).unwrap_or(u64::MAX)
}
