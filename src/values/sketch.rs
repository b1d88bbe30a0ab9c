//! DDSketch with the Datadog Agent's parameters: relative accuracy 1/128, gamma 1.015625, bins
//! keyed like the Agent's (key 1 is the smallest tracked value 1e-9, negatives mirror positives,
//! key 0 holds |v| < 1e-9), at most 4096 bins.
//!
//! Counts are `f64` weights so sample rates (1/rate) apply exactly. A sketch starts sparse, as
//! (key, weight) sorted by key, like the Agent's: a context that saw a few values in a window holds
//! a few bins, whatever their spread. (Dense storage from the first sample held up to 14 KiB per
//! sketch for values spread over 0..1000: `scripts/bench.sh`, mixed-1m, peaked at 1.2 GiB.) Past
//! `DENSE_AT` bins it turns dense, one weight per key between the lowest and highest, so a hot
//! context's sample is an index, not a search and a shift (sparse all the way halved the
//! distributions preset's throughput). When the dense span passes `BIN_LIMIT` the lowest keys are
//! collapsed into the lowest kept one, as the Agent collapses its lowest bins. Merging adds bins key
//! by key, so merging partial sketches equals sketching all samples on one core (until a collapse).

/// Relative accuracy of a value read back from a bin.
pub const RELATIVE_ACCURACY: f64 = 1.0 / 128.0;
pub const GAMMA: f64 = 1.0 + 2.0 * RELATIVE_ACCURACY;
pub const MIN_VALUE: f64 = 1e-9;
pub const BIN_LIMIT: usize = 4096;
/// Sparse bins a sketch holds before it turns dense.
const DENSE_AT: usize = 64;

fn gamma_ln() -> f64 {
    GAMMA.ln()
}

/// Key bias: `key(MIN_VALUE) == 1`.
fn bias() -> i32 {
    1 - (MIN_VALUE.ln() / gamma_ln()).round() as i32
}

/// The bin key of a value.
pub fn key(v: f64) -> i32 {
    if v < 0.0 {
        return -key(-v);
    }
    if v < MIN_VALUE {
        return 0;
    }
    let k = (v.ln() / gamma_ln()).round() as i32 + bias();
    k.clamp(1, i16::MAX as i32 - 1)
}

/// The value a bin stands for: within `RELATIVE_ACCURACY` of every value mapped to it.
pub fn value(k: i32) -> f64 {
    match k {
        0 => 0.0,
        k if k < 0 => -value(-k),
        k => ((k - bias()) as f64 * gamma_ln()).exp(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sketch {
    pub count: f64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// Non-empty bins, ascending by key, while the sketch is sparse (`dense` empty).
    sparse: Vec<(i32, f64)>,
    /// Once dense: the weight of every key from `lowest` up.
    dense: Vec<f64>,
    lowest: i32,
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch {
            count: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sparse: Vec::new(),
            dense: Vec::new(),
            lowest: 0,
        }
    }
}

impl Sketch {
    pub fn insert(&mut self, v: f64, weight: f64) {
        self.count += weight;
        self.sum += v * weight;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.add_to_bin(key(v), weight);
    }

    fn add_to_bin(&mut self, k: i32, weight: f64) {
        if !self.dense.is_empty() {
            return self.add_dense(k, weight);
        }
        // Most samples land in the last bin touched or past the end; try that first.
        if let Some(last) = self.sparse.last_mut() {
            if last.0 == k {
                last.1 += weight;
                return;
            }
            if last.0 < k {
                self.sparse.push((k, weight));
                return self.maybe_densify();
            }
        }
        match self.sparse.binary_search_by_key(&k, |b| b.0) {
            Ok(i) => self.sparse[i].1 += weight,
            Err(i) => {
                self.sparse.insert(i, (k, weight));
                self.maybe_densify();
            }
        }
    }

    fn maybe_densify(&mut self) {
        if self.sparse.len() <= DENSE_AT {
            return;
        }
        let sparse = std::mem::take(&mut self.sparse);
        self.lowest = sparse[0].0;
        self.dense = vec![0.0; 1];
        for (k, n) in sparse {
            self.add_dense(k, n);
        }
    }

    fn add_dense(&mut self, k: i32, weight: f64) {
        if k < self.lowest {
            let grow = (self.lowest - k) as usize;
            self.dense.splice(0..0, std::iter::repeat_n(0.0, grow));
            self.lowest = k;
        }
        let i = (k - self.lowest) as usize;
        if i >= self.dense.len() {
            self.dense.resize(i + 1, 0.0);
        }
        self.dense[i] += weight;
        if self.dense.len() > BIN_LIMIT {
            // Keep the span within the limit: fold the lowest keys into the lowest kept one.
            let excess = self.dense.len() - BIN_LIMIT;
            let folded: f64 = self.dense.drain(..excess).sum();
            self.dense[0] += folded;
            self.lowest += excess as i32;
        }
    }

    pub fn merge(&mut self, other: &Sketch) {
        if other.count == 0.0 {
            return;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if !self.dense.is_empty() || !other.dense.is_empty() {
            for (k, n) in other.bins() {
                self.add_to_bin(k, n);
            }
            return;
        }
        // Both sparse: one linear pass over the two sorted lists.
        let (a, b) = (&self.sparse, &other.sparse);
        let mut merged = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            if a[i].0 == b[j].0 {
                merged.push((a[i].0, a[i].1 + b[j].1));
                i += 1;
                j += 1;
            } else if a[i].0 < b[j].0 {
                merged.push(a[i]);
                i += 1;
            } else {
                merged.push(b[j]);
                j += 1;
            }
        }
        merged.extend_from_slice(&a[i..]);
        merged.extend_from_slice(&b[j..]);
        self.sparse = merged;
        self.maybe_densify();
    }

    /// Non-empty bins as (key, weight), ascending by key (and so by value).
    pub fn bins(&self) -> impl Iterator<Item = (i32, f64)> + '_ {
        let lowest = self.lowest;
        let dense = self
            .dense
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0.0)
            .map(move |(i, n)| (lowest + i as i32, *n));
        self.sparse.iter().copied().chain(dense)
    }

    pub fn avg(&self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count
        } else {
            0.0
        }
    }

    /// The q-quantile (q in [0, 1]): the value of the first bin whose cumulative weight passes
    /// rank `q * (count - 1)`, clamped to the exact min and max.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0.0 {
            return 0.0;
        }
        if q <= 0.0 {
            return self.min;
        }
        if q >= 1.0 {
            return self.max;
        }
        let rank = q * (self.count - 1.0);
        let mut seen = 0.0;
        for (k, n) in self.bins() {
            seen += n;
            if seen > rank {
                return value(k).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Bytes held on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.sparse.capacity() * std::mem::size_of::<(i32, f64)>()
            + self.dense.capacity() * std::mem::size_of::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_agent_layout() {
        assert_eq!(key(MIN_VALUE), 1);
        assert_eq!(key(0.0), 0);
        assert_eq!(key(1e-12), 0);
        assert_eq!(key(-1e-12), 0);
        assert_eq!(key(-5.0), -key(5.0));
        assert!(key(2.0) > key(1.0));
    }

    #[test]
    fn every_bin_value_is_within_relative_accuracy() {
        let mut v = 1e-8;
        while v < 1e12 {
            let back = value(key(v));
            assert!(((back - v) / v).abs() <= RELATIVE_ACCURACY, "{v} -> {back}");
            assert!(((value(key(-v)) + v) / v).abs() <= RELATIVE_ACCURACY);
            v *= 1.37;
        }
    }

    #[test]
    fn quantiles_of_uniform_values_are_within_accuracy() {
        let mut s = Sketch::default();
        for i in 1..=10_000 {
            s.insert(i as f64, 1.0);
        }
        assert_eq!(s.count, 10_000.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 10_000.0);
        for (q, exact) in [(0.5, 5000.5), (0.9, 9000.1), (0.99, 9900.01)] {
            let got = s.quantile(q);
            assert!(
                ((got - exact) / exact).abs() <= 2.0 * RELATIVE_ACCURACY,
                "q{q}: {got}"
            );
        }
    }

    #[test]
    fn merging_partials_equals_sketching_everything() {
        let mut whole = Sketch::default();
        let mut parts = [Sketch::default(), Sketch::default(), Sketch::default()];
        for i in 0..3000 {
            let v = ((i * 7919) % 1000) as f64 - 300.0;
            whole.insert(v, 2.0);
            parts[i % 3].insert(v, 2.0);
        }
        let mut merged = Sketch::default();
        for p in &parts {
            merged.merge(p);
        }
        assert_eq!(
            merged.bins().collect::<Vec<_>>(),
            whole.bins().collect::<Vec<_>>()
        );
        assert_eq!(
            (merged.count, merged.min, merged.max),
            (whole.count, whole.min, whole.max)
        );
        assert!((merged.sum - whole.sum).abs() < 1e-6);
    }

    #[test]
    fn a_few_spread_values_hold_a_few_bins() {
        let mut s = Sketch::default();
        for v in [0.0, 0.01, 999.0, 5.0, 0.01] {
            s.insert(v, 1.0);
        }
        assert_eq!(s.bins().count(), 4);
        assert!(s.heap_bytes() <= 8 * 16, "{}", s.heap_bytes());
        let keys: Vec<i32> = s.bins().map(|(k, _)| k).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    }

    #[test]
    fn sparse_and_dense_sketches_merge_alike() {
        let mut sparse = Sketch::default();
        let mut dense = Sketch::default();
        let mut all = Sketch::default();
        for i in 0..10 {
            sparse.insert(f64::from(i) * 3.0, 1.0);
            all.insert(f64::from(i) * 3.0, 1.0);
        }
        for i in 0..500 {
            dense.insert(f64::from(i) * 0.7, 0.5);
            all.insert(f64::from(i) * 0.7, 0.5);
        }
        assert!(sparse.dense.is_empty() && !dense.dense.is_empty());
        let mut a = sparse.clone();
        a.merge(&dense);
        let mut b = dense.clone();
        b.merge(&sparse);
        let bins = |s: &Sketch| s.bins().collect::<Vec<_>>();
        assert_eq!(bins(&a), bins(&all));
        assert_eq!(bins(&b), bins(&all));
        assert_eq!(a.count, all.count);
    }

    #[test]
    fn span_never_exceeds_the_bin_limit() {
        let mut s = Sketch::default();
        let mut v = 1e-9;
        while v < 1e300 {
            s.insert(v, 1.0);
            s.insert(-v, 1.0);
            v *= 1.5;
        }
        assert!(s.dense.len() <= BIN_LIMIT);
        assert_eq!(s.bins().map(|(_, n)| n).sum::<f64>(), s.count);
        assert_eq!(s.quantile(1.0), s.max);
    }
}
