//! String interner with reference counts: the sink's context table stores 4-byte symbols
//! instead of each context's name and tag strings, so strings many contexts share (tags, hosts)
//! are stored once.
//!
//! One per context table, on the sink thread, touched when a context is announced or freed.
//! The table keeps the high half of each string's hash beside its symbol: a probe compares
//! bytes only when that half matches, and growing the table never reads the strings (both were
//! a pointer chase per entry: `memcmp` and rehashing were a quarter of the new-context cost
//! when shards interned).

use std::hash::BuildHasher;

use foldhash::fast::FixedState;

use super::ids::IdTable;

pub type Sym = u32;

/// Marks an absent optional string (no host, no container id).
pub const NO_SYM: Sym = u32::MAX;

struct Entry {
    bytes: Box<[u8]>,
    refs: u32,
}

impl std::fmt::Debug for Interner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interner({} strings)", self.len())
    }
}

#[derive(Default)]
pub struct Interner {
    /// Symbols by the high half of their string's hash: 8 bytes an entry, where the whole hash
    /// and the symbol took 16.
    table: IdTable,
    entries: Vec<Entry>,
    free: Vec<Sym>,
    state: FixedState,
}

impl Interner {
    /// Returns the symbol of `s`, adding one reference.
    pub fn intern(&mut self, s: &[u8]) -> Sym {
        self.intern_new(s).0
    }

    /// Returns the symbol of `s`, adding one reference, and whether `s` was new (its only
    /// reference is this one).
    pub fn intern_new(&mut self, s: &[u8]) -> (Sym, bool) {
        let Interner {
            table,
            entries,
            free,
            state,
        } = self;
        let half = (state.hash_one(s) >> 32) as u32;
        let same = |sym: Sym| &*entries[sym as usize].bytes == s;
        if let Some(sym) = table.find(half, same) {
            entries[sym as usize].refs += 1;
            return (sym, false);
        }
        let entry = Entry {
            bytes: s.into(),
            refs: 1,
        };
        let sym = super::put_in_slot(entries, free, entry);
        table.insert(half, sym);
        (sym, true)
    }

    pub fn intern_optional(&mut self, s: Option<&[u8]>) -> Sym {
        s.map_or(NO_SYM, |s| self.intern(s))
    }

    /// Drops one reference; the string is freed with its last one.
    pub fn release(&mut self, sym: Sym) {
        if sym == NO_SYM {
            return;
        }
        let entry = &mut self.entries[sym as usize];
        entry.refs -= 1;
        if entry.refs > 0 {
            return;
        }
        let bytes = std::mem::take(&mut entry.bytes);
        let half = (self.state.hash_one(&*bytes) >> 32) as u32;
        self.table.remove(half, sym);
        self.free.push(sym);
    }

    pub fn get(&self, sym: Sym) -> &[u8] {
        &self.entries[sym as usize].bytes
    }

    pub fn get_optional(&self, sym: Sym) -> Option<&[u8]> {
        (sym != NO_SYM).then(|| self.get(sym))
    }

    /// Distinct strings held.
    pub fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_shares_and_releasing_frees() {
        let mut i = Interner::default();
        let a = i.intern(b"env:prod");
        let b = i.intern(b"env:prod");
        let c = i.intern(b"zone:a");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(i.get(a), b"env:prod");
        i.release(a);
        assert_eq!(i.len(), 2);
        i.release(b);
        assert_eq!(i.len(), 1);
        let d = i.intern(b"other");
        assert_eq!(d, a, "freed slots are reused");
        assert_eq!(i.get(d), b"other");
        assert_eq!(i.get(c), b"zone:a");
        assert_eq!(i.get_optional(NO_SYM), None);
    }
}
