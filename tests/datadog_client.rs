//! The real `datadog` Python client (installed by `.ci/run`) against the real binary, over UDP,
//! a unix datagram socket (`socket_path=`) and a unix stream socket (`unixstream://`).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Server, metric_lines, one};
use serde_json::json;

#[derive(Clone, Copy, Debug)]
enum Via {
    Udp,
    Uds,
    UdsStream,
}

/// A server on `cores` listening the way `via` says, and the client's target argument.
fn start(via: Via, test: &str, cores: &str) -> (Server, String, PathBuf) {
    let socket = common::temp_dir(test).join("dsd.socket");
    let path = socket.to_str().unwrap().to_owned();
    let mut args = vec![
        "--cores",
        cores,
        "--bucket-secs",
        "3600",
        "--hostname",
        "box",
    ];
    match via {
        Via::Udp => {}
        Via::Uds => args.extend(["--uds-path", &path]),
        Via::UdsStream => args.extend(["--uds-stream-path", &path]),
    }
    let server = Server::start(&args);
    let target = match via {
        Via::Udp => server.addr.port().to_string(),
        Via::Uds => format!("unix://{path}"),
        Via::UdsStream => format!("unixstream://{path}"),
    };
    (server, target, socket)
}

/// Runs one of the client scripts against `target`.
fn run_client(script: &str, target: &str) {
    let status = Command::new("python3")
        .arg(format!(
            "{}/tests/clients/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(target)
        .status()
        .expect("python3 runs (install the client with `pip install datadog`)");
    assert!(
        status.success(),
        "the client script failed: is the `datadog` package installed?"
    );
}

#[test]
fn datadog_python_client_metrics_arrive_exactly() {
    metrics_arrive_exactly(Via::Udp);
}

#[test]
fn datadog_python_client_metrics_arrive_exactly_over_a_unix_datagram_socket() {
    metrics_arrive_exactly(Via::Uds);
}

#[test]
fn datadog_python_client_metrics_arrive_exactly_over_a_unix_stream_socket() {
    metrics_arrive_exactly(Via::UdsStream);
}

fn metrics_arrive_exactly(via: Via) {
    let (server, target, socket) = start(via, &format!("metrics-{via:?}"), "0,1");
    run_client("datadog_client.py", &target);
    // Everything the script sent is in the server's sockets (or its listen backlog) once it
    // exits, and a stop reads it all.
    let done = server.stop();
    assert!(!socket.exists(), "a clean stop removes the socket file");
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
    events_and_checks_arrive(Via::Udp);
}

#[test]
fn datadog_python_client_events_and_service_checks_over_a_unix_datagram_socket() {
    events_and_checks_arrive(Via::Uds);
}

fn events_and_checks_arrive(via: Via) {
    // One shard: events keep their arrival order per shard, and the checks below rely on it.
    let (server, target, socket) = start(via, &format!("events-{via:?}"), "0");
    run_client("datadog_events.py", &target);
    // A mixed datagram: a metric, an event and a service check, plus a bad event and check.
    let mixed: &[u8] =
        b"mixed:1|c\n_e{5,4}:title|text|#b,a\n_sc|mixed.check|0\n_e{9,1}:short|x\n_sc|x|OK\n";
    match via {
        Via::Uds => {
            let tx = std::os::unix::net::UnixDatagram::unbound().unwrap();
            tx.send_to(mixed, &socket).unwrap();
        }
        _ => common::send_spread(server.addr, &[mixed]),
    }
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
