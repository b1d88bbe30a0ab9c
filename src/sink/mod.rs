//! Downstream writers behind one trait, and the canonical flushed form they all translate from.
//!
//! Sinks run on their own thread (`spawn`), never on an ingest core: shards and owners hand them
//! owned `FlushBatch` values and go back to receiving. A sink must not reach back into shard
//! state; everything it needs is in the batch.
//!
//! # Missing
//! Only `jsonl` exists; the Datadog, Prometheus remote-write and relay sinks come with their issue.

pub mod jsonl;

use std::io;
use std::sync::mpsc;
use std::thread;

use crate::aggregate::sketch::Sketch;
use crate::merge::desc::Desc;
use crate::protocol::event::{AlertType, Priority};
use crate::telemetry::TelemetrySnapshot;

/// How a flushed point is typed downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutKind {
    /// A weighted sum over `interval` seconds.
    Count,
    Gauge,
    Distribution,
}

/// The name suffix of histogram aggregates (`name.max`, `name.95percentile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suffix {
    None,
    Max,
    Min,
    Median,
    Avg,
    Count,
    Sum,
    Percentile(u8),
}

impl Suffix {
    /// Parses one `--histogram-aggregates` item.
    pub fn from_aggregate(s: &str) -> Option<Suffix> {
        Some(match s {
            "max" => Suffix::Max,
            "min" => Suffix::Min,
            "median" => Suffix::Median,
            "avg" => Suffix::Avg,
            "count" => Suffix::Count,
            "sum" => Suffix::Sum,
            _ => return None,
        })
    }
}

/// One point ready for a downstream.
#[derive(Debug, Clone, PartialEq)]
pub struct FlushedMetric {
    /// Which of the batch's arenas holds the description.
    pub arena: u32,
    pub desc: u32,
    pub suffix: Suffix,
    pub kind: OutKind,
    pub value: f64,
    /// Window start, or the client's `T` timestamp.
    pub ts: u64,
    pub interval: u32,
    pub sketch: Option<Box<Sketch>>,
}

/// An event as it leaves its shard: unescaped, host resolved, tags sorted and deduplicated.
#[derive(Debug, Clone, PartialEq)]
pub struct FlushedEvent {
    pub title: Vec<u8>,
    pub text: Vec<u8>,
    pub ts: Option<i64>,
    pub host: Option<Vec<u8>>,
    pub aggregation_key: Option<Vec<u8>>,
    pub priority: Priority,
    pub source_type: Option<Vec<u8>>,
    pub alert_type: AlertType,
    pub tags: Vec<Vec<u8>>,
    /// The canonical origin blob (`protocol::origin::Origin::decode` reads it).
    pub origin: Option<Vec<u8>>,
}

/// A service check as it leaves its shard.
#[derive(Debug, Clone, PartialEq)]
pub struct FlushedServiceCheck {
    pub name: Vec<u8>,
    pub status: u8,
    pub ts: Option<i64>,
    pub host: Option<Vec<u8>>,
    pub message: Option<Vec<u8>>,
    pub tags: Vec<Vec<u8>>,
    /// The canonical origin blob (`protocol::origin::Origin::decode` reads it).
    pub origin: Option<Vec<u8>>,
}

/// What an owner (or a shard, for timestamped points, events, service checks and telemetry)
/// hands a sink.
#[derive(Debug, Default)]
pub struct FlushBatch {
    pub arenas: Vec<Vec<u8>>,
    pub metrics: Vec<FlushedMetric>,
    /// In arrival order on their shard.
    pub events: Vec<FlushedEvent>,
    pub service_checks: Vec<FlushedServiceCheck>,
    pub telemetry: Option<TelemetrySnapshot>,
}

impl FlushBatch {
    pub fn desc(&self, m: &FlushedMetric) -> Desc<'_> {
        Desc::decode(&self.arenas[m.arena as usize], m.desc)
    }

    /// Points, events and service checks in the batch.
    pub fn items(&self) -> u64 {
        (self.metrics.len() + self.events.len() + self.service_checks.len()) as u64
    }
}

/// A downstream writer. Called on the sink thread only.
pub trait Sink: Send {
    /// Writes one batch whole: its lines must not interleave with another batch's.
    fn write(&mut self, batch: &FlushBatch) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

/// Starts the sink thread. It ends when every sender is dropped, after writing what it got.
/// Telemetry snapshots are summed per window and logged once all `shards` have reported.
pub fn spawn(
    mut sink: Box<dyn Sink>,
    shards: usize,
) -> io::Result<(mpsc::Sender<FlushBatch>, thread::JoinHandle<SinkStats>)> {
    let (tx, rx) = mpsc::channel::<FlushBatch>();
    let handle = thread::Builder::new()
        .name("corestatsd-sink".into())
        .spawn(move || {
            let mut stats = SinkStats::default();
            let mut summaries = crate::telemetry::WindowSummaries::new(shards);
            for batch in rx {
                match sink.write(&batch).and_then(|()| sink.flush()) {
                    Ok(()) => stats.written += batch.metrics.len() as u64,
                    Err(e) => {
                        stats.failed += batch.metrics.len() as u64;
                        if stats.errors == 0 || stats.errors.is_power_of_two() {
                            eprintln!(
                                "corestatsd: sink write failed ({} points dropped so far): {e}",
                                stats.failed
                            );
                        }
                        stats.errors += 1;
                    }
                }
                if let Some(t) = batch.telemetry {
                    summaries.add(t);
                }
            }
            summaries.log_incomplete();
            stats
        })?;
    Ok((tx, handle))
}

/// What the sink thread did, returned when it ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct SinkStats {
    pub written: u64,
    pub failed: u64,
    pub errors: u64,
}
