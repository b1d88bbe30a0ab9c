//! The queue to the sink thread against the real binary: when the downstream stops taking
//! lines, windows past `--sink-queue-max-points` are dropped and counted, never held without
//! bound, and every sample is either written or counted. Its own test binary: its sender runs
//! flat out, which would skew the memory-limit test's RSS if they ran side by side.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Server, metric_lines, self_metric, send_unix, temp_dir};

#[test]
fn a_sink_that_falls_behind_drops_windows_counted_and_forgets_nothing_else() {
    let dir = temp_dir("sink-queue");
    let path = dir.join("dsd.socket");
    // Nothing reads stdout until the drops begin: the sink thread blocks on the full pipe, as
    // on a downstream that stopped answering, and windows queue up behind it.
    let mut server = Server::start_holding_stdout(&[
        "--cores",
        "0",
        "--uds-path",
        path.to_str().unwrap(),
        "--bucket-secs",
        "1",
        "--counter-zero-fill-secs",
        "0",
        "--sink-queue-max-points",
        "100",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            // Every line its own context with one sample: a point carries 1.
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) && sent < 3_000_000 {
                let lines: Vec<String> = (sent..sent + 300)
                    .map(|i| format!("q:1|c|#i:{i}"))
                    .collect();
                send_unix(&path, &lines, 30);
                sent += lines.len();
            }
            sent
        })
    };
    // The sender goes on until this line (bounded): a drop needs a window to find the last one
    // still waiting, and a sender that stopped first (at 300k lines, as it once did) left 1 run
    // in 10 without one. A debug build gets here in 5-10 s; allow a minute.
    let behind = server.wait_for_stderr_within(
        "the sink-behind line",
        std::time::Duration::from_secs(60),
        |l| l.contains("the sink is behind"),
    );
    assert!(behind.contains("--sink-queue-max-points 100"), "{behind}");
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    let written: f64 = metric_lines(&done.lines)
        .iter()
        .filter(|p| p["name"] == "q")
        .map(|p| p["value"].as_f64().unwrap())
        .sum();
    let dropped: u64 = done
        .stderr
        .iter()
        .filter(|l| l.starts_with("corestatsd: window "))
        .filter_map(|l| l.split(" sink_queue_drops=").nth(1))
        .map(|v| v.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(dropped > 0, "{:#?}", done.stderr);
    assert_eq!(
        written as u64 + dropped,
        sent as u64,
        "every sample either written or counted as dropped"
    );
    assert_eq!(
        self_metric(&done.lines, "corestatsd.sink_queue_drops", &[]),
        dropped as f64
    );
}
