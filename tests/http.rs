//! The operator's HTTP endpoint, end to end: `/readyz`, `/healthz`, `/status` and `/metrics`
//! of a running server under known traffic, `/metrics` scraped by a real Prometheus, and the
//! start-up rules for its address.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::prometheus::Prometheus;
use common::{Server, get, wait_for};
use serde_json::Value;

/// The sum of a family's samples whose labels contain every one of `with`.
fn sample_sum(text: &str, family: &str, with: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            name == family && with.iter().all(|w| l.contains(w))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn send_counters(server: &Server, n: usize) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..n {
        s.send_to(
            format!("http.test.{}:1|c\nbad line\n", i % 10).as_bytes(),
            server.addr,
        )
        .unwrap();
    }
}

#[test]
fn endpoints_answer_for_a_running_server_under_known_traffic() {
    let server = Server::start(&["--cores", "0", "--bucket-secs", "1"]);
    let http = server.http.expect("the start-up line gives the endpoint");
    // A client that connects and says nothing holds one connection, not the endpoint; one
    // whose request head passes the bound is refused.
    let _idle = std::net::TcpStream::connect(http).unwrap();
    assert_eq!(get(http, "/readyz"), (200, "ready\n".into()));
    let mut huge = std::net::TcpStream::connect(http).unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "GET /status HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let _ = std::io::Write::write_all(&mut huge, head.as_bytes());
    let mut answer = String::new();
    let _ = huge.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    send_counters(&server, 200);
    let metrics = wait_for(http, "/metrics", |t| {
        sample_sum(t, "corestatsd_metrics_total", &[]) == 200.0
    });
    assert_eq!(
        sample_sum(&metrics, "corestatsd_packets_total", &["transport=\"udp\""]),
        200.0
    );
    assert_eq!(
        sample_sum(&metrics, "corestatsd_parse_errors_total", &[]),
        200.0,
        "every `bad line` is counted, by reason"
    );
    assert!(metrics.contains("# TYPE corestatsd_flush_duration_seconds histogram"));
    assert!(metrics.contains("corestatsd_receive_pause_seconds_bucket{shard=\"0\",le=\"+Inf\"}"));
    assert!(!metrics.contains("transport=\"tcp\""), "no TCP listener");
    assert_eq!(get(http, "/healthz"), (200, "ok\n".into()));
    // The last window the status shows carried the traffic, or a later, idle one did.
    let status: Value = serde_json::from_str(&get(http, "/status").1).unwrap();
    assert_eq!(status["ready"], true);
    assert_eq!(status["config"]["cores"], serde_json::json!([0]));
    assert_eq!(status["shards"].as_array().unwrap().len(), 1);
    assert!(status["total"]["drops"]["parse_errors"].as_u64().is_some());
    assert!(status["windows"].as_u64().unwrap() >= 1);
    assert_eq!(status["downstreams"][0]["name"], "jsonl:-");
    assert!(status["downstreams"][0]["written_points"].as_u64().unwrap() >= 10);
    let (code, body) = get(http, "/nope");
    assert_eq!(code, 404);
    assert!(body.contains("/metrics"), "{body}");
    let done = server.stop();
    assert_eq!(done.status, 0);
    let counted: f64 = common::metric_lines(&done.lines)
        .iter()
        .filter(|l| l["name"].as_str().unwrap().starts_with("http.test."))
        .map(|l| l["value"].as_f64().unwrap())
        .sum();
    assert_eq!(counted, 200.0);
}

/// Runs `corestatsd ARGS` (a client command) to its end: (exit status, stdout, stderr).
fn client(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_corestatsd"))
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn top_and_stats_show_a_server_under_known_traffic() {
    // 10 s windows: the one datagram below lands in one window, and the idle window after it
    // (which `/contexts` would show next) is far off while the clients run.
    let server = Server::start(&["--cores", "0", "--context-stats"]);
    let http = server.http.unwrap();
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // One window's traffic: `busy` 30 samples, `calm` 3, and 5 contexts of `wide`.
    let mut lines: Vec<String> = (0..30).map(|_| "busy:1|c|#k:v".to_string()).collect();
    lines.extend((0..3).map(|_| "calm:2|g".to_string()));
    lines.extend((0..5).map(|i| format!("wide:1|c|#i:{i}")));
    s.send_to(lines.join("\n").as_bytes(), server.addr).unwrap();
    let contexts = wait_for(http, "/contexts?top=2", |b| b.contains("\"busy\""));
    let v: Value = serde_json::from_str(&contexts).unwrap();
    assert_eq!(v["by"], "samples");
    assert_eq!(v["contexts"][0]["name"], "busy");
    assert_eq!(v["contexts"][0]["samples"], 30);
    assert_eq!(v["contexts"][0]["tags"], serde_json::json!(["k:v"]));
    assert_eq!(v["contexts"][1]["name"], "calm");
    assert_eq!(v["contexts"][1]["samples"], 3);

    let addr = http.to_string();
    let (code, out, err) = client(&["stats", "--http-addr", &addr, "--top", "1"]);
    assert_eq!(code, 0, "{err}");
    let row: Vec<&str> = out.lines().nth(2).unwrap().split_whitespace().collect();
    assert_eq!(row[..3], ["30", "counter", "busy"], "{out}");
    let (code, out, _) = client(&["stats", "--http-addr", &addr, "--by", "contexts"]);
    assert_eq!(code, 0);
    assert!(
        out.lines().any(|l| l.split_whitespace().eq(["5", "wide"])),
        "{out}"
    );

    let (code, out, err) = client(&["top", "--batch", "--http-addr", &addr]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("corestatsd "), "{out}");
    let shard: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("0 "))
        .expect(&out)
        .split_whitespace()
        .collect();
    assert_eq!(shard[1], "0", "the shard's CPU: {out}");
    assert!(out.lines().any(|l| l.starts_with("total ")), "{out}");
    assert!(out.contains("jsonl:-"), "the downstream's row: {out}");
    assert!(
        out.lines().any(|l| l.split_whitespace().eq(["5", "wide"])),
        "{out}"
    );
    assert_eq!(server.stop().status, 0);

    // Nothing listening: one line naming the address, exit 1.
    let (code, _, err) = client(&["top", "--batch", "--http-addr", &addr]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("cannot reach corestatsd at http://{addr}/status")),
        "{err}"
    );
}

#[test]
fn a_real_prometheus_scrapes_the_metrics_endpoint() {
    let server = Server::start(&["--cores", "0", "--bucket-secs", "1"]);
    let http = server.http.unwrap();
    let prom = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: corestatsd\n    \
         static_configs:\n      - targets: ['{http}']\n"
    ));
    send_counters(&server, 50);
    wait_for(http, "/metrics", |t| {
        sample_sum(t, "corestatsd_metrics_total", &[]) == 50.0
    });
    prom.wait_value("sum(corestatsd_metrics_total{job=\"corestatsd\"})", |v| {
        v == 50.0
    });
    assert_eq!(prom.value("up{job=\"corestatsd\"}"), 1.0);
    // Histograms are histograms to Prometheus: a quantile over the buckets answers.
    let q = prom
        .query("histogram_quantile(0.5, sum by (le) (corestatsd_flush_duration_seconds_bucket))");
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(prom.value("corestatsd_ready"), 1.0);
    assert_eq!(server.stop().status, 0);
}

#[test]
fn an_explicit_address_that_is_taken_stops_the_start_and_the_default_one_does_not() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_corestatsd"))
        .args([
            "--udp-addr",
            "127.0.0.1:0",
            "--cores",
            "0",
            "--http-addr",
            &addr,
        ])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("--http-addr {addr}: cannot listen")),
        "{stderr}"
    );

    // The default address, held here (or by anything else on this host): the server still
    // starts, says so once, and runs without the endpoint.
    let _held = TcpListener::bind("127.0.0.1:8135");
    let mut child = Command::new(env!("CARGO_BIN_EXE_corestatsd"))
        .args(["--udp-addr", "127.0.0.1:0", "--cores", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let ready = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no start-up line: {seen:?}"));
        seen.push(line.clone());
        if line.contains("; listening ") {
            break line;
        }
    };
    let off: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("HTTP endpoint off"))
        .collect();
    assert_eq!(off.len(), 1, "{seen:?}");
    assert!(
        off[0].contains("127.0.0.1:8135 is taken") && off[0].contains("--http-addr"),
        "{off:?}"
    );
    assert!(ready.contains("; no HTTP endpoint;"), "{ready}");
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
