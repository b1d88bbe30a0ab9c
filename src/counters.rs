//! The per-shard counters, each declared once.
//!
//! A declaration in `counters!` gives the field (a number, or one per label: `by!(ParseError)`),
//! and `SPECS` the rest: the point's name, how shards' values fold, when the point shows, whether
//! the window log line carries it and its help text. `telemetry` turns them into points, the log
//! line and (later) any other view from `Counters::visit` alone, so adding a counter is one entry
//! here and its updates where the event happens.
//!
//! Plain data, bumped by its own shard only (no atomics: per-core state); after `listen` and
//! `protocol`, whose enums label it, and before everything that counts.

use crate::label::{ByLabel, Label, by, labels};
use crate::listen::{CloseReason, Stream, Transport, Unresolved};
use crate::map::name_tags::NameTagError;
use crate::protocol::origin::{Malformed, OriginField};
use crate::protocol::{EventError, ParseError, ServiceCheckError};

labels! {
    /// What `--max-pending-events` dropped.
    pub enum Pending: "what" {
        Event => "event",
        ServiceCheck => "service_check",
    }
}

labels! {
    /// A well-formed message the aggregator cannot take.
    pub enum Unsupported: "what" {
        /// `|T` on a histogram, timer, set or distribution.
        TimestampedType => "timestamped_type",
    }
}

labels! {
    /// Why a new context went to its metric's overflow context.
    pub enum Refusal: "reason" {
        /// The shard holds its share of `--max-contexts`.
        MaxContexts => "max_contexts",
        /// The metric name holds its share of `--max-contexts-per-metric` on this shard.
        MaxContextsPerMetric => "max_contexts_per_metric",
        /// The process is near `--memory-limit-bytes`.
        MemoryLimit => "memory_limit",
    }
}

labels! {
    /// A mapper cache lookup's outcome.
    pub enum CacheResult: "result" {
        Hit => "hit",
        Miss => "miss",
    }
}

/// How a counter folds across shards and becomes a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Events since the last window: summed across shards; a `count` point.
    Count,
    /// The largest value of the window: the largest shard's kept; a gauge.
    Max,
    /// A level at the close (open connections, live contexts): summed across shards; a gauge.
    Level,
}

/// When a counter's points are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Show {
    /// Every window (a transport's only while that transport is enabled).
    Always,
    /// From the first window a series is non-zero, then every window: an error or a drop shows
    /// the window it happens and stays visible, but an idle server's output stays quiet.
    OnceNonZero,
}

/// One counter's declaration, for whatever is generated from it.
#[derive(Debug)]
pub(crate) struct Spec {
    /// The point's name after `corestatsd.`: `parse_errors`.
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) show: Show,
    /// Whether the window log line carries it.
    pub(crate) logged: bool,
    /// Its declaration's doc comment (`/metrics` gives it as the series' help).
    pub(crate) help: &'static str,
}

/// A counter's value: one number, or one per label (nested for two labels).
pub(crate) trait Value: Series + Copy + Default {
    fn fold(&mut self, other: &Self, kind: Kind);
    /// Adds a later window: counts sum, levels and maxima become the later window's.
    fn accumulate(&mut self, later: &Self, kind: Kind);
}

/// The numbers of a counter, each with the labels that lead to it (outermost first).
pub(crate) trait Series {
    fn each(&self, labels: &mut Vec<(&'static str, &'static str)>, f: &mut dyn FnMut(&Labels, u64));
}

/// `(key, value)` tags of one series: `[("transport", "tcp"), ("reason", "eof")]`.
pub(crate) type Labels = [(&'static str, &'static str)];

impl Series for u64 {
    fn each(
        &self,
        labels: &mut Vec<(&'static str, &'static str)>,
        f: &mut dyn FnMut(&Labels, u64),
    ) {
        f(labels, *self);
    }
}

impl Value for u64 {
    fn fold(&mut self, other: &u64, kind: Kind) {
        match kind {
            Kind::Count | Kind::Level => *self += other,
            Kind::Max => *self = (*self).max(*other),
        }
    }

    fn accumulate(&mut self, later: &u64, kind: Kind) {
        match kind {
            Kind::Count => *self += later,
            Kind::Level | Kind::Max => *self = *later,
        }
    }
}

impl<L: Label, T: Value, const N: usize> Series for ByLabel<L, T, N> {
    fn each(
        &self,
        labels: &mut Vec<(&'static str, &'static str)>,
        f: &mut dyn FnMut(&Labels, u64),
    ) {
        for (l, v) in self.iter() {
            labels.push((L::KEY, l.name()));
            v.each(labels, f);
            labels.pop();
        }
    }
}

impl<L: Label, T: Value, const N: usize> Value for ByLabel<L, T, N> {
    fn fold(&mut self, other: &Self, kind: Kind) {
        for ((_, a), (_, b)) in self.iter_mut().zip(other.iter()) {
            a.fold(b, kind);
        }
    }

    fn accumulate(&mut self, later: &Self, kind: Kind) {
        for ((_, a), (_, b)) in self.iter_mut().zip(later.iter()) {
            a.accumulate(b, kind);
        }
    }
}

macro_rules! counters {
    (
        $(
            $(#[doc = $doc:literal])+
            $field:ident: $ty:ty = $kind:ident, $show:ident, $logged:literal;
        )+
    ) => {
        /// One shard's counts since the last window close, and its levels at the close.
        #[derive(Debug, Clone, Copy, Default, PartialEq)]
        pub struct Counters {
            $(
                $(#[doc = $doc])+
                pub(crate) $field: $ty,
            )+
            /// The window's first rejected line, named in its log line.
            pub(crate) first_reject: Option<RejectSample>,
        }

        impl Counters {
            /// Every counter's declaration, in declaration order.
            pub(crate) const SPECS: &'static [Spec] = &[
                $(
                    Spec {
                        name: stringify!($field),
                        kind: Kind::$kind,
                        show: Show::$show,
                        logged: $logged,
                        help: concat!($($doc),+),
                    },
                )+
            ];

            /// Folds another shard's counters into these (`Kind` says how).
            pub(crate) fn fold(&mut self, other: &Counters) {
                $( Value::fold(&mut self.$field, &other.$field, Kind::$kind); )+
                self.first_reject = self.first_reject.or(other.first_reject);
            }

            /// Adds a later window's counters to totals since the start (`Value::accumulate`).
            pub(crate) fn accumulate(&mut self, later: &Counters) {
                $( Value::accumulate(&mut self.$field, &later.$field, Kind::$kind); )+
            }

            /// Calls `f` with each counter's declaration and value, in declaration order.
            pub(crate) fn visit(&self, f: &mut dyn FnMut(&Spec, &dyn Series)) {
                let mut specs = Self::SPECS.iter();
                $(
                    // One spec per field, both in declaration order.
                    if let Some(spec) = specs.next() {
                        f(spec, &self.$field);
                    }
                )+
            }
        }
    };
}

counters! {
    /// Datagrams received, or stream frames (with newline framing: reads that held complete
    /// lines), per transport.
    packets: by!(Transport) = Count, Always, true;
    /// Bytes received, per transport.
    bytes: by!(Transport) = Count, Always, true;
    /// Socket errors other than "would block" (receive or accept), per transport.
    receive_errors: by!(Transport) = Count, OnceNonZero, true;
    /// Stream connections open at the window close.
    connections: by!(Stream) = Level, Always, true;
    /// Stream connections accepted.
    connections_opened: by!(Stream) = Count, OnceNonZero, false;
    /// Stream connections closed, by reason.
    connections_closed: by!(Stream, CloseReason) = Count, OnceNonZero, true;
    /// Unix socket senders whose container origin detection found.
    origin_resolved: u64 = Count, OnceNonZero, false;
    /// Unix socket senders whose container is unknown, by reason.
    origin_unresolved: by!(Unresolved) = Count, OnceNonZero, true;
    /// Messages with a malformed `|c:`, `|e:` or `|card:` (left out; the message is kept).
    origin_field_errors: by!(OriginField) = Count, OnceNonZero, true;
    /// Metric lines parsed.
    metrics: u64 = Count, Always, true;
    /// Metric lines rejected, by reason.
    parse_errors: by!(ParseError) = Count, OnceNonZero, true;
    /// Events parsed.
    events: u64 = Count, OnceNonZero, true;
    /// Event lines rejected, by reason.
    event_parse_errors: by!(EventError) = Count, OnceNonZero, true;
    /// Service checks parsed.
    service_checks: u64 = Count, OnceNonZero, true;
    /// Service check lines rejected, by reason.
    service_check_parse_errors: by!(ServiceCheckError) = Count, OnceNonZero, true;
    /// Events and service checks kept with a bad optional field (`d:`, `p:`, `t:`).
    event_field_warnings: u64 = Count, OnceNonZero, true;
    /// Events and service checks dropped past `--max-pending-events`.
    pending_full_drops: by!(Pending) = Count, OnceNonZero, true;
    /// Events and service checks dropped near `--memory-limit-bytes`.
    memory_shed_drops: by!(Pending) = Count, OnceNonZero, true;
    /// Well-formed metrics the aggregator cannot take.
    unsupported: by!(Unsupported) = Count, OnceNonZero, true;
    /// Metrics dropped by the block list (`--block-metric`, `--block-metric-prefix`).
    blocked_metrics: u64 = Count, OnceNonZero, true;
    /// Datagrams longer than `--buffer-size-bytes`; their cut last line is dropped.
    truncated_datagrams: u64 = Count, OnceNonZero, true;
    /// Last lines dropped for lacking `\n` on an `--eol-required` transport.
    unterminated_lines: u64 = Count, OnceNonZero, true;
    /// Receive calls that filled the whole buffer pool: more was waiting in the socket.
    pool_full: u64 = Count, OnceNonZero, true;
    /// Datagrams the kernel dropped because a socket's receive buffer was full (SO_RXQ_OVFL,
    /// reported with the next datagram that arrives).
    kernel_drops: u64 = Count, Always, true;
    /// Packets copied to `--forward-addr`.
    forwarded: u64 = Count, OnceNonZero, false;
    /// Packets `--forward-addr` could not take.
    forward_errors: u64 = Count, OnceNonZero, true;
    /// Mapper cache lookups, by result.
    mapper_cache: by!(CacheResult) = Count, OnceNonZero, false;
    /// Lookups whose name the mapper rewrote (cache hits included).
    mapped_names: u64 = Count, OnceNonZero, false;
    /// Tags inside metric names (`--name-tag-formats`) dropped as malformed, by reason.
    name_tag_errors: by!(NameTagError) = Count, OnceNonZero, true;
    /// New contexts refused by a cap, their samples aggregated into their metric's overflow
    /// context, by reason.
    contexts_refused: by!(Refusal) = Count, OnceNonZero, true;
    /// Samples of refused contexts dropped because the shard's overflow contexts hit their
    /// reserve (unique metric names past every cap).
    overflow_full_drops: u64 = Count, OnceNonZero, true;
    /// Points (metrics, events, service checks) dropped because the sink thread already had
    /// `--sink-queue-max-points` waiting.
    sink_queue_drops: u64 = Count, OnceNonZero, true;
    /// Packets of an older process' last windows taken over (`--take-over`) and ingested.
    taken_over_packets: u64 = Count, OnceNonZero, true;
    /// Contexts held at the window close.
    live_contexts: u64 = Level, Always, true;
    /// Set contexts whose distinct members passed `--set-exact-members` in the window: their
    /// count is a HyperLogLog estimate (standard error 1.6 %).
    set_estimates: u64 = Count, OnceNonZero, true;
    /// The longest the receive loop yielded to other work while data could be waiting, in us.
    receive_max_pause_us: u64 = Max, Always, true;
    /// The longest window close (the sweep, with receive running between chunks, until every
    /// owner has its batch), in us.
    flush_duration_us: u64 = Max, Always, true;
}

impl Counters {
    /// Lines `ingest` accounted for: parsed (metrics, events, service checks) or rejected. Each
    /// non-empty line of a packet is exactly one of them (the fuzz targets check it).
    pub fn accounted_lines(&self) -> u64 {
        self.metrics + self.events + self.service_checks + self.rejected_lines()
    }

    /// Lines rejected by the parser, of every kind.
    pub fn rejected_lines(&self) -> u64 {
        let sum = |v: &dyn Series| {
            let mut n = 0;
            v.each(&mut Vec::new(), &mut |_, x| n += x);
            n
        };
        sum(&self.parse_errors)
            + sum(&self.event_parse_errors)
            + sum(&self.service_check_parse_errors)
    }

    /// Counts a rejected metric line; the window's first rejected line is kept for the log.
    pub(crate) fn parse_error(&mut self, e: ParseError, line: &[u8]) {
        self.parse_errors[e] += 1;
        self.sample_reject(e.name(), line);
    }

    pub(crate) fn event_error(&mut self, e: EventError, line: &[u8]) {
        self.event_parse_errors[e] += 1;
        self.sample_reject(e.name(), line);
    }

    pub(crate) fn service_check_error(&mut self, e: ServiceCheckError, line: &[u8]) {
        self.service_check_parse_errors[e] += 1;
        self.sample_reject(e.name(), line);
    }

    fn sample_reject(&mut self, reason: &'static str, line: &[u8]) {
        if self.first_reject.is_none() {
            self.first_reject = Some(RejectSample::new(reason, line));
        }
    }

    pub(crate) fn origin_fields(&mut self, bad: Malformed) {
        for field in bad.fields() {
            self.origin_field_errors[field] += 1;
        }
    }
}

/// The first line rejected in a window, kept to name it in the window's log line: the log
/// stays bounded (one line per window) and still shows what a client got wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RejectSample {
    pub(crate) reason: &'static str,
    line: [u8; 96],
    len: u8,
    /// The line was longer than the sample.
    cut: bool,
}

impl RejectSample {
    pub(crate) fn new(reason: &'static str, line: &[u8]) -> Self {
        let mut s = RejectSample {
            reason,
            line: [0; 96],
            len: line.len().min(96) as u8,
            cut: line.len() > 96,
        };
        s.line[..s.len as usize].copy_from_slice(&line[..s.len as usize]);
        s
    }

    pub(crate) fn line(&self) -> &[u8] {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_one_spec_in_declaration_order() {
        let mut names = Vec::new();
        Counters::default().visit(&mut |spec, _| names.push(spec.name));
        let declared: Vec<&str> = Counters::SPECS.iter().map(|s| s.name).collect();
        assert_eq!(names, declared);
        assert_eq!(declared.first(), Some(&"packets"));
    }

    #[test]
    fn the_readme_lists_every_counter() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        for spec in Counters::SPECS {
            let row = format!("| `corestatsd.{}` |", spec.name);
            assert!(
                readme.contains(&row),
                "README's Telemetry table lacks {row}"
            );
        }
    }

    #[test]
    fn folding_sums_counts_and_levels_and_keeps_the_largest_max() {
        let mut a = Counters {
            metrics: 3,
            live_contexts: 10,
            receive_max_pause_us: 7,
            ..Counters::default()
        };
        a.parse_errors[ParseError::BadValue] = 1;
        let mut b = Counters {
            metrics: 4,
            live_contexts: 5,
            receive_max_pause_us: 3,
            first_reject: Some(RejectSample::new("bad_value", b"x:y|c")),
            ..Counters::default()
        };
        b.parse_errors[ParseError::BadValue] = 2;
        a.fold(&b);
        assert_eq!(a.metrics, 7);
        assert_eq!(a.parse_errors[ParseError::BadValue], 3);
        assert_eq!(a.live_contexts, 15);
        assert_eq!(a.receive_max_pause_us, 7);
        assert_eq!(a.first_reject.map(|r| r.reason), Some("bad_value"));
    }

    #[test]
    fn series_carry_their_labels_outermost_first() {
        let mut c = Counters::default();
        c.connections_closed[Stream::Tcp][CloseReason::TooLong] = 2;
        let mut seen = Vec::new();
        c.connections_closed
            .each(&mut Vec::new(), &mut |labels, v| {
                if v > 0 {
                    seen.push((labels.to_vec(), v));
                }
            });
        assert_eq!(
            seen,
            [(vec![("transport", "tcp"), ("reason", "too_long")], 2)]
        );
    }
}
