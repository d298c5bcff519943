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
    out.extend(if a.len() <= b.len() { a } else { b });
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
        let ints = if mode == 0 {
            let mut out = Vec::with_capacity(n);
            let mut acc = 0i64;
            for i in 0..n {
                let d = get_ivarint(bytes, &mut pos)?;
                acc = if i == 0 { d } else { acc.wrapping_add(d) };
                out.push(acc);
            }
            out
        } else {
            undod(&get_dods(bytes, &mut pos, n)?)
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
