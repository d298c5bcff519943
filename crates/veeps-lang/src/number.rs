//! Numbers as Terraform has them: binary floating point with a 512-bit mantissa (Go's
//! `math/big.Float`), rounded to nearest even after each operation, printed as the shortest
//! decimal that reads back to the same number at its precision. Literals and parsed strings
//! have 512 bits, results of float64 functions (`pow`, `log`) 53, whole numbers from
//! functions (`length`) 64; an operation takes the larger precision of its operands.

use num_bigint::{BigInt, BigUint, Sign};
use num_integer::Integer;
use num_traits::{One, ToPrimitive, Zero};
use std::cmp::Ordering;

/// The precision of literals and parsed numbers.
pub const PREC: u32 = 512;
/// The precision of float64 results.
pub const F64_PREC: u32 = 53;
/// The precision of whole numbers made from machine integers.
pub const INT_PREC: u32 = 64;
/// The largest decimal exponent a number may be written with (`1e100000`).
pub const MAX_EXP10: i64 = 100_000;

/// A number.
#[derive(Clone)]
pub struct Number {
    neg: bool,
    /// `mant * 2^exp`; `mant` is odd, or zero (then `exp` is 0).
    mant: BigUint,
    exp: i64,
    /// Infinite (`1/0`); `mant` is zero then.
    inf: bool,
    prec: u32,
}

/// Why a number could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberError {
    /// Not a decimal number.
    Syntax,
    /// An exponent beyond [`MAX_EXP10`].
    Range,
    /// `0/0` and the like.
    Undefined,
}

impl std::fmt::Display for NumberError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NumberError::Syntax => "not a decimal number",
            NumberError::Range => "the exponent is out of range",
            NumberError::Undefined => "the result is not a number",
        })
    }
}

impl Number {
    /// Zero.
    pub fn zero() -> Number {
        Number {
            neg: false,
            mant: BigUint::zero(),
            exp: 0,
            inf: false,
            prec: PREC,
        }
    }

    /// Infinity of a sign.
    pub fn infinity(neg: bool) -> Number {
        Number {
            inf: true,
            neg,
            ..Number::zero()
        }
    }

    /// `neg * mant * 2^exp` rounded to `prec` bits (ties to even); `sticky` says bits below
    /// `mant` were dropped (they were not zero).
    fn make(neg: bool, mut mant: BigUint, mut exp: i64, prec: u32, sticky: bool) -> Number {
        let bits = mant.bits();
        if bits > prec as u64 {
            let s = bits - prec as u64;
            let half = mant.bit(s - 1);
            let below = sticky || (mant.trailing_zeros().is_some_and(|tz| tz < s - 1));
            mant >>= s;
            exp += s as i64;
            if half && (below || mant.bit(0)) {
                mant += 1u32;
                if mant.bits() > prec as u64 {
                    mant >>= 1u32;
                    exp += 1;
                }
            }
        }
        if mant.is_zero() {
            return Number {
                prec,
                ..Number::zero()
            };
        }
        let tz = mant.trailing_zeros().unwrap_or(0);
        mant >>= tz;
        exp += tz as i64;
        Number {
            neg,
            mant,
            exp,
            inf: false,
            prec,
        }
    }

    /// A float64 exactly (precision 53). `None` for NaN.
    pub fn from_f64(f: f64) -> Option<Number> {
        if f.is_nan() {
            return None;
        }
        if f.is_infinite() {
            return Some(Number {
                prec: F64_PREC,
                ..Number::infinity(f < 0.0)
            });
        }
        let bits = f.to_bits();
        let neg = bits >> 63 == 1;
        let e = ((bits >> 52) & 0x7ff) as i64;
        let frac = bits & ((1u64 << 52) - 1);
        let (m, exp) = if e == 0 {
            (frac, -1074)
        } else {
            (frac | (1u64 << 52), e - 1075)
        };
        Some(Number::make(neg, BigUint::from(m), exp, F64_PREC, false))
    }

    /// A machine integer exactly (precision 64).
    pub fn from_i64(i: i64) -> Number {
        Number::make(i < 0, BigUint::from(i.unsigned_abs()), 0, INT_PREC, false)
    }

    /// A whole number exactly (precision 64, or its own width if wider).
    pub fn from_bigint(i: &BigInt) -> Number {
        let prec = (i.bits() as u32).max(INT_PREC);
        Number::make(
            i.sign() == Sign::Minus,
            i.magnitude().clone(),
            0,
            prec,
            false,
        )
    }

    /// This number at another precision (rounded if narrower).
    pub fn with_prec(&self, prec: u32) -> Number {
        if self.inf {
            return Number {
                prec,
                ..self.clone()
            };
        }
        Number::make(self.neg, self.mant.clone(), self.exp, prec, false)
    }

    /// Its precision in bits.
    pub fn prec(&self) -> u32 {
        self.prec
    }

    /// The number as it comes out of a Terraform plan: one that a float64 holds exactly
    /// travels as a float64 and has 53 bits after (so `pow(2, 0.5) * 1` prints as
    /// `1.4142135623730951` in outputs, and with all its 52 decimals inside expressions).
    pub fn settled(&self) -> Number {
        match Number::from_f64(self.to_f64()) {
            Some(f) if !self.is_integer() && f == *self => f,
            _ => self.clone(),
        }
    }

    /// Reads a decimal number (`-12`, `0.5`, `1e-3`, `.5`, `5.`) at 512 bits, as Go's
    /// `big.ParseFloat(s, 10, 512, ToNearestEven)`.
    pub fn parse(s: &str) -> Result<Number, NumberError> {
        let (neg, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        match rest {
            "Inf" | "inf" => return Ok(Number::infinity(neg)),
            _ => {}
        }
        let (num, exp10) = match rest.find(['e', 'E']) {
            Some(i) => {
                let e = &rest[i + 1..];
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(NumberError::Syntax);
                }
                let v: i64 = if digits.len() > 12 {
                    i64::MAX
                } else {
                    digits.parse().map_err(|_| NumberError::Syntax)?
                };
                (&rest[..i], if e.starts_with('-') { -v } else { v })
            }
            None => (rest, 0),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(NumberError::Syntax);
        }
        let digits = format!("{int}{frac}");
        let d: BigUint = digits.parse().unwrap_or_default();
        if d.is_zero() {
            return Ok(Number::zero());
        }
        let exp10 = exp10.saturating_sub(frac.len() as i64);
        if exp10.abs() > MAX_EXP10 + digits.len() as i64 {
            return Err(NumberError::Range);
        }
        Ok(if exp10 >= 0 {
            Number::make(
                neg,
                d * BigUint::from(10u32).pow(exp10 as u32),
                0,
                PREC,
                false,
            )
        } else {
            let den = BigUint::from(10u32).pow((-exp10) as u32);
            quotient(neg, &d, 0, &den, 0, PREC)
        })
    }

    /// True for zero.
    pub fn is_zero(&self) -> bool {
        !self.inf && self.mant.is_zero()
    }

    /// True for ±infinity.
    pub fn is_infinite(&self) -> bool {
        self.inf
    }

    /// True below zero.
    pub fn is_negative(&self) -> bool {
        self.neg && !self.is_zero()
    }

    /// True for a whole number.
    pub fn is_integer(&self) -> bool {
        !self.inf && (self.mant.is_zero() || self.exp >= 0)
    }

    /// The nearest float64.
    pub fn to_f64(&self) -> f64 {
        if self.inf {
            return if self.neg {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            };
        }
        if self.mant.is_zero() {
            return 0.0;
        }
        let r = Number::make(self.neg, self.mant.clone(), self.exp, F64_PREC, false);
        let m = r.mant.to_u64().unwrap_or(0) as f64;
        let mut v = m;
        let mut e = r.exp;
        // Scale in steps that stay exact while in range.
        while e > 0 {
            let step = e.min(1000);
            v *= 2f64.powi(step as i32);
            e -= step;
            if v.is_infinite() {
                break;
            }
        }
        while e < 0 {
            let step = (-e).min(1000);
            v /= 2f64.powi(step as i32);
            e += step;
            if v == 0.0 {
                break;
            }
        }
        if r.neg {
            -v
        } else {
            v
        }
    }

    /// The whole number toward zero, if it fits a machine integer.
    pub fn to_i64(&self) -> Option<i64> {
        let t = self.trunc_int()?;
        t.to_i64()
    }

    /// The whole part, toward zero, as an integer. `None` for infinity.
    pub fn trunc_int(&self) -> Option<BigInt> {
        if self.inf {
            return None;
        }
        let mag = if self.exp >= 0 {
            if self.exp > (MAX_EXP10 * 4) {
                return None;
            }
            &self.mant << (self.exp as usize)
        } else {
            let s = (-self.exp) as u64;
            if s >= self.mant.bits() {
                BigUint::zero()
            } else {
                &self.mant >> s
            }
        };
        Some(BigInt::from_biguint(
            if self.neg { Sign::Minus } else { Sign::Plus },
            mag,
        ))
    }

    /// `-self`.
    pub fn neg(&self) -> Number {
        let mut n = self.clone();
        if !n.is_zero() {
            n.neg = !n.neg;
        }
        n
    }

    /// `|self|`.
    pub fn abs(&self) -> Number {
        let mut n = self.clone();
        n.neg = false;
        n
    }

    fn signed(&self) -> BigInt {
        BigInt::from_biguint(
            if self.neg { Sign::Minus } else { Sign::Plus },
            self.mant.clone(),
        )
    }

    /// `self + other`.
    pub fn add(&self, other: &Number) -> Result<Number, NumberError> {
        let prec = self.prec.max(other.prec);
        match (self.inf, other.inf) {
            (true, true) if self.neg != other.neg => return Err(NumberError::Undefined),
            (true, _) => {
                return Ok(Number {
                    prec,
                    ..self.clone()
                })
            }
            (_, true) => {
                return Ok(Number {
                    prec,
                    ..other.clone()
                })
            }
            _ => {}
        }
        if self.is_zero() {
            return Ok(other.with_prec(prec));
        }
        if other.is_zero() {
            return Ok(self.with_prec(prec));
        }
        let (hi, lo) = if self.exp >= other.exp {
            (self, other)
        } else {
            (other, self)
        };
        // When the smaller is far below the larger's precision it only decides rounding:
        // stand it in with a single unit far below the rounding position.
        let gap = hi.exp - lo.exp;
        let hi_top = hi.exp + hi.mant.bits() as i64;
        let lo_top = lo.exp + lo.mant.bits() as i64;
        if hi_top - lo_top > prec as i64 + 4 {
            let shift = prec as u64 + 8;
            let tiny = if lo.neg {
                -BigInt::one()
            } else {
                BigInt::one()
            };
            let sum = (hi.signed() << shift) + tiny;
            return Ok(from_signed(sum, hi.exp - shift as i64, prec));
        }
        let sum = (hi.signed() << gap as u64) + lo.signed();
        Ok(from_signed(sum, lo.exp, prec))
    }

    /// `self - other`.
    pub fn sub(&self, other: &Number) -> Result<Number, NumberError> {
        self.add(&other.neg())
    }

    /// `self * other`.
    pub fn mul(&self, other: &Number) -> Result<Number, NumberError> {
        let prec = self.prec.max(other.prec);
        let neg = self.neg != other.neg;
        if self.inf || other.inf {
            if self.is_zero() || other.is_zero() {
                return Err(NumberError::Undefined);
            }
            return Ok(Number {
                prec,
                ..Number::infinity(neg)
            });
        }
        Ok(Number::make(
            neg,
            &self.mant * &other.mant,
            self.exp + other.exp,
            prec,
            false,
        ))
    }

    /// `self / other`: infinity for a nonzero number over zero.
    pub fn div(&self, other: &Number) -> Result<Number, NumberError> {
        let prec = self.prec.max(other.prec);
        let neg = self.neg != other.neg;
        if other.is_zero() {
            if self.is_zero() {
                return Err(NumberError::Undefined);
            }
            return Ok(Number {
                prec,
                ..Number::infinity(neg)
            });
        }
        if self.inf && other.inf {
            return Err(NumberError::Undefined);
        }
        if self.inf {
            return Ok(Number {
                prec,
                ..Number::infinity(neg)
            });
        }
        if other.inf || self.is_zero() {
            return Ok(Number {
                prec,
                ..Number::zero()
            });
        }
        Ok(quotient(
            neg,
            &self.mant,
            self.exp,
            &other.mant,
            other.exp,
            prec,
        ))
    }

    /// `self % other` as Terraform has it: `self - other * trunc(self / other)`, so the
    /// sign follows `self`; `x % 0` is `x`.
    pub fn rem(&self, other: &Number) -> Result<Number, NumberError> {
        if other.is_zero() || other.inf {
            return Ok(self.clone());
        }
        if self.inf {
            return Err(NumberError::Undefined);
        }
        let q = self.div(other)?;
        let t = Number::from_bigint(&q.trunc_int().ok_or(NumberError::Range)?);
        self.sub(&other.mul(&t)?)
    }

    /// The greatest whole number at or below.
    pub fn floor(&self) -> Number {
        match self.trunc_int() {
            Some(t) => {
                let n = Number::from_bigint(&t);
                if self.is_negative() && !self.is_integer() {
                    Number::from_bigint(&(t - 1))
                } else {
                    n
                }
            }
            None => self.clone(),
        }
    }

    /// The least whole number at or above.
    pub fn ceil(&self) -> Number {
        match self.trunc_int() {
            Some(t) => {
                if !self.is_negative() && !self.is_integer() {
                    Number::from_bigint(&(t + 1))
                } else {
                    Number::from_bigint(&t)
                }
            }
            None => self.clone(),
        }
    }

    /// The shortest decimal that reads back to this number at its precision, without an
    /// exponent: Go's `Text('f', -1)`, which Terraform prints numbers with.
    pub fn text(&self) -> String {
        if self.inf {
            return if self.neg { "-Inf" } else { "+Inf" }.into();
        }
        if self.mant.is_zero() {
            return "0".into();
        }
        let mut d = Decimal::of(&self.mant, self.exp);
        // The bounds half an ulp away at this precision.
        let bits = self.mant.bits() as i64;
        let shift = self.prec as i64 + 1 - bits;
        let m = &self.mant << shift as u64;
        let e = self.exp - shift;
        let lower = Decimal::of(&(&m - 1u32), e);
        let upper = Decimal::of(&(&m + 1u32), e);
        let inclusive = !m.bit(1);
        d.shortest(&lower, &upper, inclusive);
        let mut out = String::new();
        if self.neg {
            out.push('-');
        }
        out.push_str(&d.fixed());
        out
    }
}

fn from_signed(v: BigInt, exp: i64, prec: u32) -> Number {
    let (sign, mag) = v.into_parts();
    Number::make(sign == Sign::Minus, mag, exp, prec, false)
}

/// `(a * 2^ea) / (b * 2^eb)` rounded to `prec` bits.
fn quotient(neg: bool, a: &BigUint, ea: i64, b: &BigUint, eb: i64, prec: u32) -> Number {
    // Enough quotient bits for rounding: prec + 2.
    let k = (prec as i64 + 2 + b.bits() as i64 - a.bits() as i64).max(0) as u64;
    let n = a << k;
    let (q, r) = n.div_rem(b);
    Number::make(neg, q, ea - eb - k as i64, prec, !r.is_zero())
}

impl PartialEq for Number {
    fn eq(&self, other: &Number) -> bool {
        self.cmp_value(other) == Ordering::Equal
    }
}

impl Number {
    /// Compares values (precision aside).
    pub fn cmp_value(&self, other: &Number) -> Ordering {
        let sign = |n: &Number| -> i8 {
            if n.is_zero() {
                0
            } else if n.neg {
                -1
            } else {
                1
            }
        };
        let (sa, sb) = (sign(self), sign(other));
        if sa != sb {
            return sa.cmp(&sb);
        }
        let mag = match (self.inf, other.inf) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ => {
                let ta = self.exp + self.mant.bits() as i64;
                let tb = other.exp + other.mant.bits() as i64;
                if self.is_zero() {
                    Ordering::Equal
                } else if ta != tb {
                    ta.cmp(&tb)
                } else {
                    let e = self.exp.min(other.exp);
                    let a = &self.mant << (self.exp - e) as u64;
                    let b = &other.mant << (other.exp - e) as u64;
                    a.cmp(&b)
                }
            }
        };
        if sa < 0 {
            mag.reverse()
        } else {
            mag
        }
    }
}

impl std::fmt::Debug for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

/// A decimal: `0.DIGITS * 10^exp`, digits without trailing zeros (Go's `decimal`).
struct Decimal {
    digits: Vec<u8>,
    exp: i64,
}

impl Decimal {
    /// `m * 2^e` exactly.
    fn of(m: &BigUint, e: i64) -> Decimal {
        let (s, exp) = if e >= 0 {
            let s = (m << e as u64).to_string();
            let n = s.len() as i64;
            (s, n)
        } else {
            let k = (-e) as u32;
            let s = (m * BigUint::from(5u32).pow(k)).to_string();
            let n = s.len() as i64;
            (s, n - k as i64)
        };
        let mut digits = s.into_bytes();
        while digits.last() == Some(&b'0') {
            digits.pop();
        }
        Decimal { digits, exp }
    }

    fn at(&self, i: usize) -> u8 {
        self.digits.get(i).copied().unwrap_or(b'0')
    }

    /// Go's `roundShortest`.
    fn shortest(&mut self, lower: &Decimal, upper: &Decimal, inclusive: bool) {
        // The bounds line up with this decimal digit by digit only at the same exponent.
        let lower = lower.aligned(self.exp);
        let upper = upper.aligned(self.exp);
        for i in 0..self.digits.len() {
            let (l, m, u) = (lower.at(i), self.digits[i], upper.at(i));
            let okdown = l != m || inclusive && i + 1 == lower.digits.len();
            let okup = m != u && (inclusive || m + 1 < u || i + 1 < upper.digits.len());
            match (okdown, okup) {
                (true, true) => return self.round(i + 1),
                (true, false) => return self.round_down(i + 1),
                (false, true) => return self.round_up(i + 1),
                _ => {}
            }
        }
    }

    /// The same value with leading zero digits so that its exponent is `exp` (bounds
    /// below this decimal's leading digit).
    fn aligned(&self, exp: i64) -> Decimal {
        let pad = (exp - self.exp).max(0) as usize;
        let mut digits = vec![b'0'; pad];
        digits.extend_from_slice(&self.digits);
        Decimal {
            digits,
            exp: self.exp + pad as i64,
        }
    }

    fn round(&mut self, n: usize) {
        if n >= self.digits.len() {
            return;
        }
        let up = if self.digits[n] == b'5' && n + 1 == self.digits.len() {
            n > 0 && (self.digits[n - 1] - b'0') % 2 == 1
        } else {
            self.digits[n] >= b'5'
        };
        if up {
            self.round_up(n)
        } else {
            self.round_down(n)
        }
    }

    fn round_down(&mut self, n: usize) {
        self.digits.truncate(n);
        while self.digits.last() == Some(&b'0') {
            self.digits.pop();
        }
    }

    fn round_up(&mut self, n: usize) {
        self.digits.truncate(n);
        while let Some(d) = self.digits.last_mut() {
            if *d < b'9' {
                *d += 1;
                return;
            }
            self.digits.pop();
        }
        self.digits.push(b'1');
        self.exp += 1;
    }

    /// Go's `%f` with the digits it has.
    fn fixed(&self) -> String {
        let mut out = String::new();
        let n = self.digits.len() as i64;
        if self.exp > 0 {
            let m = n.min(self.exp) as usize;
            out.push_str(std::str::from_utf8(&self.digits[..m]).unwrap_or("0"));
            for _ in m as i64..self.exp {
                out.push('0');
            }
        } else {
            out.push('0');
        }
        let prec = (n - self.exp).max(0);
        if prec > 0 {
            out.push('.');
            for i in 0..prec {
                let at = self.exp + i;
                out.push(if at < 0 {
                    '0'
                } else {
                    self.at(at as usize) as char
                });
            }
        }
        out
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Number) -> Option<Ordering> {
        Some(self.cmp_value(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Number {
        Number::parse(s).unwrap()
    }

    #[test]
    fn prints_as_terraform_does() {
        let third = n("1").div(&n("3")).unwrap().text();
        assert_eq!(third.len(), 157, "{third}");
        assert!(
            third.starts_with("0.3333") && third.ends_with("35"),
            "{third}"
        );
        assert_eq!(n("0.1").add(&n("0.2")).unwrap().text(), "0.3");
        assert_eq!(n("0.1").mul(&n("3")).unwrap().text(), "0.3");
        assert_eq!(
            n("2").div(&n("3")).unwrap().mul(&n("3")).unwrap().text(),
            "2"
        );
        assert_eq!(n("7").div(&n("2")).unwrap().text(), "3.5");
        assert_eq!(
            n("9007199254740993").add(&n("0")).unwrap().text(),
            "9007199254740993"
        );
        assert_eq!(n("-7").rem(&n("3")).unwrap().text(), "-1");
        assert_eq!(n("7.5").rem(&n("2")).unwrap().text(), "1.5");
        assert_eq!(n("5").rem(&n("0")).unwrap().text(), "5");
        assert_eq!(n("1").div(&n("0")).unwrap().text(), "+Inf");
        assert!(n("0").div(&n("0")).is_err());
        assert_eq!(n("1e3").text(), "1000");
        assert_eq!(n("1.5e-3").text(), "0.0015");
        assert_eq!(n("-0.25").text(), "-0.25");
        assert_eq!(n("100").text(), "100");
        let r2 = Number::from_f64(2f64.sqrt()).unwrap();
        assert_eq!(r2.text(), "1.4142135623730951");
        assert_eq!(
            r2.mul(&n("1")).unwrap().text(),
            "1.4142135623730951454746218587388284504413604736328125"
        );
        assert_eq!(n("1e400").text().len(), 401);
        assert_eq!(n("0.1").to_f64(), 0.1);
        assert_eq!(n("123456789012").to_i64(), Some(123456789012));
        assert_eq!(n("-1.5").floor().text(), "-2");
        assert_eq!(n("-1.5").ceil().text(), "-1");
        assert!(n("1") < n("1.5") && n("-2") < n("-1") && n("0.1") == n("0.10"));
        assert!(Number::parse("1e1000000000").is_err());
        assert!(Number::parse("1.2.3").is_err() && Number::parse("").is_err());
    }
}
