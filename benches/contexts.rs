//! Memory per live context, and how long a window close keeps the receive loop waiting.
//! `taskset -c 1 cargo bench --bench contexts` prints both; no criterion (one-shot figures).
//!
//! Memory: a counting global allocator measures heap growth while 1M contexts are created.
//! Pause: the receive loop yields to the close sweep and the merge between chunks of
//! `shard::CHUNK` contexts, so the longest chunk is the longest a receive waits on a flush.

mod workloads;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corestatsd::bench_api::{
    Aggregator, CHUNK, ClosedWindow, ContextBatch, Contexts, Counters, HistogramOutput, JsonlSink,
    Limits, Merger, NEWS_CHUNK, Partial, Sink, Suffix, View, ingest,
};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator; only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`/`dealloc`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Ingests `line(i)` for each `i` of `ids` at `at`, the sink's table learning the news as the
/// sink thread does, all of it by the end.
fn ingest_learning(
    agg: &mut Aggregator,
    table: &mut Contexts,
    ids: std::ops::Range<usize>,
    line: impl Fn(usize) -> String,
    at: u64,
) {
    let mut counters = Counters::default();
    let mut buf = String::new();
    for i in ids {
        buf.clear();
        buf.push_str(&line(i));
        ingest(agg, &mut counters, [buf.as_bytes()], at);
        if let Some(news) = agg.take_news(NEWS_CHUNK) {
            table.learn(&news);
        }
    }
    if let Some(news) = agg.take_news(0) {
        table.learn(&news);
    }
}

/// Closes the open window in one sweep.
fn close_whole(agg: &mut Aggregator) -> ClosedWindow {
    agg.begin_close();
    loop {
        if let Some(c) = agg.close_step(usize::MAX) {
            break c;
        }
    }
}

/// Heap per live context, everything a context costs in the process: its half on the shard
/// (context table, alias and key tables) and its description in the sink's context table, which
/// learns the shard's news as the sink thread does.
fn memory_per_context(label: &str, contexts: usize, line: impl Fn(usize) -> String) {
    let mut agg = workloads::aggregator();
    let mut table = Contexts::default();
    let before = LIVE.load(Ordering::Relaxed);
    ingest_learning(&mut agg, &mut table, 0..contexts, line, 0);
    assert_eq!((agg.live_contexts(), table.len()), (contexts, contexts));
    let per = |bytes: usize| bytes as f64 / contexts as f64;
    let total = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "memory  {label:<58} {:>7.1} bytes/context ({} contexts, {:.1} MiB heap)",
        per(total),
        contexts,
        total as f64 / (1 << 20) as f64
    );
    drop(table);
    println!(
        "        of which the sink's context table {:>7.1}, the shard {:>7.1}",
        per(total - (LIVE.load(Ordering::Relaxed) - before)),
        per(LIVE.load(Ordering::Relaxed) - before)
    );
}

/// Heap over `windows` windows of `live` contexts with `share` of them replaced every window
/// (issue 13's churn: its RSS must stay flat after the second window). Every window sends each
/// live context once, closes, and the sink's table learns the news and forgets the freed, as the
/// sink thread does. Counters are kept 20 s after their last sample, as the harness's churn runs.
fn memory_churn(live: usize, share: f64, windows: usize) {
    let mut agg = workloads::aggregator_with(|c| c.counter_zero_fill_secs = 20);
    let mut table = Contexts::default();
    let before = LIVE.load(Ordering::Relaxed);
    let replaced = (live as f64 * share) as usize;
    let mut heaps = Vec::with_capacity(windows);
    for w in 0..windows {
        let first = w * replaced;
        let line = |i| workloads::tagged_line(i, "c", 1);
        ingest_learning(
            &mut agg,
            &mut table,
            first..first + live,
            line,
            (w * 10) as u64,
        );
        let closed = close_whole(&mut agg);
        for b in closed.batches {
            table.forget(&b.freed);
        }
        heaps.push(LIVE.load(Ordering::Relaxed) - before);
    }
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    let base = heaps[1];
    let (low, high) = heaps[2..]
        .iter()
        .fold((usize::MAX, 0), |(l, h), &b| (l.min(b), h.max(b)));
    let at = heaps[2..].iter().position(|&b| b == high).unwrap_or(0) + 2;
    println!(
        "memory  churn: {live} live, {:.0} % replaced a window, {windows} windows: heap {:.1} MiB \
         after window 2, then {:.1}..{:.1} MiB (peak at window {}: {:+.1} %), {:.1} MiB at the end \
         ({} contexts live, {} in the sink's table)",
        share * 100.0,
        mib(base),
        mib(low),
        mib(high),
        at + 1,
        (high as f64 / base as f64 - 1.0) * 100.0,
        mib(heaps[windows - 1]),
        agg.live_contexts(),
        table.len()
    );
}

/// One window close over `contexts` live contexts, each sent the `lines` of one window. With
/// `senders` > 1 the owner merges that many copies of the batch, as when every shard saw every
/// context (the worst case for the merge); the sweep is timed once.
fn flush_pause(label: &str, contexts: usize, lines: &[Vec<u8>], senders: usize) {
    let mut agg = workloads::aggregator();
    let mut counters = Counters::default();
    // Steady state: one window has closed before, so batch sizes are known.
    for l in lines {
        ingest(&mut agg, &mut counters, [l.as_slice()], 0);
    }
    agg.begin_close();
    let warm = loop {
        if let Some(c) = agg.close_step(usize::MAX) {
            break c;
        }
    };
    let output = HistogramOutput {
        aggregates: vec![Suffix::Max, Suffix::Median, Suffix::Avg, Suffix::Count],
        percentiles: vec![(95, 0.95)],
    };
    let mut merger = Merger::new(senders, 10, Limits::histogram(512), output);
    for b in warm.batches {
        for copy in copies(b, senders) {
            merger.add(copy);
        }
    }
    for l in lines {
        ingest(&mut agg, &mut counters, [l.as_slice()], 0);
    }
    assert_eq!(agg.live_contexts(), contexts);
    let start = Instant::now();
    agg.begin_close();
    let mut longest_sweep = Duration::ZERO;
    let closed = loop {
        let t = Instant::now();
        let r = agg.close_step(CHUNK);
        longest_sweep = longest_sweep.max(t.elapsed());
        if let Some(c) = r {
            break c;
        }
    };
    let sweep = start.elapsed();
    let mut done = None;
    let batch = closed.batches.into_iter().next().unwrap();
    let batch_window = batch.window;
    let batches = copies(batch, senders);
    let merge_start = Instant::now();
    let mut longest_merge = Duration::ZERO;
    for batch in batches {
        let mut partials = merger.begin_batch(batch).peekable();
        while partials.peek().is_some() {
            let t = Instant::now();
            merger.merge(batch_window, partials.by_ref().take(CHUNK));
            longest_merge = longest_merge.max(t.elapsed());
        }
        if let Some(ready) = merger.batch_done(batch_window) {
            done = Some(ready);
        }
    }
    let merged = merge_start.elapsed();
    let t = Instant::now();
    let mut ready = done.expect("every sender reported");
    let mut longest_expand = Duration::ZERO;
    loop {
        let c = Instant::now();
        let done = merger.expand_step(&mut ready, CHUNK);
        longest_expand = longest_expand.max(c.elapsed());
        if done {
            break;
        }
    }
    let expand = t.elapsed();
    let out = ready.out;
    let total = sweep + merged + expand;
    println!(
        "flush   {label}: {:.0} ns/context; sweep {:.2} ms (longest chunk {:.3} ms), merge {:.2} ms \
         (longest chunk {:.3} ms), expand {:.2} ms (longest chunk {:.3} ms) into {} points",
        total.as_nanos() as f64 / contexts as f64,
        ms(sweep),
        ms(longest_sweep),
        ms(merged),
        ms(longest_merge),
        ms(expand),
        ms(longest_expand),
        out.metrics.len()
    );
}

/// The sink thread's share of a window of `contexts` counters (10 tags, one unique): resolving
/// each point's key in the context table, then writing it as a jsonl line (to `io::sink`).
fn sink_per_point(contexts: usize) {
    let mut agg = workloads::aggregator();
    let mut table = Contexts::default();
    let line = |i| workloads::tagged_line(i, "c", 1);
    ingest_learning(&mut agg, &mut table, 0..contexts, line, 0);
    let closed = close_whole(&mut agg);
    let output = HistogramOutput {
        aggregates: vec![],
        percentiles: vec![],
    };
    let mut merger = Merger::new(1, 10, Limits::histogram(512), output);
    let mut out = merger
        .add(closed.batches.into_iter().next().expect("one owner"))
        .expect("one shard");
    let t = Instant::now();
    table.resolve(&mut out);
    let resolved = t.elapsed();
    let mut sink = JsonlSink::new(Box::new(std::io::sink()));
    let t = Instant::now();
    sink.write(View::new(&out, &table)).expect("io::sink");
    let written = t.elapsed();
    let per = |d: Duration| d.as_nanos() as f64 / out.metrics.len() as f64;
    println!(
        "sink    {contexts} counters, 10 tags: resolve {:.0} ns/point, jsonl {:.0} ns/point",
        per(resolved),
        per(written)
    );
}

/// `batch` and `n - 1` copies of it.
fn copies(batch: ContextBatch, n: usize) -> Vec<ContextBatch> {
    let mut out: Vec<ContextBatch> = (1..n)
        .map(|_| ContextBatch {
            window: batch.window,
            partials: batch
                .partials
                .iter()
                .map(|p| Partial {
                    key: p.key,
                    agg: p.agg.clone(),
                })
                .collect(),
            freed: Vec::new(),
        })
        .collect();
    out.insert(0, batch);
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench --bench contexts -- flush` runs only the rows whose name holds `flush`.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    let wanted = |row: &str| row.contains(filter.as_str());
    if wanted("memory") {
        memory_per_context(
            "1M counters, 10 tags (~250 B lines, 1 tag unique)",
            1_000_000,
            |i| workloads::tagged_line(i, "c", 1),
        );
        memory_per_context("1M counters, untagged unique names", 1_000_000, |i| {
            format!("app.requests.{i}:1|c")
        });
    }
    if wanted("memory-churn") {
        memory_churn(1_000_000, 0.1, 64);
    }
    if wanted("flush-mixed") {
        let lines = workloads::mixed_tagged(300_000, 100_000);
        flush_pause("100k mixed contexts", 100_000, &lines, 1);
    }
    if wanted("sink") {
        sink_per_point(1_000_000);
    }
    if wanted("flush-counters") {
        // Issue 13's close target is for this shape: 1M counters of 10 tags, one unique.
        let lines: Vec<Vec<u8>> = (0..1_000_000)
            .map(|i| workloads::tagged_line(i, "c", 1).into_bytes())
            .collect();
        flush_pause("1M counters, 10 tags", 1_000_000, &lines, 1);
        flush_pause(
            "1M counters, 10 tags, each from 2 shards",
            1_000_000,
            &lines,
            2,
        );
    }
}
