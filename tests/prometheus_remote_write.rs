//! `--downstream prometheus-remote-write` against a real Prometheus (`common::prometheus`);
//! values are read back through its query API.

mod common;

use common::Server;
use common::prometheus::Prometheus;

/// The lines in one datagram, so in one window.
fn send_one(server: &Server, lines: &[&str]) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(lines.join("\n").as_bytes(), server.addr).unwrap();
}

#[test]
fn counters_accumulate_and_every_type_lands_in_prometheus() {
    let prom = Prometheus::start("scrape_configs: []\n");
    let target = format!("prometheus-remote-write:{}/api/v1/write", prom.url);
    let mut server = Server::start(&[
        "--downstream",
        &target,
        "--bucket-secs",
        "1",
        "--hostname",
        "edge-1",
        "--cores",
        "0",
        "--no-self-metrics",
    ]);
    let past = common::now_secs() - 30;
    // One datagram, so one window: the second half goes to a later one.
    send_one(
        &server,
        &[
            "req:3|c|#env:prod,k8s.pod-name:web",
            "flag:1|c|#canary",
            "temp:21.5|g",
            "lat:100|h",
            "lat:300|h",
            "t:100|ms",
            "t:300|ms",
            "gone:7|g",
            "size:1:2:3:4|d",
            // Two points of one series at one timestamp: Prometheus would refuse the whole
            // request over the second.
            &format!("stamped:2|c|T{past}"),
            &format!("stamped:3|c|T{past}"),
            &format!("late:1|g|T{past}"),
        ],
    );
    server.wait_for_stderr("the first window's close", |l| {
        l.contains(": window ") && l.contains(" metrics=12 ")
    });
    send_one(
        &server,
        &[
            "req:4|c|#env:prod,k8s.pod-name:web",
            "size:10|d",
            "lat:200|h",
            // Older than the series' newest sample: dropped and counted, not sent.
            &format!("late:5|g|T{}", past - 60),
            &format!("stamped:4|c|T{}", past - 60),
        ],
    );
    server.wait_for_stderr("the second window's close", |l| {
        l.contains(": window ") && l.contains(" metrics=5 ")
    });
    // A third window: `gone`, last seen two windows back, is marked stale with it.
    send_one(&server, &["keep:1|c"]);
    server.wait_for_stderr("the third window's close", |l| {
        l.contains(": window ") && l.contains(" metrics=1 ")
    });
    let done = server.stop();
    assert_eq!(
        done.status, 1,
        "the late gauge is a lost point: {:#?}",
        done.stderr
    );
    assert!(
        done.stderr
            .iter()
            .any(|l| l.contains("1 lost to sink errors"))
    );
    assert!(
        done.stderr
            .iter()
            .any(|l| l.contains("prometheus-remote-write: delivered")
                && l.contains(" 0 payloads (0 points) dropped")),
        "{:#?}",
        done.stderr
    );

    assert!(
        done.stderr
            .iter()
            .any(|l| l.contains("1 samples dropped as older than their series' newest")),
        "{:#?}",
        done.stderr
    );
    assert_eq!(prom.value("late"), 1.0);
    assert_eq!(prom.value("count_over_time(stamped_total[10m])"), 1.0);
    assert_eq!(
        prom.value("stamped_total"),
        5.0,
        "both points of one timestamp"
    );

    let req = prom.query("req_total");
    assert_eq!(req.len(), 1, "{req:#?}");
    let labels = &req[0]["metric"];
    assert_eq!(labels["env"], "prod");
    assert_eq!(labels["k8s_pod_name"], "web");
    assert_eq!(labels["host"], "edge-1");
    for (expr, want, why) in [
        ("max_over_time(req_total[10m])", 7.0, "cumulative"),
        (
            "min_over_time(req_total[10m])",
            3.0,
            "the first window's total",
        ),
        (
            "max_over_time(flag_total{canary=\"true\"}[10m])",
            1.0,
            "a tag without a value",
        ),
        ("max_over_time(temp[10m])", 21.5, "a gauge"),
        (
            "max_over_time(lat_max[10m])",
            300.0,
            "a histogram aggregate",
        ),
        (
            "min_over_time(lat_avg[10m])",
            200.0,
            "a histogram aggregate",
        ),
        (
            "max_over_time(lat_count[10m])",
            3.0,
            "a histogram's count, cumulative",
        ),
        (
            "max_over_time(lat_sum[10m])",
            600.0,
            "a histogram's sum (avg x count), cumulative",
        ),
        ("max_over_time(t_count[10m])", 2.0, "a timer's count"),
        (
            "max_over_time(t_max[10m])",
            0.3,
            "a timer's aggregates, in seconds",
        ),
        (
            "max_over_time(size_count[10m])",
            5.0,
            "a distribution's count, cumulative",
        ),
        (
            "max_over_time(size_sum[10m])",
            20.0,
            "a distribution's sum, cumulative",
        ),
    ] {
        assert_eq!(prom.value(expr), want, "{expr}: {why}");
    }
    let t_sum = prom.value("max_over_time(t_sum[10m])");
    assert!(
        (t_sum - 0.4).abs() < 1e-9,
        "a timer's sum, in seconds: {t_sum}"
    );
    // One sample per window from the first (the zero-filled windows repeat the total).
    assert!(prom.value("count_over_time(req_total[10m])") >= 3.0);
    // Counters, and histograms' counts and sums, work with rate(): two samples each.
    for expr in [
        "rate(req_total[10m])",
        "rate(lat_count[10m])",
        "rate(lat_sum[10m])",
    ] {
        assert!(prom.value(expr) > 0.0, "{expr}");
    }
    // `gone` and `temp` stopped after the first window: marked stale, they leave instant
    // queries at once instead of lingering for the 5-minute lookback.
    assert!(prom.query("gone").is_empty(), "{:#?}", prom.query("gone"));
    assert!(prom.query("temp").is_empty());
    assert_eq!(prom.value("max_over_time(gone[10m])"), 7.0);
    let p50 = prom.value("min_over_time(size{quantile=\"0.5\"}[10m])");
    assert!(
        (p50 - 2.0).abs() <= 2.0 * 0.01,
        "p50 of 1..4 within the sketch's accuracy: {p50}"
    );
    assert_eq!(
        prom.query("last_over_time(size[10m])").len(),
        4,
        "0.5, 0.9, 0.95 and 0.99 quantile series"
    );
}
