//! HTTP delivery for the API downstreams (Datadog intake, Prometheus remote write): a bounded
//! queue of encoded, compressed payloads, one delivery thread that posts them, retries with
//! exponential backoff and jitter, spills to disk what memory cannot hold, and counts everything
//! it sends, retries or drops.
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
//! first, including by the next process started on the same directory. At stop the thread keeps
//! delivering for `stop_timeout`, then spills (or drops, counted) what is left.

use crate::label::{Label, by};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

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
}

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
}

/// The sink's handle on its delivery thread.
pub struct Delivery {
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Delivery {
    /// Reads the spill directory (creating it) and starts the delivery thread.
    pub fn start(cfg: DeliveryConfig) -> io::Result<Delivery> {
        let spill = match &cfg.spill_dir {
            Some(dir) => Some(SpillDir::open(dir, cfg.spill_max_bytes)?),
            None => None,
        };
        if let Some(sp) = spill.as_ref().filter(|sp| !sp.is_empty()) {
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
        let shared = Arc::new(Shared {
            cfg,
            queue: Mutex::new(queue),
            wake: Condvar::new(),
            stats: DeliveryStats::default(),
        });
        let s = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name(format!("corestatsd-{}", shared.cfg.name))
            .spawn(move || deliver_loop(&s))?;
        Ok(Delivery {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues one payload; never waits for the network.
    pub fn submit(&self, p: Payload) {
        let mut q = self.shared.lock();
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
    /// thread. Returns the final counters.
    pub fn close(&mut self) -> StatsSnapshot {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.snapshot()
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.close();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Writes `p` as the newest spill file, or drops it (counted) without a spill directory.
    fn spill_or_drop(&self, q: &mut Queue, p: Payload, without_dir: DropReason) {
        let Some(spill) = q.spill.as_mut() else {
            self.count_drop(&p, without_dir);
            return;
        };
        match spill.write(&p) {
            Ok(evicted) => {
                self.stats.spilled.fetch_add(1, Ordering::Relaxed);
                for (path, points) in evicted {
                    let gone = Payload {
                        points,
                        path: path.display().to_string(),
                        ..Payload::default()
                    };
                    self.count_drop(&gone, DropReason::SpillFull);
                }
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
    Queued(Payload),
}

fn deliver_loop(s: &Shared) {
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
                Some(p) => (p, Some(f)),
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
        match (spill_file, delivered) {
            (Some(f), true) => f.remove(),
            (None, true) => {}
            (spilled, false) => {
                // Stop timeout: a spilled file stays on disk, back at the head for the next
                // process; a queued payload goes back to the queue, to be spilled or dropped.
                let mut q = s.lock();
                match (spilled, q.spill.as_mut()) {
                    (Some(f), Some(spill)) => spill.put_back(f),
                    _ => {
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

/// xorshift64*: enough to spread retries of many senders, no crate needed.
struct Jitter(u64);

impl Jitter {
    fn seeded() -> Jitter {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Jitter(t | 1)
    }

    /// Uniform in [0, 1).
    fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    fn payload(i: u8) -> Payload {
        Payload {
            path: "/p".into(),
            content_type: "x".into(),
            encoding: String::new(),
            points: 1,
            body: vec![i; 100],
        }
    }

    fn unreachable(dir: &Path, spill_files: u64) -> DeliveryConfig {
        DeliveryConfig {
            name: "test",
            // Port 1 on loopback: nothing listens, every POST fails to connect.
            base_url: "http://127.0.0.1:1".into(),
            headers: vec![],
            timeout: Duration::from_secs(1),
            queue_bytes: 1,
            spill_dir: Some(dir.to_path_buf()),
            // Each file: a 29-byte header and the 100-byte body.
            spill_max_bytes: spill_files * 129,
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(60),
            stop_timeout: Duration::ZERO,
        }
    }

    fn spilled_bodies(dir: &Path) -> Vec<u8> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| {
                let bytes = fs::read(f).unwrap();
                // The body (100 bytes of the payload's number) ends the file.
                bytes[bytes.len() - 100]
            })
            .collect()
    }

    #[test]
    fn overflow_spills_the_limit_drops_the_oldest_and_a_restart_sends_them_first() {
        let dir = std::env::temp_dir().join(format!("corestatsd-spill-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("00000000000000000007.tmp"), b"cut short").unwrap();
        let mut d = Delivery::start(unreachable(&dir, 2)).unwrap();
        assert!(!dir.join("00000000000000000007.tmp").exists());
        d.submit(payload(0));
        // Payload 0 is in flight (waiting out its backoff) once its first attempt failed.
        let deadline = Instant::now() + Duration::from_secs(10);
        while d.snapshot().retries == 0 {
            assert!(Instant::now() < deadline, "no attempt made");
            thread::sleep(Duration::from_millis(5));
        }
        for i in 1..=5 {
            d.submit(payload(i));
        }
        // The queue holds the newest (5); 1..=4 were spilled, and the limit of two files kept
        // only 3 and 4.
        assert_eq!(spilled_bodies(&dir), [3, 4]);
        let s = d.close();
        // At stop the payload in flight and the queued one are spilled too; the limit keeps the
        // last two written.
        assert_eq!(spilled_bodies(&dir), [0, 5]);
        assert_eq!(s.dropped_payloads[DropReason::SpillFull], 4);
        assert_eq!((s.dropped_points, s.payloads, s.spilled), (4, 0, 6));

        // A new process on the same directory finds them, oldest first, and keeps them while
        // the intake stays unreachable.
        let mut again = Delivery::start(unreachable(&dir, 2)).unwrap();
        while again.snapshot().retries == 0 {
            assert!(
                Instant::now() < deadline + Duration::from_secs(10),
                "no attempt made"
            );
            thread::sleep(Duration::from_millis(5));
        }
        let s = again.close();
        assert_eq!((s.dropped(), s.spilled_bytes), (0, 2 * 129));
        assert_eq!(spilled_bodies(&dir), [0, 5]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn jitter_stays_in_unit_interval() {
        let mut j = Jitter(42);
        for _ in 0..1000 {
            let x = j.next_unit();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
