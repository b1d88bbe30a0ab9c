//! An HTTP downstream as one `Sink`: an encoder that turns batches into payloads (on the sink
//! thread) and the `Delivery` that posts them (on its own thread), with the telemetry and stop
//! summary both share. The encoders (`datadog.rs`, `prometheus.rs`) own only their format and
//! whatever state it needs; they must not touch delivery.

use std::io;

use super::delivery::{Delivery, DropReason, StatsSnapshot};
use super::payload::Payload;
use super::{FlushBatch, OutKind, PointWriter, Sink};

/// What an HTTP downstream's encoder provides.
pub trait PayloadEncoder: Send {
    /// The payloads for one batch, encoded and compressed.
    fn encode(&mut self, batch: &FlushBatch) -> io::Result<Vec<Payload>>;

    /// Adds the encoder's own per-window telemetry to `w` (tagged `tag`) and logs it.
    fn telemetry(&mut self, _w: &mut PointWriter<'_>, _tag: &str, _window: u64) {}

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
    /// Emit `corestatsd.downstream.*` points (`--self-metrics`); the log line is written anyway.
    points: bool,
    last: StatsSnapshot,
}

impl<E: PayloadEncoder> HttpSink<E> {
    pub fn new(
        name: &'static str,
        enc: E,
        delivery: Delivery,
        host: Option<Vec<u8>>,
        interval: u32,
        points: bool,
    ) -> Self {
        HttpSink {
            name,
            enc,
            delivery,
            host,
            interval,
            points,
            last: StatsSnapshot::default(),
        }
    }
}

impl<E: PayloadEncoder> Sink for HttpSink<E> {
    fn write(&mut self, batch: &FlushBatch) -> io::Result<()> {
        for p in self.enc.encode(batch)? {
            self.delivery.submit(p);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// One log line per window, and (with self metrics) `corestatsd.downstream.*` points tagged
    /// `downstream:<name>`: counts as deltas since the last window, queue sizes as gauges.
    fn emit_telemetry(&mut self, out: &mut FlushBatch, window: u64) {
        let now = self.delivery.snapshot();
        let last = std::mem::replace(&mut self.last, now);
        let d = |a: u64, b: u64| a.saturating_sub(b);
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
        let tag = format!("downstream:{}", self.name);
        let mut w = PointWriter::new(self.host.as_deref(), window, self.interval);
        let counters = [
            ("payloads", now.payloads, last.payloads),
            ("bytes", now.bytes, last.bytes),
            ("points", now.points, last.points),
            ("retries", now.retries, last.retries),
            ("dropped_points", now.dropped_points, last.dropped_points),
            ("spilled_payloads", now.spilled, last.spilled),
        ];
        w.deltas("corestatsd.downstream", &tag, &counters);
        for (name, value) in [
            ("queue_bytes", now.queued_bytes),
            ("spill_bytes", now.spilled_bytes),
            ("latency_max_us", now.max_latency_us),
        ] {
            let name = format!("corestatsd.downstream.{name}");
            w.point(&name, &tag, None, OutKind::Gauge, value as f64);
        }
        for r in DropReason::ALL {
            let (n, l) = (
                now.dropped_payloads[r as usize],
                last.dropped_payloads[r as usize],
            );
            let reason = format!("reason:{}", r.as_str());
            let name = "corestatsd.downstream.dropped_payloads";
            w.point(name, &tag, Some(&reason), OutKind::Count, d(n, l) as f64);
        }
        self.enc.telemetry(&mut w, &tag, window);
        if self.points {
            w.finish(out);
        }
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
