//! A set's distinct members for one window: kept exactly up to `--set-exact-members`, then a
//! HyperLogLog estimate of 4096 six-bit registers (precision 12: a standard error of
//! 1.04/√4096 = 1.6 %), so a context's memory is bounded whatever its clients send.
//!
//! Members are hashed with XXH3-64, whose output is frozen by its specification, so registers
//! from another process (a relay edge) merge with this one's. The relay sends an estimate as
//! at most 8 relay-only members (`relay_members`), each carrying 512 registers as one
//! character apiece; a corestatsd global tier merges them back (`insert`) into the same
//! estimate. Any other receiver would count each chunk as one member.

use hashbrown::HashSet;
use xxhash_rust::xxh3::xxh3_64;

const PRECISION: u32 = 12;
const REGISTERS: usize = 1 << PRECISION;
const CHUNK: usize = 512;
/// The estimate's standard error, relative.
#[cfg(test)]
const RELATIVE_ERROR: f64 = 1.04 / 64.0;

/// The relay-only member form: this prefix, the chunk's first register in decimal, `.`, then
/// one `ALPHABET` character per register.
const PREFIX: &[u8] = b"corestatsd_hll_v1.";
/// Register values (0 to 53) as characters that no DogStatsD field separator uses.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[derive(Debug, Clone, PartialEq)]
pub enum Set {
    Exact(HashSet<Box<[u8]>>),
    Estimate(Box<Hll>),
}

impl Default for Set {
    fn default() -> Self {
        Set::Exact(HashSet::new())
    }
}

/// HyperLogLog registers: for each of 4096 buckets (the hash's top 12 bits), the most leading
/// zeros plus one seen in the remaining bits.
#[derive(Debug, Clone, PartialEq)]
pub struct Hll {
    registers: [u8; REGISTERS],
}

impl Default for Hll {
    fn default() -> Self {
        Hll {
            registers: [0; REGISTERS],
        }
    }
}

impl Hll {
    fn insert_hash(&mut self, h: u64) {
        let bucket = (h >> (64 - PRECISION)) as usize;
        // The remaining 52 bits, with a guard bit so the rank is at most 53.
        let rest = (h << PRECISION) | (1 << (PRECISION - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        let r = &mut self.registers[bucket];
        *r = (*r).max(rank);
    }

    fn merge(&mut self, other: &Hll) {
        for (a, &b) in self.registers.iter_mut().zip(other.registers.iter()) {
            *a = (*a).max(b);
        }
    }

    /// The raw HyperLogLog estimate, with linear counting while registers are still empty
    /// (Flajolet et al.; its small-range correction).
    fn estimate(&self) -> f64 {
        let m = REGISTERS as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = self.registers.iter().map(|&r| (-f64::from(r)).exp2()).sum();
        let raw = alpha * m * m / sum;
        let zeros = self.registers.iter().filter(|&&r| r == 0).count();
        if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }

    /// Merges one relay-only member; false if `member` is not one.
    fn merge_chunk(&mut self, member: &[u8]) -> bool {
        let Some(rest) = member.strip_prefix(PREFIX) else {
            return false;
        };
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let Some(first) = std::str::from_utf8(&rest[..dot])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            return false;
        };
        let values = &rest[dot + 1..];
        if first % CHUNK != 0 || first + values.len() > REGISTERS || values.len() > CHUNK {
            return false;
        }
        let mut ranks = [0u8; CHUNK];
        for (r, c) in ranks.iter_mut().zip(values) {
            match ALPHABET.iter().position(|a| a == c) {
                Some(v) if v <= 64 - PRECISION as usize + 1 => *r = v as u8,
                _ => return false,
            }
        }
        for (reg, &r) in self.registers[first..]
            .iter_mut()
            .zip(&ranks[..values.len()])
        {
            *reg = (*reg).max(r);
        }
        true
    }
}

/// Whether `member` is a relay-only chunk of an estimate (a global tier merges it, never counts
/// it).
pub fn is_register_chunk(member: &[u8]) -> bool {
    member.starts_with(PREFIX)
}

impl Set {
    /// Adds one member (or, from a relay edge, merges a chunk of its estimate). Past `exact`
    /// distinct members the set turns into an estimate.
    pub fn insert(&mut self, member: &[u8], exact: usize) {
        if is_register_chunk(member) {
            let mut hll = self.take_estimate();
            if !hll.merge_chunk(member) {
                // Malformed: an ordinary member after all.
                hll.insert_hash(xxh3_64(member));
            }
            *self = Set::Estimate(hll);
            return;
        }
        match self {
            Set::Exact(members) => {
                if members.contains(member) {
                    return;
                }
                if members.len() < exact {
                    members.insert(member.into());
                    return;
                }
                let mut hll = self.take_estimate();
                hll.insert_hash(xxh3_64(member));
                *self = Set::Estimate(hll);
            }
            Set::Estimate(hll) => hll.insert_hash(xxh3_64(member)),
        }
    }

    /// Folds another partial of the same set into this one (the larger exact side kept, the
    /// smaller one's members moved in).
    pub fn merge(&mut self, other: Set, exact: usize) {
        match other {
            Set::Estimate(b) => {
                let mut hll = self.take_estimate();
                hll.merge(&b);
                *self = Set::Estimate(hll);
            }
            Set::Exact(mut b) => {
                if let Set::Exact(a) = self
                    && a.len() < b.len()
                {
                    std::mem::swap(a, &mut b);
                }
                for m in b {
                    self.insert_owned(m, exact);
                }
            }
        }
    }

    /// `insert` of a member already boxed (never a register chunk: those are merged on arrival).
    fn insert_owned(&mut self, member: Box<[u8]>, exact: usize) {
        match self {
            Set::Exact(members) => {
                if members.len() < exact || members.contains(&member) {
                    members.insert(member);
                    return;
                }
                let mut hll = self.take_estimate();
                hll.insert_hash(xxh3_64(&member));
                *self = Set::Estimate(hll);
            }
            Set::Estimate(hll) => hll.insert_hash(xxh3_64(&member)),
        }
    }

    /// Turns the set into its estimate's registers (members hashed in), leaving it empty.
    fn take_estimate(&mut self) -> Box<Hll> {
        match std::mem::take(self) {
            Set::Estimate(hll) => hll,
            Set::Exact(members) => {
                let mut hll = Box::<Hll>::default();
                for m in &members {
                    hll.insert_hash(xxh3_64(m));
                }
                hll
            }
        }
    }

    /// Distinct members: exact, or the estimate rounded.
    pub fn count(&self) -> f64 {
        match self {
            Set::Exact(members) => members.len() as f64,
            Set::Estimate(hll) => hll.estimate().round(),
        }
    }

    pub fn is_estimate(&self) -> bool {
        matches!(self, Set::Estimate(_))
    }

    /// What a relay sends for the set: its members, or the estimate's non-empty register chunks
    /// in their relay-only form.
    pub fn relay_members(&self, mut each: impl FnMut(&[u8])) {
        match self {
            Set::Exact(members) => members.iter().for_each(|m| each(m)),
            Set::Estimate(hll) => {
                let mut line = Vec::with_capacity(PREFIX.len() + 6 + CHUNK);
                for (i, chunk) in hll.registers.chunks(CHUNK).enumerate() {
                    if chunk.iter().all(|&r| r == 0) {
                        continue;
                    }
                    line.clear();
                    line.extend_from_slice(PREFIX);
                    line.extend_from_slice((i * CHUNK).to_string().as_bytes());
                    line.push(b'.');
                    line.extend(chunk.iter().map(|&r| ALPHABET[r as usize]));
                    each(&line);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(range: std::ops::Range<u32>) -> impl Iterator<Item = Vec<u8>> {
        range.map(|i| format!("user-{i}").into_bytes())
    }

    fn filled(range: std::ops::Range<u32>, exact: usize) -> Set {
        let mut s = Set::default();
        for m in members(range) {
            s.insert(&m, exact);
        }
        s
    }

    #[test]
    fn exact_up_to_the_limit_then_an_estimate_within_its_error() {
        let mut s = filled(0..100, 100);
        for m in members(0..100) {
            s.insert(&m, 100);
        }
        assert_eq!((s.count(), s.is_estimate()), (100.0, false));
        s.insert(b"one more", 100);
        assert!(s.is_estimate());
        // Small counts are linear counting: near exact.
        assert!((s.count() - 101.0).abs() <= 2.0, "{}", s.count());
        for n in [10_000u32, 100_000, 1_000_000] {
            let s = filled(0..n, 100);
            let err = (s.count() - f64::from(n)).abs() / f64::from(n);
            // Three standard errors: the hash is fixed, so this is a fixed outcome, not luck.
            assert!(err < 3.0 * RELATIVE_ERROR, "{n}: {} ({err})", s.count());
        }
    }

    #[test]
    fn merges_are_unions_whatever_the_sides_are() {
        let whole = filled(0..50_000, 10);
        // Overlapping halves, exact and estimated.
        let mut a = filled(0..30_000, 10);
        a.merge(filled(20_000..50_000, 10), 10);
        assert_eq!(a, whole);
        let mut a = filled(0..30_000, 10);
        a.merge(filled(29_995..30_000, 10), 10);
        assert_eq!(a, filled(0..30_000, 10));
        // Two exact sets whose union passes the limit.
        let mut a = filled(0..8, 10);
        a.merge(filled(4..12, 10), 10);
        assert!(a.is_estimate());
        assert_eq!(a, {
            let mut e = filled(0..12, 10);
            e.insert(b"user-0", 10);
            e
        });
        let mut a = filled(0..8, 100);
        a.merge(filled(4..12, 100), 100);
        assert_eq!((a.count(), a.is_estimate()), (12.0, false));
    }

    #[test]
    fn an_estimate_crosses_the_relay_as_register_chunks_and_comes_back_the_same() {
        let edge = filled(0..40_000, 100);
        let mut lines = Vec::new();
        edge.relay_members(|m| lines.push(m.to_vec()));
        assert!(lines.len() <= REGISTERS / CHUNK);
        assert!(lines.iter().all(|l| l.len() <= PREFIX.len() + 5 + CHUNK));
        let mut global = Set::default();
        for l in &lines {
            global.insert(l, 100);
        }
        assert_eq!(global, edge);
        // Merged with another edge's exact members, it is the union.
        global.insert(b"user-40000", 100);
        assert_eq!(global, filled(0..40_001, 100));
    }

    #[test]
    fn a_malformed_chunk_is_an_ordinary_member() {
        for bad in [
            &b"corestatsd_hll_v1."[..],
            b"corestatsd_hll_v1.x.AAAA",
            b"corestatsd_hll_v1.1.AAAA",
            b"corestatsd_hll_v1.4096.A",
            b"corestatsd_hll_v1.0.!",
            b"corestatsd_hll_v1.0.z",
        ] {
            let mut s = Set::default();
            s.insert(bad, 100);
            assert_eq!(s.count(), 1.0, "{}", String::from_utf8_lossy(bad));
        }
    }
}
