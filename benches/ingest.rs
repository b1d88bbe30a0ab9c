//! Parse + context lookup + aggregate, from bytes in memory, on one core: the per-metric cost of
//! the receive hot path once every context exists (steady state). Each batch of 32 lines is
//! copied into a receive pool first, untimed, as `recvmmsg` leaves it; the timer reads the clock
//! once per batch (about 1 ns per metric).
//! `taskset -c 1 cargo bench --bench ingest`

mod workloads;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use corestatsd::bench_api::{Counters, ingest};

/// One line per datagram, handed over 32 at a time as one `recvmmsg` fills the pool
/// (`--recv-batch-datagrams` default).
const BATCH: usize = 32;
/// Pool slot size (`--buffer-size-bytes` default).
const SLOT: usize = 8192;

/// Passes over the lines per window: 20 samples per context per window at 100k contexts (a core
/// taking 200k metrics/s with 10 s windows). Each window's first sample of a histogram, set or
/// distribution context allocates its state; fewer samples per window weigh that more.
const PASSES_PER_WINDOW: u64 = 10;

fn run(c: &mut Criterion, label: &str, lines: Vec<Vec<u8>>) {
    let mut agg = workloads::aggregator();
    let mut counters = Counters::default();
    // Create every context first: the target is steady state, not context creation.
    for batch in lines.chunks(BATCH) {
        ingest(&mut agg, &mut counters, batch.iter().map(Vec::as_slice), 0);
    }
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.measurement_time(Duration::from_secs(10));
    let mut pool = vec![0u8; BATCH * SLOT];
    let mut lens = [0usize; BATCH];
    g.bench_function(label, |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for i in 0..iters {
                for batch in lines.chunks(BATCH) {
                    // Untimed: the batch lands in a pool like `recvmmsg` leaves it, in cache.
                    // (200k distinct 250-byte lines are 50 MB; read straight from the list, the
                    // first scan of each line paid a DRAM miss the server never pays.)
                    let mut at = 0;
                    for (slot, line) in pool.chunks_mut(SLOT).zip(batch) {
                        slot[..line.len()].copy_from_slice(line);
                        lens[at] = line.len();
                        at += 1;
                    }
                    let datagrams = pool.chunks(SLOT).zip(&lens[..at]).map(|(s, &n)| &s[..n]);
                    let start = Instant::now();
                    ingest(&mut agg, &mut counters, black_box(datagrams), i);
                    spent += start.elapsed();
                }
                // A window closes every `PASSES_PER_WINDOW` passes, untimed: histogram samples
                // and sets stay a window's worth, as in the server, instead of growing for the
                // whole run. (The close itself is measured by benches/contexts.rs.)
                if i % PASSES_PER_WINDOW == PASSES_PER_WINDOW - 1 {
                    agg.begin_close();
                    while agg.close_step(usize::MAX).is_none() {}
                }
            }
            spent
        })
    });
    g.finish();
    assert_eq!(counters.rejected_lines(), 0, "every line parses");
}

fn ingest_benches(c: &mut Criterion) {
    run(
        c,
        "packed_untagged_counters_1k_contexts",
        workloads::packed_counters(10_000, 1_000),
    );
    // Same line shape over contexts that fit the cache: the gap to 100k is the cost of memory.
    run(
        c,
        "ten_tags_250_bytes_mixed_1k_contexts",
        workloads::mixed_tagged(10_000, 1_000),
    );
    run(
        c,
        "ten_tags_250_bytes_mixed_100k_contexts",
        workloads::mixed_tagged(200_000, 100_000),
    );
    // Issue 13's live shape: 1M counters of 10 tags (one unique), visited in a scattered order.
    run(
        c,
        "ten_tags_250_bytes_counters_1m_contexts",
        (0..1_000_000)
            .map(|i| workloads::tagged_line((i * 7919) % 1_000_000, "c", 1).into_bytes())
            .collect(),
    );
}

criterion_group!(benches, ingest_benches);
criterion_main!(benches);
