//! Self-telemetry: every shard's `Counters` for a window (`TelemetrySnapshot`), gathered on the
//! sink thread, and once all shards have reported, written as `corestatsd.*` points and one log
//! line, both generated from the counters' declarations (`counters::SPECS`).
//!
//! Quiet by default: points are sums over the shards (one series per shard with
//! `--self-metrics-per-shard`), a transport that is not enabled never appears, and a series
//! declared `OnceNonZero` (errors, drops) appears from the first window it is non-zero in. Owns
//! no counter itself; must not touch shard state (it runs on the sink thread). Completed windows
//! also go to the operator's board (`board`), which the HTTP endpoint reads.

pub mod board;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use crate::aggregate::BUSIEST;
use crate::counters::{Counters, Kind, Labels, Show};
use crate::flushed::{FlushBatch, OutKind, PointWriter};
use crate::listen::Transport;
use board::Board;

/// One shard's counters for one window.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySnapshot {
    pub shard: usize,
    pub window: u64,
    pub counters: Counters,
    /// The metric names with the most contexts refused by a cap this window (at most
    /// `TOP_REFUSED`, most first).
    pub refused_by_metric: Vec<(Box<[u8]>, u64)>,
    /// With `--context-stats`: the shard's busiest contexts of the window, (key, samples).
    pub busiest: Vec<(u64, u32)>,
}

/// Metric names the log line and `corestatsd.contexts_refused_by_metric` name per window.
pub const TOP_REFUSED: usize = 10;

/// How self-telemetry is written.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub shards: usize,
    /// Emit points at all (`--no-self-metrics` turns them off; the log line stays).
    pub points: bool,
    /// One series per shard (tagged `shard:N`) instead of one per process.
    pub per_shard: bool,
    /// Transports with a listener: series of the others never appear.
    pub transports: Vec<Transport>,
    pub host: Option<Vec<u8>>,
    pub interval: u32,
}

/// A completed window's telemetry: its start and its self-metric points (empty without points).
pub struct WindowTelemetry {
    pub window: u64,
    pub points: FlushBatch,
    /// The busiest contexts over every shard, (key, samples), most first (`BUSIEST` at most;
    /// empty without `--context-stats`).
    pub busiest: Vec<(u64, u64)>,
}

/// Gathers snapshots per window on the sink thread.
pub struct WindowSummaries {
    cfg: TelemetryConfig,
    windows: BTreeMap<u64, Vec<TelemetrySnapshot>>,
    seen: NonZeroSeen,
    /// Where completed windows are posted for the HTTP endpoint, when there is one.
    board: Option<Arc<Board>>,
}

impl WindowSummaries {
    pub fn new(cfg: TelemetryConfig) -> Self {
        WindowSummaries {
            cfg,
            windows: BTreeMap::new(),
            seen: NonZeroSeen::default(),
            board: None,
        }
    }

    /// Posts every completed window to `board` too.
    pub fn with_board(mut self, board: Option<Arc<Board>>) -> Self {
        self.board = board;
        self
    }

    /// Adds one shard's snapshot; once every shard has reported its window, logs the window's
    /// line and returns its points.
    pub fn add(&mut self, s: TelemetrySnapshot) -> Option<WindowTelemetry> {
        let window = s.window;
        let reported = self.windows.entry(window).or_default();
        reported.push(s);
        if reported.len() < self.cfg.shards {
            return None;
        }
        let reported = self.windows.remove(&window)?;
        Some(self.complete(window, &reported))
    }

    /// At shutdown: the windows some shard never reported (there should be none), logged and
    /// written with what arrived.
    pub fn finish_incomplete(&mut self) -> Vec<WindowTelemetry> {
        std::mem::take(&mut self.windows)
            .into_iter()
            .map(|(window, reported)| {
                eprintln!(
                    "corestatsd: window {window} reported by {} of {} shards",
                    reported.len(),
                    self.cfg.shards
                );
                self.complete(window, &reported)
            })
            .collect()
    }

    fn complete(&mut self, window: u64, reported: &[TelemetrySnapshot]) -> WindowTelemetry {
        let mut total = Counters::default();
        for s in reported {
            total.fold(&s.counters);
        }
        let refused = top_refused(reported);
        let enabled = |labels: &Labels| transport_enabled(&self.cfg.transports, labels);
        let mut line = log_line(window, &total, &enabled);
        if !refused.is_empty() {
            let names: Vec<String> = refused
                .iter()
                .map(|(n, c)| format!("{}={c}", String::from_utf8_lossy(n)))
                .collect();
            let _ = write!(line, "; contexts refused most by: {}", names.join(","));
        }
        // The process' memory (the heap as its allocator counts it; 0 where that allocator is
        // not in use, as in unit tests).
        let heap = crate::memory::heap_bytes();
        let rss = crate::memory::resident_bytes().unwrap_or(0);
        if heap > 0 {
            let _ = write!(line, " heap_bytes={heap} rss_bytes={rss}");
        }
        eprintln!("{line}");
        if let Some(b) = &self.board {
            let each = reported.iter().map(|s| (s.shard, &s.counters));
            b.post_window(window, each, heap, rss);
        }
        let mut points = FlushBatch::default();
        if self.cfg.points {
            let mut w = PointWriter::new(self.cfg.host.as_deref(), window, self.cfg.interval);
            if self.cfg.per_shard {
                for s in reported {
                    let shard = format!("shard:{}", s.shard);
                    emit(&s.counters, Some(&shard), &self.cfg, &mut self.seen, &mut w);
                }
            } else {
                emit(&total, None, &self.cfg, &mut self.seen, &mut w);
            }
            for (name, n) in &refused {
                let tag = format!("metric:{}", String::from_utf8_lossy(name));
                let point = "corestatsd.contexts_refused_by_metric";
                w.point(point, &[&tag], OutKind::Count, *n as f64);
            }
            if heap > 0 {
                w.point("corestatsd.heap_bytes", &[], OutKind::Gauge, heap as f64);
                w.point("corestatsd.rss_bytes", &[], OutKind::Gauge, rss as f64);
            }
            w.finish(&mut points);
        }
        WindowTelemetry {
            window,
            points,
            busiest: busiest(reported),
        }
    }
}

/// The busiest contexts over every shard's report: a context several shards saw sums.
fn busiest(reported: &[TelemetrySnapshot]) -> Vec<(u64, u64)> {
    let mut sums: BTreeMap<u64, u64> = BTreeMap::new();
    for &(key, n) in reported.iter().flat_map(|s| &s.busiest) {
        *sums.entry(key).or_default() += u64::from(n);
    }
    let mut top: Vec<(u64, u64)> = sums.into_iter().collect();
    top.sort_unstable_by_key(|&(k, n)| (std::cmp::Reverse(n), k));
    top.truncate(BUSIEST);
    top
}

/// The metric names with the most refused contexts over every shard's report.
fn top_refused(reported: &[TelemetrySnapshot]) -> Vec<(Box<[u8]>, u64)> {
    let mut sums: BTreeMap<&[u8], u64> = BTreeMap::new();
    for (name, n) in reported.iter().flat_map(|s| &s.refused_by_metric) {
        *sums.entry(name).or_default() += n;
    }
    let mut top: Vec<(Box<[u8]>, u64)> = sums.into_iter().map(|(k, v)| (k.into(), v)).collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    top.truncate(TOP_REFUSED);
    top
}

/// Whether a series' transport (if it has one) is enabled.
fn transport_enabled(enabled: &[Transport], labels: &Labels) -> bool {
    labels
        .iter()
        .filter(|(key, _)| *key == "transport")
        .all(|(_, name)| enabled.iter().any(|t| t.name() == *name))
}

/// Writes every shown series of `c` as a point.
fn emit(
    c: &Counters,
    shard: Option<&str>,
    cfg: &TelemetryConfig,
    seen: &mut NonZeroSeen,
    w: &mut PointWriter<'_>,
) {
    let mut tags: Vec<String> = Vec::new();
    c.visit(&mut |spec, series| {
        let name = format!("corestatsd.{}", spec.name);
        let kind = match spec.kind {
            Kind::Count => OutKind::Count,
            Kind::Max | Kind::Level => OutKind::Gauge,
        };
        series.each(&mut Vec::new(), &mut |labels, v| {
            if !transport_enabled(&cfg.transports, labels) {
                return;
            }
            tags.clear();
            tags.extend(labels.iter().map(|(k, v)| format!("{k}:{v}")));
            tags.extend(shard.map(str::to_owned));
            let shown = match spec.show {
                Show::Always => true,
                Show::OnceNonZero => seen.shows(&name, &tags, v != 0),
            };
            if shown {
                let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                w.point(&name, &tags, kind, v as f64);
            }
        });
    });
}

/// The window's log line: every logged counter that is always shown with its total, and the
/// others when non-zero, with their non-zero series (`parse_errors=2 (bad_value=2)`).
fn log_line(window: u64, c: &Counters, enabled: &dyn Fn(&Labels) -> bool) -> String {
    let mut line = format!("corestatsd: window {window}:");
    c.visit(&mut |spec, series| {
        if !spec.logged {
            return;
        }
        let (mut any, mut total, mut parts) = (false, 0u64, Vec::new());
        series.each(&mut Vec::new(), &mut |labels, v| {
            if !enabled(labels) {
                return;
            }
            any = true;
            total += v;
            if v > 0 && !labels.is_empty() {
                let names: Vec<&str> = labels.iter().map(|(_, name)| *name).collect();
                parts.push(format!("{}={v}", names.join(":")));
            }
        });
        match spec.show {
            Show::Always if any => {
                let _ = write!(line, " {}={total}", spec.name);
            }
            Show::OnceNonZero if total > 0 => {
                let _ = write!(line, " {}={total}", spec.name);
                if !parts.is_empty() {
                    let _ = write!(line, " ({})", parts.join(","));
                }
            }
            _ => {}
        }
    });
    if let Some(r) = c.first_reject {
        let _ = write!(line, "; first rejected line: {r}");
    }
    line
}

/// The self-metric series that have been non-zero so far: a `OnceNonZero` series shows from the
/// window it is first non-zero in, then every window (so a graph of it drops back to 0 instead
/// of ending). Bounded by the series the declarations allow.
#[derive(Default)]
pub struct NonZeroSeen(HashSet<String>);

impl NonZeroSeen {
    /// Whether the series (`name` with `tags`) shows this window.
    pub fn shows(&mut self, name: &str, tags: &[String], nonzero: bool) -> bool {
        let key = format!("{name}|{}", tags.join(","));
        if nonzero {
            self.0.insert(key);
            return true;
        }
        self.0.contains(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::{CloseReason, Stream};
    use crate::protocol::ParseError;

    fn cfg(per_shard: bool) -> TelemetryConfig {
        TelemetryConfig {
            shards: 2,
            points: true,
            per_shard,
            transports: vec![Transport::Udp],
            host: Some(b"h".to_vec()),
            interval: 10,
        }
    }

    fn snapshot(shard: usize, window: u64, f: impl FnOnce(&mut Counters)) -> TelemetrySnapshot {
        let mut counters = Counters::default();
        f(&mut counters);
        TelemetrySnapshot {
            shard,
            window,
            counters,
            refused_by_metric: Vec::new(),
            busiest: Vec::new(),
        }
    }

    /// `(name, tags, value)` of every point.
    fn points(t: &WindowTelemetry) -> Vec<(String, Vec<String>, f64)> {
        let b = &t.points;
        b.metrics
            .iter()
            .map(|m| {
                let d = b.desc(m);
                let tags = d
                    .tags()
                    .map(|t| String::from_utf8_lossy(t).into())
                    .collect();
                (String::from_utf8_lossy(d.name).into(), tags, m.value)
            })
            .collect()
    }

    #[test]
    fn an_idle_udp_server_writes_a_handful_of_process_wide_points() {
        let mut s = WindowSummaries::new(cfg(false));
        assert!(
            s.add(snapshot(0, 100, |_| {})).is_none(),
            "waits for shard 1"
        );
        let t = s.add(snapshot(1, 100, |c| c.live_contexts = 3)).unwrap();
        let names: Vec<String> = points(&t).into_iter().map(|p| p.0).collect();
        assert_eq!(
            names,
            [
                "corestatsd.packets",
                "corestatsd.bytes",
                "corestatsd.metrics",
                "corestatsd.kernel_drops",
                "corestatsd.live_contexts",
                "corestatsd.receive_max_pause_us",
                "corestatsd.flush_duration_us",
            ]
        );
        let p = points(&t);
        assert_eq!(p[0].1, ["transport:udp"], "only the enabled transport");
        assert_eq!(p[4].2, 3.0);
    }

    #[test]
    fn errors_show_from_their_first_non_zero_window_on_and_disabled_transports_never() {
        let mut s = WindowSummaries::new(TelemetryConfig {
            shards: 1,
            ..cfg(false)
        });
        let quiet = |t: &WindowTelemetry| {
            points(t)
                .into_iter()
                .filter(|p| p.0 == "corestatsd.parse_errors")
                .collect::<Vec<_>>()
        };
        let t = s.add(snapshot(0, 100, |_| {})).unwrap();
        assert!(quiet(&t).is_empty());
        let t = s
            .add(snapshot(0, 110, |c| {
                c.parse_errors[ParseError::BadValue] = 2;
                c.connections_closed[Stream::Tcp][CloseReason::Eof] = 1;
            }))
            .unwrap();
        assert_eq!(
            quiet(&t),
            [(
                "corestatsd.parse_errors".into(),
                vec!["reason:bad_value".into()],
                2.0
            )]
        );
        assert!(
            points(&t)
                .iter()
                .all(|p| p.0 != "corestatsd.connections_closed"),
            "tcp is not enabled"
        );
        let t = s.add(snapshot(0, 120, |_| {})).unwrap();
        assert_eq!(quiet(&t).len(), 1, "stays visible, at 0");
        assert_eq!(quiet(&t)[0].2, 0.0);
    }

    #[test]
    fn per_shard_series_are_tagged_and_sums_fold_every_shard() {
        let mut s = WindowSummaries::new(cfg(true));
        s.add(snapshot(0, 100, |c| c.metrics = 5));
        let t = s.add(snapshot(1, 100, |c| c.metrics = 7)).unwrap();
        let metrics: Vec<_> = points(&t)
            .into_iter()
            .filter(|p| p.0 == "corestatsd.metrics")
            .collect();
        assert_eq!(
            metrics,
            [
                ("corestatsd.metrics".into(), vec!["shard:0".into()], 5.0),
                ("corestatsd.metrics".into(), vec!["shard:1".into()], 7.0),
            ]
        );
    }

    #[test]
    fn the_log_line_names_totals_and_non_zero_reasons() {
        let mut c = Counters {
            metrics: 9,
            first_reject: Some(crate::counters::RejectSample::new("bad_value", b"a:x|c")),
            ..Counters::default()
        };
        c.parse_errors[ParseError::BadValue] = 2;
        c.parse_errors[ParseError::NoPipe] = 1;
        let enabled = |l: &Labels| transport_enabled(&[Transport::Udp], l);
        let line = log_line(7, &c, &enabled);
        assert!(
            line.starts_with("corestatsd: window 7: packets=0 bytes=0 "),
            "{line}"
        );
        assert!(line.contains(" metrics=9 "), "{line}");
        assert!(
            line.contains(" parse_errors=3 (no_pipe=1,bad_value=2)"),
            "{line}"
        );
        assert!(!line.contains("connections"), "{line}");
        assert!(
            line.ends_with("; first rejected line: \"a:x|c\" (bad_value)"),
            "{line}"
        );
    }
}
