//! The `prometheus-remote-write:URL` sink: Prometheus remote write 1.0, a protobuf
//! `WriteRequest{timeseries: [{labels: [{name, value}], samples: [{value, timestamp}]}]}`,
//! snappy-compressed (block format), posted with the headers the spec requires.
//!
//! Translation from the flushed form:
//! * counters become `<name>_total`, cumulative per series across flushes (kept on the sink
//!   thread; a series unseen for `counter_expiry_secs` is forgotten and restarts at its next
//!   value, which Prometheus reads as a counter reset);
//! * gauges, sets (their member count) and every histogram aggregate become gauges;
//! * distributions become a summary: `<name>{quantile="0.5"|"0.9"|"0.95"|"0.99"}` from the
//!   sketch, plus cumulative `<name>_count` and `<name>_sum`;
//! * names become `[a-zA-Z_:][a-zA-Z0-9_:]*` and tag keys `[a-zA-Z_][a-zA-Z0-9_]*` (anything else
//!   is `_`; a leading digit, or a key starting with `__`, gets a `_`/`tag` prefix); a tag
//!   `key:value` is the label `key="value"`, a tag without a value is `tag="true"`, repeated keys
//!   join their values with `,`; the host is the label `host`.
//!
//! Remote write has no events or service checks: they are counted and logged, never sent.
//! Samples are kept in time order per series (see `RemoteWriteSink`).

use std::io;

use hashbrown::HashMap;

use super::datadog::{Limits, Splitter};
use super::delivery::{Compression, Delivery, Payload};
use super::{
    DeliveryTelemetry, FlushBatch, FlushedMetric, OutKind, Sink, Suffix, full_name, proto,
};

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
pub fn metric_name(raw: &[u8], out: &mut String) {
    out.clear();
    for (i, &b) in raw.iter().enumerate() {
        let ok = b.is_ascii_alphabetic() || b == b'_' || b == b':' || (i > 0 && b.is_ascii_digit());
        if i == 0 && b.is_ascii_digit() {
            out.push('_');
            out.push(b as char);
        } else {
            out.push(if ok { b as char } else { '_' });
        }
    }
    if out.is_empty() {
        out.push('_');
    }
}

/// Replaces what the label-name charset forbids; `__` prefixes are Prometheus' own.
pub fn label_name(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len() + 1);
    if raw.first().is_none_or(u8::is_ascii_digit) {
        out.push('_');
    }
    for &b in raw {
        out.push(if b.is_ascii_alphanumeric() || b == b'_' {
            b as char
        } else {
            '_'
        });
    }
    if out.starts_with("__") {
        out.insert_str(0, "tag");
    }
    out
}

/// The labels of one point other than `__name__` (and `quantile`), sorted, keys merged.
fn labels(batch: &FlushBatch, m: &FlushedMetric) -> Vec<(String, String)> {
    let d = batch.desc(m);
    let mut labels: Vec<(String, String)> = Vec::with_capacity(d.tags().len() + 1);
    if let Some(h) = d.host.filter(|h| !h.is_empty()) {
        labels.push(("host".into(), String::from_utf8_lossy(h).into_owned()));
    }
    for tag in d.tags() {
        let (k, v) = match memchr::memchr(b':', tag) {
            Some(at) => (
                &tag[..at],
                String::from_utf8_lossy(&tag[at + 1..]).into_owned(),
            ),
            None => (tag, "true".to_owned()),
        };
        labels.push((label_name(k), v));
    }
    labels.sort();
    labels.dedup_by(|b, a| {
        if a.0 == b.0 {
            a.1.push(',');
            a.1.push_str(&b.1);
            true
        } else {
            false
        }
    });
    labels
}

fn encode_series(
    out: &mut Vec<u8>,
    name: &str,
    labels: &[(String, String)],
    extra: Option<(&str, &str)>,
    value: f64,
    ts_ms: i64,
) {
    let mut all: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    all.push(("__name__", name));
    all.extend(extra);
    all.sort_unstable();
    proto::message(out, 1, |ts| {
        for (k, v) in &all {
            proto::message(ts, 1, |l| {
                proto::bytes(l, 1, k.as_bytes());
                proto::bytes(l, 2, v.as_bytes());
            });
        }
        proto::message(ts, 2, |s| {
            proto::double(s, 1, value);
            proto::int64(s, 2, ts_ms);
        });
    });
}

/// What the sink remembers of one series between flushes.
struct SeriesState {
    /// Running total (counters, `_count`, `_sum`).
    total: f64,
    /// Timestamp of the newest sample queued, ms.
    last_ms: i64,
    /// Which `encode` call queued `pending`, and its index there.
    generation: u64,
    pending: usize,
    /// Newest window seen, for expiry.
    seen: u64,
}

/// One sample waiting to be encoded.
struct Sample {
    name: String,
    labels: std::rc::Rc<[(String, String)]>,
    quantile: Option<&'static str>,
    value: f64,
    ts_ms: i64,
}

/// Encodes on the sink thread, delivers on its own.
///
/// Prometheus refuses a whole request over one sample older than (or as old as, with another
/// value) its series' newest, so samples are ordered per series here: a repeat within a flush
/// updates the queued sample, a late counter increment rides in the series' next sample (its
/// running total), and a late gauge is dropped and counted (`out_of_order`).
pub struct RemoteWriteSink {
    delivery: Delivery,
    telemetry: DeliveryTelemetry,
    series: HashMap<Vec<u8>, SeriesState>,
    generation: u64,
    counter_expiry_secs: u64,
    last_expiry_sweep: u64,
    unsupported: u64,
    out_of_order: u64,
    out_of_order_reported: u64,
    oversized: u64,
}

impl RemoteWriteSink {
    pub fn new(delivery: Delivery, telemetry: DeliveryTelemetry, counter_expiry_secs: u64) -> Self {
        RemoteWriteSink {
            delivery,
            telemetry,
            series: HashMap::new(),
            generation: 0,
            counter_expiry_secs,
            last_expiry_sweep: 0,
            unsupported: 0,
            out_of_order: 0,
            out_of_order_reported: 0,
            oversized: 0,
        }
    }

    /// Queues one sample of a series; `cumulative` adds `value` to the running total first.
    fn queue(&mut self, out: &mut Vec<Sample>, mut sample: Sample, cumulative: bool, window: u64) {
        let mut key = Vec::with_capacity(64);
        key.extend_from_slice(sample.name.as_bytes());
        for (k, v) in sample.labels.iter() {
            key.push(0);
            key.extend_from_slice(k.as_bytes());
            key.push(1);
            key.extend_from_slice(v.as_bytes());
        }
        if let Some(q) = sample.quantile {
            key.push(2);
            key.extend_from_slice(q.as_bytes());
        }
        let st = self.series.entry(key).or_insert(SeriesState {
            total: 0.0,
            last_ms: i64::MIN,
            generation: u64::MAX,
            pending: 0,
            seen: window,
        });
        st.seen = st.seen.max(window);
        if cumulative {
            st.total += sample.value;
            sample.value = st.total;
        }
        if sample.ts_ms > st.last_ms {
            st.last_ms = sample.ts_ms;
            st.generation = self.generation;
            st.pending = out.len();
            out.push(sample);
        } else if sample.ts_ms == st.last_ms && st.generation == self.generation {
            out[st.pending].value = sample.value;
        } else if !cumulative {
            self.out_of_order += 1;
        }
    }

    /// Encodes a batch into payload bodies; pure apart from the per-series state.
    pub fn encode(&mut self, batch: &FlushBatch) -> io::Result<Vec<Payload>> {
        self.generation += 1;
        let mut samples = Vec::with_capacity(batch.metrics.len());
        let mut raw_name = Vec::new();
        let mut newest = 0;
        for m in &batch.metrics {
            let d = batch.desc(m);
            full_name(&mut raw_name, d.name, m.suffix);
            let mut name = String::new();
            metric_name(&raw_name, &mut name);
            let labels: std::rc::Rc<[(String, String)]> = labels(batch, m).into();
            let ts_ms = (m.ts as i64).saturating_mul(1000);
            newest = newest.max(m.ts);
            let sample = |name: String, quantile, value| Sample {
                name,
                labels: labels.clone(),
                quantile,
                value,
                ts_ms,
            };
            match (m.kind, m.suffix, &m.sketch) {
                (OutKind::Count, Suffix::None, _) => {
                    let s = sample(format!("{name}_total"), None, m.value);
                    self.queue(&mut samples, s, true, m.ts);
                }
                (OutKind::Distribution, _, Some(sk)) => {
                    for (q, label) in QUANTILES {
                        let s = sample(name.clone(), Some(label), sk.quantile(q));
                        self.queue(&mut samples, s, false, m.ts);
                    }
                    for (suffix, delta) in [("_count", sk.count), ("_sum", sk.sum)] {
                        let s = sample(format!("{name}{suffix}"), None, delta);
                        self.queue(&mut samples, s, true, m.ts);
                    }
                }
                _ => {
                    let s = sample(name, None, m.value);
                    self.queue(&mut samples, s, false, m.ts);
                }
            }
        }
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
        for s in &samples {
            let extra = s.quantile.map(|q| ("quantile", q));
            encode_series(&mut item, &s.name, &s.labels, extra, s.value, s.ts_ms);
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

    fn expire(&mut self, now: u64) {
        if now < self.last_expiry_sweep + 60 || self.counter_expiry_secs == 0 {
            return;
        }
        self.last_expiry_sweep = now;
        let horizon = now.saturating_sub(self.counter_expiry_secs);
        self.series.retain(|_, st| st.seen >= horizon);
    }
}

impl Sink for RemoteWriteSink {
    fn write(&mut self, batch: &FlushBatch) -> io::Result<()> {
        for p in self.encode(batch)? {
            self.delivery.submit(p);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn emit_telemetry(&mut self, out: &mut FlushBatch, window: u64) {
        let now = self.delivery.snapshot();
        self.telemetry.emit(out, window, &now);
        let late = self.out_of_order - self.out_of_order_reported;
        self.out_of_order_reported = self.out_of_order;
        if late > 0 {
            eprintln!(
                "corestatsd: prometheus-remote-write window {window}: {late} samples older than \
                 their series' newest dropped"
            );
        }
        if self.telemetry.points {
            let tag = "downstream:prometheus-remote-write";
            let p = [(
                "corestatsd.downstream.out_of_order_samples",
                None,
                OutKind::Count,
                late as f64,
            )];
            super::push_points(
                out,
                self.telemetry.host.as_deref(),
                tag,
                window,
                self.telemetry.interval,
                &p,
            );
        }
    }

    fn close(&mut self) -> io::Result<u64> {
        let s = self.delivery.close();
        super::log_delivery("prometheus-remote-write", &s);
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
        Ok(s.dropped_points + self.out_of_order + self.oversized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_fit_the_prometheus_charset() {
        let mut s = String::new();
        metric_name(b"page.views-total", &mut s);
        assert_eq!(s, "page_views_total");
        metric_name(b"9lives:x", &mut s);
        assert_eq!(s, "_9lives:x");
        assert_eq!(label_name(b"k8s.pod-name"), "k8s_pod_name");
        assert_eq!(label_name(b"2fa"), "_2fa");
        assert_eq!(label_name(b"__name__"), "tag__name__");
        assert_eq!(label_name(b""), "_");
    }
}
