//! The real `datadog` Python client (installed by `.ci/run`) against the real binary.

mod common;

use std::process::Command;

use common::{Server, metric_lines, one};
use serde_json::json;

#[test]
fn datadog_python_client_metrics_arrive_exactly() {
    let server = Server::start(&[
        "--cores",
        "0,1",
        "--bucket-secs",
        "3600",
        "--hostname",
        "box",
    ]);
    let status = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/datadog_client.py"
        ))
        .arg(server.addr.port().to_string())
        .status()
        .expect("python3 runs (install the client with `pip install datadog`)");
    assert!(
        status.success(),
        "the client script failed: is the `datadog` package installed?"
    );
    // The server is idle once the script exits; a short pause lets the kernel hand it all over.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let done = server.stop();
    assert_eq!(done.status, 0, "{:?}", done.stderr);
    let metrics = metric_lines(&done.lines);
    let field = |name: &str, key: &str| one(&metrics, name)[key].clone();

    assert_eq!(field("page.views", "value"), 6.0);
    assert_eq!(field("page.views", "type"), "count");
    assert_eq!(
        field("page.views", "tags"),
        json!(["env:prod", "page:home"])
    );
    assert_eq!(field("cpu.temp", "value"), 42.5);
    assert_eq!(field("cpu.temp", "host"), "a");
    assert_eq!(field("cpu.temp", "tags"), json!(["env:prod"]));
    assert_eq!(field("request.latency.count", "value"), 4.0);
    assert_eq!(field("request.latency.avg", "value"), 0.5);
    assert_eq!(field("request.latency.max", "value"), 0.75);
    assert_eq!(field("request.latency.median", "value"), 0.25);
    assert_eq!(field("request.latency.95percentile", "value"), 0.75);
    assert_eq!(field("db.query.ms.count", "value"), 2.0);
    assert_eq!(field("db.query.ms.max", "value"), 12.0);
    assert_eq!(field("users.unique", "value"), 2.0);
    assert_eq!(field("users.unique", "host"), "box");
    let sketch = field("request.size", "sketch");
    assert_eq!(
        (sketch["count"].as_f64(), sketch["sum"].as_f64()),
        (Some(2.0), Some(1024.0))
    );
    let stamped: Vec<_> = metrics
        .iter()
        .filter(|m| m["name"] == "cpu.temp.ts")
        .collect();
    assert_eq!(stamped.len(), 2, "one point per client: {stamped:?}");
    for s in stamped {
        assert_eq!(
            (s["ts"].as_u64(), s["value"].as_f64()),
            (Some(1700000000), Some(41.0))
        );
    }
    assert_eq!(metrics.len(), 16, "{metrics:#?}");
}

#[test]
fn datadog_python_client_events_and_service_checks_arrive_field_by_field() {
    let server = Server::start(&["--cores", "0", "--bucket-secs", "3600", "--hostname", "box"]);
    let status = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/datadog_events.py"
        ))
        .arg(server.addr.port().to_string())
        .status()
        .expect("python3 runs");
    assert!(
        status.success(),
        "the client script failed: is the `datadog` package installed?"
    );
    // A mixed datagram: a metric, an event and a service check, plus a bad event and check.
    common::send_spread(
        server.addr,
        &[b"mixed:1|c\n_e{5,4}:title|text|#b,a\n_sc|mixed.check|0\n_e{9,1}:short|x\n_sc|x|OK\n"],
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let done = server.stop();
    assert_eq!(done.status, 0, "{:?}", done.stderr);
    let kind = |k: &str| -> Vec<&serde_json::Value> {
        done.lines.iter().filter(|l| l["kind"] == k).collect()
    };
    let events = kind("event");
    assert_eq!(
        *events[0],
        json!({"kind":"event","title":"Deploy finished","text":"Build #42 went out\nsecond line",
               "ts":1700000000,"host":"myhost","aggregation_key":"deploy","priority":"low",
               "source_type":"demo","alert_type":"success","tags":["env:prod","team:a"]})
    );
    assert_eq!(
        *events[1],
        json!({"kind":"event","title":"title","text":"text","host":"box","priority":"normal",
               "alert_type":"info","tags":["a","b"]})
    );
    assert_eq!(events.len(), 2);
    let checks = kind("service_check");
    assert_eq!(
        *checks[0],
        json!({"kind":"service_check","name":"app.can_connect","status":1,"ts":1700000001,
               "host":"myhost","message":"slow but up","tags":["env:prod"]})
    );
    assert_eq!(
        *checks[1],
        json!({"kind":"service_check","name":"mixed.check","status":0,"host":"box","tags":[]})
    );
    assert_eq!(checks.len(), 2);
    assert_eq!(one(&metric_lines(&done.lines), "mixed")["value"], 1.0);
    assert_eq!(
        common::self_metric(&done.lines, "corestatsd.events", &[]),
        2.0,
        "the malformed one is a parse error, not an event"
    );
    assert_eq!(
        common::self_metric(
            &done.lines,
            "corestatsd.event_parse_errors",
            &["reason:too_short"]
        ),
        1.0
    );
    assert_eq!(
        common::self_metric(
            &done.lines,
            "corestatsd.service_check_parse_errors",
            &["reason:bad_status"]
        ),
        1.0
    );
}
