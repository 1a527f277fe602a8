//! Exact Kubernetes `resource.Quantity` parsing.
//!
//! The grammar, the suffixes and every rounding rule follow kubernetes/apimachinery
//! `pkg/api/resource/quantity.go` (`parseQuantityString`, `ParseQuantity`), `suffix.go`
//! (`interpret`) and `math.go` (`negativeScaleInt64`, `scaledValue`):
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
//! <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>
//! ```
//!
//! A parsed value is kept exactly, as a whole number of nano-units in an `i128`. That is no loss:
//! `ParseQuantity` itself keeps a value only down to nano, rounding a finer non-zero value away
//! from zero ("0.9n" is "1n"), and caps a binary-SI value at 2^63-1 ("8Ei"). Go keeps arbitrary
//! large decimal values (`inf.Dec`); here anything beyond ±1.7·10^29 units is
//! [`QuantityError::OutOfRange`] instead, which no memory or CPU amount comes near.
//!
//! Go oddities reproduced on purpose, because the API server accepts what `ParseQuantity` accepts:
//! a number part without digits is zero ("+", "-", ".", "Ki", "m" all parse as 0) except where Go
//! leaves its int64 fast path for `inf.Dec` ("Pi", "Ei", "e-10" with no digits are errors); the
//! exponent of "e"/"E" is parsed as an int64 then truncated to int32, as Go does.
//!
//! Integer accessors round up like Go's `Quantity.Value()`/`ScaledValue()` (which round a positive
//! fraction up; `ScaledValue` documents "ceil(q / 10^scale)"). For negative values current
//! apimachinery rounds away from zero; this module rounds toward +∞ ([`Quantity::value_ceil`]), and
//! its callers reject negative memory amounts before rounding matters.

use std::fmt;
use std::str::FromStr;

/// Nano-units per unit.
pub const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// Longest accepted input. Go has no limit; a longer quantity string in a Pod or VMI is garbage.
pub const MAX_INPUT_LEN: usize = 1024;

/// 2^63-1: the cap `ParseQuantity` applies to binary-SI values (`maxAllowed`).
const BINARY_SI_MAX_UNITS: u128 = i64::MAX as u128;

/// An exact Kubernetes quantity: a whole number of nano-units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    nanos: i128,
}

/// Why a string is not a Kubernetes quantity. The first three mirror apimachinery's
/// `ErrFormatWrong`, `ErrSuffix` and `ErrNumeric`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuantityError {
    /// The empty string (Go: `ErrFormatWrong`).
    Empty,
    /// Longer than [`MAX_INPUT_LEN`] bytes.
    TooLong { len: usize },
    /// Not `<signedNumber><suffix>` (Go: `ErrFormatWrong`).
    FormatWrong,
    /// The suffix is none of the known ones (Go: `ErrSuffix`).
    InvalidSuffix,
    /// The number part has no digit where Go needs one (Go: `ErrNumeric`).
    InvalidNumber,
    /// The value does not fit in ±(2^127-1) nano-units.
    OutOfRange,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantityError::Empty => write!(f, "a quantity cannot be empty"),
            QuantityError::TooLong { len } => {
                write!(
                    f,
                    "a quantity of {len} bytes is longer than {MAX_INPUT_LEN}"
                )
            }
            QuantityError::FormatWrong => write!(
                f,
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
            ),
            QuantityError::InvalidSuffix => write!(f, "unable to parse quantity's suffix"),
            QuantityError::InvalidNumber => write!(f, "unable to parse numeric part of quantity"),
            QuantityError::OutOfRange => write!(f, "quantity out of range"),
        }
    }
}

impl std::error::Error for QuantityError {}

impl Quantity {
    /// Zero.
    pub const ZERO: Quantity = Quantity { nanos: 0 };

    /// The quantity of `nanos` nano-units.
    pub const fn from_nanos(nanos: i128) -> Self {
        Quantity { nanos }
    }

    /// The value in nano-units (exact).
    #[cfg(test)]
    pub const fn nanos(&self) -> i128 {
        self.nanos
    }

    /// Strictly greater than zero.
    pub const fn is_positive(&self) -> bool {
        self.nanos > 0
    }

    pub const fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// The value rounded up to an integer, like Go's `Quantity.Value()` for non-negative values.
    pub fn value_ceil(&self) -> i128 {
        div_ceil(self.nanos, NANOS_PER_UNIT)
    }

    /// Bytes for a Pod: rounded up, clamped to `0..=u64::MAX`.
    pub fn to_u64_saturating(self) -> u64 {
        let v = self.value_ceil();
        if v <= 0 {
            0
        } else {
            u64::try_from(v).unwrap_or(u64::MAX)
        }
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// Plain decimal without suffix: "2432696320", "1.5", "-0.000000001".
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let per = NANOS_PER_UNIT.unsigned_abs();
        let (int, frac) = (abs / per, abs % per);
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let digits = format!("{frac:09}");
            write!(f, "{sign}{int}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// `ceil(a / b)` for `b > 0` (and correct for any non-zero `b`).
fn div_ceil(a: i128, b: i128) -> i128 {
    if b == 0 {
        return 0;
    }
    // a / b cannot overflow unless a == MIN && b == -1; b is never -1 here but stay total.
    let (q, r) = match (a.checked_div(b), a.checked_rem(b)) {
        (Some(q), Some(r)) => (q, r),
        _ => return i128::MAX,
    };
    if r != 0 && ((r > 0) == (b > 0)) {
        q.saturating_add(1)
    } else {
        q
    }
}

fn pow10_u128(exp: u64) -> Option<u128> {
    let exp = u32::try_from(exp).ok()?;
    10_u128.checked_pow(exp)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    /// Decimal SI suffix or decimal exponent: base 10.
    Decimal,
    /// Binary SI suffix: base 2.
    Binary,
}

/// The number part split as Go's `parseQuantityString` splits it.
struct Scanned<'a> {
    positive: bool,
    /// Numerator digits with leading zeros stripped (may be empty: Go then uses "0").
    num: &'a [u8],
    /// Digits after the decimal point.
    denom: &'a [u8],
    /// Whether the number part (Go's `value` without its sign) holds any digit.
    has_digit: bool,
    suffix: &'a [u8],
}

fn is_suffix_char(c: u8) -> bool {
    b"eEinumkKMGTP".contains(&c)
}

/// Go's `parseQuantityString`, byte for byte.
fn scan(s: &[u8]) -> Result<Scanned<'_>, QuantityError> {
    let end = s.len();
    let mut positive = true;
    let mut pos = 0;
    match s.first() {
        Some(b'-') => {
            positive = false;
            pos = 1;
        }
        Some(b'+') => pos = 1,
        _ => {}
    }
    let sign_len = pos;
    let finish = |positive, num, denom, upto: usize, suffix| {
        let has_digit = s
            .get(sign_len..upto)
            .is_some_and(|v| v.iter().any(u8::is_ascii_digit));
        Ok(Scanned {
            positive,
            num,
            denom,
            has_digit,
            suffix,
        })
    };

    // strip leading zeros; a string of zeros (or a bare sign) is zero
    while pos < end && s[pos] == b'0' {
        pos += 1;
    }
    if pos >= end {
        // Go: num = "0", value = "0".
        return Ok(Scanned {
            positive,
            num: b"",
            denom: b"",
            has_digit: true,
            suffix: b"",
        });
    }

    // numerator
    let num_start = pos;
    while pos < end && s[pos].is_ascii_digit() {
        pos += 1;
    }
    let num = &s[num_start..pos];
    if pos >= end {
        return finish(positive, num, &s[end..], end, &s[end..]);
    }

    // denominator
    let mut denom: &[u8] = &s[pos..pos];
    if s[pos] == b'.' {
        pos += 1;
        let denom_start = pos;
        while pos < end && s[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = &s[denom_start..pos];
        if pos >= end {
            return finish(positive, num, denom, end, &s[end..]);
        }
    }
    let value_end = pos;

    // suffix: letters, an optional sign, digits
    let suffix_start = pos;
    while pos < end && is_suffix_char(s[pos]) {
        pos += 1;
    }
    if pos >= end {
        return finish(positive, num, denom, value_end, &s[suffix_start..]);
    }
    if s[pos] == b'-' || s[pos] == b'+' {
        pos += 1;
    }
    while pos < end {
        if !s[pos].is_ascii_digit() {
            return Err(QuantityError::FormatWrong);
        }
        pos += 1;
    }
    finish(positive, num, denom, value_end, &s[suffix_start..])
}

/// Go's `suffixHandler.interpret`: (base-10 or base-2 exponent, format).
fn interpret_suffix(suffix: &[u8]) -> Result<(i32, Format), QuantityError> {
    let decimal = match suffix {
        b"n" => Some(-9),
        b"u" => Some(-6),
        b"m" => Some(-3),
        b"" => Some(0),
        b"k" => Some(3),
        b"M" => Some(6),
        b"G" => Some(9),
        b"T" => Some(12),
        b"P" => Some(15),
        b"E" => Some(18),
        _ => None,
    };
    if let Some(e) = decimal {
        return Ok((e, Format::Decimal));
    }
    let binary = match suffix {
        b"Ki" => Some(10),
        b"Mi" => Some(20),
        b"Gi" => Some(30),
        b"Ti" => Some(40),
        b"Pi" => Some(50),
        b"Ei" => Some(60),
        _ => None,
    };
    if let Some(e) = binary {
        return Ok((e, Format::Binary));
    }
    if suffix.len() > 1 && (suffix[0] == b'e' || suffix[0] == b'E') {
        // strconv.ParseInt(s, 10, 64), then int32(parsed): the truncation is Go's.
        let text = std::str::from_utf8(&suffix[1..]).map_err(|_| QuantityError::InvalidSuffix)?;
        let parsed: i64 = text.parse().map_err(|_| QuantityError::InvalidSuffix)?;
        return Ok((parsed as i32, Format::Decimal));
    }
    Err(QuantityError::InvalidSuffix)
}

/// Whether Go's int64 fast path takes a number without digits (value 0). Outside it Go calls
/// `inf.Dec.SetString`, which fails without a digit (`ErrNumeric`).
fn digitless_takes_fast_path(exponent: i32, format: Format) -> bool {
    // num is "0" (len 1) and denom is empty, as parseQuantityString leaves them.
    match format {
        // precision = 18 - 1 >= 0; scale = exponent must be >= Nano (-9).
        Format::Decimal => exponent >= -9,
        Format::Binary => {
            // precision = 15 - len(num) - int32(float32(exponent)*3/10) - 1 must be >= 0:
            // true for Ki..Ti (3, 6, 9, 12), false for Pi (15) and Ei (18).
            let digits = (exponent as f32 * 3.0 / 10.0) as i32;
            digits <= 13
        }
    }
}

/// Multiplies a big-endian decimal digit vector by a small factor.
fn mul_small(digits: &mut Vec<u8>, factor: u32) {
    let mut carry: u64 = 0;
    for d in digits.iter_mut().rev() {
        let v = u64::from(*d) * u64::from(factor) + carry;
        *d = (v % 10) as u8;
        carry = v / 10;
    }
    while carry > 0 {
        digits.insert(0, (carry % 10) as u8);
        carry /= 10;
    }
}

/// Parses big-endian decimal digits into a u128; `None` on overflow.
fn digits_to_u128(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0_u128, |acc, d| {
        acc.checked_mul(10)?.checked_add(u128::from(*d))
    })
}

/// Parses a Kubernetes quantity exactly (see the module documentation).
pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return Err(QuantityError::Empty);
    }
    if bytes.len() > MAX_INPUT_LEN {
        return Err(QuantityError::TooLong { len: bytes.len() });
    }
    let sc = scan(bytes)?;
    let (exponent, format) = interpret_suffix(sc.suffix)?;
    if !sc.has_digit {
        return if digitless_takes_fast_path(exponent, format) {
            Ok(Quantity::ZERO)
        } else {
            Err(QuantityError::InvalidNumber)
        };
    }

    // All significant digits, value = digits * 10^(e10 - denom.len()) [* 2^exponent].
    let mut digits: Vec<u8> = sc
        .num
        .iter()
        .chain(sc.denom.iter())
        .map(|c| c - b'0')
        .skip_while(|d| *d == 0)
        .collect();
    let mut e10 = -(sc.denom.len() as i64);
    match format {
        Format::Decimal => e10 += i64::from(exponent),
        Format::Binary => {
            // exponent is 10..=60 in steps of 10: multiply by 1024 that many times.
            for _ in 0..(exponent / 10) {
                mul_small(&mut digits, 1024);
            }
        }
    }
    let magnitude = nanos_magnitude(&digits, e10 + 9);
    let magnitude = match (format, magnitude) {
        (Format::Binary, None) => Some(BINARY_SI_MAX_UNITS * NANOS_PER_UNIT.unsigned_abs()),
        (Format::Binary, Some(m)) => {
            Some(m.min(BINARY_SI_MAX_UNITS * NANOS_PER_UNIT.unsigned_abs()))
        }
        (Format::Decimal, m) => m,
    };
    let magnitude = magnitude.ok_or(QuantityError::OutOfRange)?;
    let nanos = i128::try_from(magnitude).map_err(|_| QuantityError::OutOfRange)?;
    Ok(Quantity::from_nanos(if sc.positive {
        nanos
    } else {
        -nanos
    }))
}

/// `digits * 10^shift` rounded away from zero to an integer (apimachinery rounds a value finer
/// than nano up to the next nano with `inf.RoundUp`); `None` when it does not fit a u128.
fn nanos_magnitude(digits: &[u8], shift: i64) -> Option<u128> {
    if digits.is_empty() {
        return Some(0);
    }
    if shift >= 0 {
        // 10^39 > u128::MAX, so anything with more digits overflows.
        if digits.len() as i64 + shift > 39 {
            return None;
        }
        let base = digits_to_u128(digits)?;
        return base.checked_mul(pow10_u128(shift.unsigned_abs())?);
    }
    let drop = shift.unsigned_abs();
    let len = digits.len() as u64;
    if drop >= len {
        // 0 < value < 1 nano: rounds up to 1 nano.
        return Some(1);
    }
    let keep = usize::try_from(len - drop).ok()?;
    let (kept, dropped) = digits.split_at(keep);
    let q = digits_to_u128(kept)?;
    if dropped.iter().any(|d| *d != 0) {
        q.checked_add(1)
    } else {
        Some(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> Quantity {
        match parse(s) {
            Ok(q) => q,
            Err(e) => panic!("{s:?} did not parse: {e}"),
        }
    }

    fn units(s: &str) -> i128 {
        let n = q(s).nanos();
        assert_eq!(n % NANOS_PER_UNIT, 0, "{s} is not whole");
        n / NANOS_PER_UNIT
    }

    #[test]
    fn suffixes() {
        // Tables of apimachinery pkg/api/resource/suffix.go.
        assert_eq!(units("1"), 1);
        assert_eq!(units("1k"), 1_000);
        assert_eq!(units("1M"), 1_000_000);
        assert_eq!(units("1G"), 1_000_000_000);
        assert_eq!(units("1T"), 1_000_000_000_000);
        assert_eq!(units("1P"), 1_000_000_000_000_000);
        assert_eq!(units("1E"), 1_000_000_000_000_000_000);
        assert_eq!(units("1Ki"), 1 << 10);
        assert_eq!(units("1Mi"), 1 << 20);
        assert_eq!(units("1Gi"), 1 << 30);
        assert_eq!(units("1Ti"), 1 << 40);
        assert_eq!(units("1Pi"), 1 << 50);
        assert_eq!(units("1Ei"), 1 << 60);
        assert_eq!(q("1m").nanos(), 1_000_000);
        assert_eq!(q("1u").nanos(), 1_000);
        assert_eq!(q("1n").nanos(), 1);
        assert_eq!(units("1e3"), 1_000);
        assert_eq!(units("1E3"), 1_000);
        assert_eq!(units("1e+3"), 1_000);
        assert_eq!(q("1e-3").nanos(), 1_000_000);
        assert_eq!(units("12e6"), 12_000_000);
    }

    #[test]
    fn numbers() {
        assert_eq!(units("2432696320"), 2_432_696_320);
        assert_eq!(units("+5"), 5);
        assert_eq!(units("-5"), -5);
        assert_eq!(units("007"), 7);
        assert_eq!(q("1.5").nanos(), 1_500_000_000);
        assert_eq!(q(".5").nanos(), 500_000_000);
        assert_eq!(units("5."), 5);
        assert_eq!(units("1.G"), 1_000_000_000); // Go: "we currently allow 1.G"
        assert_eq!(units("1.5Gi"), 1_610_612_736);
        assert_eq!(q("0.1Ki").nanos(), 102_400_000_000);
        assert_eq!(q("100m").nanos(), 100_000_000);
        assert_eq!(units("0"), 0);
        assert_eq!(units("-0"), 0);
        assert_eq!(units("000"), 0);
    }

    #[test]
    fn rounding_to_nano_is_away_from_zero() {
        // quantity.go: "0.9n" becomes "1n".
        assert_eq!(q("0.9n").nanos(), 1);
        assert_eq!(q("-0.9n").nanos(), -1);
        assert_eq!(q("1.0000000001").nanos(), 1_000_000_001);
        assert_eq!(q("0.0000000001Ki").nanos(), 103); // 102.4n
        assert_eq!(q("1.5n").nanos(), 2);
    }

    #[test]
    fn binary_si_is_capped_at_2_63_minus_1() {
        // quantity.go: "8Ei" parses as 2^63-1.
        assert_eq!(units("8Ei"), i128::from(i64::MAX));
        assert_eq!(units("100000Ei"), i128::from(i64::MAX));
        assert_eq!(units("-8Ei"), -i128::from(i64::MAX));
        assert_eq!(units("7Ei"), 7 << 60);
        // Decimal values are not capped.
        assert_eq!(units("18446744073709551616"), 18_446_744_073_709_551_616);
    }

    #[test]
    fn go_digitless_oddities() {
        // parseQuantityString turns a missing numerator into "0"; the int64 fast path then
        // yields zero, inf.Dec.SetString (taken for Pi, Ei and scales below nano) fails.
        for s in ["+", "-", ".", "-.", "Ki", "Ti", "m", "n", "E", "e3", "k"] {
            assert_eq!(parse(s), Ok(Quantity::ZERO), "{s}");
        }
        for s in ["Pi", "Ei", ".Ei", "e-10"] {
            assert_eq!(parse(s), Err(QuantityError::InvalidNumber), "{s}");
        }
    }

    #[test]
    fn exponent_is_truncated_to_int32_like_go() {
        // 4294967296 = 2^32 truncates to 0, 4294967299 to 3.
        assert_eq!(units("1e4294967296"), 1);
        assert_eq!(units("1e4294967299"), 1_000);
    }

    #[test]
    fn errors() {
        assert_eq!(parse(""), Err(QuantityError::Empty));
        for s in [
            "1x", "1.5.5", "1 ", " 1", "1k.5", "1Ki5", "abc", "1e3x", "0x10", "1_000",
        ] {
            assert!(parse(s).is_err(), "{s} parsed");
        }
        for s in [
            "1K",
            "1mi",
            "1e",
            "1Ki-",
            "1-",
            "1Ee3",
            "1e99999999999999999999",
            "1KiB",
        ] {
            assert!(parse(s).is_err(), "{s} parsed");
        }
        assert_eq!(parse("1e30"), Err(QuantityError::OutOfRange));
        assert_eq!(parse("1e29"), Ok(Quantity::from_nanos(10_i128.pow(38))));
        assert_eq!(parse("é"), Err(QuantityError::FormatWrong));
        let long = "1".repeat(MAX_INPUT_LEN + 1);
        assert!(matches!(parse(&long), Err(QuantityError::TooLong { .. })));
        // Many digits below nano still parse (they only round).
        let tiny = format!("0.{}1", "0".repeat(500));
        assert_eq!(parse(&tiny), Ok(Quantity::from_nanos(1)));
        // Many digits above the range do not.
        assert_eq!(parse(&"9".repeat(40)), Err(QuantityError::OutOfRange));
    }

    #[test]
    fn value_rounds_up_like_go() {
        // quantity.go Value(): 1.5 -> 2; AsScaledInt64: (1e-6).AsScaledInt64(0) == 1.
        assert_eq!(q("1.5").value_ceil(), 2);
        assert_eq!(q("1u").value_ceil(), 1);
        assert_eq!(q("500m").value_ceil(), 1);
        assert_eq!(q("0").value_ceil(), 0);
        assert_eq!(q("3").value_ceil(), 3);
    }

    #[test]
    fn conversions() {
        assert_eq!(q("2Gi").to_u64_saturating(), 2_147_483_648);
        assert_eq!(q("-2Gi").to_u64_saturating(), 0);
        assert_eq!(q("1e25").to_u64_saturating(), u64::MAX);
        assert_eq!(q("0.5").to_u64_saturating(), 1);
        assert!(q("1m").is_positive());
        assert!(!q("0").is_positive());
        assert!(q("-1m").is_negative());
        assert_eq!(q("1Gi"), q("1073741824"));
        assert!(q("1G") < q("1Gi"));
    }

    #[test]
    fn display() {
        assert_eq!(q("2432696320").to_string(), "2432696320");
        assert_eq!(q("1.5").to_string(), "1.5");
        assert_eq!(q("-1n").to_string(), "-0.000000001");
        assert_eq!(q("1.5Gi").to_string(), "1610612736");
        assert_eq!(q("0").to_string(), "0");
    }

    const SUFFIXES: [(&str, i128); 16] = [
        ("", 1),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("e0", 1),
        ("e3", 1_000),
        ("E6", 1_000_000),
    ];

    proptest! {
        #[test]
        fn integers_round_trip_with_every_suffix(n in 0_u32..=u32::MAX, neg: bool, i in 0_usize..16) {
            let (suffix, mult) = SUFFIXES[i];
            let s = format!("{}{n}{suffix}", if neg { "-" } else { "" });
            let mut expected = i128::from(n) * mult;
            if suffix.ends_with('i') {
                expected = expected.min(i128::from(i64::MAX));
            }
            if neg {
                expected = -expected;
            }
            prop_assert_eq!(parse(&s).map(|q| q.nanos()), Ok(expected * NANOS_PER_UNIT));
        }

        #[test]
        fn sub_unit_suffixes(n in 0_u32..=u32::MAX) {
            prop_assert_eq!(parse(&format!("{n}m")).map(|q| q.nanos()), Ok(i128::from(n) * 1_000_000));
            prop_assert_eq!(parse(&format!("{n}u")).map(|q| q.nanos()), Ok(i128::from(n) * 1_000));
            prop_assert_eq!(parse(&format!("{n}n")).map(|q| q.nanos()), Ok(i128::from(n)));
        }

        #[test]
        fn display_round_trips(nanos in any::<i64>()) {
            let q = Quantity::from_nanos(i128::from(nanos));
            prop_assert_eq!(parse(&q.to_string()), Ok(q));
        }

        #[test]
        fn fractions_are_exact(int in 0_u32..1_000_000, frac in 0_u32..1_000_000_000) {
            let s = format!("{int}.{frac:09}");
            prop_assert_eq!(
                parse(&s).map(|q| q.nanos()),
                Ok(i128::from(int) * NANOS_PER_UNIT + i128::from(frac))
            );
        }

        #[test]
        fn never_panics_on_arbitrary_strings(s in ".{0,64}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_quantity_like_strings(s in "[-+]?[0-9.]{0,45}[eEinumkKMGTP]{0,3}[-+]?[0-9]{0,12}") {
            if let Ok(q) = parse(&s) {
                let _ = (q.value_ceil(), q.to_u64_saturating(), q.to_string());
            }
        }
    }
}
