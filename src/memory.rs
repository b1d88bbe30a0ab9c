//! What the process holds in memory, and how close that is to `--memory-limit-bytes`.
//!
//! `CountingAlloc`, the binary's global allocator, wraps the system allocator and counts the
//! bytes each thread allocates and frees in that thread's own slot: an atomic no other thread
//! writes, touched per allocation (which the hot path avoids anyway: no allocation per metric in
//! steady state). The main thread sums the slots every 20 ms (`Limit::update`) into a `Pressure`
//! level; shards read it only when they create a context or queue an event or service check.
//!
//! A leaf: imports nothing from the rest of the crate.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicUsize, Ordering};

/// Counter slots: one per thread for the first `SLOTS` threads, shared after that.
const SLOTS: usize = 64;

/// One cache line per slot, so threads never share the line they write.
#[repr(align(64))]
struct Slot(AtomicI64);

static HEAP: [Slot; SLOTS] = [const { Slot(AtomicI64::new(0)) }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's slot, assigned at its first allocation. Const-initialized and without a
    /// destructor, so reading it never allocates and works while a thread exits.
    static MY_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn my_slot() -> &'static AtomicI64 {
    let i = MY_SLOT
        .try_with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS);
            }
            s.get()
        })
        .unwrap_or(0);
    &HEAP[i].0
}

/// The system allocator, counting live heap bytes per thread.
pub struct CountingAlloc;

// SAFETY: every call is forwarded to `System` with the caller's arguments; the counting
// touches only atomics and a const thread-local, neither of which allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        my_slot().fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        my_slot().fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        my_slot().fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        my_slot().fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Live heap bytes of the whole process, as counted by `CountingAlloc` (0 when it is not the
/// global allocator: unit tests, benches). Frees on another thread than the allocation's make
/// single slots go negative; the sum is exact.
pub fn heap_bytes() -> u64 {
    let sum: i64 = HEAP.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
    sum.max(0) as u64
}

/// How close the process is to its memory limit, and so what it sheds (docs: README,
/// "Memory limit").
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pressure {
    /// Under 90 % of the limit (or no limit).
    #[default]
    Normal = 0,
    /// From 90 %: new contexts go to their metric's overflow context.
    RefuseContexts = 1,
    /// From 95 %: also, events and service checks are dropped and histograms keep no exact
    /// samples (a sketch from their first sample).
    Shed = 2,
}

static PRESSURE: AtomicU8 = AtomicU8::new(0);

/// The level the main thread last published.
pub fn pressure() -> Pressure {
    match PRESSURE.load(Ordering::Relaxed) {
        0 => Pressure::Normal,
        1 => Pressure::RefuseContexts,
        _ => Pressure::Shed,
    }
}

/// `--memory-limit-bytes`, watched by the main thread.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub bytes: u64,
    /// What the process holds outside the heap it counts (its code, stacks, io_uring rings),
    /// measured once at start-up as resident size minus heap.
    pub baseline: u64,
}

impl Limit {
    /// Memory in use by that accounting: the heap plus the baseline.
    pub fn used(&self) -> u64 {
        heap_bytes() + self.baseline
    }

    /// Publishes the level for the memory in use now, and returns it.
    pub fn update(&self) -> Pressure {
        let level = level(self.used(), self.bytes);
        PRESSURE.store(level as u8, Ordering::Relaxed);
        level
    }
}

fn level(used: u64, limit: u64) -> Pressure {
    if used >= limit / 20 * 19 {
        Pressure::Shed
    } else if used >= limit / 10 * 9 {
        Pressure::RefuseContexts
    } else {
        Pressure::Normal
    }
}

/// The process' resident set size, from /proc/self/statm.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// The memory limit of the cgroup this process runs in, if it has one: cgroup v2's
/// `memory.max` (of this process' cgroup, else the mount's root, as a container sees it), or
/// v1's `memory.limit_in_bytes` (where a page-rounded `i64::MAX` means none).
pub fn cgroup_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(|p| format!("/sys/fs/cgroup{}/memory.max", p.trim_end_matches('/')))
        });
    let v2 = own
        .into_iter()
        .chain(["/sys/fs/cgroup/memory.max".to_owned()])
        .find_map(|path| std::fs::read_to_string(path).ok());
    if let Some(v) = v2 {
        return v.trim().parse().ok();
    }
    let v1 = std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok()?;
    let bytes: u64 = v1.trim().parse().ok()?;
    (bytes < 1 << 62).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_start_at_90_and_95_percent() {
        assert_eq!(level(899, 1000), Pressure::Normal);
        assert_eq!(level(900, 1000), Pressure::RefuseContexts);
        assert_eq!(level(949, 1000), Pressure::RefuseContexts);
        assert_eq!(level(950, 1000), Pressure::Shed);
        assert_eq!(level(5000, 1000), Pressure::Shed);
    }

    #[test]
    fn the_resident_size_is_read() {
        assert!(resident_bytes().is_some_and(|b| b > 1 << 20));
    }
}
