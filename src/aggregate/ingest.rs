//! The receive hot path after the socket: every line of a batch of packets parsed (`protocol`)
//! and handed to the aggregator, with each accepted, rejected or discarded line counted. The
//! transports (`listen`, `shard`) call `ingest` whatever they received from; so do the benches.
//! No allocation per line in steady state.

use super::{Aggregator, Discard, GROUP};
use crate::counters::{Counters, Pending, Unsupported};
use crate::protocol::{
    Lines, MessageKind, Metric, message_kind, parse_event, parse_metric_into, parse_service_check,
};

/// One packet for `ingest`: its bytes and the container its sender runs in, if known.
#[derive(Clone, Copy)]
pub struct Packet<'a> {
    pub bytes: &'a [u8],
    pub container: Option<&'a [u8]>,
}

impl<'a> From<&'a [u8]> for Packet<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Packet {
            bytes,
            container: None,
        }
    }
}

/// Parses every line of a batch of packets into the aggregator, counting what was accepted,
/// rejected or unsupported: the whole receive hot path (benchmarks call it directly). Metrics go
/// to the aggregator `GROUP` at a time, across packet boundaries, so their misses overlap.
pub fn ingest<'a, P: Into<Packet<'a>>>(
    agg: &mut Aggregator,
    c: &mut Counters,
    packets: impl IntoIterator<Item = P>,
    at: u64,
) {
    let mut group = [Metric::default(); GROUP];
    let mut n = 0;
    let lines = packets.into_iter().flat_map(|p| {
        let p = p.into();
        Lines::new(p.bytes).map(move |line| (line, p.container))
    });
    for (line, container) in lines {
        match message_kind(line) {
            MessageKind::Metric => {
                let m = &mut group[n];
                match parse_metric_into(line, m) {
                    Ok(()) => {
                        c.metrics += 1;
                        m.origin.socket_container = container;
                        if m.origin.local.is_some()
                            || m.origin.external.is_some()
                            || m.origin.cardinality.is_some()
                        {
                            c.origin_fields(m.origin.check());
                        }
                        n += 1;
                        if n == GROUP {
                            agg.insert_group(&group, at, |d| count_discard(c, d));
                            n = 0;
                        }
                    }
                    Err(e) => c.parse_error(e, line),
                }
            }
            MessageKind::Event => match parse_event(line) {
                Ok(mut e) => {
                    c.events += 1;
                    c.event_field_warnings += u64::from(e.warning.is_some());
                    e.origin.socket_container = container;
                    c.origin_fields(e.origin.check());
                    if let Err(d) = agg.insert_event(&e) {
                        count_discard(c, d);
                    }
                }
                Err(e) => c.event_error(e, line),
            },
            MessageKind::ServiceCheck => match parse_service_check(line) {
                Ok(mut sc) => {
                    c.service_checks += 1;
                    c.event_field_warnings += u64::from(sc.bad_timestamp);
                    sc.origin.socket_container = container;
                    c.origin_fields(sc.origin.check());
                    if let Err(d) = agg.insert_service_check(&sc) {
                        count_discard(c, d);
                    }
                }
                Err(e) => c.service_check_error(e, line),
            },
        }
    }
    agg.insert_group(&group[..n], at, |d| count_discard(c, d));
}

/// Counts a well-formed message the aggregator did not take.
fn count_discard(c: &mut Counters, d: Discard) {
    match d {
        Discard::TimestampedType => c.unsupported[Unsupported::TimestampedType] += 1,
        Discard::EventOverflow => c.pending_full_drops[Pending::Event] += 1,
        Discard::ServiceCheckOverflow => c.pending_full_drops[Pending::ServiceCheck] += 1,
        Discard::Blocked => c.blocked_metrics += 1,
        Discard::EventShed => c.memory_shed_drops[Pending::Event] += 1,
        Discard::ServiceCheckShed => c.memory_shed_drops[Pending::ServiceCheck] += 1,
        Discard::OverflowFull => c.overflow_full_drops += 1,
    }
}
