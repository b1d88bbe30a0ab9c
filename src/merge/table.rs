//! One window's merge table on its owner: the partials every shard sent for the window, merged
//! by context key.
//!
//! Owns the partials of windows still collecting. Must not look inside an aggregate beyond
//! `Agg::merge`; expansion into points is `Merger::expand_step`'s.
//!
//! A window that one batch fills (a single shard's, or any window whose other shards sent
//! nothing) is taken whole: a shard's batch holds each context once, so nothing needs looking
//! up. Once a second batch begins, partials are split into `PARTS` parts by their key and each
//! part is merged when it is expanded, in a small table that stays in cache. Merging 1M contexts
//! sent by two shards through one window-wide table cost 324 ns a context (`cargo bench --bench
//! contexts -- flush`): every insert missed the cache and the TLB.

use hashbrown::{HashTable, hash_table};

use crate::aggregate::Partial;
use crate::values::{Agg, Limits};

/// Parts of a window's table: about 4k partials each for 1M, so a part's index (16 kB) sits in
/// L1/L2 while it is merged, and the split writes to 256 open pages at a time.
const PARTS: usize = 256;

fn part_of(key: u64) -> usize {
    // The low half: an owner's keys share the range of their high half (`owner_of`).
    (key as u32 >> 24) as usize
}

/// A part's index hash of a key: the multiply spreads the key's free low bits over the top,
/// where hashbrown takes its tag byte from.
fn index_hash(key: u64) -> u64 {
    key.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[derive(Default)]
pub(super) struct Table {
    /// The window's first batch, whole, while it is the only one.
    whole: Vec<Partial>,
    /// Every partial by `part_of` its key, once a second batch has begun (then `whole` is empty).
    parts: Vec<Vec<Partial>>,
    /// Partials taken, an upper bound on the window's contexts.
    pub(super) partials: usize,
    /// Histogram partials among them, each context expanding to several points.
    pub(super) histograms: usize,
}

impl Table {
    /// Takes one batch's partials: the first whole; of any later one, returns what is left to
    /// `add` (in chunks, so the caller can yield in between). `expected`: contexts the window
    /// is likely to hold, to size the parts.
    pub(super) fn begin(
        &mut self,
        partials: Vec<Partial>,
        expected: usize,
    ) -> std::vec::IntoIter<Partial> {
        self.partials += partials.len();
        self.histograms += partials
            .iter()
            .filter(|p| matches!(p.agg, Agg::Histogram(_)))
            .count();
        if !self.is_split() && self.whole.is_empty() {
            self.whole = partials;
            return Vec::new().into_iter();
        }
        self.split_whole(expected);
        partials.into_iter()
    }

    /// Adds partials of a batch begun with `begin`.
    pub(super) fn add(&mut self, partials: impl IntoIterator<Item = Partial>) {
        self.split_whole(0);
        for p in partials {
            self.parts[part_of(p.key)].push(p);
        }
    }

    fn split_whole(&mut self, expected: usize) {
        if self.is_split() {
            return;
        }
        let per = (expected.max(self.whole.len()) / PARTS) * 9 / 8 + 16;
        self.parts = (0..PARTS).map(|_| Vec::with_capacity(per)).collect();
        for p in std::mem::take(&mut self.whole) {
            self.parts[part_of(p.key)].push(p);
        }
    }

    /// Whether partials arrived from more than one batch (contexts may then repeat).
    pub(super) fn is_split(&self) -> bool {
        !self.parts.is_empty()
    }

    /// The merged contexts, to be read in order by `Merged::next`.
    pub(super) fn into_merged(self, limits: Limits) -> Merged {
        Merged {
            current: self.whole.into_iter(),
            parts: self.parts.into_iter(),
            index: HashTable::new(),
            limits,
        }
    }
}

/// A ready window's contexts, each once, merged one part at a time as they are read.
pub(super) struct Merged {
    current: std::vec::IntoIter<Partial>,
    parts: std::vec::IntoIter<Vec<Partial>>,
    /// Reused from part to part.
    index: HashTable<u32>,
    limits: Limits,
}

impl Merged {
    /// The next context, its partials merged. A part is merged on the call that reaches it.
    pub(super) fn next(&mut self) -> Option<Partial> {
        loop {
            if let Some(p) = self.current.next() {
                return Some(p);
            }
            let part = self.parts.next()?;
            self.current = merge_part(part, &mut self.index, self.limits).into_iter();
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.current.len() == 0 && self.parts.len() == 0
    }
}

/// Merges a part in place: each context's first partial takes the later ones' aggregates and
/// moves down over the ones it took.
fn merge_part(mut part: Vec<Partial>, index: &mut HashTable<u32>, limits: Limits) -> Vec<Partial> {
    index.clear();
    index.reserve(part.len(), |_| 0);
    let mut kept = 0;
    for i in 0..part.len() {
        let key = part[i].key;
        let entry = index.entry(
            index_hash(key),
            |&j| part[j as usize].key == key,
            |&j| index_hash(part[j as usize].key),
        );
        match entry {
            hash_table::Entry::Occupied(o) => {
                let j = *o.get() as usize;
                let agg = std::mem::replace(&mut part[i].agg, Agg::Counter(0.0));
                part[j].agg.merge(agg, limits);
            }
            hash_table::Entry::Vacant(v) => {
                v.insert(kept as u32);
                part.swap(kept, i);
                kept += 1;
            }
        }
    }
    part.truncate(kept);
    part
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(keys: impl IntoIterator<Item = u64>, v: f64) -> Vec<Partial> {
        keys.into_iter()
            .map(|key| Partial {
                key,
                agg: Agg::Counter(v),
            })
            .collect()
    }

    fn read_all(t: Table) -> Vec<(u64, f64)> {
        let mut m = t.into_merged(Limits::histogram(100));
        let mut out = Vec::new();
        while let Some(Partial { key, agg }) = m.next() {
            let Agg::Counter(v) = agg else {
                panic!("{agg:?}")
            };
            out.push((key, v));
        }
        assert!(m.is_done());
        out.sort_by_key(|&(k, _)| k);
        out
    }

    #[test]
    fn a_lone_batch_is_taken_whole_and_read_back_in_order() {
        let mut t = Table::default();
        assert_eq!(t.begin(counters([3, 1, 2], 1.0), 0).len(), 0);
        assert!(!t.is_split());
        let mut m = t.into_merged(Limits::histogram(100));
        let keys: Vec<u64> = std::iter::from_fn(|| m.next()).map(|p| p.key).collect();
        assert_eq!(keys, [3, 1, 2]);
    }

    #[test]
    fn batches_that_share_contexts_merge_each_context_once() {
        // Keys spread over every part, half of them sent by all three shards.
        let spread = |i: u64| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut t = Table::default();
        for (shard, range) in [(1.0, 0..6000), (2.0, 3000..9000), (4.0, 0..6000)] {
            let rest = t.begin(counters(range.map(spread), shard), 9000);
            let rest: Vec<Partial> = rest.collect();
            for chunk in rest.chunks(1000) {
                t.add(chunk.iter().map(|p| Partial {
                    key: p.key,
                    agg: p.agg.clone(),
                }));
            }
        }
        assert!(t.is_split());
        assert_eq!(t.partials, 18_000);
        let got = read_all(t);
        assert_eq!(got.len(), 9000);
        let mut want: Vec<(u64, f64)> = (0..9000u64)
            .map(|i| {
                let v = match i {
                    0..3000 => 5.0,
                    3000..6000 => 7.0,
                    _ => 2.0,
                };
                (spread(i), v)
            })
            .collect();
        want.sort_by_key(|&(k, _)| k);
        assert_eq!(got, want);
    }
}
