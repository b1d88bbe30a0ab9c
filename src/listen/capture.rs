//! Traffic capture: every packet the shards receive, for a number of seconds, into one file in
//! the Datadog Agent's capture format, version 3 (`.dog`), so the Agent's `dogstatsd-replay`
//! and `corestatsd-blast --replay` can send it again.
//!
//! The file: the header `D4 74 D0 60 F3 FF 00 00` (`F0 | version` in its fifth byte); then per
//! packet a u32 little-endian length and a protobuf `UnixDogstatsdMsg` {1: timestamp (unix ns),
//! 2: payload size, 3: payload, 4: pid, 5: ancillary size (0: none kept)}; then a u32 zero, a
//! protobuf `TaggerState` {2: pid map, pid to the container origin detection found} and its u32
//! little-endian size. With zstd, the whole file is one zstd frame (`.dog.zst`).
//!
//! Owns the capture's queues and its writer thread. Receive never waits on it: while a capture
//! runs, each shard offers its packets to a bounded queue of its own (`try_send`; what does not
//! fit is counted as dropped), and one writer thread drains them all. When none runs, a shard's
//! whole cost is one relaxed load per receive batch (`is_on`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The capture file's first 8 bytes.
pub const HEADER: [u8; 8] = [0xD4, 0x74, 0xD0, 0x60, 0xF3, 0xFF, 0x00, 0x00];
/// Packets a shard may have waiting for the writer.
const QUEUE_PER_SHARD: usize = 16_384;
/// Longest capture.
pub const MAX_SECONDS: u64 = 3_600;

/// One received packet.
pub struct Record {
    /// Unix nanoseconds.
    pub ns: i64,
    /// The sender's pid (unix sockets with credentials), else 0.
    pub pid: i32,
    /// The sender's container, when origin detection found one.
    pub container: Option<Box<[u8]>>,
    pub payload: Box<[u8]>,
}

/// What `/capture` and `corestatsd capture` report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub running: bool,
    pub file: Option<String>,
    pub seconds: u64,
    /// Packets written so far.
    pub packets: u64,
    /// Packets a full queue turned away.
    pub dropped: u64,
    pub error: Option<String>,
}

/// How to capture.
#[derive(Debug, Clone)]
pub struct Spec {
    pub seconds: u64,
    pub zstd: bool,
    pub dir: PathBuf,
}

/// The process' capture, shared by the shards (which offer packets) and the HTTP endpoint
/// (which starts it).
pub struct Capture {
    on: AtomicBool,
    /// Per shard: its queue while a capture runs.
    queues: Box<[Mutex<Option<SyncSender<Record>>>]>,
    dropped: AtomicU64,
    written: AtomicU64,
    report: Mutex<Report>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Capture {
    pub fn new(shards: usize) -> Arc<Capture> {
        Arc::new(Capture {
            on: AtomicBool::new(false),
            queues: (0..shards).map(|_| Mutex::new(None)).collect(),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            report: Mutex::new(Report::default()),
        })
    }

    /// Whether a capture runs: checked once per receive batch.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The time stamp a batch's records carry.
    pub fn now_ns() -> i64 {
        unix_ns()
    }

    /// Offers a shard's packets; never waits.
    pub fn offer(&self, shard: usize, records: impl Iterator<Item = Record>) {
        let Some(slot) = self.queues.get(shard) else {
            return;
        };
        let queue = lock(slot);
        let Some(tx) = queue.as_ref() else { return };
        for r in records {
            if tx.try_send(r).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn report(&self) -> Report {
        let mut r = lock(&self.report).clone();
        if r.running {
            r.packets = self.written.load(Ordering::Relaxed);
            r.dropped = self.dropped.load(Ordering::Relaxed);
        }
        r
    }

    /// Starts a capture; returns the file it writes. One at a time.
    pub fn start(self: &Arc<Self>, spec: Spec) -> Result<PathBuf, String> {
        if !(1..=MAX_SECONDS).contains(&spec.seconds) {
            return Err(format!("seconds={}: from 1 to {MAX_SECONDS}", spec.seconds));
        }
        let mut report = lock(&self.report);
        if report.running {
            return Err(format!(
                "a capture into {} is already running",
                report.file.as_deref().unwrap_or("?")
            ));
        }
        let name = format!(
            "corestatsd-capture-{}.dog{}",
            unix_ns() / 1_000_000_000,
            if spec.zstd { ".zst" } else { "" }
        );
        let path = spec.dir.join(name);
        // Never over an existing file.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let mut receivers = Vec::with_capacity(self.queues.len());
        for slot in self.queues.iter() {
            let (tx, rx) = sync_channel(QUEUE_PER_SHARD);
            *lock(slot) = Some(tx);
            receivers.push(rx);
        }
        self.dropped.store(0, Ordering::Relaxed);
        self.written.store(0, Ordering::Relaxed);
        *report = Report {
            running: true,
            file: Some(path.display().to_string()),
            seconds: spec.seconds,
            ..Report::default()
        };
        drop(report);
        self.on.store(true, Ordering::Relaxed);
        eprintln!(
            "corestatsd: capture: recording every packet for {} s into {}",
            spec.seconds,
            path.display()
        );
        let me = self.clone();
        let until = Instant::now() + Duration::from_secs(spec.seconds);
        let thread_path = path.clone();
        thread::Builder::new()
            .name("corestatsd-capture".into())
            .spawn(move || me.write(file, &thread_path, spec.zstd, receivers, until))
            .map_err(|e| format!("cannot start the capture thread: {e}"))?;
        Ok(path)
    }

    /// The writer thread: drains every shard's queue until `until`, then closes the queues,
    /// drains what is left, and writes the trailer.
    fn write(
        &self,
        file: File,
        path: &Path,
        zstd: bool,
        receivers: Vec<Receiver<Record>>,
        until: Instant,
    ) {
        let started = Instant::now();
        let result = (|| -> io::Result<u64> {
            let out = BufWriter::with_capacity(1 << 20, file);
            let mut out = if zstd {
                Out::Zstd(zstd::Encoder::new(out, 3)?)
            } else {
                Out::Plain(out)
            };
            out.write_all(&HEADER)?;
            let mut pids: HashMap<i32, Box<[u8]>> = HashMap::new();
            let mut buf = Vec::new();
            let mut open = receivers.len();
            let mut closed = vec![false; receivers.len()];
            let mut stopping = false;
            while open > 0 {
                if !stopping && Instant::now() >= until {
                    self.on.store(false, Ordering::Relaxed);
                    for slot in self.queues.iter() {
                        *lock(slot) = None;
                    }
                    stopping = true;
                }
                let mut any = false;
                for (i, rx) in receivers.iter().enumerate() {
                    if closed[i] {
                        continue;
                    }
                    loop {
                        match rx.try_recv() {
                            Ok(r) => {
                                any = true;
                                encode(&mut buf, &r);
                                out.write_all(&(buf.len() as u32).to_le_bytes())?;
                                out.write_all(&buf)?;
                                self.written.fetch_add(1, Ordering::Relaxed);
                                if r.pid > 0
                                    && let Some(c) = r.container
                                {
                                    pids.insert(r.pid, c);
                                }
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                closed[i] = true;
                                open -= 1;
                                break;
                            }
                        }
                    }
                }
                if !any {
                    thread::sleep(Duration::from_millis(2));
                }
            }
            out.write_all(&0u32.to_le_bytes())?;
            let mut state = Vec::new();
            for (pid, container) in &pids {
                crate::proto::message(&mut state, 2, |e| {
                    crate::proto::uint(e, 1, *pid as u64);
                    crate::proto::bytes(e, 2, container);
                });
            }
            out.write_all(&state)?;
            out.write_all(&(state.len() as u32).to_le_bytes())?;
            out.finish()?;
            Ok(self.written.load(Ordering::Relaxed))
        })();
        // A write error ends the capture early: stop offering.
        self.on.store(false, Ordering::Relaxed);
        for slot in self.queues.iter() {
            *lock(slot) = None;
        }
        let dropped = self.dropped.load(Ordering::Relaxed);
        let mut report = lock(&self.report);
        report.running = false;
        report.dropped = dropped;
        match result {
            Ok(packets) => {
                report.packets = packets;
                eprintln!(
                    "corestatsd: capture: wrote {packets} packets to {} in {:.1} s ({dropped} \
                     dropped by full queues)",
                    path.display(),
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                report.packets = self.written.load(Ordering::Relaxed);
                report.error = Some(format!("{}: {e}", path.display()));
                eprintln!("corestatsd: capture: {} failed: {e}", path.display());
            }
        }
    }
}

/// The file, compressed or not.
enum Out {
    Plain(BufWriter<File>),
    Zstd(zstd::Encoder<'static, BufWriter<File>>),
}

impl Out {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Out::Plain(w) => w.write_all(b),
            Out::Zstd(w) => w.write_all(b),
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Out::Plain(mut w) => w.flush(),
            Out::Zstd(w) => w.finish()?.flush(),
        }
    }
}

/// One `UnixDogstatsdMsg`.
fn encode(out: &mut Vec<u8>, r: &Record) {
    out.clear();
    crate::proto::int64(out, 1, r.ns);
    crate::proto::uint(out, 2, r.payload.len() as u64);
    crate::proto::bytes(out, 3, &r.payload);
    crate::proto::uint(out, 4, u64::from(r.pid.max(0) as u32));
    crate::proto::uint(out, 5, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: &str, pid: i32) -> Record {
        Record {
            ns: 1_700_000_000_123_456_789,
            pid,
            container: (pid > 0).then(|| b"ctr-1".to_vec().into_boxed_slice()),
            payload: payload.as_bytes().into(),
        }
    }

    #[test]
    fn a_capture_writes_the_agents_layout_and_reports_its_count() {
        let dir = std::env::temp_dir().join(format!("corestatsd-capture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cap = Capture::new(2);
        assert!(!cap.is_on());
        cap.offer(0, [record("lost:1|c", 0)].into_iter());
        let path = cap
            .start(Spec {
                seconds: 1,
                zstd: false,
                dir: dir.clone(),
            })
            .unwrap();
        assert!(cap.is_on());
        let again = cap.start(Spec {
            seconds: 1,
            zstd: false,
            dir: dir.clone(),
        });
        assert!(again.unwrap_err().contains("already running"));
        cap.offer(0, [record("a:1|c", 0)].into_iter());
        cap.offer(1, [record("b:2|c", 42)].into_iter());
        let deadline = Instant::now() + Duration::from_secs(20);
        while cap.report().running {
            assert!(Instant::now() < deadline, "the capture never ended");
            thread::sleep(Duration::from_millis(20));
        }
        let r = cap.report();
        assert_eq!((r.packets, r.dropped, r.error), (2, 0, None));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes[..8], HEADER);
        // First record: length, then the message (field 1 varint timestamp ...).
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let msg = &bytes[12..12 + len];
        assert_eq!(msg[0], 0x08, "field 1, varint");
        assert!(msg.windows(5).any(|w| w == b"a:1|c"));
        // The trailer: the state's size last, and a pid map entry for pid 42.
        let state_len = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
        let state = &bytes[bytes.len() - 4 - state_len..bytes.len() - 4];
        assert!(state.windows(5).any(|w| w == b"ctr-1"));
        let zero_at = bytes.len() - 8 - state_len;
        assert_eq!(bytes[zero_at..zero_at + 4], [0, 0, 0, 0]);
        assert!(!cap.is_on());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_directory_or_a_bad_length_is_refused_by_name() {
        let cap = Capture::new(1);
        let bad = cap.start(Spec {
            seconds: 1,
            zstd: false,
            dir: "/nonexistent/dir".into(),
        });
        assert!(bad.unwrap_err().contains("/nonexistent/dir"));
        let long = cap.start(Spec {
            seconds: 0,
            zstd: false,
            dir: std::env::temp_dir(),
        });
        assert!(long.unwrap_err().contains("seconds=0"));
        assert!(!cap.is_on() && !cap.report().running);
    }
}
