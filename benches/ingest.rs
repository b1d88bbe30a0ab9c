//! Parse + context lookup + aggregate, from bytes in memory, on one core: the per-metric cost of
//! the receive hot path once every context exists (steady state).
//! `taskset -c 1 cargo bench --bench ingest`

mod workloads;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use corestatsd::shard::ingest;
use corestatsd::telemetry::Counters;

fn run(c: &mut Criterion, label: &str, lines: Vec<Vec<u8>>) {
    let mut agg = workloads::aggregator();
    let mut counters = Counters::default();
    // Create every context first: the target is steady state, not context creation.
    for l in &lines {
        ingest(&mut agg, &mut counters, l, 0);
    }
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.measurement_time(Duration::from_secs(10));
    g.bench_function(label, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                for l in &lines {
                    ingest(&mut agg, &mut counters, black_box(l), i);
                }
            }
            start.elapsed()
        })
    });
    g.finish();
    assert_eq!(counters.parse_errors.iter().sum::<u64>(), 0);
}

fn ingest_benches(c: &mut Criterion) {
    run(
        c,
        "packed_untagged_counters_1k_contexts",
        workloads::packed_counters(10_000, 1_000),
    );
    run(
        c,
        "ten_tags_250_bytes_mixed_100k_contexts",
        workloads::mixed_tagged(200_000, 100_000),
    );
}

criterion_group!(benches, ingest_benches);
criterion_main!(benches);
