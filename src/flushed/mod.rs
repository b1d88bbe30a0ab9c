//! The flushed form: what leaves aggregation for the downstreams. Points (`FlushedMetric`) whose
//! context descriptions sit in byte arenas (`desc`), events and service checks, gathered in a
//! `FlushBatch`, plus `PointWriter` for the server's own `corestatsd.*` points.
//!
//! A leaf of the data path: it knows the per-type values (`values`) and the wire enums it carries
//! (`protocol`), and nothing of how batches are made (`aggregate`, `merge`) or written (`sink`).
//! Every value here is owned and `Send`: it crosses from the cores to the sink thread.

pub(crate) mod desc;
mod points;

pub(crate) use points::PointWriter;

use crate::protocol::event::{AlertType, Priority};
use crate::values::Agg;
use crate::values::sketch::Sketch;
use desc::Desc;

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
    /// With `Merger::keeping_whole` (the relay): set members and histogram samples, whole.
    /// `value` is then a set's member count, and 0 for a histogram.
    pub whole: Option<Box<Agg>>,
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
