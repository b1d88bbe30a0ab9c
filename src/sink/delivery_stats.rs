//! What HTTP delivery counts (`delivery`): payloads delivered, retried and given up by reason,
//! spills, the slowest POST and the last error, shared by the delivery thread (which counts)
//! and the sink thread (which reports). Touched once per payload, never per packet.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use crate::label::by;

crate::label::labels! {
    /// Why a payload was given up.
    pub enum DropReason: "reason" {
        /// The intake refused it with a permanent 4xx.
        Rejected => "rejected",
        /// The in-memory queue overflowed and there is no spill directory.
        QueueFull => "queue_full",
        /// The spill directory passed its size limit.
        SpillFull => "spill_full",
        /// Still undelivered when the stop timeout ran out, with no spill directory.
        Stop => "stop",
        /// A spill file that could not be read back or written.
        SpillError => "spill_error",
    }
}

/// Counters shared by the delivery thread and the sink thread (which reports them). Touched
/// once per payload, never per packet.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub payloads: AtomicU64,
    pub bytes: AtomicU64,
    pub points: AtomicU64,
    pub retries: AtomicU64,
    pub dropped_payloads: [AtomicU64; DropReason::ALL.len()],
    pub dropped_points: AtomicU64,
    pub spilled: AtomicU64,
    /// `--durable-delivery` writes that failed (those payloads stayed in memory).
    pub durable_write_errors: AtomicU64,
    /// Slowest successful POST since the last `snapshot`, in microseconds.
    pub max_latency_us: AtomicU64,
    /// What the last failed POST said (a retry's reason, or a refusal).
    pub last_error: Mutex<Option<String>>,
}

/// A copy of the counters; `max_latency_us` is reset by taking it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct StatsSnapshot {
    pub payloads: u64,
    pub bytes: u64,
    pub points: u64,
    pub retries: u64,
    pub dropped_payloads: by!(DropReason),
    pub dropped_points: u64,
    pub spilled: u64,
    pub max_latency_us: u64,
    pub queued_bytes: u64,
    pub spilled_bytes: u64,
}

impl StatsSnapshot {
    pub fn dropped(&self) -> u64 {
        self.dropped_payloads.iter().map(|(_, n)| n).sum()
    }
}
