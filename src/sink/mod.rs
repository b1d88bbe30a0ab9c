//! Downstream writers behind one trait, on a thread of their own, translating the flushed form.
//!
//! Sinks run on the sink thread (`spawn`), never on an ingest core: shards and owners hand it
//! owned `ToSink` messages and go back to receiving. A sink must not reach back into shard
//! state; everything it needs is in the batch. The sink thread also completes each window's
//! self-telemetry (`telemetry`) once every shard has reported it.
//!
//! Downstreams: `jsonl` (people and tests), `datadog` (the intake API), `prometheus`
//! (remote write), `scrape` (Prometheus scrapes `/metrics`) and `relay` (DogStatsD to another
//! tier). The HTTP ones are an encoder inside
//! `http::HttpSink`, which hands their payloads to `delivery` to post from a thread of its own.

pub mod datadog;
pub mod delivery;
mod delivery_stats;
pub mod fanout;
pub mod handover;
pub mod http;
mod jitter;
pub mod jsonl;
pub mod payload;
pub mod prometheus;
pub mod queue;
pub mod relay;
pub mod scrape;
pub mod spill;

use std::io;
use std::sync::Arc;
use std::thread;

use crate::flushed::{Contexts, FlushBatch, NewContexts, View};
use crate::telemetry::board::{Board, BusyContext, ContextStats, DownstreamStatus};
use crate::telemetry::{TelemetryConfig, TelemetrySnapshot, WindowSummaries};
pub use queue::{SinkGone, SinkSender};

/// What the cores hand the sink thread.
pub enum ToSink {
    /// Descriptions of contexts a shard created: always ahead of their first point.
    News(NewContexts),
    /// A merged window's points (from its owner), or a shard's pending items.
    Batch(FlushBatch),
    /// A shard's counters for one window (boxed: a snapshot is ~1 KiB, a batch a few words).
    Telemetry(Box<TelemetrySnapshot>),
}

/// A downstream writer. Called on the sink thread only.
pub trait Sink: Send {
    /// Writes one batch whole: its lines must not interleave with another batch's.
    fn write(&mut self, batch: View<'_>) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;

    /// Called once per window, when every shard has reported its telemetry, on the batch of the
    /// window's self-metric points: a sink with telemetry of its own adds it (and logs it) here.
    fn emit_telemetry(&mut self, _out: &mut FlushBatch, _window: u64) {}

    /// Fills in what the sink knows of its delivery, as of its last `emit_telemetry` (HTTP
    /// downstreams: payloads, retries, queue, spill, last error).
    fn status(&self, _s: &mut DownstreamStatus) {}

    /// One status per downstream (`base` filled in by the sink thread): several behind a
    /// fan-out.
    fn statuses(&self, base: DownstreamStatus) -> Vec<DownstreamStatus> {
        let mut s = base;
        self.status(&mut s);
        vec![s]
    }

    /// At stop, after the last batch: delivers or persists what is held. Returns the points
    /// lost for good (counted in `SinkStats::failed`).
    fn close(&mut self) -> io::Result<u64> {
        self.flush().map(|()| 0)
    }
}

/// Where the sink thread posts what the operator's endpoint shows: the board, and the
/// downstream's name there.
pub struct Posting {
    pub board: Arc<Board>,
    pub downstream: String,
    /// Shards count samples per context (`--context-stats`).
    pub context_stats: bool,
}

/// Starts the sink thread. It ends when every sender is dropped, after writing what it got.
/// At most `max_points` points wait for it (`SinkSender::send`).
/// Telemetry snapshots are summed per window; once every shard has reported one, its log line is
/// written, and its points (with the sink's own) go to the downstream like any batch; with
/// `posting`, the window and the downstream's state then go to the board.
pub fn spawn(
    mut sink: Box<dyn Sink>,
    telemetry: TelemetryConfig,
    max_points: u64,
    posting: Option<Posting>,
) -> io::Result<(SinkSender, thread::JoinHandle<SinkStats>)> {
    let (tx, rx, queued) = queue::channel(max_points);
    let handle = thread::Builder::new()
        .name("corestatsd-sink".into())
        .spawn(move || {
            let mut stats = SinkStats::default();
            let board = posting.as_ref().map(|p| p.board.clone());
            let mut summaries = WindowSummaries::new(telemetry).with_board(board);
            let mut contexts = Contexts::default();
            for msg in rx {
                match msg {
                    ToSink::News(news) => contexts.learn(&news),
                    ToSink::Batch(batch) => {
                        queued.taken(&batch);
                        stats.write_batch(&mut *sink, &mut contexts, batch)
                    }
                    ToSink::Telemetry(t) => {
                        if let Some(mut done) = summaries.add(*t) {
                            sink.emit_telemetry(&mut done.points, done.window);
                            stats.write(&mut *sink, View::new(&done.points, &contexts));
                            if let Some(p) = &posting {
                                let s = DownstreamStatus {
                                    name: p.downstream.clone(),
                                    written_points: stats.written,
                                    failed_points: stats.failed,
                                    last_error: stats.last_error.clone(),
                                    ..DownstreamStatus::default()
                                };
                                p.board.post_downstreams(sink.statuses(s));
                                p.board.post_contexts(context_stats(&contexts, &done, p));
                            }
                        }
                    }
                }
            }
            for mut done in summaries.finish_incomplete() {
                sink.emit_telemetry(&mut done.points, done.window);
                stats.write(&mut *sink, View::new(&done.points, &contexts));
            }
            match sink.close() {
                Ok(lost) => stats.failed += lost,
                Err(e) => {
                    eprintln!("corestatsd: sink close failed: {e}");
                    stats.errors += 1;
                }
            }
            stats
        })?;
    Ok((tx, handle))
}

/// Metric names `/contexts` lists by live contexts.
const TOP_NAMES: usize = 100;

/// `/contexts` for a completed window: its busiest contexts described from the table, and the
/// names holding the most contexts.
fn context_stats(
    contexts: &Contexts,
    done: &crate::telemetry::WindowTelemetry,
    p: &Posting,
) -> ContextStats {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let busiest = done
        .busiest
        .iter()
        .filter_map(|&(key, samples)| {
            // A context freed before its window's telemetry arrived is left out.
            let d = contexts.described(key)?;
            Some(BusyContext {
                name: text(d.name),
                metric_type: d.metric_type.name(),
                host: d.host.map(text),
                tags: d.tags().map(text).collect(),
                samples,
            })
        })
        .collect();
    ContextStats {
        window: Some(done.window),
        samples_counted: p.context_stats,
        busiest,
        names: contexts
            .top_names(TOP_NAMES)
            .into_iter()
            .map(|(n, c)| (text(n), c))
            .collect(),
        live_contexts: contexts.len() as u64,
    }
}

/// What the sink thread did, returned when it ends.
#[derive(Debug, Default, Clone)]
pub struct SinkStats {
    pub written: u64,
    pub failed: u64,
    pub errors: u64,
    /// The last write error.
    pub last_error: Option<String>,
    /// Points whose context the sink's table did not know (counted in `failed` too).
    pub unknown_contexts: u64,
}

impl SinkStats {
    /// Writes one batch from the cores, each point described from the context table; the
    /// contexts it says were freed are forgotten after.
    fn write_batch(&mut self, sink: &mut dyn Sink, contexts: &mut Contexts, mut batch: FlushBatch) {
        let unknown = contexts.resolve(&mut batch);
        if unknown > 0 {
            // Every context's news travels with, or before, its first point: a bug if seen.
            self.failed += unknown;
            self.unknown_contexts += unknown;
            if self.unknown_contexts == unknown || self.unknown_contexts.is_power_of_two() {
                eprintln!(
                    "corestatsd: {unknown} points of contexts never announced dropped ({} so far)",
                    self.unknown_contexts
                );
            }
        }
        self.write(sink, View::new(&batch, contexts));
        contexts.forget(&batch.freed);
    }

    /// Writes one batch, counting its points as written or failed.
    fn write(&mut self, sink: &mut dyn Sink, batch: View<'_>) {
        if batch.items() == 0 {
            return;
        }
        match sink.write(batch).and_then(|()| sink.flush()) {
            Ok(()) => self.written += batch.metrics.len() as u64,
            Err(e) => {
                self.failed += batch.metrics.len() as u64;
                if self.errors == 0 || self.errors.is_power_of_two() {
                    eprintln!(
                        "corestatsd: sink write failed ({} points dropped so far): {e}",
                        self.failed
                    );
                }
                self.errors += 1;
                self.last_error = Some(e.to_string());
            }
        }
    }
}
