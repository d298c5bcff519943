//! Block encoding of samples, chosen per chunk: *decimal* (values as integers times a
//! power of ten, like VictoriaMetrics: most real metrics are decimals, counters or
//! gauges with few digits) with run-length delta-of-delta timestamps, or Gorilla when the
//! values are not short decimals. Typical series take one to two bytes per sample.

use crate::gorilla::Chunk;

/// Encodings.
pub const GORILLA: u8 = 0;
/// Scaled integers with delta coding.
pub const DECIMAL: u8 = 1;

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn get_uvarint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

fn get_ivarint(b: &[u8], pos: &mut usize) -> Option<i64> {
    let u = get_uvarint(b, pos)?;
    Some(((u >> 1) as i64) ^ -((u & 1) as i64))
}

/// Run-length encoded delta-of-deltas: `(value, repeat)` pairs.
fn put_dods(out: &mut Vec<u8>, xs: &[i64]) {
    let mut i = 0;
    while i < xs.len() {
        let mut j = i + 1;
        while j < xs.len() && xs[j] == xs[i] {
            j += 1;
        }
        put_ivarint(out, xs[i]);
        put_uvarint(out, (j - i) as u64);
        i = j;
    }
}

fn get_dods(b: &[u8], pos: &mut usize, n: usize) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let v = get_ivarint(b, pos)?;
        let r = get_uvarint(b, pos)? as usize;
        if r == 0 || out.len() + r > n {
            return None;
        }
        out.extend(std::iter::repeat_n(v, r));
    }
    Some(out)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Second differences of `xs` (the first two kept as they are).
fn dod(xs: &[i64]) -> Vec<i64> {
    let mut out = Vec::with_capacity(xs.len());
    let mut prev_delta = 0i64;
    for (i, x) in xs.iter().enumerate() {
        if i == 0 {
            out.push(*x);
            continue;
        }
        let d = x.wrapping_sub(xs[i - 1]);
        out.push(d.wrapping_sub(prev_delta));
        prev_delta = d;
    }
    out
}

fn undod(ds: &[i64]) -> Vec<i64> {
    let mut out = Vec::with_capacity(ds.len());
    let mut delta = 0i64;
    for (i, d) in ds.iter().enumerate() {
        if i == 0 {
            out.push(*d);
            continue;
        }
        delta = delta.wrapping_add(*d);
        out.push(out[i - 1].wrapping_add(delta));
    }
    out
}

/// The smallest scale `k` with every value an integer times 10^-k, if any (k <= 9).
fn decimal_scale(vals: &[f64]) -> Option<(u32, Vec<i64>)> {
    'scale: for k in 0..=9u32 {
        let m = 10f64.powi(k as i32);
        let mut ints = Vec::with_capacity(vals.len());
        for v in vals {
            if !v.is_finite() {
                return None;
            }
            let i = (v * m).round();
            if i.abs() > 9.0e15 || i / m != *v {
                continue 'scale;
            }
            ints.push(i as i64);
        }
        return Some((k, ints));
    }
    None
}

/// Encodes samples (in time order) the smallest way. Returns the encoding and bytes.
pub fn encode(samples: &[(i64, f64)]) -> (u8, Vec<u8>) {
    let mut g = Chunk::new();
    for (t, v) in samples {
        g.push(*t, *v);
    }
    let gorilla = g.bytes().to_vec();
    let vals: Vec<f64> = samples.iter().map(|s| s.1).collect();
    let Some((k, ints)) = decimal_scale(&vals) else {
        return (GORILLA, gorilla);
    };
    let ts: Vec<i64> = samples.iter().map(|s| s.0).collect();
    let mut out = vec![k as u8];
    put_dods(&mut out, &dod(&ts));
    // Values: deltas (gauges) or delta-of-deltas (counters), whichever is smaller.
    let mut deltas = Vec::with_capacity(ints.len());
    for (i, x) in ints.iter().enumerate() {
        deltas.push(if i == 0 {
            *x
        } else {
            x.wrapping_sub(ints[i - 1])
        });
    }
    let mut a = vec![0u8];
    for d in &deltas {
        put_ivarint(&mut a, *d);
    }
    let mut b = vec![1u8];
    put_dods(&mut b, &dod(&ints));
    let mut best = if a.len() <= b.len() { a } else { b };
    // Changes that share a factor (bytes in 4 KiB pages, in kibibytes) are stored divided
    // by it, after the first value and the factor: modes 2 (deltas) and 3 (delta-of-deltas).
    let g = deltas
        .iter()
        .skip(1)
        .fold(0u64, |g, d| gcd(g, d.unsigned_abs()));
    if g > 1 && g <= i64::MAX as u64 {
        let gi = g as i64;
        let mut head = vec![];
        put_ivarint(&mut head, ints[0]);
        put_uvarint(&mut head, g);
        let mut a = vec![2u8];
        a.extend_from_slice(&head);
        for d in &deltas[1..] {
            put_ivarint(&mut a, d / gi);
        }
        let steps: Vec<i64> = ints.iter().map(|x| x.wrapping_sub(ints[0]) / gi).collect();
        let mut b = vec![3u8];
        b.extend_from_slice(&head);
        put_dods(&mut b, &dod(&steps));
        for c in [a, b] {
            if c.len() < best.len() {
                best = c;
            }
        }
    }
    out.extend(best);
    if out.len() < gorilla.len() {
        (DECIMAL, out)
    } else {
        (GORILLA, gorilla)
    }
}

/// Decodes what [`encode`] produced.
pub fn decode(enc: u8, bytes: &[u8], count: u32) -> Vec<(i64, f64)> {
    if enc == GORILLA {
        return Chunk::decode(bytes, count);
    }
    let n = count as usize;
    let mut pos = 0;
    let mut decode = || -> Option<Vec<(i64, f64)>> {
        let k = *bytes.first()? as i32;
        pos = 1;
        let ts = undod(&get_dods(bytes, &mut pos, n)?);
        let mode = *bytes.get(pos)?;
        pos += 1;
        let ints = match mode {
            0 => {
                let mut out = Vec::with_capacity(n);
                let mut acc = 0i64;
                for i in 0..n {
                    let d = get_ivarint(bytes, &mut pos)?;
                    acc = if i == 0 { d } else { acc.wrapping_add(d) };
                    out.push(acc);
                }
                out
            }
            1 => undod(&get_dods(bytes, &mut pos, n)?),
            2 | 3 => {
                let first = get_ivarint(bytes, &mut pos)?;
                let g = get_uvarint(bytes, &mut pos)? as i64;
                if mode == 2 {
                    let mut out = Vec::with_capacity(n);
                    let mut acc = first;
                    out.push(acc);
                    for _ in 1..n {
                        acc = acc.wrapping_add(get_ivarint(bytes, &mut pos)?.wrapping_mul(g));
                        out.push(acc);
                    }
                    out
                } else {
                    undod(&get_dods(bytes, &mut pos, n)?)
                        .into_iter()
                        .map(|s| first.wrapping_add(s.wrapping_mul(g)))
                        .collect()
                }
            }
            _ => return None,
        };
        let m = 10f64.powi(k);
        Some(
            ts.into_iter()
                .zip(ints)
                .map(|(t, i)| (t, i as f64 / m))
                .collect(),
        )
    };
    decode().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the values (decimals of any scale, common factors, huge and negative
    /// numbers, steps that overflow), what is decoded is what was encoded.
    #[test]
    fn every_encoding_round_trips() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..2000 {
            let n = 1 + (next() % 300) as usize;
            let scale = [1.0, 10.0, 100.0, 1e6, 1e9][case % 5];
            let factor = [1i64, 2, 4096, 1 << 40, 3][case % 7 % 5];
            let mut t = next() as i64 % 1_000_000_000_000;
            let mut v = (next() as i64 % 1_000_000) * factor;
            let samples: Vec<(i64, f64)> = (0..n)
                .map(|_| {
                    t += 1 + (next() % 20_000) as i64;
                    v = v.wrapping_add((next() as i64 % 1000) * factor);
                    let val = match case % 4 {
                        0 => v as f64 / scale,
                        1 => (v % 1000) as f64,
                        2 => f64::from_bits(next()),
                        _ => v as f64,
                    };
                    (t, val)
                })
                .collect();
            let (e, b) = encode(&samples);
            let back = decode(e, &b, n as u32);
            assert_eq!(back.len(), n, "case {case}");
            for (a, b) in samples.iter().zip(&back) {
                assert_eq!(a.0, b.0, "case {case}");
                assert!(
                    a.1 == b.1 || (a.1.is_nan() && b.1.is_nan()),
                    "case {case}: {a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn decimal_series_are_small_and_exact() {
        let gauge: Vec<(i64, f64)> = (0..8640)
            .map(|i| {
                (
                    1_700_000_000_000 + i * 10_000,
                    ((50.0 + (i as f64 * 0.37).sin() * 20.0) * 100.0).round() / 100.0,
                )
            })
            .collect();
        let (e, b) = encode(&gauge);
        assert_eq!(e, DECIMAL);
        assert_eq!(decode(e, &b, gauge.len() as u32), gauge);
        assert!(
            (b.len() as f64 / gauge.len() as f64) < 2.5,
            "{} B/sample",
            b.len() as f64 / gauge.len() as f64
        );
        let counter: Vec<(i64, f64)> = (0..8640).map(|i| (i * 10_000, (i * 25) as f64)).collect();
        let (e, b) = encode(&counter);
        assert_eq!(decode(e, &b, counter.len() as u32), counter);
        assert!(
            b.len() < 40,
            "a steady counter takes almost nothing: {}",
            b.len()
        );
        // Free bytes of a filesystem change in whole 4 KiB pages: stored in pages.
        let disk: Vec<(i64, f64)> = (0..720)
            .map(|i| {
                (
                    i * 10_000,
                    (80_000_000_000 - (i * 3 + i * i % 5) * 4096) as f64,
                )
            })
            .collect();
        let (e, b) = encode(&disk);
        assert_eq!(e, DECIMAL);
        assert_eq!(decode(e, &b, disk.len() as u32), disk);
        assert!(b.len() < 800, "{} bytes for 720 page counts", b.len());
        let odd = vec![(1, 0.1 + 0.2), (2, f64::NAN), (3, 1e300)];
        let (e, b) = encode(&odd);
        assert_eq!(e, GORILLA);
        let back = decode(e, &b, 3);
        assert_eq!(back[0], (1, 0.1 + 0.2));
        assert!(back[1].1.is_nan());
        assert!(
            decode(DECIMAL, &[3, 0xff], 10).is_empty(),
            "corrupt input decodes to nothing"
        );
    }
}
