//! Parser micro-benchmark: ns per metric line, parsing only.
//! `cargo bench --bench parse` (pin it: `taskset -c 1 cargo bench --bench parse`).

mod workloads;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use corestatsd::bench_api::{Metric, parse_metric_into};

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    let short = b"page.views:1|c".to_vec();
    let tagged = workloads::tagged_line(42, "h", 250).into_bytes();
    assert!(
        (230..=270).contains(&tagged.len()),
        "tagged line is {} bytes",
        tagged.len()
    );
    for (label, line) in [
        ("short_untagged_counter", &short),
        ("ten_tags_250_bytes", &tagged),
    ] {
        g.throughput(Throughput::Elements(1));
        // The receive path parses into one reused `Metric`, as measured here.
        let mut m = Metric::default();
        g.bench_function(label, |b| {
            b.iter(|| {
                parse_metric_into(black_box(line), &mut m).unwrap();
                black_box(&m);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
