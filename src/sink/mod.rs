//! Downstream writers behind one trait, and the canonical flushed form they all translate from.
//!
//! Sinks run on their own thread (`spawn`), never on an ingest core: shards and owners hand them
//! owned `FlushBatch` values and go back to receiving. A sink must not reach back into shard
//! state; everything it needs is in the batch.
//!
//! Downstreams: `jsonl` (people and tests), `datadog` (the intake API), `prometheus`
//! (remote write) and `relay` (DogStatsD to another tier). The HTTP ones are an encoder inside
//! `http::HttpSink`, which hands their payloads to `delivery` to post from a thread of its own.
//! `PointWriter` builds the `corestatsd.*` self-telemetry points, for shards and sinks alike.

pub mod datadog;
pub mod delivery;
pub mod http;
pub mod jsonl;
pub mod payload;
pub mod prometheus;
pub mod proto;
pub mod relay;
pub mod spill;

use std::io;
use std::sync::mpsc;
use std::thread;

use crate::aggregate::Agg;
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

    /// The name suffix as written after the metric name, e.g. `.95percentile`.
    pub fn push_to(self, out: &mut Vec<u8>) {
        match self {
            Suffix::None => {}
            Suffix::Max => out.extend_from_slice(b".max"),
            Suffix::Min => out.extend_from_slice(b".min"),
            Suffix::Median => out.extend_from_slice(b".median"),
            Suffix::Avg => out.extend_from_slice(b".avg"),
            Suffix::Count => out.extend_from_slice(b".count"),
            Suffix::Sum => out.extend_from_slice(b".sum"),
            Suffix::Percentile(p) => {
                out.push(b'.');
                out.extend_from_slice(p.to_string().as_bytes());
                out.extend_from_slice(b"percentile");
            }
        }
    }
}

/// `name` followed by its suffix, into `out` (cleared first).
pub fn full_name(out: &mut Vec<u8>, name: &[u8], suffix: Suffix) {
    out.clear();
    out.extend_from_slice(name);
    suffix.push_to(out);
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
    /// With `Merger::keeping_raw` (the relay): set members and histogram samples, whole. `value`
    /// is then a set's member count, and 0 for a histogram.
    pub raw: Option<Box<Agg>>,
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

    /// Called once per window, before `write`, on the batch that carries shard 0's telemetry:
    /// a sink with telemetry of its own adds it (and logs it) here.
    fn emit_telemetry(&mut self, _out: &mut FlushBatch, _window: u64) {}

    /// At stop, after the last batch: delivers or persists what is held. Returns the points
    /// lost for good (counted in `SinkStats::failed`).
    fn close(&mut self) -> io::Result<u64> {
        self.flush().map(|()| 0)
    }
}

/// Self-telemetry points under construction: one description arena, appended to a batch by
/// `finish`. Used by the shards' telemetry and by the sinks' own.
pub struct PointWriter<'h> {
    host: Option<&'h [u8]>,
    window: u64,
    interval: u32,
    arena: Vec<u8>,
    points: Vec<FlushedMetric>,
}

impl<'h> PointWriter<'h> {
    pub fn new(host: Option<&'h [u8]>, window: u64, interval: u32) -> Self {
        PointWriter {
            host,
            window,
            interval,
            arena: Vec::new(),
            points: Vec::new(),
        }
    }

    /// One point tagged `tag` plus `extra` (comma-separated tags), typed as a counter for
    /// `OutKind::Count` and a gauge otherwise.
    pub fn point(&mut self, name: &str, tag: &str, extra: Option<&str>, kind: OutKind, value: f64) {
        let mut tags: Vec<&[u8]> = vec![tag.as_bytes()];
        tags.extend(
            extra
                .into_iter()
                .flat_map(|e| e.split(','))
                .map(str::as_bytes),
        );
        tags.sort();
        let mt = if kind == OutKind::Count {
            crate::protocol::MetricType::Counter
        } else {
            crate::protocol::MetricType::Gauge
        };
        let desc = crate::merge::desc::encode(
            &mut self.arena,
            mt,
            name.as_bytes(),
            self.host,
            None,
            tags.into_iter(),
        );
        self.points.push(FlushedMetric {
            arena: 0,
            desc,
            suffix: Suffix::None,
            kind,
            value,
            ts: self.window,
            interval: self.interval,
            sketch: None,
            raw: None,
        });
    }

    /// Counts since the last window, from cumulative counters: `<prefix>.<name>` is `now - last`
    /// for each `(name, now, last)`.
    pub fn deltas(&mut self, prefix: &str, tag: &str, counters: &[(&str, u64, u64)]) {
        for &(name, now, last) in counters {
            let name = format!("{prefix}.{name}");
            let delta = now.saturating_sub(last) as f64;
            self.point(&name, tag, None, OutKind::Count, delta);
        }
    }

    pub fn finish(self, out: &mut FlushBatch) {
        let arena = out.arenas.len() as u32;
        out.arenas.push(self.arena);
        out.metrics.extend(
            self.points
                .into_iter()
                .map(|m| FlushedMetric { arena, ..m }),
        );
    }
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
            for mut batch in rx {
                if let Some(t) = batch.telemetry.filter(|t| t.shard == 0) {
                    sink.emit_telemetry(&mut batch, t.window);
                }
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

/// What the sink thread did, returned when it ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct SinkStats {
    pub written: u64,
    pub failed: u64,
    pub errors: u64,
}
