//! Histogram and timer aggregation: exact weighted samples while a context holds few, a DDSketch
//! beyond `exact_limit` samples so memory stays bounded.
//!
//! Exact mode reproduces the Agent (`pkg/metrics/histogram.go`): samples sorted, the median is the
//! first sample whose cumulative weight passes `(count - 1) / 2`, percentile p (in percent) the
//! first passing `(p * count - 1) / 100`. In sketch mode min, max, sum, count and avg stay exact and
//! median/percentiles are read from the sketch within its relative accuracy (1/128, about 0.8 %).

use super::sketch::Sketch;

#[derive(Debug, Clone, PartialEq)]
pub enum Histogram {
    Exact(Vec<(f64, f64)>),
    Sketch(Sketch),
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::Exact(Vec::new())
    }
}

/// The aggregates the Agent names `max, median, avg, count, min, sum` plus percentiles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: f64,
}

impl Summary {
    pub fn avg(&self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count
        } else {
            0.0
        }
    }
}

impl Histogram {
    pub fn insert(&mut self, v: f64, weight: f64, exact_limit: usize) {
        match self {
            Histogram::Exact(samples) => {
                samples.push((v, weight));
                if samples.len() > exact_limit {
                    self.switch_to_sketch();
                }
            }
            Histogram::Sketch(s) => s.insert(v, weight),
        }
    }

    fn switch_to_sketch(&mut self) {
        if let Histogram::Exact(samples) = self {
            let mut s = Sketch::default();
            for &(v, w) in samples.iter() {
                s.insert(v, w);
            }
            *self = Histogram::Sketch(s);
        }
    }

    /// Adds another partial of the same context. Exact samples stay exact while the total is
    /// within `exact_limit`, as if every sample had been inserted here.
    pub fn merge(&mut self, other: Histogram, exact_limit: usize) {
        match other {
            Histogram::Exact(samples) => {
                for (v, w) in samples {
                    self.insert(v, w, exact_limit);
                }
            }
            Histogram::Sketch(other) => {
                self.switch_to_sketch();
                if let Histogram::Sketch(s) = self {
                    s.merge(&other);
                }
            }
        }
    }

    pub fn summary(&self) -> Summary {
        match self {
            Histogram::Exact(samples) => {
                let mut s = Summary {
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                    sum: 0.0,
                    count: 0.0,
                };
                for &(v, w) in samples {
                    s.min = s.min.min(v);
                    s.max = s.max.max(v);
                    s.sum += v * w;
                    s.count += w;
                }
                s
            }
            Histogram::Sketch(sk) => Summary {
                min: sk.min,
                max: sk.max,
                sum: sk.sum,
                count: sk.count,
            },
        }
    }

    /// Sorts exact samples in place so repeated quantile reads are cheap.
    pub fn sort(&mut self) {
        if let Histogram::Exact(samples) = self {
            samples.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }

    /// The median (`q == 0.5`) or a percentile, the Agent's way. Call `sort` first.
    pub fn quantile(&self, q: f64) -> f64 {
        match self {
            Histogram::Exact(samples) => {
                let count: f64 = samples.iter().map(|s| s.1).sum();
                let target = if q == 0.5 {
                    (count - 1.0) / 2.0
                } else {
                    let percent = (q * 100.0 + 0.5).floor();
                    (percent * count - 1.0) / 100.0
                };
                let mut seen = 0.0;
                for &(v, w) in samples {
                    seen += w;
                    if seen > target {
                        return v;
                    }
                }
                samples.last().map_or(0.0, |s| s.0)
            }
            Histogram::Sketch(s) => s.quantile(q),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            Histogram::Exact(s) => s.capacity() * 16,
            Histogram::Sketch(s) => s.heap_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(values: &[f64]) -> Histogram {
        let mut h = Histogram::default();
        for &v in values {
            h.insert(v, 1.0, 1000);
        }
        h.sort();
        h
    }

    #[test]
    fn median_and_percentile_follow_the_agent() {
        let h = exact(&(1..=100).map(f64::from).collect::<Vec<_>>());
        assert_eq!(h.quantile(0.5), 50.0);
        assert_eq!(h.quantile(0.95), 95.0);
        assert_eq!(h.quantile(0.99), 99.0);
        let h = exact(&[3.0, 1.0, 2.0]);
        assert_eq!(h.quantile(0.5), 2.0);
        assert_eq!(h.quantile(0.95), 3.0);
        let h = exact(&[1.0, 2.0]);
        assert_eq!(h.quantile(0.5), 1.0);
    }

    #[test]
    fn weights_count_like_repeated_samples() {
        let mut weighted = Histogram::default();
        weighted.insert(10.0, 3.0, 100);
        weighted.insert(20.0, 1.0, 100);
        weighted.sort();
        let repeated = exact(&[10.0, 10.0, 10.0, 20.0]);
        assert_eq!(weighted.quantile(0.5), repeated.quantile(0.5));
        assert_eq!(weighted.quantile(0.95), repeated.quantile(0.95));
        assert_eq!(weighted.summary(), repeated.summary());
    }

    #[test]
    fn switches_to_a_sketch_past_the_exact_limit_keeping_exact_summary() {
        let mut h = Histogram::default();
        for i in 1..=1000 {
            h.insert(f64::from(i), 1.0, 64);
        }
        assert!(matches!(h, Histogram::Sketch(_)));
        let s = h.summary();
        assert_eq!(
            (s.min, s.max, s.sum, s.count),
            (1.0, 1000.0, 500500.0, 1000.0)
        );
        let median = h.quantile(0.5);
        assert!((median - 500.0).abs() / 500.0 < 0.01, "{median}");
    }

    #[test]
    fn merging_partials_equals_inserting_everything() {
        for limit in [1000, 10] {
            let mut whole = Histogram::default();
            let mut parts = vec![Histogram::default(), Histogram::default()];
            for i in 0..40 {
                let v = f64::from((i * 37) % 23);
                whole.insert(v, 1.0, limit);
                parts[i as usize % 2].insert(v, 1.0, limit);
            }
            let mut merged = Histogram::default();
            for p in parts {
                merged.merge(p, limit);
            }
            whole.sort();
            merged.sort();
            assert_eq!(merged.summary().count, whole.summary().count);
            for q in [0.5, 0.95] {
                assert_eq!(merged.quantile(q), whole.quantile(q), "limit {limit} q {q}");
            }
        }
    }
}
