//! The context caps: `--max-contexts`, `--max-contexts-per-metric`, and the memory limit's
//! refusal of new contexts (`memory::Pressure`). A refused context's samples go to its metric's
//! overflow context (its tags replaced by `corestatsd_overflow:true`), so totals stay exact;
//! each refusal is counted by reason and by metric name.
//!
//! Owns the per-metric live counts, the overflow contexts' aliases and the refusal counts; these
//! are `Aggregator` methods on the slow path only (a context's creation or refusal, a free, a
//! close). Must not touch a context's values or the window sweep.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::{HashMap, HashTable};

use super::key::{key_of, low, mix};
use super::{Aggregator, MAX_BLOCKED_KEYS};
use crate::counters::Refusal;
use crate::flushed::put_in_slot;
use crate::memory::Pressure;
use crate::protocol::MetricType;

/// The tag that replaces a refused context's tags in its metric's overflow context (the
/// OpenTelemetry SDK's cardinality-limit convention).
pub const OVERFLOW_TAG: &[u8] = b"corestatsd_overflow:true";

/// What `resolve_slow` returns for a refused context whose overflow context cannot be made.
pub(super) const OVERFLOW_FULL: u32 = u32::MAX - 1;

/// A context's entry in `metric_of` when it is not counted (an overflow context).
const NO_METRIC: u32 = u32::MAX;

/// Overflow contexts a shard may create beyond its caps (one per metric name, type and host
/// that overflowed; or 1 % of its `--max-contexts` share, if more): they keep totals exact, but
/// hostile unique names would multiply them too. Past this, a refused context's samples are
/// dropped and counted (`overflow_full_drops`).
const OVERFLOW_RESERVE_MIN: usize = 1024;

/// Metric names whose refused contexts a shard names per window (the rest are counted as one).
const MAX_REFUSED_NAMES: usize = 1024;

/// What the caps did since `take_refusals`.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    /// New contexts sent to overflow contexts, by reason.
    pub(crate) refused: crate::label::by!(Refusal),
    /// Refused contexts per metric name (at most `MAX_REFUSED_NAMES` names).
    pub(crate) by_name: HashMap<Box<[u8]>, u64>,
}

/// Live contexts of one metric name on this shard (`--max-contexts-per-metric`).
struct MetricCount {
    name: Box<[u8]>,
    live: u32,
}

/// The caps' state of one shard.
#[derive(Default)]
pub(super) struct Caps {
    /// Live contexts per metric name, with `--max-contexts-per-metric` (slots by name hash).
    metrics: Vec<MetricCount>,
    metrics_free: Vec<u32>,
    metrics_by_name: HashTable<u32>,
    /// Each context's slot in `metrics`, by context id (with `--max-contexts-per-metric` only:
    /// empty otherwise, so a context costs nothing for it).
    metric_of: Vec<u32>,
    /// Aliases of refused contexts, to their overflow context: later samples skip the caps.
    /// Cleared when full, when an overflow context is freed, and at a close when a cap may
    /// have room again (`at_close`), so refused contexts get another chance.
    overflow_aliases: HashMap<u64, u32>,
    /// Overflow contexts live on this shard.
    overflow_live: usize,
    /// A context was freed, or a context refused for memory, since the last close.
    changed: bool,
    refusals: Refusals,
    /// The memory pressure as last read (`memory::pressure`, a shared atomic): read on the slow
    /// paths only (a context's creation, an event, each close); samples use this copy.
    pub(super) pressure: Pressure,
    /// Tests: the pressure `refresh_pressure` reads instead of the process' (tests run in
    /// parallel; the process-wide level is not theirs to set).
    #[cfg(test)]
    forced_pressure: Option<Pressure>,
}

impl Caps {
    /// The overflow context a refused alias was sent to.
    pub(super) fn overflow_of(&self, alias: u64) -> Option<u32> {
        self.overflow_aliases.get(&alias).copied()
    }

    /// `name`'s slot in `metrics`, if it has live contexts.
    fn metric_slot(&self, state: &FixedState, name: &[u8]) -> Option<u32> {
        let metrics = &self.metrics;
        self.metrics_by_name
            .find(state.hash_one(name), |&i| {
                &*metrics[i as usize].name == name
            })
            .copied()
    }

    /// Counts context `id`, new, against `name`'s `--max-contexts-per-metric`.
    pub(super) fn count(&mut self, state: &FixedState, id: u32, name: &[u8]) {
        let i = match self.metric_slot(state, name) {
            Some(i) => {
                self.metrics[i as usize].live += 1;
                i
            }
            None => self.add_metric(state, name),
        };
        let id = id as usize;
        if self.metric_of.len() <= id {
            self.metric_of.resize(id + 1, NO_METRIC);
        }
        self.metric_of[id] = i;
    }

    fn add_metric(&mut self, state: &FixedState, name: &[u8]) -> u32 {
        let entry = MetricCount {
            name: name.into(),
            live: 1,
        };
        let i = put_in_slot(&mut self.metrics, &mut self.metrics_free, entry);
        let metrics = &self.metrics;
        self.metrics_by_name
            .insert_unique(state.hash_one(name), i, |&j| {
                state.hash_one(&*metrics[j as usize].name)
            });
        i
    }

    /// Forgets freed context `id`: its metric's count and, for an overflow context, every
    /// alias that may point at its slot before the slot is reused.
    pub(super) fn release(&mut self, state: &FixedState, id: u32, overflow: bool) {
        self.changed = true;
        if overflow {
            self.overflow_live -= 1;
            self.overflow_aliases.clear();
        }
        let Some(metric) = self.metric_of.get_mut(id as usize) else {
            return;
        };
        let metric = std::mem::replace(metric, NO_METRIC);
        if metric == NO_METRIC {
            return;
        }
        let m = &mut self.metrics[metric as usize];
        m.live -= 1;
        if m.live == 0 {
            let hash = state.hash_one(&*m.name);
            if let Ok(e) = self.metrics_by_name.find_entry(hash, |&i| i == metric) {
                e.remove();
            }
            self.metrics[metric as usize].name = Box::default();
            self.metrics_free.push(metric);
        }
    }

    /// At the end of a close's sweep: if a cap may have room again (a context was freed, or a
    /// context refused for memory and the pressure is gone), refused contexts get another chance.
    /// Otherwise they keep their overflow context without another trip through the caps.
    /// Forgets which overflow context each refused alias went to (a reload: names may map
    /// elsewhere now), so refused contexts meet the caps again.
    pub(super) fn forget_aliases(&mut self) {
        self.overflow_aliases.clear();
    }

    pub(super) fn at_close(&mut self) {
        if self.changed && self.pressure == Pressure::Normal {
            self.overflow_aliases.clear();
            self.changed = false;
        }
    }
}

impl Aggregator {
    /// Reads the memory pressure the main thread published.
    pub(crate) fn refresh_pressure(&mut self) -> Pressure {
        let caps = &mut self.caps;
        caps.pressure = crate::memory::pressure();
        #[cfg(test)]
        if let Some(p) = caps.forced_pressure {
            caps.pressure = p;
        }
        caps.pressure
    }

    /// Tests: the memory pressure this aggregator sees from now on.
    #[cfg(test)]
    pub(crate) fn force_pressure(&mut self, pressure: Pressure) {
        self.caps.forced_pressure = Some(pressure);
    }

    /// What the caps refused since the last call.
    pub(crate) fn take_refusals(&mut self) -> Refusals {
        std::mem::take(&mut self.caps.refusals)
    }

    /// Why a new context of `name` may not be created, if it may not; counts the refusal.
    pub(super) fn refusal(&mut self, name: &[u8]) -> Option<Refusal> {
        let caps = &self.caps;
        let reason = if let Some(cap) = self.cfg.max_contexts_per_metric
            && caps
                .metric_slot(&self.state, name)
                .is_some_and(|i| caps.metrics[i as usize].live as usize >= cap)
        {
            Refusal::MaxContextsPerMetric
        } else if let Some(cap) = self.cfg.max_contexts
            // Overflow contexts have their own reserve.
            && self.live - caps.overflow_live >= cap
        {
            Refusal::MaxContexts
        } else if self.refresh_pressure() >= Pressure::RefuseContexts {
            self.caps.changed = true;
            Refusal::MemoryLimit
        } else {
            return None;
        };
        let r = &mut self.caps.refusals;
        r.refused[reason] += 1;
        if let Some(n) = r.by_name.get_mut(name) {
            *n += 1;
        } else if r.by_name.len() < MAX_REFUSED_NAMES {
            r.by_name.insert(name.into(), 1);
        }
        Some(reason)
    }

    /// The overflow context of `name`'s metric (same type and host; its tags replaced by
    /// `OVERFLOW_TAG` and the extra tags; no origin), made if needed: where the samples of a
    /// refused context go, so totals stay exact. `OVERFLOW_FULL` when the reserve is used up.
    pub(super) fn overflow(
        &mut self,
        alias: u64,
        name: &[u8],
        metric_type: MetricType,
        host_tag: Option<&[u8]>,
    ) -> u32 {
        let extra = self.stage.extra_tags();
        let mut hashes: Vec<u64> = std::iter::once(OVERFLOW_TAG)
            .chain(extra.iter().map(|t| &t[..]))
            .map(|t| self.state.hash_one(t))
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        let sum = hashes.iter().fold(0u64, |s, &h| s.wrapping_add(mix(h)));
        let tags = (hashes.len(), sum);
        let host = super::key::resolve_host(host_tag, self.cfg.default_host.as_deref());
        let key = key_of(&self.state, name, metric_type, host, &[], tags);
        let id = match self.find_key(key) {
            Some(id) => id,
            None => {
                let reserve = OVERFLOW_RESERVE_MIN.max(self.cfg.max_contexts.unwrap_or(0) / 100);
                if self.caps.overflow_live >= reserve {
                    // Remembered too: its later samples are dropped without another refusal.
                    OVERFLOW_FULL
                } else {
                    self.origin_buf.clear();
                    let lists = (OVERFLOW_TAG, &[][..]);
                    let id = self.create_context(key, alias, name, metric_type, host_tag, lists);
                    // Reached through `overflow_aliases` only: once those are cleared, the alias
                    // that made it must find the caps again, not this context on the fast path.
                    self.by_alias.remove(low(alias), id);
                    self.metas[id as usize].overflow = true;
                    self.caps.overflow_live += 1;
                    id
                }
            }
        };
        let aliases = &mut self.caps.overflow_aliases;
        if aliases.len() >= MAX_BLOCKED_KEYS {
            aliases.clear();
        }
        aliases.insert(alias, id);
        id
    }
}
