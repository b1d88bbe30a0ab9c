//! The delivery queue against an unreachable and a slow intake: spilling, the stop timeout,
//! requests in flight.

use super::*;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;

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
        max_in_flight: 1,
        durable: false,
    }
}

fn spilled_bodies(dir: &Path) -> Vec<u8> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "payload"))
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
    // the intake stays unreachable (once this one has let go of the directory).
    drop(d);
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

/// An intake that reads each request and answers 200 only once `release` is called; it counts
/// requests waiting for their answer.
struct HeldIntake {
    url: String,
    state: Arc<(Mutex<Held>, Condvar)>,
}

/// (released, requests waiting now, most waiting at once)
type Held = (bool, usize, usize);

impl HeldIntake {
    fn start() -> HeldIntake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new((Mutex::new((false, 0, 0)), Condvar::new()));
        let st = Arc::clone(&state);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let st = Arc::clone(&st);
                thread::spawn(move || {
                    let mut out = conn.try_clone().unwrap();
                    let mut r = BufReader::new(conn);
                    loop {
                        let mut len = 0;
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end().to_ascii_lowercase();
                            if h.is_empty() {
                                break;
                            }
                            if let Some(v) = h.strip_prefix("content-length:") {
                                len = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; len];
                        std::io::Read::read_exact(&mut r, &mut body).unwrap();
                        let (m, cv) = &*st;
                        let mut g = m.lock().unwrap();
                        g.1 += 1;
                        g.2 = g.2.max(g.1);
                        cv.notify_all();
                        while !g.0 {
                            g = cv.wait(g).unwrap();
                        }
                        g.1 -= 1;
                        drop(g);
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if out.write_all(ok).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HeldIntake { url, state }
    }

    /// Waits (bounded) until `n` requests wait for their answer at once.
    fn wait_waiting(&self, n: usize) {
        let (m, cv) = &*self.state;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut g = m.lock().unwrap();
        while g.1 < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "only {} requests arrived", g.1);
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    }

    fn release(&self) {
        self.state.0.lock().unwrap().0 = true;
        self.state.1.notify_all();
    }

    fn most_waiting(&self) -> usize {
        self.state.0.lock().unwrap().2
    }
}

fn held(intake: &HeldIntake, in_flight: usize, spill_dir: Option<PathBuf>) -> DeliveryConfig {
    DeliveryConfig {
        name: "test",
        base_url: intake.url.clone(),
        headers: vec![],
        // Far longer than any test: only the stop timeout may cut a request short.
        timeout: Duration::from_secs(3600),
        queue_bytes: 1 << 20,
        spill_dir,
        spill_max_bytes: 1 << 20,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(10),
        stop_timeout: Duration::ZERO,
        max_in_flight: in_flight,
        durable: false,
    }
}

#[test]
fn up_to_max_in_flight_requests_wait_on_a_slow_intake_at_once() {
    let intake = HeldIntake::start();
    let mut d = Delivery::start(held(&intake, 4, None)).unwrap();
    for i in 0..10 {
        d.submit(payload(i));
    }
    intake.wait_waiting(4);
    intake.release();
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.snapshot().payloads < 10 {
        assert!(Instant::now() < deadline, "{:?}", d.snapshot().payloads);
        thread::sleep(Duration::from_millis(5));
    }
    let s = d.close();
    assert_eq!((s.payloads, s.dropped()), (10, 0));
    assert_eq!(intake.most_waiting(), 4);
}

#[test]
fn the_stop_timeout_cuts_unanswered_requests_short_and_spills_their_payloads() {
    let intake = HeldIntake::start();
    let dir = std::env::temp_dir().join(format!("corestatsd-cut-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let mut d = Delivery::start(held(&intake, 2, Some(dir.clone()))).unwrap();
    for i in 0..3 {
        d.submit(payload(i));
    }
    intake.wait_waiting(2);
    // The intake never answers while `close` runs: `close` must not wait for it.
    let (done, closed) = mpsc::channel();
    thread::spawn(move || done.send(d.close()).unwrap());
    let s = closed
        .recv_timeout(Duration::from_secs(30))
        .expect("close returned while requests were out");
    intake.release();
    assert_eq!((s.payloads, s.dropped(), s.spilled), (0, 0, 3));
    let mut bodies = spilled_bodies(&dir);
    bodies.sort();
    assert_eq!(bodies, [0, 1, 2]);
    let _ = fs::remove_dir_all(&dir);
}
