//! Id tables: a slot id by the low half of a 64-bit hash, in open addressing with linear
//! probing, grown a few entries at a time. Behind the shard's `by_alias` and `by_key` and the
//! sink's context table, interner and tag sets.
//!
//! Owns only (low half, id) pairs; the caller's predicate checks the rest of a key against its
//! own arrays. Must not allocate per lookup. A removal shifts its cluster back, so the table
//! holds no tombstones and its size follows its live entries alone (hashbrown's tombstones
//! doubled the sink's 1.1M-entry key table once after 50 windows of churn, `cargo bench --bench
//! contexts -- memory-churn`). Growing never stops the shard: when a table is
//! full a twice larger one takes new entries and every insert moves `MOVES_PER_INSERT` old ones
//! over, so no insert copies the whole table (hashbrown's rehash of two 1M-context tables
//! paused receive for 16 ms). Entries are contiguous, so the fast path can prefetch the line a
//! lookup will read before it hashes the next key.

/// What a table stores of a 64-bit key beside the id: its low half. The table's own hash is
/// derived from it (`table_hash`), so growing a table reads only its entries: hashing through
/// the context arrays instead made every rehash a cache miss per entry (8 % of the new-context
/// path, `cargo bench --bench new_contexts`).
pub(crate) fn low(key: u64) -> u32 {
    key as u32
}

/// A bucket index source from a low half: spread, since low halves of related keys may not be.
fn table_hash(low: u32) -> u64 {
    u64::from(low).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(low)
}

/// A bucket is `(low half << 32) | slot`, the slot being the context id plus one: an empty
/// bucket is all zeros, so a new table comes from `alloc_zeroed` as untouched pages, faulted in
/// as inserts reach them. (Filling 2M buckets with a non-zero marker wrote 16 MB per table in
/// one go, and both tables grow on the same insert.)
const EMPTY: u32 = 0;
/// A bucket of a table being emptied into its successor: moved or removed. Probes go on past
/// it; nothing is inserted there.
const GONE: u32 = u32::MAX;

/// A bucket for context `id`, which is below `u32::MAX - 1` (a slot index).
fn pack(lo: u32, id: u32) -> u64 {
    debug_assert!(id < GONE - 1, "id {id} is no slot index");
    (u64::from(lo) << 32) | u64::from(id + 1)
}

fn lo_of(bucket: u64) -> u32 {
    (bucket >> 32) as u32
}

fn slot_of(bucket: u64) -> u32 {
    bucket as u32
}

/// Old entries moved over per insert while growing. A table grows when three quarters full, so
/// its successor holds its entries and has room for as many again: moving 4 per insert empties
/// the old one long before the new one fills.
const MOVES_PER_INSERT: usize = 4;
const MIN_BUCKETS: usize = 16;

/// Buckets of one table (see `EMPTY`).
struct Buckets {
    entries: Box<[u64]>,
    /// Live entries.
    len: usize,
}

impl Buckets {
    fn new(buckets: usize) -> Self {
        Buckets {
            entries: vec![0u64; buckets].into_boxed_slice(),
            len: 0,
        }
    }

    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    fn home(&self, lo: u32) -> usize {
        (table_hash(lo) >> 32) as usize & self.mask()
    }

    fn find(&self, lo: u32, pred: &mut impl FnMut(u32) -> bool) -> Option<usize> {
        let mask = self.mask();
        let mut i = self.home(lo);
        loop {
            let b = self.entries[i];
            match slot_of(b) {
                EMPTY => return None,
                GONE => {}
                slot if lo_of(b) == lo && pred(slot - 1) => return Some(i),
                _ => {}
            }
            i = (i + 1) & mask;
        }
    }

    /// Into the first empty bucket of its probe (a table that takes inserts holds no `GONE`).
    fn put(&mut self, lo: u32, id: u32) {
        let mask = self.mask();
        let mut i = self.home(lo);
        while slot_of(self.entries[i]) != EMPTY {
            i = (i + 1) & mask;
        }
        self.entries[i] = pack(lo, id);
        self.len += 1;
    }

    /// Removes bucket `i`, shifting the rest of its cluster back so no probe stops early.
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.mask();
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let b = self.entries[j];
            if slot_of(b) == EMPTY {
                break;
            }
            // Entry j may fill the hole at i unless its home lies cyclically in (i, j].
            let home = self.home(lo_of(b));
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.entries[i] = self.entries[j];
                i = j;
            }
        }
        self.entries[i] = 0;
        self.len -= 1;
    }
}

/// Slot ids by a key's low half (see the module doc).
pub(crate) struct IdTable {
    cur: Buckets,
    /// The table being emptied into `cur`, and the next bucket to move.
    old: Option<(Buckets, usize)>,
}

impl Default for IdTable {
    fn default() -> Self {
        IdTable {
            cur: Buckets::new(MIN_BUCKETS),
            old: None,
        }
    }
}

impl IdTable {
    pub(crate) fn len(&self) -> usize {
        self.cur.len + self.old.as_ref().map_or(0, |(b, _)| b.len)
    }

    /// The first id stored under `lo` that `pred` accepts.
    pub(crate) fn find(&self, lo: u32, mut pred: impl FnMut(u32) -> bool) -> Option<u32> {
        if let Some(i) = self.cur.find(lo, &mut pred) {
            return Some(slot_of(self.cur.entries[i]) - 1);
        }
        let (old, _) = self.old.as_ref()?;
        old.find(lo, &mut pred).map(|i| slot_of(old.entries[i]) - 1)
    }

    /// Brings in the bucket a lookup of `lo` starts at.
    pub(crate) fn prefetch(&self, lo: u32) {
        crate::values::prefetch(&self.cur.entries[self.cur.home(lo)]);
    }

    /// Stores `id` under `lo`. The pair must not be stored already.
    pub(crate) fn insert(&mut self, lo: u32, id: u32) {
        if (self.len() + 1) * 4 > self.cur.entries.len() * 3 {
            // A growth still under way ends before the next begins.
            self.move_some(usize::MAX);
            let bigger = Buckets::new(self.cur.entries.len() * 2);
            self.old = Some((std::mem::replace(&mut self.cur, bigger), 0));
        }
        self.cur.put(lo, id);
        self.move_some(MOVES_PER_INSERT);
    }

    /// Removes the pair; false if it was not stored.
    pub(crate) fn remove(&mut self, lo: u32, id: u32) -> bool {
        if let Some(i) = self.cur.find(lo, &mut |c| c == id) {
            self.cur.remove_at(i);
            return true;
        }
        let Some((old, _)) = &mut self.old else {
            return false;
        };
        match old.find(lo, &mut |c| c == id) {
            Some(i) => {
                old.entries[i] = u64::from(GONE);
                old.len -= 1;
                true
            }
            None => false,
        }
    }

    /// Moves up to `n` live entries of the old table over; drops it once empty.
    fn move_some(&mut self, mut n: usize) {
        let Some((old, next)) = &mut self.old else {
            return;
        };
        while n > 0 && *next < old.entries.len() {
            let b = old.entries[*next];
            if !matches!(slot_of(b), EMPTY | GONE) {
                old.entries[*next] = u64::from(GONE);
                old.len -= 1;
                self.cur.put(lo_of(b), slot_of(b) - 1);
                n -= 1;
            }
            *next += 1;
        }
        if *next == old.entries.len() {
            self.old = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A cheap deterministic sequence, so collisions and clusters vary.
    fn lows(n: u32) -> impl Iterator<Item = u32> {
        (0..n).map(|i| i.wrapping_mul(2_654_435_761) >> (i % 7))
    }

    #[test]
    fn finds_what_was_inserted_through_growth_and_removals() {
        let mut t = IdTable::default();
        let mut model: HashMap<u32, u32> = HashMap::new();
        for (id, lo) in lows(200_000).enumerate() {
            let id = id as u32;
            t.insert(lo, id);
            model.insert(id, lo);
            // Remove every third one a little later, some while the table is growing.
            if id.is_multiple_of(3) && id >= 30 {
                let gone = id - 30;
                assert!(t.remove(model[&gone], gone), "{gone}");
                model.remove(&gone);
            }
            if id.is_multiple_of(9973) {
                for (&id, &lo) in &model {
                    assert_eq!(t.find(lo, |c| c == id), Some(id), "id {id} lo {lo}");
                }
            }
        }
        assert_eq!(t.len(), model.len());
        for (&id, &lo) in &model {
            assert_eq!(t.find(lo, |c| c == id), Some(id));
        }
        assert!(!t.remove(12345, u32::MAX - 3), "never stored");
        assert_eq!(t.find(7, |_| false), None);
    }

    #[test]
    fn equal_low_halves_are_told_apart_by_the_predicate() {
        let mut t = IdTable::default();
        for id in 0..100 {
            t.insert(42, id);
        }
        assert_eq!(t.find(42, |id| id == 77), Some(77));
        assert!(t.remove(42, 77));
        assert_eq!(t.find(42, |id| id == 77), None);
        assert_eq!(t.find(42, |id| id == 99), Some(99));
        assert_eq!(t.len(), 99);
    }

    #[test]
    fn growing_moves_a_few_entries_per_insert_not_the_whole_table() {
        let mut t = IdTable::default();
        let mut id = 0u32;
        while t.old.is_none() || t.cur.entries.len() < 1 << 12 {
            t.insert(id.wrapping_mul(31), id);
            id += 1;
        }
        let (old, _) = t.old.as_ref().unwrap();
        assert!(old.len > MOVES_PER_INSERT * 8, "most entries still to move");
        for i in 0..id {
            assert_eq!(t.find(i.wrapping_mul(31), |c| c == i), Some(i));
        }
    }

    #[test]
    fn churn_at_a_steady_size_never_grows_the_table() {
        // 10 % of a steady 50k replaced 100 times over: 500k removals, each shifted back, so
        // nothing stays behind to fill the table.
        let mut t = IdTable::default();
        let live = 50_000u32;
        for id in 0..live {
            t.insert(id.wrapping_mul(2_654_435_761), id);
        }
        t.move_some(usize::MAX);
        let buckets = t.cur.entries.len();
        for id in live..live * 11 {
            let gone = id - live;
            assert!(t.remove(gone.wrapping_mul(2_654_435_761), gone));
            t.insert(id.wrapping_mul(2_654_435_761), id);
        }
        assert_eq!((t.len(), t.cur.entries.len()), (live as usize, buckets));
        assert!(t.old.is_none());
        let empty = t.cur.entries.iter().filter(|&&b| b == 0).count();
        assert_eq!(empty, buckets - live as usize, "no bucket is left marked");
    }
}
