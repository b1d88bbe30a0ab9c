//! The window close: `begin_close` opens the next window, `close_step` sweeps the closed one in
//! budgeted steps (each context's aggregate into its owner's `ContextBatch`, idle counters
//! zero-filled, expired contexts freed, and with `context_stats` the busiest contexts kept),
//! while the receive path goes on filling the new window.
//!
//! Owns the sweep's cursor and the batches being filled. Must not create contexts or read
//! samples; a sample for the new window that reaches an unswept context hands its old aggregate
//! over first (`extract`, from `Aggregator::aggregate`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::key::low;
use super::{Aggregator, ContextBatch, Partial, owner_of};
use crate::protocol::MetricType;
use crate::values::Agg;

/// Contexts a shard names per window as its busiest (with `context_stats`).
pub const BUSIEST: usize = 100;

/// A closed window ready to leave the shard.
pub struct ClosedWindow {
    pub window: u64,
    /// One batch per owner shard, indexed by owner.
    pub batches: Vec<ContextBatch>,
    pub live_contexts: u64,
    /// With `context_stats`: the window's `BUSIEST` contexts by samples, (key, samples), most
    /// first.
    pub busiest: Vec<(u64, u32)>,
    /// Set contexts whose members this shard estimated this window (`values::set`).
    pub set_estimates: u64,
}

pub(super) struct Closing {
    window: u32,
    batches: Vec<ContextBatch>,
    cursor: usize,
    busiest: Busiest,
    /// Set partials of this window that are estimates (past `--set-exact-members`).
    set_estimates: u64,
}

/// The `BUSIEST` contexts by samples seen so far: a min-heap, so a context that beats none of
/// them costs one comparison.
#[derive(Default)]
struct Busiest(BinaryHeap<Reverse<(u32, u64)>>);

impl Busiest {
    fn offer(&mut self, key: u64, samples: u32) {
        if self.0.len() < BUSIEST {
            self.0.push(Reverse((samples, key)));
        } else if self
            .0
            .peek()
            .is_some_and(|Reverse((least, _))| samples > *least)
        {
            self.0.pop();
            self.0.push(Reverse((samples, key)));
        }
    }

    fn most_first(self) -> Vec<(u64, u32)> {
        let mut v: Vec<(u64, u32)> = self.0.into_iter().map(|Reverse((n, k))| (k, n)).collect();
        v.sort_unstable_by_key(|&(k, n)| (Reverse(n), k));
        v
    }
}

impl Aggregator {
    /// Closes the open window and opens the next one. The closed window's contexts are then
    /// swept by `close_step`; samples for the new window go on being accepted meanwhile.
    pub fn begin_close(&mut self) {
        if self.closing.is_some() {
            // The previous sweep never finished (its caller stopped calling `close_step`):
            // finish it so no window is mixed with the next.
            while self.close_step(usize::MAX).is_none() {}
        }
        // Samples of the new window read this copy (exact histogram samples near the limit).
        self.refresh_pressure();
        let window_start = self.window_start();
        self.closing = Some(Closing {
            window: self.window,
            batches: (0..self.cfg.owners)
                .map(|owner| {
                    let partials = self.last_batch_sizes.get(owner).copied().unwrap_or(0);
                    ContextBatch {
                        window: window_start,
                        partials: Vec::with_capacity(partials + partials / 8),
                        freed: Vec::new(),
                    }
                })
                .collect(),
            cursor: 0,
            busiest: Busiest::default(),
            set_estimates: 0,
        });
        self.window += 1;
    }

    /// Sweeps up to `budget` context slots of the closing window: hands their aggregates to the
    /// owners' batches, zero-fills idle counters, frees expired contexts. Returns the closed window
    /// once the sweep is complete.
    pub fn close_step(&mut self, budget: usize) -> Option<ClosedWindow> {
        let closing = self.closing.as_ref()?;
        let closed = closing.window;
        let start = closing.cursor;
        let end = start.saturating_add(budget).min(self.slots.len());
        let bucket = u64::from(self.cfg.bucket_secs);
        let zero_fill = self.cfg.counter_zero_fill_secs.div_ceil(bucket) as u32;
        let expiry = self.cfg.context_expiry_secs.div_ceil(bucket).max(1) as u32;
        for id in start as u32..end as u32 {
            if !self.metas[id as usize].live {
                continue;
            }
            let slot = &mut self.slots[id as usize];
            if slot.agg.is_some() && slot.last_seen == closed {
                let agg = slot.agg.take();
                self.extract(id, agg, closed);
                continue;
            }
            if slot.last_seen > closed {
                continue;
            }
            let idle = closed - slot.last_seen;
            let is_counter = self.metas[id as usize].metric_type == MetricType::Counter;
            if is_counter && idle <= zero_fill {
                self.extract(id, Some(Agg::Counter(0.0)), closed);
            }
            let keep_for = if is_counter && zero_fill > 0 {
                zero_fill
            } else {
                expiry
            };
            if idle >= keep_for {
                self.free_context(id);
            }
        }
        let closing = self.closing.as_mut()?;
        closing.cursor = end;
        if end < self.slots.len() {
            return None;
        }
        let mut closing = self.closing.take()?;
        self.caps.at_close();
        self.last_batch_sizes = closing.batches.iter().map(|b| b.partials.len()).collect();
        // Every context freed so far, the sweep's frees included: they reach the sink through
        // each context's owner, after that owner's points of the window.
        for (batch, freed) in closing.batches.iter_mut().zip(self.freed.iter_mut()) {
            batch.freed = std::mem::take(freed);
        }
        Some(ClosedWindow {
            window: u64::from(closing.window) * bucket,
            batches: closing.batches,
            live_contexts: self.live as u64,
            busiest: closing.busiest.most_first(),
            set_estimates: closing.set_estimates,
        })
    }

    /// A take-over: the windows still to close go to the new process, which would take a
    /// zero-filled counter for a sample of 0 and keep the context `counter_zero_fill_secs`
    /// more, at every take-over, so under take-overs closer than that no counter ever expired
    /// (found by `scripts/soak.sh`). Idle counters lapse instead, as a restart forgets them.
    pub fn stop_zero_fill(&mut self) {
        self.cfg.counter_zero_fill_secs = 0;
    }

    /// Writes a context's aggregate into its owner's batch of the closing window.
    pub(super) fn extract(&mut self, id: u32, agg: Option<Agg>, window: u32) {
        let Some(agg) = agg else { return };
        if let (Agg::Gauge { value, .. }, Some(last)) =
            (&agg, self.last_gauges.get_mut(id as usize))
        {
            *last = *value;
        }
        // The samples go with the aggregate (none for a zero-filled counter).
        let samples = self.samples.get_mut(id as usize).map_or(0, std::mem::take);
        let Some(closing) = self.closing.as_mut().filter(|c| c.window == window) else {
            // Only reachable if a window was skipped without `begin_close`: a bug, not input.
            debug_assert!(false, "aggregate of window {window} outside a close");
            return;
        };
        let key = self.metas[id as usize].key;
        if samples > 0 {
            closing.busiest.offer(key, samples);
        }
        if let Agg::Set(s) = &agg {
            closing.set_estimates += u64::from(s.is_estimate());
        }
        closing.batches[owner_of(key, self.cfg.owners)]
            .partials
            .push(Partial { key, agg });
    }

    fn free_context(&mut self, id: u32) {
        let ctx = &mut self.metas[id as usize];
        let (key, alias_lo, overflow) = (ctx.key, ctx.alias_lo, ctx.overflow);
        ctx.live = false;
        self.caps.release(&self.state, id, overflow);
        self.slots[id as usize].agg = None;
        self.by_key.remove(low(key), id);
        self.by_alias.remove(alias_lo, id);
        self.freed[owner_of(key, self.cfg.owners)].push(key);
        self.live -= 1;
        self.free.push(id);
    }
}
