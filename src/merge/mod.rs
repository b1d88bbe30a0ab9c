//! Cross-core merge, on the owning shard: the `ContextBatch`es every shard sends for a closed
//! window are merged by context key, then expanded into the flushed form.
//!
//! Owns the merge tables of windows it is collecting. Must not touch a shard's context table or
//! interner: everything arriving here is an owned, `Send` `ContextBatch`.

use std::cell::Cell;

use hashbrown::HashMap;

use table::{Merged, Table};

use crate::aggregate::{ContextBatch, Partial};
use crate::flushed::{DescRef, FlushBatch, FlushedMetric, OutKind, Suffix};
use crate::values::histogram::Histogram;
use crate::values::{Agg, Limits};

/// Which histogram aggregates to emit (`--histogram-aggregates`, `--histogram-percentiles`).
#[derive(Debug, Clone)]
pub struct HistogramOutput {
    pub aggregates: Vec<Suffix>,
    /// (percent suffix, quantile), e.g. (95, 0.95) emits `name.95percentile`.
    pub percentiles: Vec<(u8, f64)>,
}

#[derive(Default)]
struct Pending {
    /// Batches finished (`batch_done`).
    received: usize,
    /// Contexts the shards freed, forwarded after the points.
    freed: Vec<u64>,
    table: Table,
}

/// A window every shard has reported, being expanded into points.
pub struct ReadyWindow {
    pub window: u64,
    merged: Merged,
    /// Contexts expanded so far.
    contexts: usize,
    /// The points so far; complete once `expand_step` returns true.
    pub out: FlushBatch,
}

impl ReadyWindow {
    fn new(window: u64, p: Pending, merger: &Merger) -> Self {
        // Sized up front: growing a vector of 100k+ points mid-expansion copies it whole, a
        // multi-millisecond stall for the owner's receive loop (benches/contexts.rs). A window
        // several shards sent may hold each context more than once: then the last window's
        // size is the better guess (reserving the bound would count as heap held).
        let t = &p.table;
        let mut points = t.partials - t.histograms + t.histograms * merger.points_per_histogram();
        if t.is_split() {
            let last = merger.last_points.get();
            points = points.min((last + last / 8).max(1024));
        }
        ReadyWindow {
            window,
            out: FlushBatch {
                metrics: Vec::with_capacity(points),
                freed: p.freed,
                whole: merger.keep_whole,
                ..FlushBatch::default()
            },
            merged: p.table.into_merged(merger.limits),
            contexts: 0,
        }
    }
}

/// The owner side: collects one `ContextBatch` per shard per window, merges them by context key.
pub struct Merger {
    shards: usize,
    bucket_secs: u32,
    limits: Limits,
    histogram: HistogramOutput,
    pending: HashMap<u64, Pending>,
    /// Contexts and points of the last expanded window: the next window's table and points
    /// start that large.
    last_contexts: Cell<usize>,
    last_points: Cell<usize>,
    /// Hand sets and histograms on whole (`FlushedMetric::whole`), one point per context, for a
    /// downstream that aggregates again (the relay).
    keep_whole: bool,
}

impl Merger {
    pub fn new(
        shards: usize,
        bucket_secs: u32,
        limits: Limits,
        histogram: HistogramOutput,
    ) -> Self {
        Merger {
            shards,
            bucket_secs,
            limits,
            histogram,
            pending: HashMap::new(),
            last_contexts: Cell::new(0),
            last_points: Cell::new(0),
            keep_whole: false,
        }
    }

    /// Sets and histograms leave whole instead of expanded (see `keep_whole`).
    pub fn keeping_whole(mut self, keep: bool) -> Self {
        self.keep_whole = keep;
        self
    }

    /// `keeping_whole` from the next window ready on (a take-over's last windows).
    pub fn set_keeping_whole(&mut self, keep: bool) {
        self.keep_whole = keep;
    }

    /// Starts merging one shard's batch: keeps the contexts it says were freed for the window's
    /// output, and takes the window's first batch whole (its vector becomes the window's table;
    /// copying it partial by partial was 37 of the 197 ns a context of a 1M-counter close).
    /// Returns what is left to `merge`, in chunks so the caller can yield in between.
    pub fn begin_batch(&mut self, batch: ContextBatch) -> std::vec::IntoIter<Partial> {
        let expected = self.last_contexts.get() * 9 / 8;
        let p = self.pending.entry(batch.window).or_default();
        if p.freed.is_empty() {
            p.freed = batch.freed;
        } else {
            p.freed.extend(batch.freed);
        }
        p.table.begin(batch.partials, expected)
    }

    /// Adds partials of one batch (begun with `begin_batch`) to its window's table.
    pub fn merge(&mut self, window: u64, partials: impl IntoIterator<Item = Partial>) {
        self.pending.entry(window).or_default().table.add(partials);
    }

    /// Marks one shard's batch for `window` as fully merged. Once every shard has reported,
    /// returns the window, to be turned into points by `expand_step`.
    pub fn batch_done(&mut self, window: u64) -> Option<ReadyWindow> {
        let p = self.pending.entry(window).or_default();
        p.received += 1;
        if p.received < self.shards {
            return None;
        }
        let p = self.pending.remove(&window)?;
        Some(ReadyWindow::new(window, p, self))
    }

    fn points_per_histogram(&self) -> usize {
        if self.keep_whole {
            return 1;
        }
        self.histogram.aggregates.len() + self.histogram.percentiles.len()
    }

    /// Convenience for tests and single-threaded callers: merges a whole batch.
    pub fn add(&mut self, batch: ContextBatch) -> Option<FlushBatch> {
        let window = batch.window;
        let rest = self.begin_batch(batch);
        self.merge(window, rest);
        let mut ready = self.batch_done(window)?;
        while !self.expand_step(&mut ready, usize::MAX) {}
        Some(ready.out)
    }

    /// At shutdown, once every shard has said it is done: the windows that some shard never
    /// opened (it had nothing for them), oldest first, ready to expand.
    pub fn flush_all(&mut self) -> Vec<ReadyWindow> {
        let mut windows: Vec<u64> = self.pending.keys().copied().collect();
        windows.sort_unstable();
        windows
            .into_iter()
            .filter_map(|w| {
                let p = self.pending.remove(&w)?;
                Some(ReadyWindow::new(w, p, self))
            })
            .collect()
    }

    /// Windows still waiting for some shard.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// Turns up to `budget` merged contexts of a ready window into points. Returns true once
    /// the window is complete (its points are then in `ready.out`). Done in steps so an owner
    /// with many contexts yields to its receive loop in between.
    pub fn expand_step(&self, ready: &mut ReadyWindow, budget: usize) -> bool {
        let window = ready.window;
        let out = &mut ready.out;
        let interval = self.bucket_secs;
        let mut n = 0;
        while let Some(Partial { key, agg }) = ready.merged.next() {
            let base = FlushedMetric {
                desc: DescRef::Context(key),
                suffix: Suffix::None,
                kind: OutKind::Gauge,
                value: 0.0,
                ts: window,
                interval,
                sketch: None,
                whole: None,
            };
            match agg {
                Agg::Set(members) if self.keep_whole => out.metrics.push(FlushedMetric {
                    value: members.count(),
                    whole: Some(Box::new(Agg::Set(members))),
                    ..base
                }),
                // The downstream reads the samples; no summary is worked out on this core.
                Agg::Histogram(h) if self.keep_whole => out.metrics.push(FlushedMetric {
                    whole: Some(Box::new(Agg::Histogram(h))),
                    ..base
                }),
                Agg::Counter(sum) => out.metrics.push(FlushedMetric {
                    kind: OutKind::Count,
                    value: sum,
                    ..base
                }),
                Agg::Gauge { value, .. } => out.metrics.push(FlushedMetric { value, ..base }),
                Agg::Set(members) => out.metrics.push(FlushedMetric {
                    value: members.count(),
                    ..base
                }),
                Agg::Distribution(sketch) => out.metrics.push(FlushedMetric {
                    kind: OutKind::Distribution,
                    value: sketch.count,
                    sketch: Some(sketch),
                    ..base
                }),
                Agg::Histogram(mut h) => {
                    expand_histogram(&mut h, &base, &self.histogram, &mut out.metrics)
                }
            }
            n += 1;
            ready.contexts += 1;
            if n >= budget && !ready.merged.is_done() {
                return false;
            }
        }
        self.last_points.set(out.metrics.len());
        self.last_contexts.set(ready.contexts);
        true
    }
}

/// A histogram's points: its `aggregates` and `percentiles` as the Agent names them, each
/// `base` with its suffix and value.
pub fn expand_histogram(
    h: &mut Histogram,
    base: &FlushedMetric,
    output: &HistogramOutput,
    out: &mut Vec<FlushedMetric>,
) {
    h.sort();
    let s = h.summary();
    for &suffix in &output.aggregates {
        let (kind, value) = match suffix {
            Suffix::Max => (OutKind::Gauge, s.max),
            Suffix::Min => (OutKind::Gauge, s.min),
            Suffix::Median => (OutKind::Gauge, h.quantile(0.5)),
            Suffix::Avg => (OutKind::Gauge, s.avg()),
            Suffix::Sum => (OutKind::Gauge, s.sum),
            Suffix::Count => (OutKind::Count, s.count),
            Suffix::None | Suffix::Percentile(_) => continue,
        };
        out.push(FlushedMetric {
            suffix,
            kind,
            value,
            whole: None,
            ..base.clone()
        });
    }
    for &(percent, q) in &output.percentiles {
        out.push(FlushedMetric {
            suffix: Suffix::Percentile(percent),
            value: h.quantile(q),
            whole: None,
            ..base.clone()
        });
    }
}

/// A batch a merger kept whole (`keeping_whole`), as it would have expanded it: for a
/// downstream beside one that needs whole batches (relay, prometheus-scrape). Sets become their
/// member count, histograms their aggregates; the rest is copied.
pub fn expand_whole(batch: &FlushBatch, output: &HistogramOutput) -> FlushBatch {
    let mut metrics = Vec::with_capacity(batch.metrics.len());
    for m in &batch.metrics {
        match m.whole.as_deref() {
            Some(Agg::Histogram(h)) => {
                let base = FlushedMetric {
                    whole: None,
                    ..m.clone()
                };
                expand_histogram(&mut h.clone(), &base, output, &mut metrics);
            }
            Some(_) => metrics.push(FlushedMetric {
                whole: None,
                ..m.clone()
            }),
            None => metrics.push(m.clone()),
        }
    }
    FlushBatch {
        arenas: batch.arenas.clone(),
        metrics,
        events: batch.events.clone(),
        service_checks: batch.service_checks.clone(),
        freed: batch.freed.clone(),
        whole: false,
    }
}

mod table;

#[cfg(test)]
mod cardinality_tests;
#[cfg(test)]
mod options_tests;
#[cfg(test)]
mod origin_tests;
#[cfg(test)]
mod pipeline_tests;
#[cfg(test)]
mod reload_tests;
#[cfg(test)]
mod tag_filter_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merger_waits_for_every_shard() {
        let out = HistogramOutput {
            aggregates: vec![],
            percentiles: vec![],
        };
        let mut m = Merger::new(2, 10, Limits::histogram(100), out);
        let batch = |v| ContextBatch {
            window: 100,
            partials: vec![Partial {
                key: 42,
                agg: Agg::Counter(v),
            }],
            freed: Vec::new(),
        };
        assert!(m.add(batch(1.0)).is_none());
        assert_eq!(m.waiting(), 1);
        let flushed = m.add(batch(2.5)).expect("both shards reported");
        assert_eq!(flushed.metrics.len(), 1);
        assert_eq!(flushed.metrics[0].value, 3.5);
        assert_eq!(flushed.metrics[0].ts, 100);
        assert_eq!(flushed.metrics[0].desc, DescRef::Context(42));
        assert_eq!(m.waiting(), 0);
    }
}
