//! DDSketch with the Datadog Agent's parameters: relative accuracy 1/128, gamma 1.015625, bins
//! keyed like the Agent's (key 1 is the smallest tracked value 1e-9, negatives mirror positives,
//! key 0 holds |v| < 1e-9), at most 4096 bins.
//!
//! Counts are `f64` weights so sample rates (1/rate) apply exactly. Bins are stored densely between
//! the lowest and highest key; when that span passes the bin limit the lowest keys are collapsed
//! into the lowest kept key, as the Agent collapses its lowest bins. Merging two sketches adds bins
//! key by key, so merging partial sketches equals sketching all samples on one core (until a
//! collapse happens).

/// Relative accuracy of a value read back from a bin.
pub const RELATIVE_ACCURACY: f64 = 1.0 / 128.0;
pub const GAMMA: f64 = 1.0 + 2.0 * RELATIVE_ACCURACY;
pub const MIN_VALUE: f64 = 1e-9;
pub const BIN_LIMIT: usize = 4096;

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
    /// Key of `bins[0]`.
    lowest: i32,
    bins: Vec<f64>,
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch {
            count: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            lowest: 0,
            bins: Vec::new(),
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
        if self.bins.is_empty() {
            self.lowest = k;
            self.bins.push(weight);
            return;
        }
        if k < self.lowest {
            let grow = (self.lowest - k) as usize;
            self.bins.splice(0..0, std::iter::repeat_n(0.0, grow));
            self.lowest = k;
        }
        let i = (k - self.lowest) as usize;
        if i >= self.bins.len() {
            self.bins.resize(i + 1, 0.0);
        }
        self.bins[i] += weight;
        self.collapse();
    }

    /// Keeps the key span within `BIN_LIMIT` by folding the lowest keys into the lowest kept one.
    fn collapse(&mut self) {
        if self.bins.len() <= BIN_LIMIT {
            return;
        }
        let excess = self.bins.len() - BIN_LIMIT;
        let folded: f64 = self.bins.drain(..excess).sum();
        self.bins[0] += folded;
        self.lowest += excess as i32;
    }

    pub fn merge(&mut self, other: &Sketch) {
        if other.count == 0.0 {
            return;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        for (k, n) in other.bins() {
            self.add_to_bin(k, n);
        }
    }

    /// Non-empty bins as (key, weight), ascending by key (and so by value).
    pub fn bins(&self) -> impl Iterator<Item = (i32, f64)> + '_ {
        self.bins
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0.0)
            .map(|(i, n)| (self.lowest + i as i32, *n))
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
        self.bins.capacity() * std::mem::size_of::<f64>()
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
    fn span_never_exceeds_the_bin_limit() {
        let mut s = Sketch::default();
        let mut v = 1e-9;
        while v < 1e300 {
            s.insert(v, 1.0);
            s.insert(-v, 1.0);
            v *= 1.5;
        }
        assert!(s.bins.len() <= BIN_LIMIT);
        assert_eq!(s.bins().map(|(_, n)| n).sum::<f64>(), s.count);
        assert_eq!(s.quantile(1.0), s.max);
    }
}
