//! What skips the windows: `|T` gauges and counters (emitted with their own timestamp), events
//! and service checks (queued in arrival order, bounded by `max_pending_events`). All of it waits
//! in the shard's pending `FlushBatch` until the next flush. Owns no state of its own: these are
//! `Aggregator` methods, kept apart from the windowed path.

use super::{Aggregator, resolve_host, split_host_tag};
use crate::merge::desc;
use crate::protocol::event::unescape;
use crate::protocol::{Event, Metric, MetricType, ServiceCheck};
use crate::sink::{FlushBatch, FlushedEvent, FlushedMetric, FlushedServiceCheck, OutKind, Suffix};
use crate::telemetry::Unsupported;

impl Aggregator {
    pub(super) fn insert_timestamped(
        &mut self,
        m: &Metric<'_>,
        ts: u64,
    ) -> Result<(), Unsupported> {
        let kind = match m.metric_type {
            MetricType::Gauge => OutKind::Gauge,
            MetricType::Counter => OutKind::Count,
            _ => return Err(Unsupported::TimestampedType),
        };
        let (host_tag, tags) = split_host_tag(m.tags);
        let host = resolve_host(host_tag, self.cfg.default_host.as_deref());
        let arena = &mut self.timestamped.arenas[0];
        let off = desc::encode(
            arena,
            m.metric_type,
            m.name,
            host,
            m.container_id,
            tags.into_iter(),
        );
        for value in m.values() {
            self.timestamped.metrics.push(FlushedMetric {
                arena: 0,
                desc: off,
                suffix: Suffix::None,
                kind,
                value,
                ts,
                interval: self.cfg.bucket_secs,
                sketch: None,
            });
        }
        Ok(())
    }

    /// Queues an event for the next flush, in arrival order (`Err` once `max_pending_events` are
    /// waiting).
    pub fn insert_event(&mut self, e: &Event<'_>) -> Result<(), Unsupported> {
        if self.timestamped.events.len() >= self.cfg.max_pending_events {
            return Err(Unsupported::EventOverflow);
        }
        let (host_tag, tags) = split_host_tag(e.tags);
        let host = resolve_host(e.host.or(host_tag), self.cfg.default_host.as_deref());
        self.timestamped.events.push(FlushedEvent {
            title: unescape(e.title),
            text: unescape(e.text),
            ts: e.timestamp,
            host: host.map(<[u8]>::to_vec),
            aggregation_key: e.aggregation_key.map(<[u8]>::to_vec),
            priority: e.priority,
            source_type: e.source_type.map(<[u8]>::to_vec),
            alert_type: e.alert_type,
            tags: owned(tags),
            container_id: e.container_id.map(<[u8]>::to_vec),
        });
        Ok(())
    }

    /// Queues a service check for the next flush, in arrival order.
    pub fn insert_service_check(&mut self, sc: &ServiceCheck<'_>) -> Result<(), Unsupported> {
        if self.timestamped.service_checks.len() >= self.cfg.max_pending_events {
            return Err(Unsupported::ServiceCheckOverflow);
        }
        let (host_tag, tags) = split_host_tag(sc.tags);
        let host = resolve_host(sc.host.or(host_tag), self.cfg.default_host.as_deref());
        self.timestamped.service_checks.push(FlushedServiceCheck {
            name: sc.name.to_vec(),
            status: sc.status,
            ts: sc.timestamp,
            host: host.map(<[u8]>::to_vec),
            message: sc.message.map(<[u8]>::to_vec),
            tags: owned(tags),
            container_id: sc.container_id.map(<[u8]>::to_vec),
        });
        Ok(())
    }

    /// Takes the `|T` points, events and service checks gathered since the last call.
    pub fn take_timestamped(&mut self) -> FlushBatch {
        std::mem::replace(
            &mut self.timestamped,
            FlushBatch {
                arenas: vec![Vec::new()],
                ..FlushBatch::default()
            },
        )
    }
}

fn owned(tags: Vec<&[u8]>) -> Vec<Vec<u8>> {
    tags.into_iter().map(<[u8]>::to_vec).collect()
}
