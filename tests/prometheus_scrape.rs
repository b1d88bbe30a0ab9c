//! `--downstream prometheus-scrape` scraped by a real Prometheus (`common::prometheus`), as it
//! would scrape statsd_exporter: counters through `rate()`, a timer's summary quantiles in
//! seconds, and `histogram_quantile()` over a histogram a `--mapping-config` asks for.

mod common;

use common::Server;
use common::prometheus::Prometheus;

#[test]
fn prometheus_scrapes_counters_summaries_and_histograms_as_from_statsd_exporter() {
    let dir = common::temp_dir("scrape");
    let mapping = dir.join("mapping.yml");
    std::fs::write(
        &mapping,
        r#"
mappings:
- match: "api.*.latency"
  name: "api_latency_seconds"
  labels:
    endpoint: "$1"
  observer_type: histogram
  histogram_options:
    buckets: [0.05, 0.1, 0.5, 1]
"#,
    )
    .unwrap();
    let mut server = Server::start(&[
        "--downstream",
        "prometheus-scrape",
        "--mapping-config",
        mapping.to_str().unwrap(),
        "--bucket-secs",
        "1",
        "--hostname",
        "edge-1",
        "--cores",
        "0",
    ]);
    let prom = Prometheus::start(&format!(
        "scrape_configs:\n- job_name: corestatsd\n  scrape_interval: 1s\n  static_configs:\n  - targets: ['{}']\n",
        server.http.unwrap()
    ));
    // Scraping already (the endpoint serves the server's own series from the start), so the
    // counter is seen growing.
    prom.wait_value("up{job=\"corestatsd\"}", |v| v == 1.0);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // Six windows, one datagram each (the next once the server logs its window), while
    // Prometheus scrapes every second.
    let mut sent = 0;
    for _ in 0..6 {
        let lines = [
            "req:1|c|#env:prod",
            "req:1|c|#env:prod",
            "temp:21.5|g",
            "db.query:20|ms",
            "db.query:40|ms",
            "db.query:60|ms",
            "api.users.latency:80|ms",
            "api.users.latency:300|ms",
            "size:3|d",
            "_e{2,2}:hi|yo",
        ];
        udp.send_to(lines.join("\n").as_bytes(), server.addr)
            .unwrap();
        sent += 2;
        // The window that held it (earlier lines may still wait to be read).
        server.wait_for_stderr("the datagram's window", |l| {
            l.contains(": window ") && l.contains(" metrics=9 ")
        });
    }

    // The text still parses, the server's own series beside the aggregated ones.
    assert_eq!(prom.value("up{job=\"corestatsd\"}"), 1.0);
    prom.wait_value("corestatsd_scrape_series", |v| v == 5.0);
    // Counters: cumulative `_total`, every count once, and rate() sees them.
    prom.wait_value("req_total{env=\"prod\"}", |v| v == sent as f64);
    let rate = prom.wait_value("rate(req_total{env=\"prod\"}[1m])", |v| v > 0.0);
    assert!(rate < 10.0, "about 2 per second: {rate}");
    // A timer: a summary in seconds, quantiles from its last window.
    assert_eq!(prom.value("db_query{quantile=\"0.5\"}"), 0.04);
    assert_eq!(prom.value("db_query{quantile=\"0.99\"}"), 0.06);
    assert_eq!(prom.value("db_query_count"), (sent / 2 * 3) as f64);
    let avg = prom.value("db_query_sum / db_query_count");
    assert!((avg - 0.04).abs() < 1e-9, "{avg}");
    // The mapped timer: a histogram with the file's buckets, labelled as the file says.
    assert_eq!(
        prom.value("api_latency_seconds_bucket{endpoint=\"users\",le=\"0.1\"}"),
        (sent / 2) as f64
    );
    let p90 = prom.wait_value(
        "histogram_quantile(0.9, rate(api_latency_seconds_bucket[1m]))",
        |v| v.is_finite(),
    );
    assert!(p90 > 0.1 && p90 <= 0.5, "the 300 ms half: {p90}");
    // Gauges, distributions; events have no series and are counted.
    assert_eq!(prom.value("temp"), 21.5);
    assert_eq!(prom.value("size_count"), (sent / 2) as f64);
    assert!(prom.value("corestatsd_scrape_events_dropped_total") > 0.0);
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
}

#[test]
fn without_the_http_endpoint_the_scrape_downstream_is_refused_by_name() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corestatsd"))
        .args([
            "--downstream",
            "prometheus-scrape",
            "--no-http",
            "--cores",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--downstream prometheus-scrape") && err.contains("--no-http"),
        "{err}"
    );
}

#[test]
fn beside_jsonl_each_gets_histograms_in_its_own_form() {
    let dir = common::temp_dir("scrape-beside");
    let out = dir.join("out.jsonl");
    let jsonl = format!("jsonl:{}", out.display());
    let mut server = Server::start(&[
        "--downstream",
        "prometheus-scrape",
        "--downstream",
        &jsonl,
        "--bucket-secs",
        "1",
        "--cores",
        "0",
        "--no-self-metrics",
    ]);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"lat:1|h\nlat:3|h\nu:a|s\nu:b|s", server.addr)
        .unwrap();
    server.wait_for_stderr("the datagram's window", |l| {
        l.contains(": window ") && l.contains(" metrics=4 ")
    });
    let text = common::wait_for(server.http.unwrap(), "/metrics", |t| {
        t.contains("lat_count")
    });
    assert!(
        text.contains("\nlat_count 2\n") && text.contains("\nlat_sum 4\n"),
        "{text}"
    );
    assert!(text.contains("\nu 2\n"), "{text}");
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    // jsonl gets the Agent's aggregates, as without the scrape downstream.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let value = |name: &str| {
        lines
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {lines:#?}"))["value"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(
        (value("lat.max"), value("lat.count"), value("u")),
        (3.0, 2.0, 2.0)
    );
}
