//! corestatsd: a thread-per-core DogStatsD server.
//!
//! The modules follow the data path, and each may import only the ones listed before it
//! (`layout_tests` reads every `use crate::` line and enforces it):
//!
//! 1. `label`: the enums that tag counts and the arrays they index, `memory`: the counting
//!    allocator and the memory limit's pressure level, and `proto`: the protobuf wire format's
//!    write side (leaves);
//! 2. `protocol` (bytes to borrowed metrics, events, service checks), `listen` (sockets, batched
//!    receive, framing, pid to container) and `map` (mapper, namespace, block list, extra tags);
//! 3. `values`: the per-type aggregates (counter, gauge, set, histogram, DDSketch);
//! 4. `flushed`: the flushed form every downstream reads (`FlushBatch`, context descriptions,
//!    the sink's context table);
//! 5. `counters`: the per-shard counters, each declared once;
//! 6. `aggregate`: `ingest` (parse into the aggregator), contexts and their caps, windows, the
//!    batches a close hands each owning shard;
//! 7. `merge`: the owner's merge of every shard's batches into the flushed form;
//! 8. `telemetry`: counters to `corestatsd.*` points and the window log line;
//! 9. `sink`: the downstream writers and the sink thread;
//! 10. `config`: flags and files to validated settings;
//! 11. `shard`: the per-core runtime (executors, receive, window and merge tasks);
//! 12. `operator`: the HTTP endpoint (`/readyz`, `/healthz`, `/metrics`, `/status`) over what
//!     shards and the sink thread post on `telemetry::board`;
//! 13. `run`: start-up, signals and shutdown.
//!
//! Everything is crate-private; `bench_api` is what the benchmarks reach, `Flags`, `Config` and
//! `run` what the binary does.

pub(crate) mod label;
pub mod memory;
pub(crate) mod proto;

pub(crate) mod listen;
pub(crate) mod map;
pub(crate) mod protocol;

pub(crate) mod values;

pub(crate) mod flushed;

pub(crate) mod counters;

pub(crate) mod aggregate;

pub(crate) mod merge;

pub(crate) mod telemetry;

pub(crate) mod sink;

pub(crate) mod config;

pub(crate) mod shard;

pub(crate) mod operator;

pub(crate) mod run;

#[cfg(test)]
mod layout_tests;

pub use config::{Command, Config, Flags, FlagsError, parse_args};
pub use operator::cli::command;
pub use run::{RunError, run};

/// The stages the criterion benchmarks (`benches/`) and the fuzz targets (`fuzz/`) drive one at
/// a time: what they need and nothing more. Not a stable interface.
#[doc(hidden)]
pub mod bench_api {
    pub use crate::aggregate::{
        AggregateConfig, Aggregator, ClosedWindow, ContextBatch, GROUP, NEWS_CHUNK, Partial, ingest,
    };
    pub use crate::counters::Counters;
    pub use crate::flushed::{Contexts, FlushBatch, FlushedMetric, NewContexts, Suffix, View};
    pub use crate::listen::capture::HEADER as CAPTURE_HEADER;
    pub use crate::listen::{FrameError, Framer, Framing};
    pub use crate::map::tag_filter::TagFilters;
    pub use crate::map::{Mapper, NameConfig, NameOut, ProfileSpec, Reference, Stage, check};
    pub use crate::merge::{HistogramOutput, Merger};
    pub use crate::protocol::{Metric, parse_metric, parse_metric_into};
    pub use crate::shard::CHUNK;
    pub use crate::sink::Sink;
    pub use crate::sink::datadog::{AGENT_LIMITS, CountersAs, Encoding, encode_batch};
    pub use crate::sink::jsonl::JsonlSink;
    pub use crate::sink::payload::Compression;
    pub use crate::sink::{prometheus, relay};
    pub use crate::values::Limits;
}
