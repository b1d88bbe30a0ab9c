//! The pending items of a flush, which skip the windows: `|T` gauges and counters (emitted with
//! their own timestamp), events and service checks (queued in arrival order, bounded by
//! `max_pending_events`). All of it waits in the shard's pending `FlushBatch` until the next
//! flush. Owns no state of its own: these are `Aggregator` methods, kept apart from the windowed
//! path.

use super::key::{resolve_host, split_tags_with};
use super::{Aggregator, Discard};
use crate::flushed::{
    DescRef, FlushBatch, FlushedEvent, FlushedMetric, FlushedServiceCheck, OutKind, Suffix, desc,
};
use crate::memory::Pressure;
use crate::protocol::event::unescape;
use crate::protocol::origin::{self, InternalTags, OriginFields};
use crate::protocol::{Event, Metric, MetricType, ServiceCheck};

impl Aggregator {
    pub(super) fn insert_timestamped(&mut self, m: &Metric<'_>, ts: u64) -> Result<(), Discard> {
        let kind = match m.metric_type {
            MetricType::Gauge => OutKind::Gauge,
            MetricType::Counter => OutKind::Count,
            _ => return Err(Discard::TimestampedType),
        };
        let mut out = std::mem::take(&mut self.name_out);
        if !self.stage.metric_name(m.name, &mut out) {
            self.name_out = out;
            return Err(Discard::Blocked);
        }
        let extra = self.stage.extra_tags();
        let split = split_tags_with(m.tags, &out.mapped_tags, &extra);
        let host = resolve_host(split.host, self.cfg.default_host.as_deref());
        let origin = self.origin_of(&m.origin, split.internal);
        let arena = &mut self.pending.arenas[0];
        let off = desc::encode(
            arena,
            m.metric_type,
            out.renamed.as_deref().unwrap_or(m.name),
            host,
            origin.as_deref(),
            split.tags.into_iter(),
        );
        drop(extra);
        self.name_out = out;
        for value in m.values() {
            self.pending.metrics.push(FlushedMetric {
                desc: DescRef::Arena {
                    arena: 0,
                    offset: off,
                },
                suffix: Suffix::None,
                kind,
                value,
                ts,
                interval: self.cfg.bucket_secs,
                sketch: None,
                whole: None,
            });
        }
        Ok(())
    }

    /// Queues an event for the next flush, in arrival order (`Err` once `max_pending_events` are
    /// waiting).
    pub fn insert_event(&mut self, e: &Event<'_>) -> Result<(), Discard> {
        let queued = self.pending.events.len();
        let (host, tags, origin) = self.admit(
            queued,
            [Discard::EventOverflow, Discard::EventShed],
            (e.tags, e.host, &e.origin),
        )?;
        self.pending.events.push(FlushedEvent {
            title: unescape(e.title),
            text: unescape(e.text),
            ts: e.timestamp,
            host,
            aggregation_key: e.aggregation_key.map(<[u8]>::to_vec),
            priority: e.priority,
            source_type: e.source_type.map(<[u8]>::to_vec),
            alert_type: e.alert_type,
            tags,
            origin,
        });
        Ok(())
    }

    /// Queues a service check for the next flush, in arrival order.
    pub fn insert_service_check(&mut self, sc: &ServiceCheck<'_>) -> Result<(), Discard> {
        let queued = self.pending.service_checks.len();
        let (host, tags, origin) = self.admit(
            queued,
            [Discard::ServiceCheckOverflow, Discard::ServiceCheckShed],
            (sc.tags, sc.host, &sc.origin),
        )?;
        self.pending.service_checks.push(FlushedServiceCheck {
            name: sc.name.to_vec(),
            status: sc.status,
            ts: sc.timestamp,
            host,
            message: sc.message.map(<[u8]>::to_vec),
            tags,
            origin,
        });
        Ok(())
    }

    /// Whether an event or service check may queue behind `queued` others (`Err` with the
    /// first reason when the queue is full, the second under memory pressure), and if so its
    /// host, its tags sorted and deduplicated, and its origin blob.
    fn admit(
        &mut self,
        queued: usize,
        [full, shed]: [Discard; 2],
        (tags, host, fields): (&[u8], Option<&[u8]>, &OriginFields<'_>),
    ) -> Result<PendingParts, Discard> {
        if queued >= self.cfg.max_pending_events {
            return Err(full);
        }
        if self.refresh_pressure() >= Pressure::Shed {
            return Err(shed);
        }
        let extra = self.stage.extra_tags();
        let split = split_tags_with(tags, &[], &extra);
        let host = resolve_host(host.or(split.host), self.cfg.default_host.as_deref());
        let origin = self.origin_of(fields, split.internal);
        Ok((host.map(<[u8]>::to_vec), owned(split.tags), origin))
    }

    /// The canonical origin blob of a message, or `None` when it has none.
    fn origin_of(&self, fields: &OriginFields<'_>, internal: InternalTags<'_>) -> Option<Vec<u8>> {
        if fields.is_empty() && internal == InternalTags::default() {
            return None;
        }
        let mut blob = Vec::new();
        origin::encode(&mut blob, fields, internal, self.cfg.origin_precedence);
        (!blob.is_empty()).then_some(blob)
    }

    /// Takes the pending items (`|T` points, events and service checks) gathered since the last
    /// call.
    pub fn take_pending(&mut self) -> FlushBatch {
        std::mem::replace(
            &mut self.pending,
            FlushBatch {
                arenas: vec![Vec::new()],
                ..FlushBatch::default()
            },
        )
    }
}

/// An event's or service check's host, tags and origin blob, owned.
type PendingParts = (Option<Vec<u8>>, Vec<Vec<u8>>, Option<Vec<u8>>);

fn owned(tags: Vec<&[u8]>) -> Vec<Vec<u8>> {
    tags.into_iter().map(<[u8]>::to_vec).collect()
}
