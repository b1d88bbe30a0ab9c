//! Self-telemetry points under construction: shards' counters and sinks' own figures become
//! `corestatsd.*` points the same way, through one description arena per writer.

use super::{DescRef, FlushBatch, FlushedMetric, OutKind, Suffix, desc};
use crate::protocol::MetricType;

/// Self-telemetry points under construction: one description arena, appended to a batch by
/// `finish`. Used by the shards' telemetry and by the sinks' own.
pub struct PointWriter<'h> {
    host: Option<&'h [u8]>,
    window: u64,
    interval: u32,
    arena: Vec<u8>,
    points: Vec<FlushedMetric>,
}

impl<'h> PointWriter<'h> {
    pub fn new(host: Option<&'h [u8]>, window: u64, interval: u32) -> Self {
        PointWriter {
            host,
            window,
            interval,
            arena: Vec::new(),
            points: Vec::new(),
        }
    }

    /// One point named `name` tagged `tags` (`key:value`, any order), typed as a counter for
    /// `OutKind::Count` and a gauge otherwise.
    pub fn point(&mut self, name: &str, tags: &[&str], kind: OutKind, value: f64) {
        let mut sorted: Vec<&[u8]> = tags.iter().map(|t| t.as_bytes()).collect();
        sorted.sort_unstable();
        let mt = if kind == OutKind::Count {
            MetricType::Counter
        } else {
            MetricType::Gauge
        };
        let desc = desc::encode(
            &mut self.arena,
            mt,
            name.as_bytes(),
            self.host,
            None,
            sorted.into_iter(),
        );
        self.points.push(FlushedMetric {
            desc: DescRef::Arena {
                arena: 0,
                offset: desc,
            },
            suffix: Suffix::None,
            kind,
            value,
            ts: self.window,
            interval: self.interval,
            sketch: None,
            whole: None,
        });
    }

    pub fn finish(self, out: &mut FlushBatch) {
        let arena = out.arenas.len() as u32;
        out.arenas.push(self.arena);
        out.metrics
            .extend(self.points.into_iter().map(|m| match m.desc {
                DescRef::Arena { offset, .. } => FlushedMetric {
                    desc: DescRef::Arena { arena, offset },
                    ..m
                },
                _ => m,
            }));
    }
}
