//! `--downstream datadog` against an in-repo test intake on loopback, which decodes the
//! protobuf and JSON bodies with code of its own (`common/intake.rs`).

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::intake::{Intake, Msg, Request, unzigzag};
use common::{Server, temp_dir};
use serde_json::Value;

const KEY: &str = "test-key-0123456789";

fn start(intake_url: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--downstream", "datadog", "--dd-url", intake_url];
    args.extend_from_slice(&["--hostname", "edge-1", "--cores", "0"]);
    if !extra.contains(&"--bucket-secs") {
        // One window for the whole test: a window boundary mid-test would split its points.
        args.extend_from_slice(&["--bucket-secs", "3600"]);
    }
    args.extend_from_slice(extra);
    Server::start_with_env(&args, &[("DD_API_KEY", KEY)])
}

fn send(server: &Server, lines: &[&str]) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for l in lines {
        s.send_to(l.as_bytes(), server.addr).unwrap();
    }
}

/// Every `MetricSeries` in the series requests that the intake accepted, by metric name.
fn series(reqs: &[Request]) -> HashMap<String, Msg> {
    let mut out = HashMap::new();
    for r in reqs
        .iter()
        .filter(|r| r.path == "/api/v2/series" && r.status == 200)
    {
        for s in Msg::parse(&r.decoded()).msgs(1) {
            out.insert(s.str(2), s);
        }
    }
    out
}

/// The delivery's stop line: `delivered N payloads (...), R retries, D payloads (P points) dropped`.
fn stop_summary(done: &common::Finished) -> &str {
    done.stderr
        .iter()
        .find(|l| l.starts_with("corestatsd: datadog: delivered"))
        .expect("a stop summary")
}

#[test]
fn series_sketches_events_and_checks_reach_the_intake_as_the_agent_sends_them() {
    let intake = Intake::start(|_, _| 200);
    let server = start(&intake.url(), &[]);
    send(
        &server,
        &[
            "page.views:3|c|#env:prod",
            "page.views:2|c|#env:prod",
            "temp:21.5|g|#room:a",
            "lat:100|ms",
            "lat:300|ms",
            "size:1:2|d|#env:prod",
            "size:3|d|@0.5|#env:prod",
            "_e{5,9}:title|line\\nTwo|#env:prod|k:agg|t:warning",
            "_sc|db.up|1|#env:prod|m:slow",
        ],
    );
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    assert!(
        done.stderr.iter().all(|l| !l.contains(KEY)),
        "the API key must never be logged"
    );
    let reqs = intake.requests();
    for r in &reqs {
        assert_eq!(r.header("DD-API-KEY"), Some(KEY));
        assert_eq!(r.header("Content-Encoding"), Some("zstd"));
        assert_eq!(r.status, 200);
    }
    let s = series(&reqs);

    let views = &s["page.views"];
    let res = views.msgs(1);
    assert_eq!(res.len(), 1);
    assert_eq!(
        (res[0].str(1), res[0].str(2)),
        ("host".into(), "edge-1".into())
    );
    assert_eq!(views.strs(3), ["env:prod"]);
    let points = views.msgs(4);
    assert_eq!(points.len(), 1);
    assert_eq!(
        points[0].double(1),
        5.0 / 3600.0,
        "5 over the window, as a rate"
    );
    assert_eq!(points[0].uint(2) % 3600, 0, "window start");
    assert_eq!(views.uint(5), 2, "RATE");
    assert_eq!(views.uint(8), 3600, "interval");
    assert_eq!(views.str(6), "");

    let temp = &s["temp"];
    assert_eq!(temp.uint(5), 3, "GAUGE");
    assert_eq!(temp.msgs(4)[0].double(1), 21.5);
    assert_eq!(temp.strs(3), ["room:a"]);

    let max = &s["lat.max"];
    assert_eq!((max.uint(5), max.msgs(4)[0].double(1)), (3, 300.0));
    assert_eq!(max.str(6), "millisecond");
    assert_eq!(s["lat.avg"].msgs(4)[0].double(1), 200.0);
    let count = &s["lat.count"];
    assert_eq!(
        (count.uint(5), count.msgs(4)[0].double(1)),
        (2, 2.0 / 3600.0)
    );
    assert_eq!(count.str(6), "", "a count of samples has no unit");
    assert!(
        s.contains_key("corestatsd.downstream.payloads"),
        "delivery telemetry goes out with the metrics: {:?}",
        s.keys().collect::<Vec<_>>()
    );

    let sketches: Vec<Msg> = reqs
        .iter()
        .filter(|r| r.path == "/api/beta/sketches")
        .flat_map(|r| {
            assert_eq!(r.header("Content-Type"), Some("application/x-protobuf"));
            Msg::parse(&r.decoded()).msgs(1)
        })
        .collect();
    assert_eq!(sketches.len(), 1);
    let sk = &sketches[0];
    assert_eq!((sk.str(1), sk.str(2)), ("size".into(), "edge-1".into()));
    assert_eq!(sk.strs(4), ["env:prod"]);
    let d = sk.msg(7);
    assert_eq!(d.uint(1) % 3600, 0);
    assert_eq!(d.uint(2), 4, "count, the @0.5 sample weighs 2");
    assert_eq!((d.double(3), d.double(4)), (1.0, 3.0));
    assert_eq!((d.double(6), d.double(5)), (9.0, 2.25));
    let keys: Vec<i64> = d.packed(7).into_iter().map(unzigzag).collect();
    let counts = d.packed(8);
    assert_eq!(keys.len(), 3);
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    assert_eq!(counts, [1, 1, 2]);

    let events: Vec<Value> = reqs
        .iter()
        .filter(|r| r.path == "/intake/")
        .map(|r| serde_json::from_slice(&r.decoded()).unwrap())
        .collect();
    assert_eq!(events.len(), 1);
    let e = &events[0]["events"]["api"][0];
    assert_eq!(e["msg_title"], "title");
    assert_eq!(e["msg_text"], "line\nTwo");
    assert_eq!(e["host"], "edge-1");
    assert_eq!(e["tags"], serde_json::json!(["env:prod"]));
    assert_eq!(e["aggregation_key"], "agg");
    assert_eq!(
        (&e["priority"], &e["alert_type"]),
        (&"normal".into(), &"warning".into())
    );
    assert!(e["timestamp"].as_i64().unwrap() > 1_700_000_000);

    let checks: Vec<Value> = reqs
        .iter()
        .filter(|r| r.path == "/api/v1/check_run")
        .map(|r| serde_json::from_slice(&r.decoded()).unwrap())
        .collect();
    assert_eq!(checks.len(), 1);
    let c = &checks[0][0];
    assert_eq!((&c["check"], &c["status"]), (&"db.up".into(), &1.into()));
    assert_eq!(
        (&c["message"], &c["host_name"]),
        (&"slow".into(), &"edge-1".into())
    );
    assert_eq!(c["tags"], serde_json::json!(["env:prod"]));
}

#[test]
fn counts_as_count_with_deflate() {
    let intake = Intake::start(|_, _| 200);
    let server = start(
        &intake.url(),
        &[
            "--dd-counters-as",
            "count",
            "--dd-compression",
            "deflate",
            "--no-self-metrics",
        ],
    );
    send(&server, &["page.views:3|c", "page.views:2|c|@0.5"]);
    assert_eq!(server.stop().status, 0);
    let reqs = intake.requests();
    assert!(
        reqs.iter()
            .all(|r| r.header("Content-Encoding") == Some("deflate"))
    );
    let views = &series(&reqs)["page.views"];
    assert_eq!(views.uint(5), 1, "COUNT");
    assert_eq!(views.msgs(4)[0].double(1), 7.0);
}

#[test]
fn a_503_a_429_and_a_timeout_are_retried_with_the_same_payload() {
    let intake = Intake::start(|n, _| match n {
        0 => 503,
        1 => 429,
        2 => {
            // Longer than --http-timeout-secs: the client gives up and retries.
            std::thread::sleep(Duration::from_millis(2500));
            200
        }
        _ => 200,
    });
    let server = start(
        &intake.url(),
        &[
            "--retry-backoff-base-ms",
            "50",
            "--http-timeout-secs",
            "1",
            "--no-self-metrics",
        ],
    );
    send(&server, &["retried:1|c"]);
    // The stop flushes; delivery goes on for up to --downstream-stop-timeout-secs (5).
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    // The intake records the timed-out request once its sleep ends.
    let reqs = intake.wait_for("four attempts", |r| r.len() >= 4);
    assert_eq!(reqs.len(), 4, "{reqs:#?}");
    let statuses: Vec<u16> = reqs.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [503, 429, 200, 200],
        "the third answered too late"
    );
    assert!(reqs.iter().all(|r| r.body == reqs[0].body));
    assert!(series(&reqs).contains_key("retried"));
    for why in ["HTTP 503; retry 1", "HTTP 429; retry 2", "timeout"] {
        assert!(
            done.stderr.iter().any(|l| l.contains(why)),
            "{why}: {:#?}",
            done.stderr
        );
    }
    let summary = stop_summary(&done);
    assert!(
        summary.contains("delivered 1 payloads") && summary.contains("3 retries"),
        "{summary}"
    );
}

#[test]
fn a_403_is_dropped_counted_and_not_retried() {
    let intake = Intake::start(|_, _| 403);
    let server = start(&intake.url(), &["--retry-backoff-base-ms", "50"]);
    send(&server, &["refused:1|c"]);
    let done = server.stop();
    assert_eq!(done.status, 1, "points were lost: {:#?}", done.stderr);
    let reqs = intake.requests();
    let mut bodies: Vec<&Vec<u8>> = reqs.iter().map(|r| &r.body).collect();
    let n = bodies.len();
    bodies.dedup();
    assert_eq!(bodies.len(), n, "no payload is sent twice");
    assert!(
        done.stderr
            .iter()
            .any(|l| l.contains("refused a payload with HTTP 403"))
    );
    let summary = stop_summary(&done);
    assert!(
        summary.contains("delivered 0 payloads") && summary.contains(&format!("{n} payloads (")),
        "{summary}"
    );
}

#[test]
fn queue_overflow_drops_the_oldest_and_counts_them() {
    let intake = Intake::start(|_, _| 503);
    let mut server = start(
        &intake.url(),
        &[
            // One request out: every later payload waits in the one-byte queue.
            "--http-max-in-flight",
            "1",
            "--retry-queue-bytes",
            "1",
            "--retry-backoff-base-ms",
            "200",
            "--downstream-stop-timeout-secs",
            "1",
            "--bucket-secs",
            "1",
            "--no-self-metrics",
        ],
    );
    // One payload per window: each point is sent once the window before it has closed.
    for i in 0..4 {
        send(&server, &[&format!("window{i}:1|c")]);
        server.wait_for_stderr("the window of the point", |l| {
            l.contains(": window ") && l.contains(" metrics=1 ")
        });
    }
    let done = server.stop();
    assert_eq!(done.status, 1);
    assert!(
        done.stderr.iter().any(|l| l.contains("(queue_full;")),
        "{:#?}",
        done.stderr
    );
    let dropped: u64 = done
        .stderr
        .iter()
        .filter(|l| l.contains("datadog window"))
        .filter_map(|l| {
            l.split("dropped_payloads=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        dropped >= 1,
        "per-window telemetry counts the drops: {:#?}",
        done.stderr
    );
    // Intake never said yes: nothing delivered, and what was still held at stop was dropped too.
    assert!(intake.requests().iter().all(|r| r.status == 503));
}

#[test]
fn spilled_payloads_survive_a_restart() {
    let dir = temp_dir("spill");
    let spill = dir.join("spill");
    // A port with nothing listening: every POST fails to connect.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}");
    let spill_args = [
        "--retry-spill-dir",
        spill.to_str().unwrap(),
        "--retry-backoff-base-ms",
        "50",
        "--downstream-stop-timeout-secs",
        "1",
        "--no-self-metrics",
    ];
    let first = start(&url, &spill_args);
    send(&first, &["spilled.metric:7|c"]);
    let done = first.stop();
    assert_eq!(done.status, 0, "spilled is not lost: {:#?}", done.stderr);
    let payload_files = || common::spilled_payloads(&spill);
    assert!(payload_files() >= 1, "{:#?}", done.stderr);

    let intake = Intake::start_on(addr, |_, _| 200);
    let second = start(&url, &spill_args);
    intake.wait_for("the spilled series", |r| {
        series(r).contains_key("spilled.metric")
    });
    let done = second.stop();
    assert_eq!(done.status, 0);
    let v = &series(&intake.requests())["spilled.metric"];
    assert_eq!(v.msgs(4)[0].double(1), 7.0 / 3600.0);
    assert_eq!(payload_files(), 0, "delivered files are removed");
}

#[test]
fn a_missing_or_unreadable_api_key_is_a_startup_error() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_corestatsd"))
            .args(["--udp-addr", "127.0.0.1:0", "--downstream", "datadog"])
            .args(args)
            .env_remove("DD_API_KEY")
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("set DD_API_KEY, --dd-api-key-file or api_key in --config")
    );
    let out = run(&["--dd-api-key-file", "/nonexistent/key"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read --dd-api-key-file /nonexistent/key")
    );
}

#[test]
fn a_tiny_sample_rate_is_refused_and_costs_no_memory() {
    // Regression: one `weight.d:1|d|@1e-18` made the sketch encoder write a bin of weight 1e18
    // as 2.3e8 uint32 pieces (3.3 GiB RSS, then the point was dropped); `@1e-300` ran out of
    // memory. Rates below 1e-6 are now refused and counted; the lowest accepted rate still
    // arrives with its exact weight.
    let intake = Intake::start(|_, _| 200);
    let mut server = start(&intake.url(), &["--bucket-secs", "1"]);
    let lines = "weight.d:1|d|@1e-18\nweight.d:1|d|@1e-300\nweight.d:1|d|@0.000001\n\
                 weight.d:1|d|@0.000001\nweight.d:1|d|@0.000001\nweight.d:2|d";
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(lines.as_bytes(), server.addr).unwrap();
    let is_weight = |r: &Request| {
        r.path == "/api/beta/sketches"
            && Msg::parse(&r.decoded())
                .msgs(1)
                .iter()
                .any(|sk| sk.str(1) == "weight.d")
    };
    let reqs = intake.wait_for("the weight.d sketch", |rs| rs.iter().any(is_weight));
    server.wait_for_stderr("the window's rejected lines", |l| {
        l.contains("parse_errors=2 ") && l.contains("(bad_sample_rate)")
    });
    assert!(
        server.peak_rss_bytes() < 256 << 20,
        "peak RSS {} bytes",
        server.peak_rss_bytes()
    );
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    let sketch = reqs
        .iter()
        .filter(|r| is_weight(r))
        .flat_map(|r| Msg::parse(&r.decoded()).msgs(1))
        .find(|sk| sk.str(1) == "weight.d")
        .unwrap();
    let d = sketch.msg(7);
    assert_eq!(
        d.uint(2),
        3_000_001,
        "three samples weigh 1e6 each, one weighs 1"
    );
    assert_eq!(d.packed(8), [3_000_000, 1]);
}
