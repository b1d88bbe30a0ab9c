//! Typed internal counters, one set per shard, folded at every window close.
//!
//! Counters are plain fields bumped by their shard only (no atomics: per-core state). At each
//! close the shard takes a `TelemetrySnapshot` (counts since the last close, gauges as of now),
//! emits it as `corestatsd.*` metrics tagged `shard:N` unless `--no-self-metrics`, and the sink
//! thread logs one summary line per window once every shard has reported.

use std::collections::BTreeMap;

use crate::listen::{CloseReason, Transport};
use crate::protocol::origin::Malformed;
use crate::protocol::{EventError, ParseError, ServiceCheckError};
use crate::sink::{FlushBatch, OutKind, PointWriter};

/// Why a well-formed message was not passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// `|T` on a histogram, timer, set or distribution: only gauges and counters may carry one.
    TimestampedType,
    /// An event beyond `--max-pending-events` in one window.
    EventOverflow,
    /// A service check beyond `--max-pending-events` in one window.
    ServiceCheckOverflow,
    /// A metric whose final name is on the block list.
    Blocked,
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

/// What one transport received.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TransportCounters {
    /// Datagrams, or frames (newline framing: reads that held complete lines).
    pub packets: u64,
    pub bytes: u64,
    /// Socket errors other than "would block" (receive or accept).
    pub errors: u64,
}

/// Why the sender of a unix socket message has no container id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// The kernel gave no pid (a sender in a pid namespace it cannot map).
    NoCredentials,
    /// `/proc/<pid>/cgroup` could not be read.
    Unreadable,
    /// The cgroup names no container.
    NoContainer,
}

impl Unresolved {
    pub const ALL: [Unresolved; 3] = [
        Unresolved::NoCredentials,
        Unresolved::Unreadable,
        Unresolved::NoContainer,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Unresolved::NoCredentials => "no_credentials",
            Unresolved::Unreadable => "unreadable",
            Unresolved::NoContainer => "no_container",
        }
    }
}

/// Stream transports (unix stream, TCP) index their connection counters by this.
pub fn stream_index(t: Transport) -> usize {
    match t {
        Transport::UdsStream => 0,
        _ => 1,
    }
}

const STREAMS: [Transport; 2] = [Transport::UdsStream, Transport::Tcp];

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub transports: [TransportCounters; Transport::ALL.len()],
    /// Connections accepted, per stream transport (`stream_index`).
    pub connections_opened: [u64; 2],
    /// Connections closed, per stream transport and `CloseReason`.
    pub connections_closed: [[u64; CloseReason::ALL.len()]; 2],
    /// Unix socket messages (datagrams or connections) whose sender's container is unknown,
    /// by `Unresolved`, and those resolved.
    pub origin_unresolved: [u64; Unresolved::ALL.len()],
    pub origin_resolved: u64,
    /// Messages with a malformed `|c:`, `|e:`, `|card:` (by `Malformed::FIELDS`); each is
    /// left out and the message kept.
    pub origin_field_errors: [u64; 3],
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
    /// Metrics dropped by the block list (`--block-metric`, `--block-metric-prefix`).
    pub blocked: u64,
    pub events: u64,
    pub service_checks: u64,
    pub event_errors: [u64; 3],
    pub service_check_errors: [u64; 3],
    /// Events and service checks kept but with a bad optional field (`d:`, `p:`, `t:`).
    pub field_warnings: u64,
    /// Events and service checks beyond `--max-pending-events`.
    pub events_dropped: u64,
    pub service_checks_dropped: u64,
    /// Longest window close (sweep, with receive running between chunks, and handing the
    /// batches to their owners), in µs: the time from a window's end to its partials leaving.
    pub flush_max_us: u64,
    /// Longest time the receive loop yielded to other work while data could be waiting, in µs.
    pub recv_max_pause_us: u64,
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

    pub fn origin_fields(&mut self, bad: Malformed) {
        for (n, bad) in self.origin_field_errors.iter_mut().zip(bad.as_array()) {
            *n += u64::from(bad);
        }
    }

    pub fn unsupported(&mut self, u: Unsupported) {
        match u {
            Unsupported::TimestampedType => self.unsupported_timestamped += 1,
            Unsupported::EventOverflow => self.events_dropped += 1,
            Unsupported::ServiceCheckOverflow => self.service_checks_dropped += 1,
            Unsupported::Blocked => self.blocked += 1,
        }
    }

    /// All transports' packets, bytes and errors.
    pub fn total(&self) -> TransportCounters {
        let mut t = TransportCounters::default();
        for x in &self.transports {
            t.packets += x.packets;
            t.bytes += x.bytes;
            t.errors += x.errors;
        }
        t
    }

    fn add(&mut self, o: &Counters) {
        for (a, b) in self.transports.iter_mut().zip(&o.transports) {
            a.packets += b.packets;
            a.bytes += b.bytes;
            a.errors += b.errors;
        }
        for i in 0..2 {
            self.connections_opened[i] += o.connections_opened[i];
            for (a, b) in self.connections_closed[i]
                .iter_mut()
                .zip(o.connections_closed[i])
            {
                *a += b;
            }
        }
        for (a, b) in self.origin_unresolved.iter_mut().zip(o.origin_unresolved) {
            *a += b;
        }
        self.origin_resolved += o.origin_resolved;
        for (a, b) in self
            .origin_field_errors
            .iter_mut()
            .zip(o.origin_field_errors)
        {
            *a += b;
        }
        self.metrics += o.metrics;
        for (a, b) in self.parse_errors.iter_mut().zip(o.parse_errors) {
            *a += b;
        }
        self.truncated += o.truncated;
        self.pool_full += o.pool_full;
        self.kernel_drops += o.kernel_drops;
        self.unsupported_timestamped += o.unsupported_timestamped;
        self.blocked += o.blocked;
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
        self.flush_max_us = self.flush_max_us.max(o.flush_max_us);
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
    /// Connections open at the close, per stream transport (`stream_index`).
    pub open_connections: [u64; 2],
}

impl TelemetrySnapshot {
    /// Appends this snapshot as `corestatsd.*` points to `out`.
    pub fn emit(&self, out: &mut FlushBatch, host: Option<&[u8]>, interval: u32) {
        let shard_tag = format!("shard:{}", self.shard);
        let mut w = PointWriter::new(host, self.window, interval);
        let mut point = |name: &str, extra: Option<String>, kind: OutKind, value: f64| {
            w.point(name, &shard_tag, extra.as_deref(), kind, value)
        };
        let c = &self.counters;
        for t in Transport::ALL {
            let x = c.transports[t as usize];
            for (name, v) in [
                ("corestatsd.packets", x.packets),
                ("corestatsd.bytes", x.bytes),
                ("corestatsd.receive_errors", x.errors),
            ] {
                point(
                    name,
                    Some(format!("transport:{}", t.name())),
                    OutKind::Count,
                    v as f64,
                );
            }
        }
        for t in STREAMS {
            let i = stream_index(t);
            let tag = || Some(format!("transport:{}", t.name()));
            point(
                "corestatsd.connections",
                tag(),
                OutKind::Gauge,
                self.open_connections[i] as f64,
            );
            point(
                "corestatsd.connections_opened",
                tag(),
                OutKind::Count,
                c.connections_opened[i] as f64,
            );
            for r in CloseReason::ALL {
                point(
                    "corestatsd.connections_closed",
                    Some(format!("transport:{},reason:{}", t.name(), r.reason())),
                    OutKind::Count,
                    c.connections_closed[i][r as usize] as f64,
                );
            }
        }
        for u in Unresolved::ALL {
            point(
                "corestatsd.origin_unresolved",
                Some(format!("reason:{}", u.reason())),
                OutKind::Count,
                c.origin_unresolved[u as usize] as f64,
            );
        }
        point(
            "corestatsd.origin_resolved",
            None,
            OutKind::Count,
            c.origin_resolved as f64,
        );
        for (field, n) in Malformed::FIELDS.iter().zip(c.origin_field_errors) {
            point(
                "corestatsd.origin_field_errors",
                Some(format!("field:{field}")),
                OutKind::Count,
                n as f64,
            );
        }
        for (name, v) in [
            ("corestatsd.metrics", c.metrics),
            ("corestatsd.truncated_datagrams", c.truncated),
            ("corestatsd.pool_full", c.pool_full),
            ("corestatsd.kernel_drops", c.kernel_drops),
            ("corestatsd.unterminated_lines", c.unterminated),
            ("corestatsd.blocked_metrics", c.blocked),
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
        point(
            "corestatsd.flush_duration_us",
            None,
            OutKind::Gauge,
            c.flush_max_us as f64,
        );
        w.finish(out);
    }
}

/// Sums snapshots per window on the sink thread and logs one line when all shards reported.
pub struct WindowSummaries {
    shards: usize,
    windows: BTreeMap<u64, (usize, Counters, u64, u64)>,
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
        w.3 += s.open_connections.iter().sum::<u64>();
        if w.0 >= self.shards {
            let (_, c, live, conns) = self.windows.remove(&s.window).unwrap_or_default();
            log_summary(s.window, &c, live, conns);
        }
    }

    /// At shutdown: logs windows some shard never reported (there should be none).
    pub fn log_incomplete(&mut self) {
        for (window, (n, c, live, conns)) in std::mem::take(&mut self.windows) {
            eprintln!(
                "corestatsd: window {window} reported by {n} of {} shards",
                self.shards
            );
            log_summary(window, &c, live, conns);
        }
    }
}

fn log_summary(window: u64, c: &Counters, live: u64, connections: u64) {
    let errors: u64 = c.parse_errors.iter().sum::<u64>()
        + c.event_errors.iter().sum::<u64>()
        + c.service_check_errors.iter().sum::<u64>();
    let dropped = c.events_dropped + c.service_checks_dropped;
    let total = c.total();
    let closed_on_error: u64 = c
        .connections_closed
        .iter()
        .flat_map(|r| CloseReason::ALL.map(|x| (x, r[x as usize])))
        .filter(|(x, _)| x.is_error())
        .map(|(_, n)| n)
        .sum();
    let unresolved: u64 = c.origin_unresolved.iter().sum();
    eprintln!(
        "corestatsd: window {window}: packets={} bytes={} metrics={} events={} \
         service_checks={} parse_errors={errors} truncated={} unsupported={} blocked={} \
         pending_full_drops={dropped} kernel_drops={} receive_errors={} forward_errors={} \
         connections={connections} connections_closed_on_error={closed_on_error} \
         origin_unresolved={unresolved} live_contexts={live} receive_max_pause_us={} \
         flush_us={}{}",
        total.packets,
        total.bytes,
        c.metrics,
        c.events,
        c.service_checks,
        c.truncated,
        c.unsupported_timestamped,
        c.blocked,
        c.kernel_drops,
        total.errors,
        c.forward_errors,
        c.recv_max_pause_us,
        c.flush_max_us,
        c.first_reject
            .map(|r| format!("; first rejected line: {r}"))
            .unwrap_or_default()
    );
}
