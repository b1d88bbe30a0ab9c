//! The per-type values: a context's aggregate for one window (`Agg`), the histogram (`histogram`)
//! and DDSketch (`sketch`) behind it, how a sample updates it and how two shards' partials of the
//! same context merge. Knows nothing of contexts, windows or cores: `aggregate` keeps one per
//! context, `merge` folds them, the flushed form carries them whole to the relay.

pub mod histogram;
pub mod set;
pub mod sketch;

use crate::protocol::{Metric, MetricType};
use histogram::Histogram;
use set::Set;
use sketch::Sketch;

/// `--set-exact-members` when not given.
pub const DEFAULT_SET_EXACT_MEMBERS: usize = 4096;

/// How much of a window's samples an aggregate keeps exactly before it turns into an estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Histogram samples kept exactly before switching to a sketch.
    pub histogram_samples: usize,
    /// Distinct set members kept exactly before switching to a HyperLogLog (`set`).
    pub set_members: usize,
}

impl Limits {
    /// `histogram_samples`, with the default set limit.
    pub fn histogram(histogram_samples: usize) -> Limits {
        Limits {
            histogram_samples,
            set_members: DEFAULT_SET_EXACT_MEMBERS,
        }
    }
}

/// Hints the CPU to start loading `p`'s cache line. Never dereferences: `p` may dangle.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is only a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A sample's weight, `1/rate`, snapped to the nearest integer when within float error of it:
/// a relay tier writes weight 3 as `@0.3333333333333333`, whose inverse is 3.0000000000000004,
/// and a weight should come back whole so counts do (`sink::relay`).
fn sample_weight(w: f64) -> f64 {
    let r = w.round();
    if (w - r).abs() <= r * 1e-12 { r } else { w }
}

/// One context's aggregate for one window. `Send`: it travels to the context's owner.
#[derive(Debug, Clone, PartialEq)]
pub enum Agg {
    /// Sum of value / rate.
    Counter(f64),
    /// Last value; `at` orders updates across shards (monotonic ns of the receive batch).
    Gauge {
        value: f64,
        at: u64,
    },
    Set(Box<Set>),
    Histogram(Box<Histogram>),
    Distribution(Box<Sketch>),
}

impl Agg {
    pub(crate) fn new(t: MetricType) -> Agg {
        match t {
            MetricType::Counter => Agg::Counter(0.0),
            MetricType::Gauge => Agg::Gauge { value: 0.0, at: 0 },
            MetricType::Set => Agg::Set(Box::default()),
            // Room for 16 samples up front: growing from empty reallocated every few samples.
            MetricType::Histogram | MetricType::Timer => {
                Agg::Histogram(Box::new(Histogram::Exact(Vec::with_capacity(16))))
            }
            MetricType::Distribution => Agg::Distribution(Box::default()),
        }
    }

    /// A gauge line with `--gauge-deltas`: a signed value (`+5`, `-3`) adjusts the value, an
    /// unsigned one sets it, left to right. Other aggregates take the line as `insert` does.
    pub(crate) fn adjust_gauge(&mut self, m: &Metric<'_>, at: u64) {
        let Agg::Gauge { value, at: last } = self else {
            return;
        };
        let texts = m.value_text.split(|&b| b == b':').filter(|t| !t.is_empty());
        for (text, v) in texts.zip(m.values()) {
            if matches!(text.first(), Some(b'+' | b'-')) {
                *value += v;
            } else {
                *value = v;
            }
            *last = at;
        }
    }

    pub(crate) fn insert(&mut self, m: &Metric<'_>, at: u64, limits: Limits) {
        let weight = 1.0 / m.sample_rate;
        match self {
            Agg::Counter(sum) => {
                for v in m.values() {
                    *sum += v * weight;
                }
            }
            Agg::Gauge { value, at: last } => {
                if let Some(v) = m.values().last() {
                    *value = v;
                    *last = at;
                }
            }
            Agg::Set(members) => members.insert(m.value_text, limits.set_members),
            Agg::Histogram(h) => {
                let weight = sample_weight(weight);
                for v in m.values() {
                    h.insert(v, weight, limits.histogram_samples);
                }
            }
            Agg::Distribution(s) => {
                let weight = sample_weight(weight);
                for v in m.values() {
                    s.insert(v, weight);
                }
            }
        }
    }

    /// Prefetches the boxed state, if any (see `Aggregator::insert_group`).
    #[inline]
    pub(crate) fn prefetch(&self) {
        match self {
            Agg::Counter(_) | Agg::Gauge { .. } => {}
            Agg::Set(b) => prefetch(&**b),
            Agg::Histogram(b) => prefetch(&**b),
            Agg::Distribution(b) => prefetch(&**b),
        }
    }

    /// Folds another partial of the same context into this one.
    pub fn merge(&mut self, other: Agg, limits: Limits) {
        match (self, other) {
            (Agg::Counter(a), Agg::Counter(b)) => *a += b,
            (Agg::Gauge { value, at }, Agg::Gauge { value: v, at: t }) => {
                if t >= *at {
                    *value = v;
                    *at = t;
                }
            }
            (Agg::Set(a), Agg::Set(b)) => a.merge(*b, limits.set_members),
            (Agg::Histogram(a), Agg::Histogram(b)) => a.merge(*b, limits.histogram_samples),
            (Agg::Distribution(a), Agg::Distribution(b)) => a.merge(&b),
            // The type is part of the context key, so partials of one key share a type.
            _ => debug_assert!(false, "merging aggregates of different types"),
        }
    }
}
