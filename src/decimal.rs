//! Exact decimal numbers for comparing cached values with the truth.
//!
//! PostgreSQL returns `numeric` sums as exact decimal text and the application
//! writes amounts as decimal text; adding or subtracting them in f64 invents
//! differences (0.1 + 0.2 is 0.30000000000000004), which `THRESHOLD 0` reports
//! as drift. A [`Decimal`] is `mantissa / 10^scale` with checked arithmetic:
//! anything that does not fit (or a form it does not read) yields `None`, and
//! the caller falls back to f64. No Redis types here.

use std::cmp::Ordering;
use std::fmt;

/// The largest scale kept: 10^38 is the largest power of ten in an i128.
const MAX_SCALE: u32 = 38;

/// `mantissa / 10^scale`, exactly. Equality and order are by value, so `0.30`
/// equals `0.3`; the text form drops trailing zeros.
#[derive(Clone, Copy, Debug)]
pub struct Decimal {
    mantissa: i128,
    scale: u32,
}

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

impl Decimal {
    pub const ZERO: Decimal = Decimal {
        mantissa: 0,
        scale: 0,
    };

    pub const fn integer(n: i128) -> Decimal {
        Decimal {
            mantissa: n,
            scale: 0,
        }
    }

    /// Reads the text forms `str::parse::<f64>` reads, except `inf` and `nan`:
    /// an optional sign, digits with an optional fraction (`1.`, `.5` too), an
    /// optional exponent (`1.5e-7`); no spaces. `None` also when the value does
    /// not fit, so whatever this reads, `parse_number` reads too.
    pub fn parse(text: &[u8]) -> Option<Decimal> {
        let (negative, rest) = match text.first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (number, exponent) = match rest.iter().position(|&b| b == b'e' || b == b'E') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (int_part, frac_part) = match number.iter().position(|&b| b == b'.') {
            Some(i) => (&number[..i], &number[i + 1..]),
            None => (number, &number[..0]),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        if !int_part.iter().chain(frac_part).all(u8::is_ascii_digit) {
            return None;
        }
        let exponent = match exponent {
            None => 0i64,
            Some(e) => parse_exponent(e)?,
        };
        // Trailing zeros of the fraction change nothing but the scale they cost
        // (PostgreSQL prints numeric(21,15) with all 15 places).
        let frac_len = frac_part.len() - frac_part.iter().rev().take_while(|&&b| b == b'0').count();
        let frac_part = &frac_part[..frac_len];
        let mut mantissa: i128 = 0;
        for &b in int_part.iter().chain(frac_part) {
            mantissa = mantissa
                .checked_mul(10)?
                .checked_add(i128::from(b - b'0'))?;
        }
        if mantissa == 0 {
            return Some(Decimal::ZERO);
        }
        if negative {
            mantissa = -mantissa;
        }
        let scale = frac_len as i64 - exponent;
        if scale < 0 {
            let up = u32::try_from(-scale).ok()?;
            mantissa = mantissa.checked_mul(pow10(up)?)?;
            return Some(Decimal { mantissa, scale: 0 });
        }
        let scale = u32::try_from(scale).ok()?;
        Decimal { mantissa, scale }.fit()
    }

    /// The exact value of a finite f64 as its shortest round-trip text shows it
    /// (`0.1` is 0.1, not the binary fraction nearest it): thresholds come from
    /// config and arguments as f64, and the operator typed decimal text.
    pub fn from_f64(x: f64) -> Option<Decimal> {
        if !x.is_finite() {
            return None;
        }
        Decimal::parse(format!("{x}").as_bytes())
    }

    /// Drops trailing zeros until the scale is within bounds.
    fn fit(mut self) -> Option<Decimal> {
        while self.scale > MAX_SCALE {
            if self.mantissa % 10 != 0 {
                return None;
            }
            self.mantissa /= 10;
            self.scale -= 1;
        }
        Some(self)
    }

    /// Both mantissas at the larger scale, or `None` if that overflows.
    fn aligned(self, other: Decimal) -> Option<(i128, i128, u32)> {
        match self.scale.cmp(&other.scale) {
            Ordering::Equal => Some((self.mantissa, other.mantissa, self.scale)),
            Ordering::Less => {
                let m = self
                    .mantissa
                    .checked_mul(pow10(other.scale - self.scale)?)?;
                Some((m, other.mantissa, other.scale))
            }
            Ordering::Greater => {
                let m = other
                    .mantissa
                    .checked_mul(pow10(self.scale - other.scale)?)?;
                Some((self.mantissa, m, self.scale))
            }
        }
    }

    pub fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let (a, b, scale) = self.aligned(other)?;
        Some(Decimal {
            mantissa: a.checked_add(b)?,
            scale,
        })
    }

    pub fn checked_sub(self, other: Decimal) -> Option<Decimal> {
        let (a, b, scale) = self.aligned(other)?;
        Some(Decimal {
            mantissa: a.checked_sub(b)?,
            scale,
        })
    }

    pub fn checked_mul(self, other: Decimal) -> Option<Decimal> {
        Decimal {
            mantissa: self.mantissa.checked_mul(other.mantissa)?,
            scale: self.scale + other.scale,
        }
        .fit()
    }

    pub fn checked_abs(self) -> Option<Decimal> {
        Some(Decimal {
            mantissa: self.mantissa.checked_abs()?,
            scale: self.scale,
        })
    }

    pub fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    /// The nearest f64 (correctly rounded: the text form is read by the
    /// standard parser), for the `diff` a reply carries as a double.
    pub fn to_f64(self) -> f64 {
        self.to_string()
            .parse()
            .expect("a decimal's text is a valid f64")
    }
}

/// An exponent's digits, optionally signed. Huge exponents are refused rather
/// than saturated: no value that fits needs one.
fn parse_exponent(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut e: i64 = 0;
    for &b in digits {
        e = e.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
        if e > 10_000 {
            return None;
        }
    }
    Some(if negative { -e } else { e })
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Decimal) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Decimal {}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        match self.aligned(*other) {
            Some((a, b, _)) => a.cmp(&b),
            // Aligning overflowed: the side with the smaller scale had to grow
            // past i128 where the other side fits, so its magnitude is strictly
            // larger and its sign decides.
            None => {
                let bigger = if self.scale < other.scale {
                    self.mantissa
                } else {
                    -other.mantissa.signum()
                };
                if bigger > 0 {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
        }
    }
}

impl fmt::Display for Decimal {
    /// Plain decimal text without trailing zeros: `0.3`, `-12.5`, `40`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut magnitude = self.mantissa.unsigned_abs();
        let mut scale = self.scale;
        while scale > 0 && magnitude.is_multiple_of(10) {
            magnitude /= 10;
            scale -= 1;
        }
        let digits = magnitude.to_string();
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let scale = scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        if digits.len() > scale {
            let (int, frac) = digits.split_at(digits.len() - scale);
            write!(f, "{sign}{int}.{frac}")
        } else {
            let zeros = "0".repeat(scale - digits.len());
            write!(f, "{sign}0.{zeros}{digits}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s.as_bytes()).unwrap_or_else(|| panic!("{s:?} does not parse"))
    }

    #[test]
    fn parses_the_forms_seen_in_practice() {
        for (text, shown) in [
            ("0.3", "0.3"),
            ("0.300000000000000", "0.3"),
            ("12.800000000000000", "12.8"),
            ("-12.5", "-12.5"),
            ("+7", "7"),
            ("40", "40"),
            ("007.50", "7.5"),
            ("1.", "1"),
            (".5", "0.5"),
            ("1.5e-7", "0.00000015"),
            ("1.5E+3", "1500"),
            ("2e3", "2000"),
            ("-0", "0"),
            ("0e-5", "0"),
            ("0.000000000000001", "0.000000000000001"),
        ] {
            assert_eq!(d(text).to_string(), shown, "{text:?}");
        }
    }

    #[test]
    fn refuses_what_parse_number_refuses_and_what_does_not_fit() {
        for bad in [
            "",
            "-",
            "+",
            ".",
            "e5",
            ".e5",
            "1e",
            "1e+",
            "1.2.3",
            " 5",
            "5 ",
            "1,5",
            "inf",
            "-infinity",
            "nan",
            "0x10",
            "1_000",
            "١",
        ] {
            assert!(Decimal::parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
        // Representable as f64, but not exactly here: the caller falls back.
        for big in [
            "1e39",
            "1e-39",
            "123456789012345678901234567890123456789012",
            "1e999999",
        ] {
            assert!(Decimal::parse(big.as_bytes()).is_none(), "{big:?}");
        }
    }

    #[test]
    fn whatever_parses_reads_the_same_as_f64() {
        for text in [
            "0.1",
            "0.2",
            "0.3",
            "-12.345678901234567",
            "1.5e-7",
            "1e38",
            "9.99e37",
            "170141183460469231731687303715884105727",
            "1.",
            ".5",
            "+3",
            "1e-38",
        ] {
            let exact = d(text);
            let float: f64 = text.parse().unwrap();
            assert_eq!(exact.to_f64(), float, "{text:?}");
        }
    }

    #[test]
    fn sums_exactly() {
        let sum = d("0.1").checked_add(d("0.2")).unwrap();
        assert_eq!(sum, d("0.3"));
        assert_eq!(sum, d("0.300000000000000"));
        assert_eq!(sum.to_string(), "0.3");
        let (a, b) = std::hint::black_box((0.1f64, 0.2f64));
        assert_ne!(a + b, 0.3, "the f64 sum is off, which is the point");
        let diff = d("50.1").checked_sub(d("12.800000000000000")).unwrap();
        assert_eq!(diff.to_string(), "37.3");
        assert_eq!(diff.to_f64(), 37.3);
        assert_eq!(d("1").checked_sub(d("12.8")).unwrap().to_string(), "-11.8");
        assert_eq!(d("-3.25").checked_abs().unwrap(), d("3.25"));
        assert_eq!(d("1.5").checked_mul(d("-0.2")).unwrap(), d("-0.3"));
    }

    #[test]
    fn overflow_is_none() {
        let max = d("170141183460469231731687303715884105727");
        assert!(max.checked_add(d("1")).is_none());
        assert!(max.checked_add(d("0.5")).is_none(), "aligning overflows");
        assert!(max.checked_mul(d("2")).is_none());
        assert!(d("0.1e-37").checked_mul(d("0.1e-37")).is_none());
        assert_eq!(
            d("0.5e-20").checked_mul(d("2e-18")).unwrap(),
            d("1e-38"),
            "a trailing zero is dropped to fit the scale"
        );
    }

    #[test]
    fn order_is_by_value_even_when_aligning_overflows() {
        assert!(d("0.3") < d("0.31"));
        assert!(d("-0.31") < d("-0.3"));
        assert_eq!(d("5"), d("5.000"));
        let huge = d("170141183460469231731687303715884105727");
        let small = d("0.00000000000000000000000000000000000001");
        assert_eq!(huge.cmp(&small), Ordering::Greater);
        assert_eq!(small.cmp(&huge), Ordering::Less);
        let neg_huge = d("-170141183460469231731687303715884105727");
        assert_eq!(neg_huge.cmp(&small), Ordering::Less);
        assert_eq!(small.cmp(&neg_huge), Ordering::Greater);
        assert_eq!(neg_huge.cmp(&d("-0.1")), Ordering::Less);
        assert_eq!(d("-0.1").cmp(&neg_huge), Ordering::Greater);
    }

    #[test]
    fn thresholds_convert_as_typed() {
        assert_eq!(Decimal::from_f64(0.1), Some(d("0.1")));
        assert_eq!(Decimal::from_f64(5.0), Some(d("5")));
        assert_eq!(Decimal::from_f64(0.0), Some(Decimal::ZERO));
        assert_eq!(Decimal::from_f64(1e-7), Some(d("0.0000001")));
        assert_eq!(Decimal::from_f64(f64::INFINITY), None);
        assert_eq!(Decimal::from_f64(1e300), None, "too large: the f64 path");
    }
}
