//! Typed internal counters, one set per shard, folded at every window close.
//!
//! Counters are plain fields bumped by their shard only (no atomics: per-core state). At each
//! close the shard takes a `TelemetrySnapshot` (counts since the last close, gauges as of now),
//! emits it as `corestatsd.*` metrics tagged `shard:N` unless `--no-self-metrics`, and the sink
//! thread logs one summary line per window once every shard has reported.

use std::collections::BTreeMap;

use crate::merge::desc;
use crate::protocol::{EventError, MetricType, ParseError, ServiceCheckError};
use crate::sink::{FlushBatch, FlushedMetric, OutKind, Suffix};

/// Why a well-formed message was not passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// `|T` on a histogram, timer, set or distribution: only gauges and counters may carry one.
    TimestampedType,
    /// An event beyond `--max-pending-events` in one window.
    EventOverflow,
    /// A service check beyond `--max-pending-events` in one window.
    ServiceCheckOverflow,
}

/// The first line rejected in a window, kept to name it in the window's log line: the log
/// stays bounded (one line per window) and still shows what a client got wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RejectSample {
    pub reason: &'static str,
    line: [u8; 96],
    len: u8,
    /// The line was longer than the sample.
    cut: bool,
}

impl RejectSample {
    pub fn new(reason: &'static str, line: &[u8]) -> Self {
        let mut s = RejectSample {
            reason,
            line: [0; 96],
            len: line.len().min(96) as u8,
            cut: line.len() > 96,
        };
        s.line[..s.len as usize].copy_from_slice(&line[..s.len as usize]);
        s
    }

    pub fn line(&self) -> &[u8] {
        &self.line[..self.len as usize]
    }
}

impl std::fmt::Display for RejectSample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = String::from_utf8_lossy(self.line());
        let more = if self.cut { "..." } else { "" };
        write!(f, "{:?}{more} ({})", text, self.reason)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub datagrams: u64,
    pub bytes: u64,
    pub metrics: u64,
    pub parse_errors: [u64; ParseError::ALL.len()],
    /// Datagrams longer than `--buffer-size-bytes`; their cut last line is dropped.
    pub truncated: u64,
    /// Receive calls that filled every slot of the pool: more was waiting in the socket.
    pub pool_full: u64,
    /// Datagrams the kernel dropped because the socket's receive buffer was full (SO_RXQ_OVFL;
    /// reported with the next datagram that arrives).
    pub kernel_drops: u64,
    pub unsupported_timestamped: u64,
    pub events: u64,
    pub service_checks: u64,
    pub event_errors: [u64; 3],
    pub service_check_errors: [u64; 3],
    /// Events and service checks kept but with a bad optional field (`d:`, `p:`, `t:`).
    pub field_warnings: u64,
    /// Events and service checks beyond `--max-pending-events`.
    pub events_dropped: u64,
    pub service_checks_dropped: u64,
    /// Longest time the receive loop yielded to other work while data could be waiting, in µs.
    pub recv_max_pause_us: u64,
    /// Socket errors other than "would block".
    pub recv_errors: u64,
    /// Last lines dropped for lacking `\n` on an `--eol-required` transport.
    pub unterminated: u64,
    /// Datagrams copied to `--forward-addr`, and those the kernel did not take.
    pub forwarded: u64,
    pub forward_errors: u64,
    /// The window's first rejected line.
    pub first_reject: Option<RejectSample>,
}

impl Counters {
    /// Counts a rejected metric line; the window's first rejected line is kept for the log.
    pub fn parse_error(&mut self, e: ParseError, line: &[u8]) {
        self.parse_errors[e.index()] += 1;
        self.sample_reject(e.reason(), line);
    }

    pub fn event_error(&mut self, e: EventError, line: &[u8]) {
        self.event_errors[e as usize] += 1;
        self.sample_reject(e.reason(), line);
    }

    pub fn service_check_error(&mut self, e: ServiceCheckError, line: &[u8]) {
        self.service_check_errors[e as usize] += 1;
        self.sample_reject(e.reason(), line);
    }

    fn sample_reject(&mut self, reason: &'static str, line: &[u8]) {
        if self.first_reject.is_none() {
            self.first_reject = Some(RejectSample::new(reason, line));
        }
    }

    pub fn unsupported(&mut self, u: Unsupported) {
        match u {
            Unsupported::TimestampedType => self.unsupported_timestamped += 1,
            Unsupported::EventOverflow => self.events_dropped += 1,
            Unsupported::ServiceCheckOverflow => self.service_checks_dropped += 1,
        }
    }

    fn add(&mut self, o: &Counters) {
        self.datagrams += o.datagrams;
        self.bytes += o.bytes;
        self.metrics += o.metrics;
        for (a, b) in self.parse_errors.iter_mut().zip(o.parse_errors) {
            *a += b;
        }
        self.truncated += o.truncated;
        self.pool_full += o.pool_full;
        self.kernel_drops += o.kernel_drops;
        self.unsupported_timestamped += o.unsupported_timestamped;
        self.events += o.events;
        self.service_checks += o.service_checks;
        for (a, b) in self.event_errors.iter_mut().zip(o.event_errors) {
            *a += b;
        }
        for (a, b) in self
            .service_check_errors
            .iter_mut()
            .zip(o.service_check_errors)
        {
            *a += b;
        }
        self.field_warnings += o.field_warnings;
        self.events_dropped += o.events_dropped;
        self.service_checks_dropped += o.service_checks_dropped;
        self.recv_max_pause_us = self.recv_max_pause_us.max(o.recv_max_pause_us);
        self.recv_errors += o.recv_errors;
        self.unterminated += o.unterminated;
        self.forwarded += o.forwarded;
        self.forward_errors += o.forward_errors;
        self.first_reject = self.first_reject.or(o.first_reject);
    }
}

/// One shard's counters for one window, plus gauges read at the close.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TelemetrySnapshot {
    pub shard: usize,
    pub window: u64,
    pub counters: Counters,
    pub live_contexts: u64,
}

impl TelemetrySnapshot {
    /// Appends this snapshot as `corestatsd.*` points to `out`.
    pub fn emit(&self, out: &mut FlushBatch, host: Option<&[u8]>, interval: u32) {
        let shard_tag = format!("shard:{}", self.shard);
        let arena_index = out.arenas.len() as u32;
        let mut arena = Vec::new();
        let mut points = Vec::new();
        let mut point = |name: &str, extra: Option<String>, kind: OutKind, value: f64| {
            let mut tags: Vec<&[u8]> = vec![shard_tag.as_bytes()];
            if let Some(e) = &extra {
                tags.push(e.as_bytes());
            }
            tags.sort();
            let mt = if kind == OutKind::Count {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let off = desc::encode(
                &mut arena,
                mt,
                name.as_bytes(),
                host,
                None,
                tags.into_iter(),
            );
            points.push(FlushedMetric {
                arena: arena_index,
                desc: off,
                suffix: Suffix::None,
                kind,
                value,
                ts: self.window,
                interval,
                sketch: None,
            });
        };
        let c = &self.counters;
        for (name, v) in [
            ("corestatsd.datagrams", c.datagrams),
            ("corestatsd.bytes", c.bytes),
            ("corestatsd.metrics", c.metrics),
            ("corestatsd.truncated_datagrams", c.truncated),
            ("corestatsd.pool_full", c.pool_full),
            ("corestatsd.kernel_drops", c.kernel_drops),
            ("corestatsd.receive_errors", c.recv_errors),
            ("corestatsd.unterminated_lines", c.unterminated),
            ("corestatsd.forwarded", c.forwarded),
            ("corestatsd.forward_errors", c.forward_errors),
        ] {
            point(name, None, OutKind::Count, v as f64);
        }
        for e in ParseError::ALL {
            let n = c.parse_errors[e.index()];
            point(
                "corestatsd.parse_errors",
                Some(format!("reason:{}", e.reason())),
                OutKind::Count,
                n as f64,
            );
        }
        point(
            "corestatsd.unsupported",
            Some("what:timestamped_type".into()),
            OutKind::Count,
            c.unsupported_timestamped as f64,
        );
        for (name, n) in [
            ("corestatsd.events", c.events),
            ("corestatsd.service_checks", c.service_checks),
            ("corestatsd.event_field_warnings", c.field_warnings),
        ] {
            point(name, None, OutKind::Count, n as f64);
        }
        for (what, n) in [
            ("event", c.events_dropped),
            ("service_check", c.service_checks_dropped),
        ] {
            point(
                "corestatsd.pending_full_drops",
                Some(format!("what:{what}")),
                OutKind::Count,
                n as f64,
            );
        }
        let event_reasons = EventError::ALL.map(|e| {
            (
                "corestatsd.event_parse_errors",
                e.reason(),
                c.event_errors[e as usize],
            )
        });
        let check_reasons = ServiceCheckError::ALL.map(|e| {
            (
                "corestatsd.service_check_parse_errors",
                e.reason(),
                c.service_check_errors[e as usize],
            )
        });
        for (name, reason, n) in event_reasons.into_iter().chain(check_reasons) {
            point(
                name,
                Some(format!("reason:{reason}")),
                OutKind::Count,
                n as f64,
            );
        }
        point(
            "corestatsd.live_contexts",
            None,
            OutKind::Gauge,
            self.live_contexts as f64,
        );
        point(
            "corestatsd.receive_max_pause_us",
            None,
            OutKind::Gauge,
            c.recv_max_pause_us as f64,
        );
        out.arenas.push(arena);
        out.metrics.extend(points);
    }
}

/// Sums snapshots per window on the sink thread and logs one line when all shards reported.
pub struct WindowSummaries {
    shards: usize,
    windows: BTreeMap<u64, (usize, Counters, u64)>,
}

impl WindowSummaries {
    pub fn new(shards: usize) -> Self {
        WindowSummaries {
            shards,
            windows: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, s: TelemetrySnapshot) {
        let w = self.windows.entry(s.window).or_default();
        w.0 += 1;
        w.1.add(&s.counters);
        w.2 += s.live_contexts;
        if w.0 >= self.shards {
            let (_, c, live) = self.windows.remove(&s.window).unwrap_or_default();
            log_summary(s.window, &c, live);
        }
    }

    /// At shutdown: logs windows some shard never reported (there should be none).
    pub fn log_incomplete(&mut self) {
        for (window, (n, c, live)) in std::mem::take(&mut self.windows) {
            eprintln!(
                "corestatsd: window {window} reported by {n} of {} shards",
                self.shards
            );
            log_summary(window, &c, live);
        }
    }
}

fn log_summary(window: u64, c: &Counters, live: u64) {
    let errors: u64 = c.parse_errors.iter().sum::<u64>()
        + c.event_errors.iter().sum::<u64>()
        + c.service_check_errors.iter().sum::<u64>();
    let dropped = c.events_dropped + c.service_checks_dropped;
    eprintln!(
        "corestatsd: window {window}: datagrams={} bytes={} metrics={} events={} \
         service_checks={} parse_errors={errors} truncated={} unsupported={} \
         pending_full_drops={dropped} kernel_drops={} receive_errors={} forward_errors={} \
         live_contexts={live} receive_max_pause_us={}{}",
        c.datagrams,
        c.bytes,
        c.metrics,
        c.events,
        c.service_checks,
        c.truncated,
        c.unsupported_timestamped,
        c.kernel_drops,
        c.recv_errors,
        c.forward_errors,
        c.recv_max_pause_us,
        c.first_reject
            .map(|r| format!("; first rejected line: {r}"))
            .unwrap_or_default()
    );
}
