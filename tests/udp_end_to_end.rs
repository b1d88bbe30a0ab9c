//! The real binary on loopback: raw UDP datagrams in, exact JSONL out after SIGTERM.

mod common;

use common::{Server, metric_lines, one, self_metric, send_spread};
use serde_json::json;

const TWO_SHARDS: [&str; 2] = ["--cores", "0,1"];

#[test]
fn every_metric_type_aggregates_exactly_across_two_shards() {
    let server = Server::start(
        &[
            &TWO_SHARDS[..],
            &[
                // One window for the whole test, flushed at the stop.
                "--bucket-secs",
                "3600",
                "--hostname",
                "test-host",
                "--counter-zero-fill-secs",
                "0",
                // To see that both shards received.
                "--self-metrics-per-shard",
            ],
        ]
        .concat(),
    );
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    for i in 0..16 {
        datagrams.push(
            format!(
                "page.views:1|c|#zone:a,env:prod\n\
                 page.views:2|c|@0.5|#env:prod,zone:a,env:prod\n\
                 users.unique:user_{}|s\n\
                 latency:{}|h|#host:web-1\n\
                 db.query:{}:{}|ms\n\
                 request.size:{}|d\n\
                 not a metric\n\
                 bad.value:abc|c\r\n\
                 bad.type:1|x\n",
                i % 5,
                i + 1,
                i,
                100 - i,
                (i + 1) * 100
            )
            .into_bytes(),
        );
    }
    let refs: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
    send_spread(server.addr, &refs);
    let done = server.stop();
    assert_eq!(done.status, 0, "stderr: {:?}", done.stderr);

    // Both shards received datagrams, so sets and counters really crossed cores.
    for shard in ["shard:0", "shard:1"] {
        assert!(
            self_metric(&done.lines, "corestatsd.packets", &[shard]) > 0.0,
            "{shard} got nothing; the test would not cover the merge"
        );
    }
    assert_eq!(self_metric(&done.lines, "corestatsd.packets", &[]), 16.0);
    assert_eq!(
        self_metric(&done.lines, "corestatsd.parse_errors", &["reason:no_pipe"]),
        16.0
    );
    assert_eq!(
        self_metric(
            &done.lines,
            "corestatsd.parse_errors",
            &["reason:bad_value"]
        ),
        16.0
    );
    assert_eq!(
        self_metric(
            &done.lines,
            "corestatsd.parse_errors",
            &["reason:unknown_type"]
        ),
        16.0
    );
    // The log names a rejected line (the first of the window) and why.
    let named = [
        "first rejected line: \"not a metric\" (no_pipe)",
        "first rejected line: \"bad.value:abc|c\" (bad_value)",
        "first rejected line: \"bad.type:1|x\" (unknown_type)",
    ];
    assert!(
        done.stderr
            .iter()
            .any(|l| named.iter().any(|n| l.contains(n))),
        "{:?}",
        done.stderr
    );

    let metrics = metric_lines(&done.lines);
    let ts = one(&metrics, "page.views")["ts"].clone();
    let expect = |name: &str, ty: &str, value: f64, host: &str, tags: &[&str]| {
        let p = one(&metrics, name);
        assert_eq!(
            (*p).clone(),
            json!({"kind":"metric","name":name,"type":ty,"value":value,"ts":ts,"interval":3600,"host":host,"tags":tags}),
        );
    };
    expect(
        "page.views",
        "count",
        16.0 * 5.0,
        "test-host",
        &["env:prod", "zone:a"],
    );
    expect("users.unique", "gauge", 5.0, "test-host", &[]);
    expect("latency.max", "gauge", 16.0, "web-1", &[]);
    expect("latency.median", "gauge", 8.0, "web-1", &[]);
    expect("latency.avg", "gauge", 8.5, "web-1", &[]);
    expect("latency.count", "count", 16.0, "web-1", &[]);
    expect("latency.95percentile", "gauge", 16.0, "web-1", &[]);
    expect("db.query.max", "gauge", 100.0, "test-host", &[]);
    expect("db.query.count", "count", 32.0, "test-host", &[]);
    expect("db.query.avg", "gauge", 50.0, "test-host", &[]);

    let d = one(&metrics, "request.size");
    assert_eq!(d["type"], "distribution");
    let sketch = &d["sketch"];
    assert_eq!(sketch["count"], 16.0);
    assert_eq!(sketch["min"], 100.0);
    assert_eq!(sketch["max"], 1600.0);
    assert_eq!(sketch["sum"], 13600.0);
    // Rank q*(count-1), lower sample, as the Agent's sketch reads it: p99 of 16 is the 15th.
    for (q, exact) in [("p50", 800.0), ("p90", 1400.0), ("p99", 1500.0)] {
        let got = sketch[q].as_f64().unwrap();
        assert!(
            (got - exact).abs() / exact <= 1.0 / 128.0 + 1e-9,
            "{q}: {got} vs {exact}"
        );
    }
    assert_eq!(metrics.len(), 13, "unexpected extra points: {metrics:#?}");
}

#[test]
fn gauge_keeps_the_value_received_last_whichever_shard_got_it() {
    let server = Server::start(&[&TWO_SHARDS[..], &["--bucket-secs", "3600"]].concat());
    for v in 1..=8 {
        send_spread(server.addr, &[format!("temp:{v}|g").as_bytes()]);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let done = server.stop();
    let metrics = metric_lines(&done.lines);
    assert_eq!(one(&metrics, "temp")["value"], 8.0);
}

#[test]
fn a_clean_stop_flushes_the_open_window_and_timestamped_points() {
    let server = Server::start(&["--bucket-secs", "3600", "--no-self-metrics"]);
    send_spread(
        server.addr,
        &[b"held:3|c\nheld:4|c\nstamped:7|g|T1700000000|#b,a\nstamped.h:1|h|T1700000000"],
    );
    let done = server.stop();
    assert_eq!(done.status, 0);
    assert!(
        done.lines
            .iter()
            .all(|l| !l["name"].as_str().unwrap().starts_with("corestatsd."))
    );
    let metrics = metric_lines(&done.lines);
    assert_eq!(one(&metrics, "held")["value"], 7.0);
    let stamped = one(&metrics, "stamped");
    assert_eq!(
        (stamped["ts"].as_u64(), stamped["value"].as_f64()),
        (Some(1700000000), Some(7.0))
    );
    assert_eq!(stamped["tags"], json!(["a", "b"]));
    assert_eq!(
        metrics.len(),
        2,
        "the timestamped histogram is dropped: {metrics:?}"
    );
    assert!(
        done.stderr.iter().any(|l| l.contains("unsupported=1")),
        "{:?}",
        done.stderr
    );
}

#[test]
fn a_datagram_longer_than_the_buffer_is_counted_and_its_cut_line_dropped() {
    let server = Server::start(&[
        "--buffer-size-bytes",
        "64",
        "--cores",
        "0",
        "--bucket-secs",
        "3600",
    ]);
    let mut long = b"kept:1|c\n".to_vec();
    long.extend_from_slice(
        format!("cut.metric.with.a.long.name:1|c|#{}\n", "t".repeat(80)).as_bytes(),
    );
    send_spread(server.addr, &[&long]);
    let done = server.stop();
    assert_eq!(
        self_metric(&done.lines, "corestatsd.truncated_datagrams", &[]),
        1.0
    );
    let metrics = metric_lines(&done.lines);
    assert_eq!(one(&metrics, "kept")["value"], 1.0);
    assert_eq!(metrics.len(), 1, "{metrics:?}");
}

#[test]
fn bad_flags_and_unbindable_addresses_exit_2_naming_the_culprit() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_corestatsd"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.lines().count(), 1, "one error line, got {err:?}");
        (out.status.code(), err)
    };
    let (code, err) = run(&["--udp-addr", "nowhere"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--udp-addr"), "{err}");
    let (code, err) = run(&["--cores", "9999"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--cores") && err.contains("9999"), "{err}");
    let (code, err) = run(&["--no-such-flag"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--no-such-flag"), "{err}");
    let (code, err) = run(&["--histogram-percentiles", "95"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--histogram-percentiles"), "{err}");
    let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let (code, err) = run(&["--udp-addr", &addr]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&format!("cannot bind --udp-addr {addr}")),
        "{err}"
    );
}

#[test]
fn a_stop_under_continuous_traffic_drains_and_exits() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let server = Server::start(&[
        "--cores",
        "0",
        "--bucket-secs",
        "3600",
        "--so-rcvbuf-bytes",
        "1048576",
    ]);
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let (busy_tx, busy) = std::sync::mpsc::channel();
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Datagrams of 800 lines take the server far longer to parse than this thread takes
            // to send them, so its socket never runs empty. Bounded: stops when told, or after
            // 60 s whatever happens.
            let datagram = "busy:1|c\n".repeat(800);
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let start = std::time::Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && start.elapsed().as_secs() < 60 {
                if s.send_to(datagram.as_bytes(), addr).is_ok() {
                    sent += 800;
                }
                if sent == 800 * 200 {
                    let _ = busy_tx.send(());
                }
            }
            sent
        })
    };
    // The stop comes while traffic flows: 200 datagrams in.
    busy.recv_timeout(std::time::Duration::from_secs(30))
        .expect("the sender got going");
    // `stop` panics if the server is still running 20 s after SIGTERM.
    let done = server.stop();
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    assert_eq!(done.status, 0);
    let metrics = metric_lines(&done.lines);
    let received = one(&metrics, "busy")["value"].as_f64().unwrap();
    assert!(
        received > 0.0 && received <= sent as f64,
        "{received} of {sent}"
    );
    assert_eq!(
        received,
        self_metric(&done.lines, "corestatsd.metrics", &[])
    );
}

#[test]
fn forward_addr_receives_every_datagram_byte_for_byte_before_parsing() {
    let target = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    target
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let to = target.local_addr().unwrap().to_string();
    let server = Server::start(&[
        "--cores",
        "0",
        "--bucket-secs",
        "3600",
        "--forward-addr",
        &to,
    ]);
    let datagrams: [&[u8]; 3] = [b"fwd:1|c\n", b"fwd:2|c\nnot a metric", b"_sc|x|0"];
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    for d in datagrams {
        tx.send_to(d, server.addr).unwrap();
        let n = target.recv(&mut buf).expect("forwarded within 10 s");
        got.push(buf[..n].to_vec());
    }
    assert_eq!(got, datagrams.map(<[u8]>::to_vec).to_vec());
    let done = server.stop();
    assert_eq!(done.status, 0);
    assert_eq!(self_metric(&done.lines, "corestatsd.forwarded", &[]), 3.0);
    assert_eq!(
        self_metric(&done.lines, "corestatsd.forward_errors", &[]),
        0.0
    );
    assert_eq!(one(&metric_lines(&done.lines), "fwd")["value"], 3.0);
}

#[test]
fn eol_required_drops_and_counts_an_unterminated_last_line() {
    let server = Server::start(&[
        "--cores",
        "0",
        "--bucket-secs",
        "3600",
        "--eol-required",
        "udp",
    ]);
    send_spread(
        server.addr,
        &[
            b"eol.a:1|c\neol.b:1|c",
            b"eol.c:1|c\n",
            b"eol.d:1|c\r\neol.e:1|c\r",
        ],
    );
    let done = server.stop();
    let metrics = metric_lines(&done.lines);
    let mut names: Vec<&str> = metrics
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["eol.a", "eol.c", "eol.d"]);
    assert_eq!(
        self_metric(&done.lines, "corestatsd.unterminated_lines", &[]),
        2.0
    );
}

#[test]
fn an_idle_udp_server_writes_few_self_metrics_and_none_for_other_transports() {
    let mut server = Server::start(&["--bucket-secs", "1"]);
    for _ in 0..3 {
        server.wait_for_stderr("a window line", |l| l.contains(": window "));
    }
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    let mut per_window: std::collections::BTreeMap<u64, usize> = Default::default();
    for l in done.lines.iter() {
        let name = l["name"].as_str().unwrap();
        assert!(name.starts_with("corestatsd."), "only self metrics: {l}");
        for tag in l["tags"].as_array().unwrap() {
            let tag = tag.as_str().unwrap();
            assert!(
                !tag.starts_with("transport:") || tag == "transport:udp",
                "a transport that is not enabled: {l}"
            );
            assert!(!tag.starts_with("shard:"), "sums, not per shard: {l}");
        }
        *per_window.entry(l["ts"].as_u64().unwrap()).or_default() += 1;
    }
    assert!(per_window.len() >= 3, "{per_window:?}");
    assert!(per_window.values().all(|&n| n <= 25), "{per_window:?}");
}
