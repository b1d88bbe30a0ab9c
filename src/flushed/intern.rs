//! Per-shard string interner with reference counts: a context stores 4-byte symbols instead of
//! its name and tag strings, and strings shared by many contexts (tags, hosts) are stored once.
//!
//! `!Send` by use: one interner per shard, touched only when a context is created or freed,
//! never per sample.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;

pub type Sym = u32;

/// Marks an absent optional string (no host, no container id).
pub const NO_SYM: Sym = u32::MAX;

struct Entry {
    bytes: Box<[u8]>,
    refs: u32,
}

#[derive(Default)]
pub struct Interner {
    table: HashTable<Sym>,
    entries: Vec<Entry>,
    free: Vec<Sym>,
    state: FixedState,
}

impl Interner {
    /// Returns the symbol of `s`, adding one reference.
    pub fn intern(&mut self, s: &[u8]) -> Sym {
        let Interner {
            table,
            entries,
            free,
            state,
        } = self;
        let hash = state.hash_one(s);
        if let Some(&sym) = table.find(hash, |&sym| &*entries[sym as usize].bytes == s) {
            entries[sym as usize].refs += 1;
            return sym;
        }
        let entry = Entry {
            bytes: s.into(),
            refs: 1,
        };
        let sym = match free.pop() {
            Some(sym) => {
                entries[sym as usize] = entry;
                sym
            }
            None => {
                entries.push(entry);
                (entries.len() - 1) as Sym
            }
        };
        table.insert_unique(hash, sym, |&sym| {
            state.hash_one(&*entries[sym as usize].bytes)
        });
        sym
    }

    pub fn intern_optional(&mut self, s: Option<&[u8]>) -> Sym {
        s.map_or(NO_SYM, |s| self.intern(s))
    }

    /// Drops one reference; the string is freed with its last one.
    pub fn release(&mut self, sym: Sym) {
        if sym == NO_SYM {
            return;
        }
        let Interner {
            table,
            entries,
            free,
            state,
        } = self;
        let entry = &mut entries[sym as usize];
        entry.refs -= 1;
        if entry.refs > 0 {
            return;
        }
        let hash = state.hash_one(&*entry.bytes);
        if let Ok(found) = table.find_entry(hash, |&s| s == sym) {
            found.remove();
        }
        entries[sym as usize].bytes = Box::default();
        free.push(sym);
    }

    pub fn get(&self, sym: Sym) -> &[u8] {
        &self.entries[sym as usize].bytes
    }

    pub fn get_optional(&self, sym: Sym) -> Option<&[u8]> {
        (sym != NO_SYM).then(|| self.get(sym))
    }

    #[cfg(test)]
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
