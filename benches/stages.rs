//! One data-path stage at a time, in ns per metric (criterion's per-element time):
//! context lookup over 100k contexts, each aggregator type on a hot context, the owner-side
//! merge (with expansion into points) and the downstream encoders (jsonl; Datadog protobuf with
//! zstd; remote write with snappy; relay lines). Parsing is `--bench parse`, the
//! whole receive path `--bench ingest`.
//!
//! `taskset -c 1 cargo bench --bench stages`

mod workloads;

use std::hint::black_box;

use corestatsd::bench_api::{
    AGENT_LIMITS, Aggregator, Compression, ContextBatch, Contexts, CountersAs, Encoding,
    FlushBatch, FlushedMetric, GROUP, HistogramOutput, JsonlSink, Limits, Merger, Metric,
    NewContexts, Sink, Suffix, View, encode_batch, parse_metric, prometheus, relay,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn parsed(lines: &[Vec<u8>]) -> Vec<Metric<'_>> {
    lines
        .iter()
        .map(|l| parse_metric(l).expect("bench lines parse"))
        .collect()
}

fn insert_all(agg: &mut Aggregator, ms: &[Metric<'_>]) {
    for g in ms.chunks(GROUP) {
        agg.insert_group(g, 0, |_| {});
    }
}

fn output() -> HistogramOutput {
    HistogramOutput {
        aggregates: vec![Suffix::Max, Suffix::Median, Suffix::Avg, Suffix::Count],
        percentiles: vec![(95, 0.95)],
    }
}

/// A closed window of `contexts` mixed tagged contexts, as their owner receives it.
/// One shard's closed window of `contexts` contexts, and the news of them for the sink.
fn closed_batch(contexts: usize) -> (ContextBatch, NewContexts) {
    let lines = workloads::mixed_tagged(contexts * 2, contexts);
    let mut agg = workloads::aggregator();
    insert_all(&mut agg, &parsed(&lines));
    agg.begin_close();
    let closed = loop {
        if let Some(c) = agg.close_step(usize::MAX) {
            break c;
        }
    };
    let news = agg.take_news(0).expect("new contexts");
    let batch = closed.batches.into_iter().next().expect("one owner");
    (batch, news)
}

fn stages(c: &mut Criterion) {
    let mut g = c.benchmark_group("stages");
    g.sample_size(20);

    // Lookup: counters over 100k tagged contexts, so the context table misses the caches as it
    // does in production; the counter add itself is one float add.
    let lines: Vec<Vec<u8>> = (0..100_000)
        .map(|i| workloads::tagged_line((i * 7919) % 100_000, "c", 1).into_bytes())
        .collect();
    let ms = parsed(&lines);
    let mut agg = workloads::aggregator();
    insert_all(&mut agg, &ms);
    g.throughput(Throughput::Elements(ms.len() as u64));
    g.bench_function("lookup/100k_tagged_contexts", |b| {
        b.iter(|| insert_all(&mut agg, black_box(&ms)))
    });

    // Each aggregator on one hot context: what the type's update costs.
    for kind in ["c", "g", "s", "h", "ms", "d"] {
        let lines: Vec<Vec<u8>> = (0..1024)
            .map(|i| format!("hot.metric:{}|{kind}|#env:prod", i % 100).into_bytes())
            .collect();
        let ms = parsed(&lines);
        let mut agg = workloads::aggregator();
        insert_all(&mut agg, &ms);
        g.throughput(Throughput::Elements(ms.len() as u64));
        g.bench_function(format!("aggregate/{kind}"), |b| {
            b.iter(|| insert_all(&mut agg, black_box(&ms)))
        });
    }

    // Merge: an owner folding one shard's closed window of 10k contexts and expanding it.
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("merge_and_expand/10k_contexts", |b| {
        b.iter_batched(
            || closed_batch(10_000).0,
            |batch| {
                let mut m = Merger::new(1, 10, Limits::histogram(512), output());
                black_box(m.add(batch))
            },
            BatchSize::LargeInput,
        )
    });

    // Encode: the jsonl sink writing a flushed window's points (to io::sink).
    // The sink thread learns the window's new contexts and resolves its points first, untimed.
    let mut contexts = Contexts::default();
    let mut m = Merger::new(1, 10, Limits::histogram(512), output());
    let (batch, news) = closed_batch(10_000);
    contexts.learn(&news);
    let flushed = described(&contexts, m.add(batch).expect("one owner: ready at once"));
    let view = View::new(&flushed, &contexts);
    let mut sink = JsonlSink::new(Box::new(std::io::sink()));
    g.throughput(Throughput::Elements(flushed.items()));
    g.bench_function("jsonl_encode/points", |b| {
        b.iter(|| sink.write(black_box(view)).expect("io::sink"))
    });

    // The same window through the other downstreams' encoders, compression included.
    let enc = Encoding {
        counters_as: CountersAs::Rate,
        compression: Compression::Zstd,
        limits: AGENT_LIMITS,
    };
    g.bench_function("datadog_encode_zstd/points", |b| {
        b.iter(|| encode_batch(black_box(view), &enc).expect("encodes"))
    });
    // A fresh encoder each time: a series repeated at one timestamp would be skipped.
    g.bench_function("remote_write_encode_snappy/points", |b| {
        b.iter_batched(
            || prometheus::Encoder::new(900),
            |mut e| e.encode_batch(black_box(view)).expect("encodes"),
            BatchSize::SmallInput,
        )
    });
    // Steady state: the same series window after window (each batch 10 s later).
    let mut rw = prometheus::Encoder::new(900);
    let mut shift = 0;
    g.bench_function("remote_write_encode_snappy/points_steady", |b| {
        b.iter_batched(
            || {
                shift += 10;
                FlushBatch {
                    arenas: flushed.arenas.clone(),
                    metrics: flushed
                        .metrics
                        .iter()
                        .map(|m| FlushedMetric {
                            ts: m.ts + shift,
                            ..m.clone()
                        })
                        .collect(),
                    ..FlushBatch::default()
                }
            },
            |batch| {
                rw.encode_batch(black_box(View::new(&batch, &contexts)))
                    .expect("encodes")
            },
            BatchSize::LargeInput,
        )
    });
    let (batch, news) = closed_batch(10_000);
    contexts.learn(&news);
    let whole = described(
        &contexts,
        Merger::new(1, 10, Limits::histogram(512), output())
            .keeping_whole(true)
            .add(batch)
            .expect("one owner: ready at once"),
    );
    let mut relay = relay::Encoder::new(1432);
    g.throughput(Throughput::Elements(whole.items()));
    g.bench_function("relay_encode/contexts", |b| {
        b.iter(|| {
            let mut bytes = 0;
            let view = View::new(&whole, &contexts);
            relay.encode(black_box(view), &mut |p: &[u8], _| bytes += p.len());
            bytes
        })
    });
    g.finish();
}

/// What the sink thread does before handing a batch to a sink: resolves each point's
/// description in its context table.
fn described(contexts: &Contexts, mut batch: FlushBatch) -> FlushBatch {
    contexts.resolve(&mut batch);
    batch
}

criterion_group!(benches, stages);
criterion_main!(benches);
