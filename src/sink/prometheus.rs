//! The `prometheus-remote-write:URL` sink: Prometheus remote write 1.0, a protobuf
//! `WriteRequest{timeseries: [{labels: [{name, value}], samples: [{value, timestamp}]}]}`,
//! snappy-compressed (block format), posted with the headers the spec requires.
//!
//! Translation from the flushed form:
//! * counters become `<name>_total`, cumulative per series across flushes (kept on the sink
//!   thread; a series unseen for `counter_expiry_secs` is forgotten and restarts at its next
//!   value, which Prometheus reads as a counter reset);
//! * gauges, sets (their member count) and every histogram aggregate become gauges, except a
//!   histogram's or timer's count, which becomes the cumulative counter `<name>_count`, beside
//!   a cumulative `<name>_sum` (the `sum` aggregate, else `avg` × `count`), so `rate()` and
//!   averages over time work; a timer's aggregates are in seconds, as statsd_exporter's are;
//! * distributions become a summary: `<name>{quantile="0.5"|"0.9"|"0.95"|"0.99"}` from the
//!   sketch, plus cumulative `<name>_count` and `<name>_sum`;
//! * names become `[a-zA-Z_:][a-zA-Z0-9_:]*` and tag keys `[a-zA-Z_][a-zA-Z0-9_]*` (anything else
//!   is `_`; a leading digit, or a key starting with `__`, gets a `_`/`tag` prefix); a tag
//!   `key:value` is the label `key="value"`, a tag without a value is `tag="true"`, one with an
//!   empty value (`key:`) is left out, repeated keys join their values with `,`; the host is the
//!   label `host`.
//!
//! * a series that had a sample in one window and none in the next is marked stale (the
//!   staleness NaN at the start of the window it missed), so it leaves queries at once instead
//!   of lingering for Prometheus' 5-minute lookback.
//!
//! Remote write has no events or service checks: they are counted and logged, never sent.
//! Samples are kept in time order per series (see `RemoteWriteSink`).

use std::io;
use std::ops::Range;

use hashbrown::HashMap;

use super::http::DownstreamPoints;
use super::http::PayloadEncoder;
use super::payload::{Compression, Limits, Payload, Splitter};
use crate::flushed::desc::Desc;
use crate::flushed::{FlushedMetric, OutKind, Suffix, View, full_name};
use crate::proto;
use crate::protocol::MetricType;

/// Remote-write payload limits: 4 MiB raw like the Datadog sink, and at most 5000 series.
pub const LIMITS: Limits = Limits {
    max_items: 5000,
    max_uncompressed: 4 << 20,
    max_compressed: 4 << 20,
};

const QUANTILES: [(f64, &str); 4] = [(0.5, "0.5"), (0.9, "0.9"), (0.95, "0.95"), (0.99, "0.99")];

/// The headers remote write 1.0 requires beyond the content type and encoding.
pub fn headers() -> Vec<(String, String)> {
    vec![("X-Prometheus-Remote-Write-Version".into(), "0.1.0".into())]
}

/// Replaces what the metric-name charset forbids.
pub fn metric_name(raw: &[u8]) -> String {
    let mut out = String::new();
    push_metric_name(&mut out, raw);
    out
}

fn push_metric_name(out: &mut String, raw: &[u8]) {
    if raw.first().is_none_or(u8::is_ascii_digit) {
        out.push('_');
    }
    for &b in raw {
        let ok = b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        out.push(if ok { b as char } else { '_' });
    }
}

/// Replaces what the label-name charset forbids; `__` prefixes are Prometheus' own.
pub fn label_name(raw: &[u8]) -> String {
    let mut out = String::new();
    push_label_name(&mut out, raw);
    out
}

fn push_label_name(out: &mut String, raw: &[u8]) {
    if raw.starts_with(b"__") {
        out.push_str("tag");
    } else if raw.first().is_none_or(u8::is_ascii_digit) {
        out.push('_');
    }
    for &b in raw {
        out.push(if b.is_ascii_alphanumeric() || b == b'_' {
            b as char
        } else {
            '_'
        });
    }
}

/// Writes a point's labels other than `__name__` and `quantile` into `text` as
/// `key\0value\0` pairs, sorted by key, repeated keys merged; returns their range. `scratch`
/// holds unsorted pairs (ranges into `pairs_text`) and is reused.
fn push_labels(
    text: &mut String,
    pairs_text: &mut String,
    scratch: &mut Vec<(Range<usize>, Range<usize>)>,
    desc: &Desc<'_>,
) -> Range<usize> {
    pairs_text.clear();
    scratch.clear();
    let mut pair = |pairs_text: &mut String, k: &[u8], v: &[u8], named: bool| {
        let ks = pairs_text.len();
        if named {
            pairs_text.push_str(std::str::from_utf8(k).unwrap_or("_"));
        } else {
            push_label_name(pairs_text, k);
        }
        let vs = pairs_text.len();
        pairs_text.push_str(&String::from_utf8_lossy(v));
        scratch.push((ks..vs, vs..pairs_text.len()));
    };
    if let Some(h) = desc.host.filter(|h| !h.is_empty()) {
        pair(pairs_text, b"host", h, true);
    }
    for tag in desc.tags() {
        match memchr::memchr(b':', tag) {
            // An empty label value means no label to Prometheus: leave it out.
            Some(at) if at + 1 == tag.len() => {}
            Some(at) => pair(pairs_text, &tag[..at], &tag[at + 1..], false),
            None => pair(pairs_text, tag, b"true", false),
        }
    }
    let t: &str = pairs_text;
    scratch.sort_by(|a, b| {
        t[a.0.clone()]
            .cmp(&t[b.0.clone()])
            .then(t[a.1.clone()].cmp(&t[b.1.clone()]))
    });
    let start = text.len();
    let mut last_key: Option<&str> = None;
    for (k, v) in scratch.iter() {
        let (k, v) = (&t[k.clone()], &t[v.clone()]);
        if last_key == Some(k) {
            // Same key again: append to the value just written (before its terminator).
            text.pop();
            text.push(',');
        } else {
            text.push_str(k);
            text.push('\0');
        }
        text.push_str(v);
        text.push('\0');
        last_key = Some(k);
    }
    start..text.len()
}

/// Iterates `key\0value\0` pairs.
fn pairs(encoded: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut parts = encoded.split('\0');
    std::iter::from_fn(move || {
        let k = parts.next().filter(|k| !k.is_empty())?;
        Some((k, parts.next()?))
    })
}

/// One `TimeSeries` with a single sample; labels in sorted order with `__name__` (and
/// `quantile`) merged in.
fn encode_series(
    out: &mut Vec<u8>,
    name: &str,
    labels: &str,
    quantile: Option<&str>,
    value: f64,
    ts_ms: i64,
) {
    let label = |ts: &mut Vec<u8>, k: &str, v: &str| {
        proto::message(ts, 1, |l| {
            proto::bytes(l, 1, k.as_bytes());
            proto::bytes(l, 2, v.as_bytes());
        });
    };
    proto::message(out, 1, |ts| {
        let mut extra = [Some(("__name__", name)), quantile.map(|q| ("quantile", q))];
        for (k, v) in pairs(labels) {
            for e in extra.iter_mut() {
                if let Some((ek, ev)) = *e
                    && ek < k
                {
                    label(ts, ek, ev);
                    *e = None;
                }
            }
            label(ts, k, v);
        }
        for (ek, ev) in extra.into_iter().flatten() {
            label(ts, ek, ev);
        }
        proto::message(ts, 2, |s| {
            proto::double(s, 1, value);
            proto::int64(s, 2, ts_ms);
        });
    });
}

/// Prometheus' staleness marker: a NaN with this bit pattern (`value.StaleNaN`).
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// What the encoder remembers of one series between flushes.
struct SeriesState {
    /// The series' name and labels are the key; for a stale marker they are read back from it.
    stale_sent: bool,
    /// Running total (counters, `_count`, `_sum`).
    total: f64,
    /// Timestamp of the newest sample queued, ms.
    last_ms: i64,
    /// Which `encode` call queued `pending`, and its index there.
    generation: u64,
    pending: usize,
    /// Newest window seen, for expiry and staleness.
    seen: u64,
    /// Its windows' length, s.
    interval: u32,
}

/// A histogram's or timer's points of one context, gathered for its `_sum`.
struct HistGroup {
    /// `<name>_sum`'s name and the labels, in `text`.
    sum_name: Range<usize>,
    labels: Range<usize>,
    ts_ms: i64,
    window: u64,
    interval: u32,
    avg: Option<f64>,
    count: Option<f64>,
    sum_seen: bool,
}

/// One sample waiting to be encoded; names and labels are ranges of `Encoder::text`.
struct Sample {
    name: Range<usize>,
    labels: Range<usize>,
    quantile: Option<&'static str>,
    value: f64,
    ts_ms: i64,
}

/// Remote-write encoding with the state it needs across flushes: running totals and each
/// series' newest timestamp. Reuses its buffers: no allocation per point once warm, except
/// for a series seen for the first time.
///
/// Prometheus refuses a whole request over one sample older than (or as old as, with another
/// value) its series' newest, so samples are ordered per series here: a repeat within a flush
/// updates the queued sample, a late counter increment rides in the series' next sample (its
/// running total), and a late gauge is dropped and counted (`out_of_order`).
pub struct Encoder {
    series: HashMap<Vec<u8>, SeriesState>,
    generation: u64,
    /// Names and labels of this encode's samples.
    text: String,
    pairs_text: String,
    scratch: Vec<(Range<usize>, Range<usize>)>,
    key: Vec<u8>,
    raw_name: Vec<u8>,
    samples: Vec<Sample>,
    counter_expiry_secs: u64,
    last_expiry_sweep: u64,
    /// Newest window the staleness sweep has run for.
    last_stale_sweep: u64,
    /// Staleness markers sent, and reported in telemetry.
    stale: u64,
    stale_reported: u64,
    unsupported: u64,
    out_of_order: u64,
    out_of_order_reported: u64,
    oversized: u64,
}

impl Encoder {
    pub fn new(counter_expiry_secs: u64) -> Self {
        Encoder {
            series: HashMap::new(),
            generation: 0,
            text: String::new(),
            pairs_text: String::new(),
            scratch: Vec::new(),
            key: Vec::new(),
            raw_name: Vec::new(),
            samples: Vec::new(),
            counter_expiry_secs,
            last_expiry_sweep: 0,
            last_stale_sweep: 0,
            stale: 0,
            stale_reported: 0,
            unsupported: 0,
            out_of_order: 0,
            out_of_order_reported: 0,
            oversized: 0,
        }
    }

    /// Writes the sanitized name of `m` (plus `suffix`) into `text`.
    fn push_name(&mut self, d: &Desc<'_>, m: &FlushedMetric, suffix: &str) -> Range<usize> {
        full_name(&mut self.raw_name, d.name, m.suffix);
        let start = self.text.len();
        push_metric_name(&mut self.text, &self.raw_name);
        self.text.push_str(suffix);
        start..self.text.len()
    }

    /// Queues one sample of a series; `cumulative` adds `value` to the running total first.
    fn queue(&mut self, mut sample: Sample, cumulative: bool, (window, interval): (u64, u32)) {
        // quantile \0 name \0 labels: the series read back from its key for a stale marker.
        let key = &mut self.key;
        key.clear();
        key.extend_from_slice(sample.quantile.unwrap_or("").as_bytes());
        key.push(0);
        key.extend_from_slice(self.text[sample.name.clone()].as_bytes());
        key.push(0);
        key.extend_from_slice(self.text[sample.labels.clone()].as_bytes());
        // Looked up by slice: the key is copied only for a new series.
        let st = self.series.entry_ref(&key[..]).or_insert(SeriesState {
            stale_sent: false,
            total: 0.0,
            last_ms: i64::MIN,
            generation: u64::MAX,
            pending: 0,
            seen: window,
            interval,
        });
        st.interval = interval;
        st.seen = st.seen.max(window);
        st.stale_sent = false;
        if cumulative {
            st.total += sample.value;
            sample.value = st.total;
        }
        if sample.ts_ms > st.last_ms {
            st.last_ms = sample.ts_ms;
            st.generation = self.generation;
            st.pending = self.samples.len();
            self.samples.push(sample);
        } else if sample.ts_ms == st.last_ms && st.generation == self.generation {
            self.samples[st.pending].value = sample.value;
        } else if !cumulative {
            self.out_of_order += 1;
        }
    }

    /// Encodes a batch into payload bodies.
    pub fn encode_batch(&mut self, batch: View<'_>) -> io::Result<Vec<Payload>> {
        self.generation += 1;
        self.text.clear();
        self.samples.clear();
        let mut newest = 0;
        // A histogram's points are consecutive and share a description: labels are made once.
        let mut last_desc = None;
        let mut labels = 0..0;
        let mut hist: Option<HistGroup> = None;
        for m in &batch.metrics {
            let d = batch.desc(m);
            if last_desc != Some(m.desc) {
                last_desc = Some(m.desc);
                if let Some(h) = hist.take() {
                    self.finish_hist(h);
                }
                labels = push_labels(&mut self.text, &mut self.pairs_text, &mut self.scratch, &d);
            }
            let ts_ms = (m.ts as i64).saturating_mul(1000);
            newest = newest.max(m.ts);
            let at = (m.ts, m.interval);
            let sample = |name, quantile, value| Sample {
                name,
                labels: labels.clone(),
                quantile,
                value,
                ts_ms,
            };
            let histogram = matches!(d.metric_type, MetricType::Histogram | MetricType::Timer);
            // statsd_exporter's unit: a timer in seconds.
            let scale = if d.metric_type == MetricType::Timer {
                1e-3
            } else {
                1.0
            };
            match (m.kind, m.suffix, &m.sketch) {
                (OutKind::Count, Suffix::None, _) => {
                    let name = self.push_name(&d, m, "_total");
                    self.queue(sample(name, None, m.value), true, at);
                }
                (OutKind::Distribution, _, Some(sk)) => {
                    let name = self.push_name(&d, m, "");
                    for (q, label) in QUANTILES {
                        self.queue(sample(name.clone(), Some(label), sk.quantile(q)), false, at);
                    }
                    for (suffix, delta) in [("_count", sk.count), ("_sum", sk.sum)] {
                        let name = self.push_name(&d, m, suffix);
                        self.queue(sample(name, None, delta), true, at);
                    }
                }
                (_, suffix, None) if histogram && suffix != Suffix::None => {
                    if hist.is_none() {
                        full_name(&mut self.raw_name, d.name, Suffix::None);
                        let start = self.text.len();
                        push_metric_name(&mut self.text, &self.raw_name);
                        self.text.push_str("_sum");
                        hist = Some(HistGroup {
                            sum_name: start..self.text.len(),
                            labels: labels.clone(),
                            ts_ms,
                            window: m.ts,
                            interval: m.interval,
                            avg: None,
                            count: None,
                            sum_seen: false,
                        });
                    }
                    let name = self.push_name(&d, m, "");
                    let Some(h) = hist.as_mut() else { continue };
                    match suffix {
                        Suffix::Count => {
                            h.count = Some(m.value);
                            self.queue(sample(name, None, m.value), true, at);
                        }
                        Suffix::Sum => {
                            h.sum_seen = true;
                            self.queue(sample(name, None, m.value * scale), true, at);
                        }
                        s => {
                            if s == Suffix::Avg {
                                h.avg = Some(m.value * scale);
                            }
                            self.queue(sample(name, None, m.value * scale), false, at);
                        }
                    }
                }
                _ => {
                    let name = self.push_name(&d, m, "");
                    self.queue(sample(name, None, m.value), false, at);
                }
            }
        }
        if let Some(h) = hist.take() {
            self.finish_hist(h);
        }
        self.mark_stale(newest);
        self.expire(newest);
        let skipped = batch.events.len() + batch.service_checks.len();
        if skipped > 0 {
            if self.unsupported == 0 {
                eprintln!(
                    "corestatsd: prometheus-remote-write: remote write carries no events or \
                     service checks; they are counted and not sent"
                );
            }
            self.unsupported += skipped as u64;
        }
        let mut split = Splitter::new(LIMITS);
        let mut item = Vec::new();
        for s in &self.samples {
            let (name, labels) = (&self.text[s.name.clone()], &self.text[s.labels.clone()]);
            encode_series(&mut item, name, labels, s.quantile, s.value, s.ts_ms);
            split.push(&mut item);
        }
        let (bodies, oversized) = split.finish(Compression::Snappy)?;
        if oversized > 0 {
            eprintln!(
                "corestatsd: prometheus-remote-write: {oversized} series too large for a \
                 payload dropped"
            );
            self.oversized += oversized;
        }
        Ok(bodies
            .into_iter()
            .map(|(body, points)| Payload {
                path: String::new(),
                content_type: "application/x-protobuf".into(),
                encoding: Compression::Snappy.header().into(),
                points,
                body,
            })
            .collect())
    }

    /// A histogram's `<name>_sum` when its `sum` aggregate is not among the output:
    /// `avg` × `count`, cumulative.
    fn finish_hist(&mut self, h: HistGroup) {
        if h.sum_seen {
            return;
        }
        if let (Some(avg), Some(count)) = (h.avg, h.count) {
            let sample = Sample {
                name: h.sum_name,
                labels: h.labels,
                quantile: None,
                value: avg * count,
                ts_ms: h.ts_ms,
            };
            self.queue(sample, true, (h.window, h.interval));
        }
    }

    /// Once per new window: every series whose last sample is two windows old gets the
    /// staleness marker at the start of the first window it missed (two, so every owner's batch
    /// of that window has been seen). Walks every series: once per window, on the sink thread.
    fn mark_stale(&mut self, newest: u64) {
        if newest <= self.last_stale_sweep {
            return;
        }
        self.last_stale_sweep = newest;
        for (key, st) in self.series.iter_mut() {
            let missed = st.seen + u64::from(st.interval);
            let missed_ms = (missed as i64).saturating_mul(1000);
            // Only a series that stopped just now: not a `|T` point from the past, and not one
            // the sink missed windows around (it lingers the 5-minute lookback, as before).
            let interval = u64::from(st.interval);
            let just_stopped = newest >= missed + interval && newest < missed + 3 * interval;
            if st.stale_sent || !just_stopped || missed_ms <= st.last_ms {
                continue;
            }
            st.stale_sent = true;
            st.last_ms = missed_ms;
            let mut parts = key.splitn(3, |&b| b == 0);
            let (Some(q), Some(name), Some(labels)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let quantile = QUANTILES
                .iter()
                .find(|(_, l)| l.as_bytes() == q)
                .map(|&(_, l)| l);
            let n = self.text.len();
            self.text.push_str(std::str::from_utf8(name).unwrap_or("_"));
            let l = self.text.len();
            self.text.push_str(&String::from_utf8_lossy(labels));
            self.samples.push(Sample {
                name: n..l,
                labels: l..self.text.len(),
                quantile,
                value: f64::from_bits(STALE_NAN),
                ts_ms: missed_ms,
            });
            self.stale += 1;
        }
    }

    fn expire(&mut self, now: u64) {
        if now < self.last_expiry_sweep + 60 || self.counter_expiry_secs == 0 {
            return;
        }
        self.last_expiry_sweep = now;
        let horizon = now.saturating_sub(self.counter_expiry_secs);
        self.series.retain(|_, st| st.seen >= horizon);
    }
}

impl PayloadEncoder for Encoder {
    fn encode(&mut self, batch: View<'_>) -> io::Result<Vec<Payload>> {
        self.encode_batch(batch)
    }

    fn telemetry(&mut self, p: &mut DownstreamPoints<'_, '_>, window: u64) {
        let late = self.out_of_order - self.out_of_order_reported;
        self.out_of_order_reported = self.out_of_order;
        if late > 0 {
            eprintln!(
                "corestatsd: prometheus-remote-write window {window}: {late} samples older than \
                 their series' newest dropped"
            );
        }
        p.once_non_zero("out_of_order_samples", None, OutKind::Count, late);
        let stale = self.stale - self.stale_reported;
        self.stale_reported = self.stale;
        p.once_non_zero("stale_markers", None, OutKind::Count, stale);
    }

    fn lost(&self) -> u64 {
        self.out_of_order + self.oversized
    }

    fn log_stop(&self) {
        if self.unsupported > 0 {
            eprintln!(
                "corestatsd: prometheus-remote-write: {} events and service checks not sent \
                 (remote write has no such thing)",
                self.unsupported
            );
        }
        if self.out_of_order > 0 {
            eprintln!(
                "corestatsd: prometheus-remote-write: {} samples dropped as older than their \
                 series' newest",
                self.out_of_order
            );
        }
    }
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
