//! What a window close hands out: one `ContextBatch` per owning shard, holding each context's
//! partial aggregate by canonical key (descriptions went to the sink's context table once, when
//! each context was created) and the contexts freed since the last close. The only per-window
//! values that cross cores: owned and `Send`.

use crate::values::Agg;

/// The shard that owns a context: fast range reduction of the key's high half, as the Agent
/// spreads contexts over pipelines.
pub fn owner_of(key: u64, shards: usize) -> usize {
    (((key >> 32) * shards as u64) >> 32) as usize
}

/// One context's partial aggregate for a closed window.
#[derive(Debug)]
pub struct Partial {
    pub key: u64,
    pub agg: Agg,
}

/// Everything one shard hands one owner for one closed window. Sent even when empty, so an owner
/// knows when it has heard from every shard.
#[derive(Debug, Default)]
pub struct ContextBatch {
    /// Window start, unix seconds.
    pub window: u64,
    pub partials: Vec<Partial>,
    /// Contexts this owner owns that the shard freed since its last close.
    pub freed: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_spreads_keys_over_every_shard() {
        let mut seen = [0usize; 4];
        let mut x: u64 = 1;
        for _ in 0..10_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seen[owner_of(x, 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 2000), "{seen:?}");
        assert_eq!(owner_of(u64::MAX, 3), 2);
        assert_eq!(owner_of(0, 3), 0);
    }
}
