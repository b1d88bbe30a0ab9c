//! An HTTP downstream as one `Sink`: an encoder that turns batches into payloads (on the sink
//! thread) and the `Delivery` that posts them (on its own thread), with the telemetry and stop
//! summary both share. The encoders (`datadog.rs`, `prometheus.rs`) own only their format and
//! whatever state it needs; they must not touch delivery.

use std::io;

use super::Sink;
use super::delivery::{Delivery, StatsSnapshot};
use super::payload::Payload;
use crate::flushed::{FlushBatch, OutKind, PointWriter, View};
use crate::telemetry::NonZeroSeen;
use crate::telemetry::board::DownstreamStatus;

/// What an HTTP downstream's encoder provides.
pub trait PayloadEncoder: Send {
    /// The payloads for one batch, encoded and compressed.
    fn encode(&mut self, batch: View<'_>) -> io::Result<Vec<Payload>>;

    /// Adds the encoder's own per-window telemetry to `p` and logs it.
    fn telemetry(&mut self, _p: &mut DownstreamPoints<'_, '_>, _window: u64) {}

    /// Points the encoder gave up itself (too large, out of order), for the exit status.
    fn lost(&self) -> u64;

    /// Logs the encoder's part of the stop summary.
    fn log_stop(&self) {}
}

/// An encoder plus its delivery thread.
pub struct HttpSink<E> {
    name: &'static str,
    enc: E,
    delivery: Delivery,
    host: Option<Vec<u8>>,
    interval: u32,
    /// Emit `corestatsd.downstream.*` points (not `--no-self-metrics`); the log line is
    /// written anyway.
    self_metrics: bool,
    last: StatsSnapshot,
    /// Payloads were given up in the last window.
    failing: bool,
    seen: NonZeroSeen,
}

impl<E: PayloadEncoder> HttpSink<E> {
    pub fn new(
        name: &'static str,
        enc: E,
        delivery: Delivery,
        host: Option<Vec<u8>>,
        interval: u32,
        self_metrics: bool,
    ) -> Self {
        HttpSink {
            name,
            enc,
            delivery,
            host,
            interval,
            self_metrics,
            last: StatsSnapshot::default(),
            failing: false,
            seen: NonZeroSeen::default(),
        }
    }
}

impl<E: PayloadEncoder> Sink for HttpSink<E> {
    fn write(&mut self, batch: View<'_>) -> io::Result<()> {
        for p in self.enc.encode(batch)? {
            self.delivery.submit(p);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// One log line per window, and (with self metrics) `corestatsd.downstream.*` points tagged
    /// `downstream:<name>`: counts as deltas since the last window, queue sizes as gauges;
    /// retries, drops and spills from the window they first happen in.
    fn emit_telemetry(&mut self, out: &mut FlushBatch, window: u64) {
        let now = self.delivery.snapshot();
        let last = std::mem::replace(&mut self.last, now);
        let d = |a: u64, b: u64| a.saturating_sub(b);
        self.failing = now.dropped() > last.dropped();
        eprintln!(
            "corestatsd: {} window {window}: payloads={} bytes={} points={} retries={} \
             dropped_payloads={} dropped_points={} spilled={} queue_bytes={} spill_bytes={} \
             max_latency_us={}",
            self.name,
            d(now.payloads, last.payloads),
            d(now.bytes, last.bytes),
            d(now.points, last.points),
            d(now.retries, last.retries),
            d(now.dropped(), last.dropped()),
            d(now.dropped_points, last.dropped_points),
            d(now.spilled, last.spilled),
            now.queued_bytes,
            now.spilled_bytes,
            now.max_latency_us,
        );
        let mut w = PointWriter::new(self.host.as_deref(), window, self.interval);
        let mut p = DownstreamPoints::new(&mut w, &mut self.seen, self.name);
        for (name, a, b) in [
            ("payloads", now.payloads, last.payloads),
            ("bytes", now.bytes, last.bytes),
            ("points", now.points, last.points),
        ] {
            p.always(name, None, OutKind::Count, d(a, b));
        }
        p.always("queue_bytes", None, OutKind::Gauge, now.queued_bytes);
        p.always("latency_max_us", None, OutKind::Gauge, now.max_latency_us);
        for (name, a, b) in [
            ("retries", now.retries, last.retries),
            ("dropped_points", now.dropped_points, last.dropped_points),
            ("spilled_payloads", now.spilled, last.spilled),
        ] {
            p.once_non_zero(name, None, OutKind::Count, d(a, b));
        }
        p.once_non_zero("spill_bytes", None, OutKind::Gauge, now.spilled_bytes);
        for ((r, n), (_, l)) in now
            .dropped_payloads
            .iter()
            .zip(last.dropped_payloads.iter())
        {
            let reason = format!("reason:{}", r.name());
            p.once_non_zero("dropped_payloads", Some(&reason), OutKind::Count, d(*n, *l));
        }
        self.enc.telemetry(&mut p, window);
        if self.self_metrics {
            w.finish(out);
        }
    }

    fn status(&self, s: &mut DownstreamStatus) {
        let now = &self.last;
        s.delivered_payloads = now.payloads;
        s.retries = now.retries;
        s.dropped_payloads = now.dropped();
        s.dropped_points = now.dropped_points;
        s.queued_bytes = now.queued_bytes;
        s.spilled_bytes = now.spilled_bytes;
        s.failing = self.failing;
        s.last_error = self.delivery.last_error().or(s.last_error.take());
    }

    fn close(&mut self) -> io::Result<u64> {
        let s = self.delivery.close();
        eprintln!(
            "corestatsd: {}: delivered {} payloads ({} bytes, {} points), {} retries, \
             {} payloads ({} points) dropped, {} spilled, {} bytes left in the spill directory",
            self.name,
            s.payloads,
            s.bytes,
            s.points,
            s.retries,
            s.dropped(),
            s.dropped_points,
            s.spilled,
            s.spilled_bytes
        );
        self.enc.log_stop();
        Ok(s.dropped_points + self.enc.lost())
    }
}

/// A downstream's own points for one window: `corestatsd.<prefix>.<name>`, tagged
/// `downstream:<name>`, each either always shown or from the window it is first non-zero in.
pub struct DownstreamPoints<'w, 'h> {
    w: &'w mut PointWriter<'h>,
    seen: &'w mut NonZeroSeen,
    tag: String,
    prefix: &'static str,
}

impl<'w, 'h> DownstreamPoints<'w, 'h> {
    /// Points named `corestatsd.downstream.*`.
    pub fn new(w: &'w mut PointWriter<'h>, seen: &'w mut NonZeroSeen, name: &str) -> Self {
        Self::with_prefix(w, seen, name, "downstream")
    }

    pub fn with_prefix(
        w: &'w mut PointWriter<'h>,
        seen: &'w mut NonZeroSeen,
        name: &str,
        prefix: &'static str,
    ) -> Self {
        DownstreamPoints {
            w,
            seen,
            tag: format!("downstream:{name}"),
            prefix,
        }
    }

    pub fn always(&mut self, name: &str, extra: Option<&str>, kind: OutKind, value: u64) {
        let name = format!("corestatsd.{}.{name}", self.prefix);
        let tags: Vec<&str> = std::iter::once(self.tag.as_str()).chain(extra).collect();
        self.w.point(&name, &tags, kind, value as f64);
    }

    /// An error, drop or retry count: shown from the window it is first non-zero in.
    pub fn once_non_zero(&mut self, name: &str, extra: Option<&str>, kind: OutKind, value: u64) {
        let full = format!("corestatsd.{}.{name}", self.prefix);
        let tags: Vec<String> = std::iter::once(self.tag.clone())
            .chain(extra.map(str::to_owned))
            .collect();
        if self.seen.shows(&full, &tags, value != 0) {
            self.always(name, extra, kind, value);
        }
    }
}
