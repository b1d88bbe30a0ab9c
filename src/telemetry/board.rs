//! The operator's board: what the HTTP endpoint (`operator`) shows, published by the threads
//! that know it. Each shard beats its heart from a timer task (`beat`); the sink thread posts
//! every completed window's counters (`WindowSummaries`) and each downstream's delivery state
//! (`post_downstreams`); `run` says when the server is ready.
//!
//! Shared behind an `Arc`: heartbeats are one atomic per shard, written by its own timer only;
//! everything else sits under one lock that writers take once per window and readers (HTTP
//! requests) only to copy it out. Never touched per packet.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::counters::Counters;

/// Upper bounds of the histogram buckets of window closes and receive pauses, in microseconds
/// (a `+Inf` bucket follows).
pub const BUCKETS_US: [u64; 12] = [
    100, 500, 1_000, 2_000, 5_000, 10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 5_000_000,
];

/// Observations of one shard, one per window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Per bucket of `BUCKETS_US` and `+Inf`, not cumulative.
    pub counts: [u64; BUCKETS_US.len() + 1],
    pub sum_us: u64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, us: u64) {
        let bucket = BUCKETS_US.partition_point(|&b| b < us);
        self.counts[bucket] += 1;
        self.sum_us += us;
        self.count += 1;
    }
}

/// One downstream's delivery, as of the last window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DownstreamStatus {
    /// As given to `--downstream`.
    pub name: String,
    /// Points the sink thread handed it, and points it could not take (write errors).
    pub written_points: u64,
    pub failed_points: u64,
    /// HTTP downstreams: payloads delivered, retried, given up; what waits in memory and on disk.
    pub delivered_payloads: u64,
    pub retries: u64,
    pub dropped_payloads: u64,
    pub dropped_points: u64,
    pub queued_bytes: u64,
    pub spilled_bytes: u64,
    pub last_error: Option<String>,
    /// Gave payloads up in the last window (its queue and spill were full, or the intake
    /// refused them): `/healthz` fails.
    pub failing: bool,
}

/// One of a window's busiest contexts, described.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BusyContext {
    pub name: String,
    #[serde(rename = "type")]
    pub metric_type: &'static str,
    pub host: Option<String>,
    pub tags: Vec<String>,
    pub samples: u64,
}

/// What `/contexts` answers, as of the last completed window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ContextStats {
    /// Start (unix seconds) of the window the busiest contexts are of.
    pub window: Option<u64>,
    /// Samples are counted (`--context-stats`).
    pub samples_counted: bool,
    /// Most samples first.
    pub busiest: Vec<BusyContext>,
    /// Metric names by live contexts, most first.
    pub names: Vec<(String, u64)>,
    pub live_contexts: u64,
}

/// What the sink thread posts (a copy is what a request reads).
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// Windows completed, and the start (unix seconds) of the last.
    pub windows: u64,
    pub last_window: Option<u64>,
    /// Per shard: the last completed window's counters.
    pub last: Vec<Counters>,
    /// Per shard: since the start (counts summed, levels and maxima as of the last window).
    pub totals: Vec<Counters>,
    /// Per shard: each window's close time and longest receive pause.
    pub flush: Vec<Histogram>,
    pub pause: Vec<Histogram>,
    pub heap_bytes: u64,
    pub rss_bytes: u64,
    pub downstreams: Vec<DownstreamStatus>,
    pub contexts: ContextStats,
}

pub struct Board {
    started: Instant,
    ready: AtomicBool,
    /// Per shard: milliseconds from `started` to its last heartbeat, plus one (0: none yet).
    beats: Box<[AtomicU64]>,
    /// Per shard: configuration reloads (SIGHUP) applied.
    reloads: Box<[AtomicU64]>,
    /// SIGHUPs whose configuration did not load, and the last one's error.
    refused_reload: Mutex<(u64, Option<String>)>,
    published: Mutex<Published>,
}

impl Board {
    pub fn new(shards: usize) -> Board {
        Board {
            started: Instant::now(),
            ready: AtomicBool::new(false),
            beats: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            reloads: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            refused_reload: Mutex::new((0, None)),
            published: Mutex::new(Published {
                last: vec![Counters::default(); shards],
                totals: vec![Counters::default(); shards],
                flush: vec![Histogram::default(); shards],
                pause: vec![Histogram::default(); shards],
                ..Published::default()
            }),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every shard runs and every socket is bound.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Shard `shard`'s loop ran just now.
    pub fn beat(&self, shard: usize) {
        let ms = self.started.elapsed().as_millis() as u64 + 1;
        if let Some(b) = self.beats.get(shard) {
            b.store(ms, Ordering::Relaxed);
        }
    }

    /// Shard `shard` applied a configuration reload.
    pub fn reloaded(&self, shard: usize) {
        if let Some(r) = self.reloads.get(shard) {
            r.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reloads each shard has applied.
    pub fn reloads_applied(&self) -> Vec<u64> {
        self.reloads
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect()
    }

    /// A SIGHUP's configuration did not load.
    pub fn reload_refused(&self, error: String) {
        let mut r = self
            .refused_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        r.0 += 1;
        r.1 = Some(error);
    }

    /// SIGHUPs refused so far, and the last one's error.
    pub fn refused_reloads(&self) -> (u64, Option<String>) {
        self.refused_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How long ago each shard last beat (`None`: never).
    pub fn since_beats(&self) -> Vec<Option<Duration>> {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        self.beats
            .iter()
            .map(|b| match b.load(Ordering::Relaxed) {
                0 => None,
                at => Some(Duration::from_millis(now.saturating_sub(at))),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A completed window: each reporting shard's counters.
    pub fn post_window<'a>(
        &self,
        window: u64,
        reported: impl IntoIterator<Item = (usize, &'a Counters)>,
        heap_bytes: u64,
        rss_bytes: u64,
    ) {
        let mut p = self.lock();
        p.windows += 1;
        p.last_window = Some(p.last_window.map_or(window, |w| w.max(window)));
        p.heap_bytes = heap_bytes;
        p.rss_bytes = rss_bytes;
        for (shard, c) in reported {
            if shard >= p.last.len() {
                continue;
            }
            p.last[shard] = *c;
            p.totals[shard].accumulate(c);
            p.flush[shard].observe(c.flush_duration_us);
            p.pause[shard].observe(c.receive_max_pause_us);
        }
    }

    pub fn post_downstreams(&self, downstreams: Vec<DownstreamStatus>) {
        self.lock().downstreams = downstreams;
    }

    pub fn post_contexts(&self, contexts: ContextStats) {
        self.lock().contexts = contexts;
    }

    /// The `/contexts` part alone (the rest is not copied).
    pub fn context_stats(&self) -> ContextStats {
        self.lock().contexts.clone()
    }

    pub fn published(&self) -> Published {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_accumulate_counts_and_keep_the_last_levels() {
        let board = Board::new(2);
        let mut c = Counters {
            metrics: 10,
            live_contexts: 7,
            flush_duration_us: 1_500,
            ..Counters::default()
        };
        board.post_window(10, [(0, &c)], 0, 0);
        c.metrics = 5;
        c.live_contexts = 3;
        c.flush_duration_us = 20;
        board.post_window(20, [(0, &c), (1, &c), (9, &c)], 0, 0);
        let p = board.published();
        assert_eq!((p.windows, p.last_window), (2, Some(20)));
        assert_eq!((p.totals[0].metrics, p.totals[0].live_contexts), (15, 3));
        assert_eq!((p.totals[1].metrics, p.last[0].metrics), (5, 5));
        // 1500 us falls in the (1000, 2000] bucket, 20 us in the first.
        assert_eq!(p.flush[0].counts[3], 1);
        assert_eq!(p.flush[0].counts[0], 1);
        assert_eq!((p.flush[0].count, p.flush[0].sum_us), (2, 1_520));
    }

    #[test]
    fn heartbeats_read_as_ages() {
        let board = Board::new(2);
        assert_eq!(board.since_beats(), vec![None, None]);
        board.beat(1);
        let ages = board.since_beats();
        assert!(ages[0].is_none());
        assert!(ages[1].is_some_and(|a| a < Duration::from_secs(5)));
        assert!(!board.is_ready());
        board.set_ready();
        assert!(board.is_ready());
    }
}
