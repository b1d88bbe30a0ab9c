//! corestatsd: a thread-per-core DogStatsD server.
//!
//! The modules follow the data path: `listen` (sockets, batched receive) → `protocol` (bytes to
//! borrowed metrics) → `aggregate` (per-core contexts and windows) → `merge` (partials to their
//! owning core) → `sink` (downstream writers), with `telemetry` counting along the way, `shard`
//! wiring one pinned executor per core and `config` turning flags into settings.

pub mod aggregate;
pub mod config;
pub mod listen;
pub mod map;
pub mod merge;
pub mod protocol;
pub mod run;
pub mod shard;
pub mod sink;
pub mod telemetry;
