//! A configuration reload (SIGHUP) on one shard: the map stage and the caps change between two
//! samples, and nothing aggregated so far is lost or moved.
//!
//! A context is a function of its final name and tags, and the alias table remembers which
//! context each name as sent resolved to under the old stage. A reload forgets those aliases
//! (and the blocked and refused ones) instead of the contexts: each name as sent resolves again
//! through the new stage on its next sample, and finds its old context when the new stage maps
//! it to the same final name and tags (keeping that context's open window), or a new context
//! when it maps elsewhere. A context no name reaches any more stops receiving samples: its
//! open window is flushed at the next close, and it expires as an idle one would. Cost: one
//! slow-path resolution per live name after the reload.

use super::Aggregator;
use crate::flushed::ids::{IdTable, low};
use crate::map::NameConfig;

/// What a reload may change on a running shard.
#[derive(Debug, Clone)]
pub struct Reload {
    pub names: NameConfig,
    /// This shard's share of `--max-contexts`.
    pub max_contexts: Option<usize>,
    /// This shard's share of `--max-contexts-per-metric`. One turned on by a reload counts the
    /// contexts created from then on.
    pub max_contexts_per_metric: Option<usize>,
}

impl Aggregator {
    pub fn reload(&mut self, r: Reload) {
        self.stage.reload(&r.names);
        self.extra_list = self.stage.extra_tags().join(&b","[..]).into_boxed_slice();
        self.cfg.names = r.names;
        self.cfg.max_contexts = r.max_contexts;
        self.cfg.max_contexts_per_metric = r.max_contexts_per_metric;
        self.by_alias = IdTable::default();
        self.blocked_aliases.clear();
        self.caps.forget_aliases();
    }

    /// Names as sent that find their context on the fast path.
    #[cfg(test)]
    pub(crate) fn aliases(&self) -> usize {
        self.by_alias.len()
    }

    /// Gives context `id`, found by its canonical key from `alias`, that alias for the fast
    /// path if it has none (it lost its own at a reload). Overflow contexts are reached through
    /// the caps only.
    pub(super) fn reattach(&mut self, id: u32, alias: u64) {
        let meta = &self.metas[id as usize];
        if meta.overflow || self.by_alias.find(meta.alias_lo, |i| i == id).is_some() {
            return;
        }
        self.metas[id as usize].alias_lo = low(alias);
        self.slots[id as usize].alias_hi = (alias >> 32) as u32;
        self.by_alias.insert(low(alias), id);
    }
}
