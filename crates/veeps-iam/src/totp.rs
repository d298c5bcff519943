//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP, HMAC-SHA1, 6 digits,
//! 30-second steps): what every authenticator app speaks. Secrets travel as base32
//! (RFC 4648, unpadded) in an `otpauth://` URI.

use hmac::{Hmac, KeyInit, Mac};

/// Seconds per step.
pub const STEP: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;

/// The HOTP value of `secret` at `counter`, `digits` long.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret)
        .expect("HMAC takes a key of any length");
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = (h[h.len() - 1] & 0x0f) as usize;
    let bin = u32::from_be_bytes([h[off] & 0x7f, h[off + 1], h[off + 2], h[off + 3]]);
    bin % 10u32.pow(digits)
}

/// The code of `secret` at unix time `t`.
pub fn code_at(secret: &[u8], t: u64) -> String {
    format!(
        "{:0width$}",
        hotp(secret, t / STEP, DIGITS),
        width = DIGITS as usize
    )
}

/// The step `code` belongs to if it is `secret`'s code at `now`, one step before or one
/// after (clock drift), and later than `after` (a code is good once).
pub fn verify(secret: &[u8], code: &str, now: u64, after: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = now / STEP;
    let mut found = None;
    for s in [step.saturating_sub(1), step, step + 1] {
        // Every candidate is computed, so the time taken says nothing about which matched.
        let c = code_at(secret, s * STEP);
        if crate::directory::same(c.as_bytes(), code.as_bytes()) && s > after {
            found = Some(s);
        }
    }
    found
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Base32 without padding.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buf = (buf << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes base32 (case-insensitive, padding and spaces ignored).
pub fn unbase32(s: &str) -> Option<Vec<u8>> {
    let mut out = vec![];
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.chars().filter(|c| *c != '=' && !c.is_whitespace()) {
        let v = ALPHABET
            .iter()
            .position(|a| *a as char == c.to_ascii_uppercase())? as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238, appendix B (SHA1 rows), 8 digits.
        let secret = b"12345678901234567890";
        for (t, want) in [
            (59u64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(hotp(secret, t / STEP, 8), want, "t={t}");
        }
        assert_eq!(code_at(secret, 59), "287082");
    }

    #[test]
    fn rfc4226_hotp_vectors() {
        let secret = b"12345678901234567890";
        let want = [755224, 287082, 359152, 969429, 338314];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(hotp(secret, i as u64, 6), *w);
        }
    }

    #[test]
    fn codes_are_good_within_a_step_of_drift_and_only_once() {
        let s = b"0123456789abcdefghij";
        let now = 1_700_000_000;
        let c = code_at(s, now);
        assert_eq!(verify(s, &c, now, 0), Some(now / STEP));
        assert_eq!(verify(s, &c, now + STEP, 0), Some(now / STEP));
        assert_eq!(verify(s, &c, now + 2 * STEP, 0), None);
        // Used once: refused again.
        assert_eq!(verify(s, &c, now, now / STEP), None);
        assert_eq!(verify(s, "12345", now, 0), None);
        assert_eq!(verify(s, "abcdef", now, 0), None);
    }

    #[test]
    fn base32_round_trips_and_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(unbase32("MZXW6YTBOI======").unwrap(), b"foobar");
        assert_eq!(unbase32("mzxw 6ytb oi").unwrap(), b"foobar");
        assert!(unbase32("M1").is_none());
        let r: Vec<u8> = (0..=255).collect();
        assert_eq!(unbase32(&base32(&r)).unwrap(), r);
    }
}
