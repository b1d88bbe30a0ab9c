//! The `datadog` sink: what the Datadog Agent sends its intake, from the flushed form.
//!
//! * Series to `/api/v2/series` as protobuf `MetricPayload` (agent-payload
//!   `proto/metrics/agent_payload.proto`): per point one `MetricSeries` with `resources`
//!   (`host`), `metric`, `tags`, one `MetricPoint{value, timestamp}`, `type`, `unit`
//!   (`millisecond` for timer aggregates other than `.count`) and `interval`. Counts go out as
//!   RATE (sum / interval), as the Agent sends them, or as COUNT (`--dd-counters-as count`).
//! * Distributions to `/api/beta/sketches` as `SketchPayload`: `Sketch{metric, host, tags,
//!   dogsketches[{ts, cnt, min, max, avg, sum, k[], n[]}]}`, the bins as the Agent keys them.
//! * Events to `/intake/` and service checks to `/api/v1/check_run`, as the Agent's JSON.
//!
//! Every body is compressed (`--dd-compression`) and split to stay within the Agent's limits:
//! 10 000 series per payload, 4 MiB before and 2.5 MiB after compression. The API key travels in
//! the `DD-API-KEY` header only. Owns the encoding; delivery is `delivery.rs`'s.

use std::io;

use serde_json::{Value, json};

use super::http::PayloadEncoder;
use super::payload::{Compression, Limits, Payload, Splitter};
use crate::flushed::{FlushedMetric, OutKind, Suffix, View, full_name};
use crate::proto;
use crate::protocol::MetricType;
use crate::protocol::event::{AlertType, Priority};
use crate::values::sketch::Sketch;

/// How counts are typed on the intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountersAs {
    /// Sum / interval, type RATE (the Agent's choice).
    Rate,
    /// The window's sum, type COUNT.
    Count,
}

/// The Agent's: `serializer_max_payload_size`, `serializer_max_uncompressed_payload_size`,
/// `serializer_max_series_points_per_payload`.
pub const AGENT_LIMITS: Limits = Limits {
    max_items: 10_000,
    max_uncompressed: 4 << 20,
    max_compressed: 5 << 19,
};

/// Encoding choices.
#[derive(Debug, Clone, Copy)]
pub struct Encoding {
    pub counters_as: CountersAs,
    pub compression: Compression,
    pub limits: Limits,
}

pub const SERIES_PATH: &str = "/api/v2/series";
pub const SKETCHES_PATH: &str = "/api/beta/sketches";
pub const EVENTS_PATH: &str = "/intake/";
pub const CHECKS_PATH: &str = "/api/v1/check_run";
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// MetricPayload.MetricType.
const TYPE_COUNT: u64 = 1;
const TYPE_RATE: u64 = 2;
const TYPE_GAUGE: u64 = 3;

/// Appends one `MetricSeries` (field 1 of `MetricPayload`) for `m`.
fn encode_series(
    out: &mut Vec<u8>,
    name: &mut Vec<u8>,
    batch: View<'_>,
    m: &FlushedMetric,
    how: CountersAs,
) {
    let d = batch.desc(m);
    full_name(name, d.name, m.suffix);
    let (kind, value) = match (m.kind, how) {
        (OutKind::Count, CountersAs::Rate) if m.interval > 0 => {
            (TYPE_RATE, m.value / f64::from(m.interval))
        }
        (OutKind::Count, _) => (TYPE_COUNT, m.value),
        _ => (TYPE_GAUGE, m.value),
    };
    proto::message(out, 1, |s| {
        proto::message(s, 1, |r| {
            proto::bytes(r, 1, b"host");
            proto::bytes(r, 2, d.host.unwrap_or_default());
        });
        proto::bytes(s, 2, name);
        for tag in d.tags() {
            proto::bytes(s, 3, tag);
        }
        proto::message(s, 4, |p| {
            proto::double(p, 1, value);
            proto::int64(p, 2, m.ts as i64);
        });
        proto::uint(s, 5, kind);
        if d.metric_type == MetricType::Timer && m.suffix != Suffix::Count {
            proto::bytes(s, 6, b"millisecond");
        }
        proto::int64(s, 8, i64::from(m.interval));
    });
}

/// Appends one `SketchPayload.Sketch` (field 1) for a distribution point.
fn encode_sketch(out: &mut Vec<u8>, batch: View<'_>, m: &FlushedMetric) {
    let Some(sk) = &m.sketch else { return };
    let d = batch.desc(m);
    let (keys, counts) = sketch_bins(sk);
    proto::message(out, 1, |s| {
        proto::bytes(s, 1, d.name);
        proto::bytes(s, 2, d.host.unwrap_or_default());
        for tag in d.tags() {
            proto::bytes(s, 4, tag);
        }
        proto::message(s, 7, |g| {
            proto::int64(g, 1, m.ts as i64);
            proto::int64(g, 2, sk.count.round() as i64);
            proto::double(g, 3, sk.min);
            proto::double(g, 4, sk.max);
            proto::double(g, 5, sk.avg());
            proto::double(g, 6, sk.sum);
            proto::packed_sint32(g, 7, keys.iter().copied());
            proto::packed_uint32(g, 8, counts.iter().copied());
        });
    });
}

/// A sketch's bins as the Dogsketch's parallel `k` and `n` lists. Its counts are uint32, so a
/// bin heavier than 2^32 - 1 is written as several bins of the same key, as the Agent does.
///
/// That is bounded by the input: a sample weighs at most `MAX_SAMPLE_WEIGHT` (the parser's rate
/// floor), so a bin needs over 4295 samples for each piece past its first, and a sketch of `b`
/// bins from `s` samples takes at most `b + s / 4295` pieces. (Without the floor one line with
/// `@1e-18` once took 2.3e8 pieces, 3.3 GiB.)
fn sketch_bins(sk: &Sketch) -> (Vec<i32>, Vec<u32>) {
    let mut keys = Vec::new();
    let mut counts = Vec::new();
    for (k, n) in sk.bins() {
        let mut n = n.round().max(1.0) as u64;
        while n > 0 {
            let part = n.min(u64::from(u32::MAX));
            keys.push(k);
            counts.push(part as u32);
            n -= part;
        }
    }
    (keys, counts)
}

/// Every payload one batch turns into, and how many points were too large to send.
pub fn encode_batch(batch: View<'_>, enc: &Encoding) -> io::Result<(Vec<Payload>, u64)> {
    let mut payloads = Vec::new();
    let mut series = Splitter::new(enc.limits);
    let mut sketches = Splitter::new(enc.limits);
    let mut item = Vec::new();
    let mut name = Vec::new();
    for m in &batch.metrics {
        if m.kind == OutKind::Distribution {
            encode_sketch(&mut item, batch, m);
            sketches.push(&mut item);
        } else {
            encode_series(&mut item, &mut name, batch, m, enc.counters_as);
            series.push(&mut item);
        }
    }
    let mut oversized = 0;
    for (splitter, path) in [(series, SERIES_PATH), (sketches, SKETCHES_PATH)] {
        let (bodies, too_big) = splitter.finish(enc.compression)?;
        oversized += too_big;
        for (body, points) in bodies {
            payloads.push(Payload {
                path: path.into(),
                content_type: PROTOBUF.into(),
                encoding: enc.compression.header().into(),
                points,
                body,
            });
        }
    }
    let now = unix_now();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let tags = |t: &[Vec<u8>]| t.iter().map(|t| text(t)).collect::<Vec<_>>();
    // Events, grouped by source type like the Agent's `events` map; chunked by count.
    for chunk in batch.events.chunks(enc.limits.max_items.max(1)) {
        let mut by_source = serde_json::Map::new();
        for e in chunk {
            let source = e.source_type.as_deref().map_or("api".into(), text);
            let mut ev = json!({
                "msg_title": text(&e.title),
                "msg_text": text(&e.text),
                "timestamp": e.ts.unwrap_or(now),
                "priority": match e.priority { Priority::Normal => "normal", Priority::Low => "low" },
                "host": e.host.as_deref().map(text).unwrap_or_default(),
                "tags": tags(&e.tags),
                "alert_type": match e.alert_type {
                    AlertType::Info => "info",
                    AlertType::Warning => "warning",
                    AlertType::Error => "error",
                    AlertType::Success => "success",
                },
            });
            if let Some(k) = &e.aggregation_key {
                ev["aggregation_key"] = Value::String(text(k));
            }
            if let Some(s) = &e.source_type {
                ev["source_type_name"] = Value::String(text(s));
            }
            if let Some(list) = by_source
                .entry(source)
                .or_insert_with(|| Value::Array(Vec::new()))
                .as_array_mut()
            {
                list.push(ev);
            }
        }
        let body = json!({"apiKey": "", "events": by_source, "internalHostname": ""});
        payloads.push(json_payload(EVENTS_PATH, &body, chunk.len(), enc)?);
    }
    for chunk in batch.service_checks.chunks(enc.limits.max_items.max(1)) {
        let body: Vec<Value> = chunk
            .iter()
            .map(|c| {
                json!({
                    "check": text(&c.name),
                    "host_name": c.host.as_deref().map(text).unwrap_or_default(),
                    "timestamp": c.ts.unwrap_or(now),
                    "status": c.status,
                    "message": c.message.as_deref().map(text).unwrap_or_default(),
                    "tags": tags(&c.tags),
                })
            })
            .collect();
        payloads.push(json_payload(
            CHECKS_PATH,
            &Value::Array(body),
            chunk.len(),
            enc,
        )?);
    }
    Ok((payloads, oversized))
}

fn json_payload(path: &str, body: &Value, items: usize, enc: &Encoding) -> io::Result<Payload> {
    let raw = serde_json::to_vec(body).map_err(io::Error::other)?;
    Ok(Payload {
        path: path.into(),
        content_type: JSON.into(),
        encoding: enc.compression.header().into(),
        points: items as u64,
        body: enc.compression.compress(&raw)?,
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The Datadog payloads of each batch, for `HttpSink`.
pub struct DatadogEncoder {
    enc: Encoding,
    oversized: u64,
}

impl DatadogEncoder {
    pub fn new(enc: Encoding) -> Self {
        DatadogEncoder { enc, oversized: 0 }
    }
}

impl PayloadEncoder for DatadogEncoder {
    fn encode(&mut self, batch: View<'_>) -> io::Result<Vec<Payload>> {
        let (payloads, oversized) = encode_batch(batch, &self.enc)?;
        if oversized > 0 {
            self.oversized += oversized;
            eprintln!(
                "corestatsd: datadog: {oversized} points larger than a whole payload dropped \
                 ({} so far)",
                self.oversized
            );
        }
        Ok(payloads)
    }

    fn lost(&self) -> u64 {
        self.oversized
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MAX_SAMPLE_WEIGHT;
    use crate::values::sketch;

    #[test]
    fn a_bin_heavier_than_a_uint32_is_split_and_bounded_by_its_samples() {
        let mut sk = Sketch::default();
        // 10 000 samples at the heaviest weight a line may carry, all in one bin: 1e10.
        for _ in 0..10_000 {
            sk.insert(3.0, MAX_SAMPLE_WEIGHT);
        }
        sk.insert(100.0, 1.0);
        let (keys, counts) = sketch_bins(&sk);
        let k = sketch::key(3.0);
        assert_eq!(keys, [k, k, k, sketch::key(100.0)]);
        assert_eq!(counts[..3], [u32::MAX, u32::MAX, 1_410_065_410]);
        let total: u64 = counts.iter().map(|&n| u64::from(n)).sum();
        assert_eq!(total, 10_000_000_000 + 1);
        assert!(keys.len() <= 2 + 10_001 / 4295);
    }
}
