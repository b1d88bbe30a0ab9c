//! `--take-over`: a new process started with the same flags takes the running one's listeners
//! through `--control-socket` while a client keeps sending; every counter sent is flushed once,
//! by one of the two, and no (context, window) is written by both.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{Server, temp_dir};
use serde_json::Value;

fn points(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "metric" && v["name"].as_str().unwrap().starts_with("tk."))
        .collect()
}

#[test]
fn a_take_over_under_load_loses_nothing_and_writes_each_window_once() {
    let dir = temp_dir("take-over");
    let (sock, ctl) = (dir.join("dsd.sock"), dir.join("control.sock"));
    let (old_out, new_out) = (dir.join("old.jsonl"), dir.join("new.jsonl"));
    let args = |out: &std::path::Path, extra: &[&str]| {
        let mut a: Vec<String> = [
            "--cores",
            "0",
            "--uds-path",
            sock.to_str().unwrap(),
            "--control-socket",
            ctl.to_str().unwrap(),
            "--bucket-secs",
            "1",
            "--no-self-metrics",
            "--downstream",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push(format!("jsonl:{}", out.display()));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let old_args = args(&old_out, &[]);
    let mut old = Server::start(&old_args.iter().map(String::as_str).collect::<Vec<_>>());

    // The client: blocking unix datagrams (none lost), 20 lines each, until told to stop.
    let (sent, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let client = {
        let (sent, stop, sock) = (sent.clone(), stop.clone(), sock.clone());
        std::thread::spawn(move || {
            let tx = UnixDatagram::unbound().unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let lines: Vec<String> = (0..20)
                    .map(|k| format!("tk.{}:1|c", (i + k) % 50))
                    .collect();
                tx.send_to(lines.join("\n").as_bytes(), &sock).unwrap();
                i += 20;
                sent.store(i, Ordering::Relaxed);
            }
        })
    };
    let wait_sent = |n: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while sent.load(Ordering::Relaxed) < n {
            assert!(std::time::Instant::now() < deadline, "the client is stuck");
            std::thread::yield_now();
        }
    };
    wait_sent(20_000);

    // The new process asks for the old one's HTTP address, as a fixed --http-addr would.
    let http = old.http.expect("an HTTP endpoint").to_string();
    let new_args = args(&new_out, &["--take-over", "--http-addr", &http]);
    let new = Server::start(&new_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(new.http, old.http, "the endpoint keeps its address");
    old.wait_for_stderr("the old process' stop", |l| {
        l.contains("corestatsd: stopped;")
    });
    let old_done = old.stop();
    assert_eq!(old_done.status, 0, "{:#?}", old_done.stderr);
    assert!(
        old_done
            .stderr
            .iter()
            .any(|l| l.contains("take-over: a new process reads")),
        "{:#?}",
        old_done.stderr
    );
    assert!(
        sock.exists(),
        "the old process leaves the socket file to the new one"
    );
    let at_take_over = sent.load(Ordering::Relaxed);
    // The new process serves the control socket next, for the following take-over.
    let mut new = new;
    new.wait_for_stderr("the take-over's end", |l| l.contains("take-over: done"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&ctl).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nobody serves {ctl:?}"
        );
        std::thread::yield_now();
    }
    // The endpoint answers from the new process once the old one is gone.
    let (code, body) = common::get(new.http.unwrap(), "/status");
    assert_eq!(code, 200, "{body}");
    wait_sent(at_take_over + 20_000);
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let total = sent.load(Ordering::Relaxed);
    let new_done = new.stop();
    assert_eq!(new_done.status, 0, "{:#?}", new_done.stderr);
    assert!(
        new_done
            .stderr
            .iter()
            .any(|l| l.contains("take-over: done")),
        "{:#?}",
        new_done.stderr
    );

    let (old_points, new_points) = (points(&old_out), points(&new_out));
    assert!(!new_points.is_empty());
    let mut seen = BTreeSet::new();
    let mut sum = BTreeMap::<String, f64>::new();
    for p in old_points.iter().chain(&new_points) {
        let key = (
            p["name"].as_str().unwrap().to_string(),
            p["ts"].as_u64().unwrap(),
        );
        assert!(seen.insert(key.clone()), "{key:?} written twice");
        *sum.entry(key.0).or_default() += p["value"].as_f64().unwrap();
    }
    assert_eq!(sum.values().sum::<f64>(), total as f64, "{sum:?}");
    assert!(
        !sock.exists(),
        "the new process' stop removes the socket file it took over"
    );
}

/// The sum of every `tk.` counter point the intake accepted.
fn delivered(intake: &common::intake::Intake) -> f64 {
    intake
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v2/series" && r.status == 200)
        .flat_map(|r| common::intake::Msg::parse(&r.decoded()).msgs(1))
        .filter(|s| s.str(2).starts_with("tk."))
        .flat_map(|s| s.msgs(4))
        .map(|p| p.double(1))
        .sum()
}

#[test]
fn a_take_over_while_the_intake_is_down_delivers_both_processes_spill_once() {
    let dir = temp_dir("take-over-spill");
    let (ctl, spill) = (dir.join("control.sock"), dir.join("spill"));
    // Nothing listens here until the intake comes up.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--cores",
            "0",
            "--control-socket",
            ctl.to_str().unwrap(),
            "--bucket-secs",
            "1",
            "--no-self-metrics",
            "--hostname",
            "h",
            "--downstream",
            "datadog",
            "--dd-url",
            &url,
            "--dd-counters-as",
            "count",
            "--retry-spill-dir",
            spill.to_str().unwrap(),
            "--retry-backoff-base-ms",
            "50",
            "--retry-backoff-max-ms",
            "200",
            "--downstream-stop-timeout-secs",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let env = [("DD_API_KEY", "k")];
    let start = |a: &[String]| {
        Server::start_with_env(&a.iter().map(String::as_str).collect::<Vec<_>>(), &env)
    };
    let send = |to: std::net::SocketAddr, n: usize| {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..n {
            s.send_to(format!("tk.{}:1|c", i % 7).as_bytes(), to)
                .unwrap();
        }
    };
    let mut old = start(&args(&[]));
    send(old.addr, 300);
    old.wait_for_stderr("a failed delivery", |l| l.contains("retry 1 in"));
    let new = start(&args(&["--take-over"]));
    assert_eq!(new.addr, old.addr);
    send(new.addr, 200);
    old.wait_for_stderr("the old process' stop", |l| {
        l.contains("corestatsd: stopped;")
    });
    let old_done = old.stop();
    assert_eq!(old_done.status, 0, "{:#?}", old_done.stderr);
    let intake = common::intake::Intake::start_on(addr, |_, _| 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while delivered(&intake) < 500.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "delivered {} of 500",
            delivered(&intake)
        );
        std::thread::yield_now();
    }
    let new_done = new.stop();
    assert_eq!(new_done.status, 0, "{:#?}", new_done.stderr);
    assert_eq!(delivered(&intake), 500.0, "every count once");
    assert!(
        new_done
            .stderr
            .iter()
            .any(|l| l.contains("is another process' (the one taken over)")),
        "the new process left the old one's spill directory alone: {:#?}",
        new_done.stderr
    );
}
