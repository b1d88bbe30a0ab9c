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
//!
//! What contexts share is stored once too: a context is its key, its name and at most one tag of
//! its own, plus a reference to a `TagSet` (its host, origin and every other tag) that contexts
//! alike hold together. The tag of its own is the one string the context brought that the table
//! did not hold yet (a pod, request or user id); a context with two or more such strings keeps
//! them all in its set, alone. At 1M contexts of ten tags, one unique, the table holds 136 B a
//! context (was 230 with a tag list per context; `cargo bench --bench contexts`).

use std::hash::BuildHasher;

use foldhash::fast::FixedState;

use super::desc::{Desc, NewDesc};
use super::ids::{IdTable, low};
use super::intern::{Interner, NO_SYM, Sym};
use super::{DescRef, FlushBatch, NewContexts};
use crate::protocol::MetricType;

/// 24 bytes: a context's own part.
struct Entry {
    key: u64,
    name: Sym,
    /// Its `TagSet`.
    set: u32,
    /// Its tag not in the set (`NO_SYM`: none).
    own: Sym,
    /// Shards holding the context (at most one per shard).
    refs: u16,
    metric_type: MetricType,
    /// Where `own` sorts among the set's tags (`OWN_AT_UNKNOWN`: past 254, looked up): kept so
    /// reading a description compares no strings (that search was 20 % of writing a jsonl point).
    own_at: u8,
}

const OWN_AT_UNKNOWN: u8 = u8::MAX;

/// What contexts alike share: host, origin and sorted tags, each holding one reference to
/// its strings.
struct TagSet {
    hash: u64,
    host: Sym,
    origin: Sym,
    tags: Box<[Sym]>,
    /// Contexts holding the set.
    refs: u32,
}

#[derive(Default)]
pub struct Contexts {
    interner: Interner,
    /// Entries by slot; a freed slot waits in `free`.
    entries: Vec<Entry>,
    free: Vec<u32>,
    /// Slots by key.
    by_key: IdTable,
    sets: Vec<TagSet>,
    sets_free: Vec<u32>,
    sets_by_hash: IdTable,
    state: FixedState,
    /// Live contexts per metric name (`/contexts?by=contexts`).
    per_name: hashbrown::HashMap<Sym, u32>,
    /// Announcements of a context this table already had (another shard created it too).
    pub shared: u64,
}

impl Contexts {
    /// Contexts described.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.len() == 0
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

    /// Tag sets held.
    #[cfg(test)]
    pub(crate) fn tag_sets(&self) -> usize {
        self.sets_by_hash.len()
    }

    fn slot(&self, key: u64) -> Option<u32> {
        let entries = &self.entries;
        self.by_key
            .find(low(key), |i| entries[i as usize].key == key)
    }

    /// Learns the contexts `news` describes: one reference each.
    pub fn learn(&mut self, news: &NewContexts) {
        let mut tags: Vec<&[u8]> = Vec::new();
        let mut syms: Vec<Sym> = Vec::new();
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
            syms.clear();
            let mut own = None;
            let mut own_count = 0;
            for t in &tags {
                let (sym, new) = self.interner.intern_new(t);
                if new {
                    own = Some(syms.len());
                    own_count += 1;
                }
                syms.push(sym);
            }
            let (own, own_at) = match own {
                Some(at) if own_count == 1 => {
                    (syms.remove(at), u8::try_from(at).unwrap_or(OWN_AT_UNKNOWN))
                }
                _ => (NO_SYM, OWN_AT_UNKNOWN),
            };
            let i = &mut self.interner;
            let (host, origin) = (i.intern_optional(d.host), i.intern_optional(d.origin));
            let name = i.intern(d.name);
            *self.per_name.entry(name).or_default() += 1;
            let entry = Entry {
                key,
                name,
                set: self.hold_set(host, origin, &syms),
                own,
                refs: 1,
                metric_type: d.metric_type,
                own_at,
            };
            let slot = super::put_in_slot(&mut self.entries, &mut self.free, entry);
            self.by_key.insert(low(key), slot);
        }
    }

    /// The set of `host`, `origin` and `tags`, with one more context holding it. The caller
    /// holds a reference to each string; a set already held takes them back.
    fn hold_set(&mut self, host: Sym, origin: Sym, tags: &[Sym]) -> u32 {
        let hash = self.state.hash_one((host, origin, tags));
        let sets = &self.sets;
        let same = |i: u32| {
            let s = &sets[i as usize];
            s.hash == hash && s.host == host && s.origin == origin && &*s.tags == tags
        };
        if let Some(i) = self.sets_by_hash.find(low(hash), same) {
            self.sets[i as usize].refs += 1;
            for sym in [host, origin].into_iter().chain(tags.iter().copied()) {
                self.interner.release(sym);
            }
            return i;
        }
        let set = TagSet {
            hash,
            host,
            origin,
            tags: tags.into(),
            refs: 1,
        };
        let i = super::put_in_slot(&mut self.sets, &mut self.sets_free, set);
        self.sets_by_hash.insert(low(hash), i);
        i
    }

    fn release_set(&mut self, i: u32) {
        let set = &mut self.sets[i as usize];
        set.refs -= 1;
        if set.refs > 0 {
            return;
        }
        let hash = set.hash;
        let tags = std::mem::take(&mut set.tags);
        for sym in [set.host, set.origin]
            .into_iter()
            .chain(tags.iter().copied())
        {
            self.interner.release(sym);
        }
        self.sets_by_hash.remove(low(hash), i);
        self.sets_free.push(i);
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
            let (name, own, set) = (entry.name, entry.own, entry.set);
            entry.name = NO_SYM;
            if let Some(n) = self.per_name.get_mut(&name) {
                *n -= 1;
                if *n == 0 {
                    self.per_name.remove(&name);
                }
            }
            self.interner.release(name);
            self.interner.release(own);
            self.release_set(set);
            self.by_key.remove(low(key), slot);
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

    /// The description of a live context, by key.
    pub fn described(&self, key: u64) -> Option<Desc<'_>> {
        self.slot(key).map(|slot| self.desc(slot))
    }

    /// The `n` metric names holding the most live contexts, most first (ties by name).
    pub fn top_names(&self, n: usize) -> Vec<(&[u8], u64)> {
        let mut all: Vec<(&[u8], u64)> = self
            .per_name
            .iter()
            .map(|(&sym, &count)| (self.interner.get(sym), u64::from(count)))
            .collect();
        let order = |a: &(&[u8], u64), b: &(&[u8], u64)| b.1.cmp(&a.1).then(a.0.cmp(b.0));
        if all.len() > n {
            all.select_nth_unstable_by(n, order);
            all.truncate(n);
        }
        all.sort_unstable_by(order);
        all
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
        let set = &self.sets[e.set as usize];
        Desc::interned(
            e.metric_type,
            &self.interner,
            [e.name, set.host, set.origin],
            &set.tags,
            e.own,
            (e.own_at != OWN_AT_UNKNOWN).then_some(usize::from(e.own_at)),
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
    fn a_context_of_its_own_takes_24_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
    }

    #[test]
    fn contexts_alike_share_one_tag_set_and_each_reads_its_own_tag_in_order() {
        let mut c = Contexts::default();
        // Every string new: the first context keeps its tags in a set of its own.
        c.learn(&news(&[(1, "a", &[b"pod:1", b"env:prod", b"zone:z"])]));
        c.learn(&news(&[
            (2, "a", &[b"zone:z", b"pod:2", b"env:prod"]),
            (3, "b", &[b"env:prod", b"zone:z", b"pod:3"]),
            (4, "a", &[b"env:prod", b"zone:z", b"aaa:0"]),
            (5, "a", &[b"env:prod", b"zone:z", b"zzz:9"]),
        ]));
        assert_eq!(
            c.tag_sets(),
            2,
            "1 alone; 2 to 5 share host, env:prod and zone:z"
        );
        for (key, own) in [(1, "pod:1"), (2, "pod:2"), (3, "pod:3")] {
            let tags: Vec<_> = c.desc_of(key).tags().collect();
            assert_eq!(tags, [&b"env:prod"[..], own.as_bytes(), b"zone:z"]);
        }
        let first: Vec<_> = c.desc_of(4).tags().collect();
        assert_eq!(first, [&b"aaa:0"[..], b"env:prod", b"zone:z"]);
        let last: Vec<_> = c.desc_of(5).tags().collect();
        assert_eq!(last, [&b"env:prod"[..], b"zone:z", b"zzz:9"]);
        // Two strings of its own: they stay in a set of its own.
        c.learn(&news(&[(6, "a", &[b"env:prod", b"y:1", b"x:1"])]));
        assert_eq!(c.tag_sets(), 3);
        let two: Vec<_> = c.desc_of(6).tags().collect();
        assert_eq!(two, [&b"env:prod"[..], b"x:1", b"y:1"]);
        assert_eq!(c.desc_of(6).host, Some(&b"h"[..]));
        c.forget(&[1, 2, 3]);
        assert_eq!(
            c.tag_sets(),
            2,
            "the shared set lives while 4 and 5 hold it"
        );
        c.forget(&[4, 5, 6]);
        assert_eq!(
            (c.tag_sets(), c.strings()),
            (0, 0),
            "sets and strings go with the last"
        );
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

    #[test]
    fn names_are_ranked_by_live_contexts_as_contexts_come_and_go() {
        let mut c = Contexts::default();
        c.learn(&news(&[
            (1, "a", &[b"i:1"]),
            (2, "a", &[b"i:2"]),
            (3, "b", &[b"i:3"]),
            (4, "c", &[]),
            (5, "c", &[b"x"]),
            (6, "c", &[b"y"]),
        ]));
        let top = |c: &Contexts, n| -> Vec<(String, u64)> {
            c.top_names(n)
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v))
                .collect()
        };
        assert_eq!(top(&c, 2), [("c".into(), 3), ("a".into(), 2)]);
        c.forget(&[4, 5, 6]);
        // Ties go by name; a name with no context left is gone.
        assert_eq!(top(&c, 5), [("a".into(), 2), ("b".into(), 1)]);
        assert_eq!(c.described(3).map(|d| d.name), Some(&b"b"[..]));
        assert!(c.described(4).is_none());
    }
}
