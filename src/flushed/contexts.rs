//! The sink's context table: the one description of every live context, by canonical key.
//!
//! A shard sends a context's description once, when it creates the context (`NewContexts`,
//! straight to the sink thread, ahead of any point of it), and says when it frees it
//! (`FlushBatch::freed`, through the context's owner, after its last point). Each shard holding
//! the context holds one reference; the description goes with the last. A creation that
//! overtakes the free of the same context by another route only adds a reference first. Points
//! name their context by key alone, so a window close copies no descriptions and shards keep no
//! strings.
//!
//! Lives on the sink thread. Strings are interned (`intern`): tags that many contexts share are
//! stored once. A context's tags arrive in the shard's hash order; they are sorted here.

use hashbrown::HashTable;

use super::desc::{Desc, NewDesc};
use super::intern::{Interner, NO_SYM, Sym};
use super::{DescRef, FlushBatch, NewContexts};
use crate::protocol::MetricType;

struct Entry {
    key: u64,
    /// Shards holding the context.
    refs: u32,
    metric_type: MetricType,
    name: Sym,
    host: Sym,
    origin: Sym,
    tags: Box<[Sym]>,
}

#[derive(Default)]
pub struct Contexts {
    interner: Interner,
    /// Entries by slot; a freed slot has `refs == 0` and waits in `free`.
    entries: Vec<Entry>,
    free: Vec<u32>,
    /// Slots by key.
    by_key: HashTable<u32>,
    /// Announcements of a context this table already had (another shard created it too).
    pub shared: u64,
}

impl Contexts {
    /// Contexts described.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Entry slots allocated, live or free for reuse.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.entries.len()
    }

    /// Distinct strings held.
    pub fn strings(&self) -> usize {
        self.interner.len()
    }

    fn slot(&self, key: u64) -> Option<u32> {
        let entries = &self.entries;
        self.by_key
            .find(key, |&i| entries[i as usize].key == key)
            .copied()
    }

    /// Learns the contexts `news` describes: one reference each.
    pub fn learn(&mut self, news: &NewContexts) {
        let mut tags: Vec<&[u8]> = Vec::new();
        for &(key, offset) in &news.contexts {
            if let Some(i) = self.slot(key) {
                self.entries[i as usize].refs += 1;
                self.shared += 1;
                continue;
            }
            let d = NewDesc::decode(&news.arena, offset);
            tags.clear();
            tags.extend(d.tags());
            tags.sort_unstable();
            tags.dedup();
            let i = &mut self.interner;
            let entry = Entry {
                key,
                refs: 1,
                metric_type: d.metric_type,
                name: i.intern(d.name),
                host: i.intern_optional(d.host),
                origin: i.intern_optional(d.origin),
                tags: tags.iter().map(|t| i.intern(t)).collect(),
            };
            let slot = match self.free.pop() {
                Some(slot) => {
                    self.entries[slot as usize] = entry;
                    slot
                }
                None => {
                    self.entries.push(entry);
                    (self.entries.len() - 1) as u32
                }
            };
            let entries = &self.entries;
            self.by_key
                .insert_unique(key, slot, |&i| entries[i as usize].key);
        }
    }

    /// Drops one reference for each context a shard freed.
    pub fn forget(&mut self, freed: &[u64]) {
        for &key in freed {
            let Some(slot) = self.slot(key) else {
                continue;
            };
            let entry = &mut self.entries[slot as usize];
            entry.refs -= 1;
            if entry.refs > 0 {
                continue;
            }
            let syms = [entry.name, entry.host, entry.origin];
            let tags = std::mem::take(&mut entry.tags);
            for sym in syms.into_iter().chain(tags.iter().copied()) {
                self.interner.release(sym);
            }
            entry.name = NO_SYM;
            if let Ok(e) = self.by_key.find_entry(key, |&i| i == slot) {
                e.remove();
            }
            self.free.push(slot);
        }
    }

    /// Points each of `batch`'s context points at its slot here, once, so encoders read
    /// descriptions without a lookup. Points of a context this table does not know (which would
    /// be a bug in the news' ordering) are removed and counted: the return value.
    pub fn resolve(&self, batch: &mut FlushBatch) -> u64 {
        let before = batch.metrics.len();
        batch.metrics.retain_mut(|m| match m.desc {
            DescRef::Context(key) => match self.slot(key) {
                Some(slot) => {
                    m.desc = DescRef::Slot(slot);
                    true
                }
                None => false,
            },
            _ => true,
        });
        (before - batch.metrics.len()) as u64
    }

    /// The description of `key`, looked up (when a batch was not resolved first: tests). An
    /// unknown key reads as a nameless counter.
    pub(crate) fn desc_of(&self, key: u64) -> Desc<'_> {
        /// Type counter, empty name, no host, no origin, no tags.
        const UNKNOWN: [u8; 17] = [
            0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 0,
        ];
        match self.slot(key) {
            Some(slot) => self.desc(slot),
            None => Desc::decode(&UNKNOWN, 0),
        }
    }

    /// The description in `slot` (from `resolve`).
    pub(crate) fn desc(&self, slot: u32) -> Desc<'_> {
        let e = &self.entries[slot as usize];
        Desc::interned(
            e.metric_type,
            &self.interner,
            e.name,
            e.host,
            e.origin,
            &e.tags,
        )
    }
}

#[cfg(test)]
impl Contexts {
    /// Tests: writes each context point's description into the batch (a new arena), then
    /// forgets what the batch says was freed, as the sink thread would around a write.
    pub fn describe(&mut self, batch: &mut FlushBatch) {
        let arena = batch.arenas.len() as u32;
        let mut bytes = Vec::new();
        for m in &mut batch.metrics {
            if let DescRef::Context(key) = m.desc {
                let d = self.desc_of(key);
                let offset = super::desc::encode(
                    &mut bytes,
                    d.metric_type,
                    d.name,
                    d.host,
                    d.origin,
                    d.tags(),
                );
                m.desc = DescRef::Arena { arena, offset };
            }
        }
        batch.arenas.push(bytes);
        self.forget(&std::mem::take(&mut batch.freed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flushed::{FlushedMetric, desc};

    fn news(created: &[(u64, &str, &[&[u8]])]) -> NewContexts {
        let mut n = NewContexts::default();
        for &(key, name, tags) in created {
            let client = tags.join(&b","[..]);
            let offset = desc::encode_new(
                &mut n.arena,
                MetricType::Counter,
                name.as_bytes(),
                Some(b"h"),
                None,
                [&client, b"", b""],
            );
            n.contexts.push((key, offset));
        }
        n
    }

    fn point(key: u64) -> FlushedMetric {
        FlushedMetric {
            desc: DescRef::Context(key),
            ..FlushedMetric::default()
        }
    }

    #[test]
    fn a_context_lives_while_any_shard_holds_it_and_shares_its_strings() {
        let mut c = Contexts::default();
        c.learn(&news(&[(1, "a", &[b"pod:1", b"env:prod"])]));
        c.learn(&news(&[
            (2, "a", &[b"env:prod", b"pod:2"]),
            (1, "a", &[b"env:prod", b"pod:1"]),
        ]));
        assert_eq!((c.len(), c.shared), (2, 1));
        assert_eq!(c.strings(), 5, "a, h, env:prod, pod:1, pod:2");
        assert_eq!(
            c.desc_of(1).tags().collect::<Vec<_>>(),
            [&b"env:prod"[..], b"pod:1"],
            "tags come out sorted"
        );
        c.forget(&[1]);
        assert_eq!(c.len(), 2, "a second shard still holds context 1");
        c.forget(&[1, 2]);
        assert!(c.is_empty());
        assert_eq!(c.strings(), 0, "freed strings go with their last context");
        c.learn(&news(&[(3, "b", &[b"x"])]));
        assert_eq!(c.entries.len(), 2, "freed slots are reused");
    }

    #[test]
    fn a_new_contexts_tag_lists_lose_magic_tags_and_duplicates_and_come_out_sorted() {
        let mut n = NewContexts::default();
        let offset = desc::encode_new(
            &mut n.arena,
            MetricType::Gauge,
            b"temp",
            None,
            None,
            [
                b"zone:b,host:web-1,,env:prod,dd.internal.card:low,zone:b",
                b"host:mapped,job:x,env:prod",
                b"dc:eu",
            ],
        );
        n.contexts.push((9, offset));
        let mut c = Contexts::default();
        c.learn(&n);
        let d = c.desc_of(9);
        assert_eq!(d.metric_type, MetricType::Gauge);
        assert_eq!(
            d.tags().collect::<Vec<_>>(),
            [&b"dc:eu"[..], b"env:prod", b"job:x", b"zone:b"]
        );
    }

    #[test]
    fn points_resolve_to_their_description_and_unknown_ones_are_counted_out() {
        let mut c = Contexts::default();
        c.learn(&news(&[(7, "req", &[b"env:prod"])]));
        let mut b = FlushBatch {
            metrics: vec![point(7), point(8), point(7)],
            ..FlushBatch::default()
        };
        assert_eq!(c.resolve(&mut b), 1);
        assert_eq!(b.metrics.len(), 2);
        let DescRef::Slot(slot) = b.metrics[0].desc else {
            panic!("resolved to a slot")
        };
        let d = c.desc(slot);
        assert_eq!((d.name, d.host), (&b"req"[..], Some(&b"h"[..])));
        assert_eq!(d.tags().collect::<Vec<_>>(), [&b"env:prod"[..]]);
    }
}
