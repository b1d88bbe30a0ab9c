//! The whole new-context path on one core: lines whose context was never seen, parsed, keyed
//! (alias key, then the canonical key from sorted tags), through the map stage, and created in
//! the context table. Each line has a 30-byte name (1000 distinct), ten tags, one of them unique
//! to its context, so every line makes a new context, as pods and request ids do. Lines go in 32
//! at a time, as `recvmmsg` hands them over; the table starts empty and grows to 1M contexts,
//! as on a fresh start. Target (issue 13): 1.5M new contexts/s. `with_100_tag_filters`: the same
//! with 100 `metric_tag_filterlist` entries, naming a tenth of the lines' names (whose
//! `request_id` they drop, so those lines fold into 100 contexts).
//! `taskset -c 1 cargo bench --bench new_contexts`

mod workloads;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use corestatsd::bench_api::{Aggregator, Counters, NEWS_CHUNK, TagFilters, ingest};

const BATCH: usize = 32;
/// Contexts per fresh table: each run of the table goes from empty to this many.
const TABLE: usize = 1 << 20;

fn new_contexts(c: &mut Criterion) {
    let lines: Vec<Vec<u8>> = (0..TABLE)
        .map(|i| workloads::unique_line(i).into_bytes())
        .collect();
    assert_eq!(
        lines[0].iter().position(|&b| b == b':'),
        Some(30),
        "30-byte names"
    );
    let mut g = c.benchmark_group("new_contexts");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.measurement_time(Duration::from_secs(10));
    let plain = || workloads::aggregator();
    let filtered = || {
        workloads::aggregator_with(|c| {
            let entries = (0..100)
                .map(|i| {
                    let name = format!("svc.checkout.request.time.{i:04}");
                    (name, false, vec!["request_id".to_string()])
                })
                .collect();
            c.names.tag_filters = TagFilters::new(entries, &[]);
        })
    };
    for (label, make) in [
        (
            "ten_tags_one_unique_30_byte_name",
            &plain as &dyn Fn() -> Aggregator,
        ),
        ("with_100_tag_filters", &filtered),
    ] {
        let mut agg = make();
        let mut counters = Counters::default();
        let mut next = 0;
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    if next + BATCH > lines.len() {
                        // Untimed: a fresh table, so every line is a new context again.
                        agg = make();
                        next = 0;
                    }
                    let batch = lines[next..next + BATCH].iter().map(Vec::as_slice);
                    let start = Instant::now();
                    ingest(&mut agg, &mut counters, black_box(batch), 0);
                    // As a shard after each receive: a full chunk of news goes to the sink.
                    black_box(agg.take_news(NEWS_CHUNK));
                    spent += start.elapsed();
                    next += BATCH;
                }
                spent
            })
        });
        assert_eq!(counters.rejected_lines(), 0, "every line parses");
        assert!(agg.live_contexts() > 0);
    }
    g.finish();
}

criterion_group!(benches, new_contexts);
criterion_main!(benches);
