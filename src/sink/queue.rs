//! The cores' end of the sink thread's queue, bounded by the points waiting in it.
//!
//! Owns the count of points queued: cores add when they send a batch, the sink thread takes
//! away once it has written one. Touched once per batch, never per packet. Must not hold a
//! batch back: a core never waits on the sink; what does not fit is dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use super::ToSink;
use crate::flushed::FlushBatch;

/// The sink thread is gone (it ended or panicked): nothing sent now can be written.
#[derive(Debug)]
pub struct SinkGone;

/// A sender to the sink thread (`spawn`), cloned for every core.
#[derive(Clone)]
pub struct SinkSender {
    tx: mpsc::Sender<ToSink>,
    queued: Arc<AtomicU64>,
    max_points: u64,
}

/// The sink thread's side of the count.
pub(super) struct Queued(Arc<AtomicU64>);

impl Queued {
    /// `batch`, just taken off the queue, is no longer waiting.
    pub(super) fn taken(&self, batch: &FlushBatch) {
        self.0.fetch_sub(items(batch), Ordering::Relaxed);
    }
}

pub(super) fn channel(max_points: u64) -> (SinkSender, mpsc::Receiver<ToSink>, Queued) {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicU64::new(0));
    let sender = SinkSender {
        tx,
        queued: queued.clone(),
        max_points,
    };
    (sender, rx, Queued(queued))
}

fn items(batch: &FlushBatch) -> u64 {
    (batch.metrics.len() + batch.events.len() + batch.service_checks.len()) as u64
}

impl SinkSender {
    /// Sends `msg`. A batch finding `max_points` or more already waiting loses its points,
    /// events and service checks (their number is returned, for the caller to count); what
    /// it says was freed still goes, so the sink's context table forgets those contexts. A
    /// batch reaching an empty queue always goes whole, however large.
    pub fn send(&self, msg: ToSink) -> Result<u64, SinkGone> {
        let (msg, dropped) = match msg {
            ToSink::Batch(mut batch) => {
                let n = items(&batch);
                let before = self.queued.fetch_add(n, Ordering::Relaxed);
                if before > 0 && before + n > self.max_points {
                    self.queued.fetch_sub(n, Ordering::Relaxed);
                    batch.metrics = Vec::new();
                    batch.events = Vec::new();
                    batch.service_checks = Vec::new();
                    (ToSink::Batch(batch), n)
                } else {
                    (ToSink::Batch(batch), 0)
                }
            }
            other => (other, 0),
        };
        self.tx.send(msg).map_err(|_| SinkGone)?;
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flushed::{DescRef, FlushedMetric, OutKind, Suffix};

    fn batch(points: usize, freed: &[u64]) -> ToSink {
        let m = FlushedMetric {
            desc: DescRef::Context(1),
            suffix: Suffix::None,
            kind: OutKind::Count,
            value: 1.0,
            ts: 0,
            interval: 10,
            sketch: None,
            whole: None,
        };
        ToSink::Batch(FlushBatch {
            metrics: vec![m; points],
            freed: freed.to_vec(),
            ..FlushBatch::default()
        })
    }

    fn points_of(msg: ToSink) -> (usize, Vec<u64>) {
        let ToSink::Batch(b) = msg else {
            panic!("a batch")
        };
        (b.metrics.len(), b.freed)
    }

    #[test]
    fn a_full_queue_drops_points_but_keeps_expiries_until_the_sink_catches_up() {
        let (tx, rx, queued) = channel(10);
        // An empty queue takes any batch whole, even one over the bound.
        assert_eq!(tx.send(batch(12, &[])).unwrap(), 0);
        assert_eq!(tx.send(batch(3, &[7])).unwrap(), 3);
        let first = rx.recv().unwrap();
        assert_eq!(points_of(rx.recv().unwrap()), (0, vec![7]));
        let ToSink::Batch(b) = &first else {
            unreachable!()
        };
        queued.taken(b);
        // Written: room again.
        assert_eq!(tx.send(batch(6, &[])).unwrap(), 0);
        assert_eq!(tx.send(batch(4, &[])).unwrap(), 0, "6 + 4 fits in 10");
        assert_eq!(tx.send(batch(1, &[])).unwrap(), 1);
        assert_eq!(points_of(first).0, 12);
        drop(rx);
        assert!(tx.send(batch(1, &[])).is_err());
    }
}
