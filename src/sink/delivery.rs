//! HTTP delivery for the API downstreams (Datadog intake, Prometheus remote write): a bounded
//! queue of encoded, compressed payloads, `max_in_flight` delivery threads that post them (one
//! request each at a time; remote write keeps one, for its per-series order), retry with
//! exponential backoff and jitter, spill to disk what memory cannot hold, and count everything
//! they send, retry or drop.
//!
//! Owns the delivery thread and the queue, and decides when to spill (`spill.rs` owns the files).
//! Must not encode: it moves opaque `Payload`s. The sink thread only enqueues (never blocks on the network), so a slow intake
//! never stalls the flush, let alone receive.
//!
//! Outcome of one POST: 2xx is delivered; 408, 429, 5xx, timeouts and connection errors are
//! retried (the same payload, after `base × 2^attempt` capped at `max`, each delay drawn in
//! [½, 1] of that); any other status is permanent: the payload is dropped, counted and logged with
//! the status and the start of the response body. Overflowing `queue_bytes` moves the oldest
//! payloads to the spill directory when there is one (dropping the oldest spilled files past
//! `spill_max_bytes`), or drops them. Spilled payloads are older than queued ones and are sent
//! first, including by the next process started on the same directory. At stop the threads keep
//! delivering for `stop_timeout`, then spill (or drop, counted) what is left. A request still
//! waiting for its answer then is not waited for: its payload is spilled (so it may arrive twice:
//! at least once) or dropped and counted, and `close` returns within the stop timeout.

use crate::label::{Label, by};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::jitter::Jitter;
use super::payload::Payload;
use super::spill::{SpillDir, Spilled};

/// Settings of one delivery thread.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// For logs and thread names: `datadog`, `prometheus-remote-write`.
    pub name: &'static str,
    /// Base URL without a trailing slash; a payload's path is appended.
    pub base_url: String,
    /// Sent with every request (API key, protocol version). Never logged.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub queue_bytes: usize,
    pub spill_dir: Option<PathBuf>,
    pub spill_max_bytes: u64,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub stop_timeout: Duration,
    /// Requests out at once (threads); 1 keeps payloads in order.
    pub max_in_flight: usize,
    /// `--durable-delivery`: every payload is written to the spill directory (synced) before
    /// it is sent and removed once delivered, so a crash loses none that left the sink.
    pub durable: bool,
}

/// How much longer than the stop timeout `close` waits for a request that is already out.
const STOP_GRACE: Duration = Duration::from_millis(250);

pub use super::delivery_stats::{DeliveryStats, DropReason, StatsSnapshot};

struct Queue {
    items: VecDeque<Payload>,
    bytes: usize,
    spill: Option<SpillDir>,
    closed: bool,
}

struct Shared {
    cfg: DeliveryConfig,
    queue: Mutex<Queue>,
    wake: Condvar,
    stats: DeliveryStats,
    /// Per delivery thread: the payload it is posting, when it came from the queue (a spilled
    /// one stays on disk until delivered).
    in_flight: Mutex<Vec<Option<Arc<Payload>>>>,
    /// Delivery threads still running; `ended` is notified as each one returns.
    running: Mutex<usize>,
    ended: Condvar,
}

/// The sink's handle on its delivery threads.
pub struct Delivery {
    shared: Arc<Shared>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Delivery {
    /// Reads the spill directory (creating it) and starts the delivery thread.
    pub fn start(cfg: DeliveryConfig) -> io::Result<Delivery> {
        let spill = match &cfg.spill_dir {
            Some(dir) => Some(SpillDir::open(dir, cfg.spill_max_bytes)?),
            None => None,
        };
        if let Some(sp) = spill.as_ref().filter(|sp| !sp.is_owned()) {
            eprintln!(
                "corestatsd: {}: the spill directory {} is another process' (the one taken \
                 over): its files are sent once it exits",
                cfg.name,
                sp.dir().display()
            );
        } else if let Some(sp) = spill.as_ref().filter(|sp| !sp.is_empty()) {
            eprintln!(
                "corestatsd: {}: {} spilled payloads ({} bytes) in {} will be sent first",
                cfg.name,
                sp.len(),
                sp.bytes(),
                sp.dir().display()
            );
        }
        let queue = Queue {
            items: VecDeque::new(),
            bytes: 0,
            spill,
            closed: false,
        };
        let workers = cfg.max_in_flight.max(1);
        let shared = Arc::new(Shared {
            cfg,
            queue: Mutex::new(queue),
            wake: Condvar::new(),
            stats: DeliveryStats::default(),
            in_flight: Mutex::new(vec![None; workers]),
            running: Mutex::new(workers),
            ended: Condvar::new(),
        });
        let mut threads = Vec::with_capacity(workers);
        for worker in 0..workers {
            let s = Arc::clone(&shared);
            let spawned = thread::Builder::new()
                .name(format!("corestatsd-{}-{worker}", shared.cfg.name))
                .spawn(move || {
                    deliver_loop(&s, worker);
                    *s.running.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                    s.ended.notify_all();
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // The ones started stop at once: nothing was queued yet.
                    shared.lock().closed = true;
                    shared.wake.notify_all();
                    return Err(e);
                }
            }
        }
        Ok(Delivery { shared, threads })
    }

    /// Queues one payload; never waits for the network. Durable: written to the spill
    /// directory first (a write that fails leaves it in memory, logged).
    pub fn submit(&self, p: Payload) {
        let mut q = self.shared.lock();
        if self.shared.cfg.durable
            && let Some(spill) = q.spill.as_mut()
        {
            match spill.write_synced(&p, true) {
                Ok(evicted) => {
                    self.shared.count_evicted(evicted);
                    drop(q);
                    self.shared.wake.notify_all();
                    return;
                }
                Err(e) => {
                    let n = self
                        .shared
                        .stats
                        .durable_write_errors
                        .fetch_add(1, Ordering::Relaxed);
                    if n.is_power_of_two() || n == 0 {
                        eprintln!(
                            "corestatsd: {}: --durable-delivery: cannot write to {}: {e}; kept in \
                             memory ({} such so far)",
                            self.shared.cfg.name,
                            spill.dir().display(),
                            n + 1
                        );
                    }
                }
            }
        }
        q.bytes += p.cost();
        q.items.push_back(p);
        while q.bytes > self.shared.cfg.queue_bytes && q.items.len() > 1 {
            let Some(old) = q.items.pop_front() else {
                break;
            };
            q.bytes -= old.cost();
            self.shared
                .spill_or_drop(&mut q, old, DropReason::QueueFull);
        }
        drop(q);
        self.shared.wake.notify_all();
    }

    /// What the last failed POST said, if one failed.
    pub fn last_error(&self) -> Option<String> {
        let e = self.shared.stats.last_error.lock();
        e.unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let s = &self.shared.stats;
        let q = self.shared.lock();
        StatsSnapshot {
            payloads: s.payloads.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            points: s.points.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            dropped_payloads: {
                let mut by_reason = <by!(DropReason)>::default();
                for (r, n) in by_reason.iter_mut() {
                    *n = s.dropped_payloads[Label::index(r)].load(Ordering::Relaxed);
                }
                by_reason
            },
            dropped_points: s.dropped_points.load(Ordering::Relaxed),
            spilled: s.spilled.load(Ordering::Relaxed),
            max_latency_us: s.max_latency_us.swap(0, Ordering::Relaxed),
            queued_bytes: q.bytes as u64,
            spilled_bytes: q.spill.as_ref().map_or(0, SpillDir::bytes),
        }
    }

    /// Delivers what it can within the stop timeout, spills or drops the rest, and joins the
    /// threads; a request still out when the timeout (and a short grace) has passed is not
    /// waited for: its payload is spilled or dropped, counted. Returns the final counters.
    pub fn close(&mut self) -> StatsSnapshot {
        if self.threads.is_empty() {
            return self.snapshot();
        }
        let s = &self.shared;
        s.lock().closed = true;
        s.wake.notify_all();
        let deadline = Instant::now() + s.cfg.stop_timeout + STOP_GRACE;
        let mut running = s.running.lock().unwrap_or_else(|e| e.into_inner());
        while *running > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            running = s
                .ended
                .wait_timeout(running, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let cut_short = *running > 0;
        drop(running);
        if cut_short {
            // Left running, detached: the process is about to exit.
            self.threads.clear();
            let out: Vec<Arc<Payload>> = s
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter_mut()
                .filter_map(Option::take)
                .collect();
            eprintln!(
                "corestatsd: {}: stop timeout reached with {} requests unanswered; {}",
                s.cfg.name,
                out.len(),
                match &s.cfg.spill_dir {
                    Some(d) => format!("their payloads spilled to {}", d.display()),
                    None => "their payloads dropped (set a spill directory to keep them)".into(),
                }
            );
            let mut q = s.lock();
            for p in out {
                s.spill_or_drop(&mut q, Arc::unwrap_or_clone(p), DropReason::Stop);
            }
            // No thread is free to do it: what is still queued goes too.
            drain_at_stop(s, &mut q);
        } else {
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
        self.snapshot()
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.close();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Worker `worker` is posting `p` (`None`: nothing, or a spilled file). Returns whether the
    /// payload is still its own: false once `close` took it (it was spilled or dropped).
    fn set_in_flight(&self, worker: usize, p: Option<Arc<Payload>>) -> bool {
        let mut all = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let mine = all[worker].is_some();
        all[worker] = p;
        mine
    }

    fn note_error(&self, error: String) {
        *self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    fn count_drop(&self, p: &Payload, reason: DropReason) {
        let n = self.stats.dropped_payloads[Label::index(reason)].fetch_add(1, Ordering::Relaxed);
        self.stats
            .dropped_points
            .fetch_add(p.points, Ordering::Relaxed);
        if n == 0 || n.is_power_of_two() {
            eprintln!(
                "corestatsd: {}: dropped a payload of {} points for {} ({}; {} such so far)",
                self.cfg.name,
                p.points,
                p.path,
                reason.name(),
                n + 1
            );
        }
    }

    /// Counts the spill files a write pushed out past the directory's limit.
    fn count_evicted(&self, evicted: Vec<(PathBuf, u64)>) {
        for (path, points) in evicted {
            let gone = Payload {
                points,
                path: path.display().to_string(),
                ..Payload::default()
            };
            self.count_drop(&gone, DropReason::SpillFull);
        }
    }

    /// Writes `p` as the newest spill file, or drops it (counted) without a spill directory.
    fn spill_or_drop(&self, q: &mut Queue, p: Payload, without_dir: DropReason) {
        let Some(spill) = q.spill.as_mut() else {
            self.count_drop(&p, without_dir);
            return;
        };
        match spill.write(&p) {
            Ok(evicted) => {
                self.stats.spilled.fetch_add(1, Ordering::Relaxed);
                self.count_evicted(evicted);
            }
            Err(e) => {
                eprintln!(
                    "corestatsd: {}: cannot spill to {}: {e}",
                    self.cfg.name,
                    spill.dir().display()
                );
                self.count_drop(&p, DropReason::SpillError);
            }
        }
    }
}

/// Where the next payload comes from.
enum Next {
    Spilled(Spilled),
    Queued(Arc<Payload>),
}

fn deliver_loop(s: &Shared, worker: usize) {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(s.cfg.timeout))
        .http_status_as_error(false)
        .user_agent(concat!("corestatsd/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut rng = Jitter::seeded();
    let mut stop_by: Option<Instant> = None;
    loop {
        let next = {
            let mut q = s.lock();
            loop {
                if q.closed && stop_by.is_none() {
                    stop_by = Some(Instant::now() + s.cfg.stop_timeout);
                }
                if stop_by.is_some_and(|t| Instant::now() >= t) {
                    drain_at_stop(s, &mut q);
                    break None;
                }
                if let Some(f) = q.spill.as_mut().and_then(SpillDir::take_oldest) {
                    break Some(Next::Spilled(f));
                }
                if let Some(p) = q.items.pop_front() {
                    q.bytes -= p.cost();
                    // Registered before the queue is unlocked: `close` sees it in one place
                    // or the other.
                    let p = Arc::new(p);
                    s.set_in_flight(worker, Some(Arc::clone(&p)));
                    break Some(Next::Queued(p));
                }
                if q.closed {
                    break None;
                }
                q = s.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let Some(next) = next else { return };
        let (payload, spill_file) = match next {
            Next::Queued(p) => (p, None),
            Next::Spilled(f) => match f.read() {
                Some(p) => (Arc::new(p), Some(f)),
                None => {
                    eprintln!(
                        "corestatsd: {}: spill file {} is unreadable; removed",
                        s.cfg.name,
                        f.path.display()
                    );
                    f.remove();
                    s.count_drop(&Payload::default(), DropReason::SpillError);
                    continue;
                }
            },
        };
        let delivered = send_with_retries(s, &http, &payload, &mut rng, &mut stop_by);
        // Taken back from `close`'s reach; if `close` took it first, it was spilled or dropped.
        let still_mine = s.set_in_flight(worker, None);
        match (spill_file, delivered) {
            (Some(f), true) => f.remove(),
            (None, true) => {}
            (spilled, false) => {
                // Stop timeout: a spilled file stays on disk, back at the head for the next
                // process; a queued payload goes back to the queue, to be spilled or dropped.
                let mut q = s.lock();
                match (spilled, q.spill.as_mut()) {
                    (Some(f), Some(spill)) => spill.put_back(f),
                    (None, _) if !still_mine => {}
                    _ => {
                        let payload = Arc::unwrap_or_clone(payload);
                        q.bytes += payload.cost();
                        q.items.push_front(payload);
                    }
                }
                drain_at_stop(s, &mut q);
                return;
            }
        }
    }
}

/// The stop timeout ran out: queued payloads go to the spill directory, or are dropped.
fn drain_at_stop(s: &Shared, q: &mut Queue) {
    let left: Vec<Payload> = q.items.drain(..).collect();
    q.bytes = 0;
    if !left.is_empty() {
        eprintln!(
            "corestatsd: {}: stop timeout reached with {} payloads undelivered; {}",
            s.cfg.name,
            left.len(),
            match &s.cfg.spill_dir {
                Some(d) => format!("spilled to {}", d.display()),
                None => "dropped (set a spill directory to keep them)".into(),
            }
        );
    }
    for p in left {
        s.spill_or_drop(q, p, DropReason::Stop);
    }
}

/// Posts until delivered (true), permanently refused (true: given up and counted), or the stop
/// timeout passes (false: the caller keeps the payload).
fn send_with_retries(
    s: &Shared,
    http: &ureq::Agent,
    p: &Payload,
    rng: &mut Jitter,
    stop_by: &mut Option<Instant>,
) -> bool {
    let url = format!("{}{}", s.cfg.base_url, p.path);
    let mut attempt: u32 = 0;
    loop {
        let started = Instant::now();
        let outcome = post(http, &url, &s.cfg.headers, p);
        match outcome {
            Outcome::Delivered => {
                let us = started.elapsed().as_micros() as u64;
                s.stats.max_latency_us.fetch_max(us, Ordering::Relaxed);
                s.stats.payloads.fetch_add(1, Ordering::Relaxed);
                s.stats
                    .bytes
                    .fetch_add(p.body.len() as u64, Ordering::Relaxed);
                s.stats.points.fetch_add(p.points, Ordering::Relaxed);
                return true;
            }
            Outcome::Permanent(status, body) => {
                eprintln!(
                    "corestatsd: {}: {url} refused a payload with HTTP {status}: {body}",
                    s.cfg.name
                );
                s.note_error(format!(
                    "{url} refused a payload with HTTP {status}: {body}"
                ));
                s.count_drop(p, DropReason::Rejected);
                return true;
            }
            Outcome::Retry(why) => {
                s.stats.retries.fetch_add(1, Ordering::Relaxed);
                s.note_error(format!("{url}: {why}"));
                let exp = s
                    .cfg
                    .backoff_base
                    .saturating_mul(1u32 << attempt.min(20))
                    .min(s.cfg.backoff_max);
                let delay = exp.mul_f64(0.5 + 0.5 * rng.next_unit());
                if attempt == 0 || attempt.is_power_of_two() {
                    eprintln!(
                        "corestatsd: {}: {url}: {why}; retry {} in {} ms",
                        s.cfg.name,
                        attempt + 1,
                        delay.as_millis()
                    );
                }
                attempt += 1;
                // Wait for the delay, waking early only to notice a stop.
                let until = Instant::now() + delay;
                let mut q = s.lock();
                loop {
                    if q.closed && stop_by.is_none() {
                        *stop_by = Some(Instant::now() + s.cfg.stop_timeout);
                    }
                    let now = Instant::now();
                    if stop_by.is_some_and(|t| now >= t) {
                        return false;
                    }
                    let wake_at = stop_by.map_or(until, |t| t.min(until));
                    if now >= wake_at {
                        break;
                    }
                    q = s
                        .wake
                        .wait_timeout(q, wake_at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}

enum Outcome {
    Delivered,
    Retry(String),
    Permanent(u16, String),
}

fn post(http: &ureq::Agent, url: &str, headers: &[(String, String)], p: &Payload) -> Outcome {
    let mut req = http.post(url).header("Content-Type", &p.content_type);
    if !p.encoding.is_empty() {
        req = req.header("Content-Encoding", &p.encoding);
    }
    for (k, v) in headers {
        req = req.header(k, v);
    }
    match req.send(&p.body[..]) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let mut body = String::new();
            let _ = resp
                .body_mut()
                .as_reader()
                .take(512)
                .read_to_string(&mut body);
            match status {
                200..=299 => Outcome::Delivered,
                408 | 429 | 500..=599 => Outcome::Retry(format!("HTTP {status}")),
                _ => Outcome::Permanent(status, body.trim().to_owned()),
            }
        }
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

#[cfg(test)]
#[path = "delivery_tests.rs"]
mod tests;
