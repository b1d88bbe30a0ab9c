//! The flushed form: what leaves aggregation for the downstreams. Points (`FlushedMetric`),
//! events and service checks, gathered in a `FlushBatch`, with the news of contexts created and
//! freed (`ContextNews`); the sink's context table (`contexts`) that turns a point's context key
//! into its description; and `PointWriter` for the server's own `corestatsd.*` points.
//!
//! A leaf of the data path: it knows the per-type values (`values`) and the wire enums it carries
//! (`protocol`), and nothing of how batches are made (`aggregate`, `merge`) or written (`sink`).
//! Every value in a batch is owned and `Send`: it crosses from the cores to the sink thread.

pub(crate) mod contexts;
pub(crate) mod desc;
pub(crate) mod ids;
pub(crate) mod intern;
mod points;

pub use contexts::Contexts;
pub(crate) use points::PointWriter;

use crate::protocol::event::{AlertType, Priority};
use crate::values::Agg;
use crate::values::sketch::Sketch;
use desc::Desc;

/// How a flushed point is typed downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutKind {
    /// A weighted sum over `interval` seconds.
    Count,
    #[default]
    Gauge,
    Distribution,
}

/// The name suffix of histogram aggregates (`name.max`, `name.95percentile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Suffix {
    #[default]
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

/// Pushes onto a table that holds one entry per live context or string: a full one grows by a
/// quarter, not double, so at a million entries it holds at most a quarter more than it uses
/// (doubling left up to half of a 50 MB vector unused). Growing costs more copies, on the sink
/// thread only.
fn push_gently<T>(v: &mut Vec<T>, x: T) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.capacity() / 4).max(64));
    }
    v.push(x);
}

/// Puts `x` in a slot of `v`: the last one `free` holds, else a new one (`push_gently`).
/// Returns its index.
pub(crate) fn put_in_slot<T>(v: &mut Vec<T>, free: &mut Vec<u32>, x: T) -> u32 {
    match free.pop() {
        Some(i) => {
            v[i as usize] = x;
            i
        }
        None => {
            push_gently(v, x);
            (v.len() - 1) as u32
        }
    }
}

/// `name` followed by its suffix, into `out` (cleared first).
pub fn full_name(out: &mut Vec<u8>, name: &[u8], suffix: Suffix) {
    out.clear();
    out.extend_from_slice(name);
    suffix.push_to(out);
}

/// Where a point's description is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescRef {
    /// Encoded in the batch, at `offset` in `arenas[arena]` (self-metrics, `|T` points).
    Arena { arena: u32, offset: u32 },
    /// A context of the sink's table, by canonical key.
    Context(u64),
    /// The same, once the sink thread has looked it up (`Contexts::resolve`).
    Slot(u32),
}

impl Default for DescRef {
    fn default() -> Self {
        DescRef::Arena {
            arena: 0,
            offset: 0,
        }
    }
}

/// One point ready for a downstream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FlushedMetric {
    pub desc: DescRef,
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

/// Descriptions of contexts one shard created, for the sink's context table. A shard sends
/// them to the sink thread itself, in chunks and at every window close before its batches: a
/// context's description so reaches the sink before any point of it (which its owner sends once
/// it has the shard's batch).
#[derive(Debug, Default)]
pub struct NewContexts {
    /// The descriptions, encoded (`desc::encode`).
    pub arena: Vec<u8>,
    /// (canonical key, offset of its description in `arena`).
    pub contexts: Vec<(u64, u32)>,
}

impl NewContexts {
    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }
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
    /// Contexts some shard freed, one reference each: the sink's table forgets them once this
    /// batch is written. They travel through the context's owner, so after its last point.
    pub freed: Vec<u64>,
    /// Sets and histograms are whole (`FlushedMetric::whole`), not expanded: a batch that can
    /// travel to another corestatsd and aggregate there (relay, take-over).
    pub whole: bool,
}

impl FlushBatch {
    /// Points, events and service checks in the batch.
    pub fn items(&self) -> u64 {
        (self.metrics.len() + self.events.len() + self.service_checks.len()) as u64
    }
}

#[cfg(test)]
impl FlushBatch {
    /// Tests: the description of a point described in the batch itself (`DescRef::Arena`;
    /// `Contexts::describe` turns context points into such).
    pub fn desc(&self, m: &FlushedMetric) -> Desc<'_> {
        match m.desc {
            DescRef::Arena { arena, offset } => Desc::decode(&self.arenas[arena as usize], offset),
            other => panic!("{other:?} is not described in the batch"),
        }
    }
}

/// A batch as a sink reads it: each point's description comes from the batch itself or from the
/// sink's context table.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub batch: &'a FlushBatch,
    contexts: &'a Contexts,
}

/// A view reads as its batch (`view.metrics`); only descriptions need the table.
impl std::ops::Deref for View<'_> {
    type Target = FlushBatch;

    fn deref(&self) -> &FlushBatch {
        self.batch
    }
}

impl<'a> View<'a> {
    pub fn new(batch: &'a FlushBatch, contexts: &'a Contexts) -> Self {
        View { batch, contexts }
    }

    /// Another batch (one made from this one), over the same table.
    pub fn over<'b>(&self, batch: &'b FlushBatch) -> View<'b>
    where
        'a: 'b,
    {
        View {
            batch,
            contexts: self.contexts,
        }
    }

    pub fn desc(&self, m: &FlushedMetric) -> Desc<'a> {
        match m.desc {
            DescRef::Arena { arena, offset } => {
                Desc::decode(&self.batch.arenas[arena as usize], offset)
            }
            DescRef::Slot(slot) => self.contexts.desc(slot),
            // The sink thread resolves every key before a sink sees the batch, and drops (and
            // counts) a point whose context is unknown; nothing else builds a `View` over keys.
            DescRef::Context(key) => self.contexts.desc_of(key),
        }
    }
}
