//! Gorilla compression (Pelkonen et al., "Gorilla: A Fast, Scalable, In-Memory Time
//! Series Database"): delta-of-delta timestamps and XOR-ed floats, bit-packed. Regular
//! 10 s samples of a slowly changing gauge take a few bits each.

/// Appends bits to a byte vector.
#[derive(Debug, Clone, Default)]
pub struct BitWriter {
    bytes: Vec<u8>,
    bits: u64,
}

impl BitWriter {
    fn push(&mut self, value: u64, n: u32) {
        for i in (0..n).rev() {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if (value >> i) & 1 == 1 {
                let last = self.bytes.len() - 1;
                self.bytes[last] |= 1 << (7 - (self.bits % 8));
            }
            self.bits += 1;
        }
    }
}

/// Reads bits back.
pub struct BitReader<'a> {
    bytes: &'a [u8],
    pos: u64,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0 }
    }
    fn read(&mut self, n: u32) -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..n {
            let byte = *self.bytes.get((self.pos / 8) as usize)?;
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            v = (v << 1) | bit as u64;
            self.pos += 1;
        }
        Some(v)
    }
}

/// A compressed series of `(timestamp_ms, value)` samples, appended in time order.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    w: BitWriter,
    count: u32,
    last_ts: i64,
    last_delta: i64,
    last_val: u64,
    lead: u32,
    trail: u32,
}

impl Chunk {
    /// An empty chunk.
    pub fn new() -> Chunk {
        Chunk {
            lead: u32::MAX,
            ..Default::default()
        }
    }

    /// Number of samples.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The last timestamp appended.
    pub fn last_ts(&self) -> Option<i64> {
        (self.count > 0).then_some(self.last_ts)
    }

    /// Appends a sample. Samples not after the last one are dropped (returns false).
    pub fn push(&mut self, ts: i64, v: f64) -> bool {
        let bits = v.to_bits();
        if self.count == 0 {
            self.w.push(ts as u64, 64);
            self.w.push(bits, 64);
            self.last_ts = ts;
            self.last_val = bits;
            self.count = 1;
            return true;
        }
        if ts <= self.last_ts {
            return false;
        }
        let delta = ts - self.last_ts;
        let dod = delta - self.last_delta;
        match dod {
            0 => self.w.push(0, 1),
            -64..=63 => {
                self.w.push(0b10, 2);
                self.w.push((dod as u64) & 0x7f, 7);
            }
            -256..=255 => {
                self.w.push(0b110, 3);
                self.w.push((dod as u64) & 0x1ff, 9);
            }
            -2048..=2047 => {
                self.w.push(0b1110, 4);
                self.w.push((dod as u64) & 0xfff, 12);
            }
            _ => {
                self.w.push(0b1111, 4);
                self.w.push(dod as u64, 64);
            }
        }
        let x = bits ^ self.last_val;
        if x == 0 {
            self.w.push(0, 1);
        } else {
            self.w.push(1, 1);
            let lead = x.leading_zeros().min(31);
            let trail = x.trailing_zeros();
            if self.lead != u32::MAX && lead >= self.lead && trail >= self.trail {
                self.w.push(0, 1);
                let n = 64 - self.lead - self.trail;
                self.w.push(x >> self.trail, n);
            } else {
                self.w.push(1, 1);
                let n = 64 - lead - trail;
                self.w.push(lead as u64, 5);
                self.w.push((n - 1) as u64, 6);
                self.w.push(x >> trail, n);
                self.lead = lead;
                self.trail = trail;
            }
        }
        self.last_delta = delta;
        self.last_ts = ts;
        self.last_val = bits;
        self.count += 1;
        true
    }

    /// The encoded bytes (with the sample count, to decode).
    pub fn bytes(&self) -> &[u8] {
        &self.w.bytes
    }

    /// Decodes `count` samples from `bytes`.
    pub fn decode(bytes: &[u8], count: u32) -> Vec<(i64, f64)> {
        let mut out = Vec::with_capacity(count as usize);
        let mut r = BitReader::new(bytes);
        let (Some(ts), Some(v)) = (r.read(64), r.read(64)) else {
            return out;
        };
        let (mut ts, mut val) = (ts as i64, v);
        out.push((ts, f64::from_bits(val)));
        let (mut delta, mut lead, mut trail) = (0i64, 0u32, 0u32);
        let sext = |v: u64, n: u32| -> i64 { ((v << (64 - n)) as i64) >> (64 - n) };
        for _ in 1..count {
            let dod = match r.read(1) {
                Some(0) => 0,
                Some(_) => match r.read(1) {
                    Some(0) => sext(r.read(7).unwrap_or(0), 7),
                    _ => match r.read(1) {
                        Some(0) => sext(r.read(9).unwrap_or(0), 9),
                        _ => match r.read(1) {
                            Some(0) => sext(r.read(12).unwrap_or(0), 12),
                            _ => r.read(64).unwrap_or(0) as i64,
                        },
                    },
                },
                None => break,
            };
            delta += dod;
            ts += delta;
            match r.read(1) {
                Some(0) => {}
                Some(_) => {
                    if r.read(1) == Some(1) {
                        lead = r.read(5).unwrap_or(0) as u32;
                        let n = r.read(6).unwrap_or(0) as u32 + 1;
                        trail = 64 - lead - n;
                    }
                    let n = 64 - lead - trail;
                    let x = r.read(n).unwrap_or(0) << trail;
                    val ^= x;
                }
                None => break,
            }
            out.push((ts, f64::from_bits(val)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_compresses() {
        let mut c = Chunk::new();
        let mut want = vec![];
        for i in 0..10_000i64 {
            let ts = 1_700_000_000_000 + i * 10_000 + if i % 97 == 0 { 3 } else { 0 };
            let v = 50.0 + ((i / 30) % 7) as f64 * 0.5;
            if c.push(ts, v) {
                want.push((ts, v));
            }
        }
        assert!(!c.push(0, 1.0), "out-of-order samples are dropped");
        // Each bucket's edges: a delta-of-delta is signed, two's complement in its bits.
        let mut edges = Chunk::new();
        let mut at_edges = vec![];
        let (mut ts, mut delta) = (0i64, 10_000i64);
        for dod in [
            0, 63, 64, -64, -65, 255, 256, -256, -257, 2047, 2048, -2048, -2049, 0,
        ] {
            delta += dod;
            ts += delta;
            assert!(edges.push(ts, 1.0));
            at_edges.push((ts, 1.0));
        }
        assert_eq!(Chunk::decode(edges.bytes(), edges.len()), at_edges);
        let got = Chunk::decode(c.bytes(), c.len());
        assert_eq!(got, want);
        let bps = c.bytes().len() as f64 / c.len() as f64;
        assert!(bps < 0.5, "{bps} bytes per sample");
        let mut c = Chunk::new();
        let odd = [
            (1, f64::NAN),
            (2, -0.0),
            (70_000, f64::INFINITY),
            (70_001, 1e300),
            (9_000_000_000, -5.5),
        ];
        for (t, v) in odd {
            c.push(t, v);
        }
        let got = Chunk::decode(c.bytes(), c.len());
        assert_eq!(got.len(), 5);
        assert!(got[0].1.is_nan());
        assert_eq!(got[4], (9_000_000_000, -5.5));
    }
}
