//! `--downstream` repeated: jsonl, the Datadog test intake and a real Prometheus by remote write
//! at once. While the intake refuses everything, the other two get every window on time; the
//! intake's payloads spill to their own directory and arrive, every count once, when it comes
//! back.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::intake::{Intake, Msg, Request};
use common::prometheus::Prometheus;
use common::{Server, temp_dir};
use serde_json::Value;

/// The sum of the `c.x` counts the intake accepted.
fn intake_sum(reqs: &[Request]) -> f64 {
    reqs.iter()
        .filter(|r| r.path == "/api/v2/series" && r.status == 202)
        .flat_map(|r| Msg::parse(&r.decoded()).msgs(1))
        .filter(|s| s.str(2) == "c.x")
        .flat_map(|s| s.msgs(4))
        .map(|p| p.double(1))
        .sum()
}

fn jsonl_sum(path: &std::path::Path) -> f64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["name"] == "c.x")
        .map(|v| v["value"].as_f64().unwrap())
        .sum()
}

#[test]
fn a_downstream_that_is_down_holds_back_no_other_and_catches_up_from_its_spill() {
    let dir = temp_dir("several-downstreams");
    let (out, spill) = (dir.join("out.jsonl"), dir.join("spill"));
    let down = Arc::new(AtomicBool::new(true));
    let intake = {
        let down = down.clone();
        Intake::start(move |_, _| {
            if down.load(Ordering::Relaxed) {
                503
            } else {
                202
            }
        })
    };
    let prom = Prometheus::start("scrape_configs: []\n");
    let jsonl = format!("jsonl:{}", out.display());
    let remote_write = format!("prometheus-remote-write:{}/api/v1/write", prom.url);
    let mut server = Server::start_with_env(
        &[
            "--downstream",
            &jsonl,
            "--downstream",
            "datadog",
            "--downstream",
            &remote_write,
            "--dd-url",
            &intake.url(),
            "--dd-counters-as",
            "count",
            "--retry-spill-dir",
            spill.to_str().unwrap(),
            // Nothing waits in memory: every payload the intake refuses is spilled.
            "--retry-queue-bytes",
            "1",
            "--retry-backoff-base-ms",
            "50",
            "--retry-backoff-max-ms",
            "200",
            "--bucket-secs",
            "1",
            "--hostname",
            "h",
            "--cores",
            "0",
        ],
        &[("DD_API_KEY", "k")],
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0.0;
    for _ in 0..4 {
        udp.send_to(b"c.x:1|c\nc.x:2|c\nother:1|g", server.addr)
            .unwrap();
        sent += 3.0;
        server.wait_for_stderr("the datagram's window", |l| {
            l.contains(": window ") && l.contains(" metrics=3 ")
        });
        // On time: the window is in the file and in Prometheus while the intake refuses.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while jsonl_sum(&out) < sent {
            assert!(std::time::Instant::now() < deadline, "jsonl fell behind");
            std::thread::yield_now();
        }
        prom.wait_value("c_x_total", |v| v == sent);
    }
    assert_eq!(intake_sum(&intake.requests()), 0.0);
    assert!(
        intake.requests().iter().any(|r| r.status == 503),
        "the intake was tried"
    );
    // Several HTTP downstreams: each spills into a directory of its own.
    let spilled = common::spilled_payloads(&spill.join("datadog"));
    assert!(spilled > 0, "the refused payloads are spilled");
    assert!(
        !spill.join("prometheus-remote-write").exists() || {
            std::fs::read_dir(spill.join("prometheus-remote-write"))
                .unwrap()
                .all(|e| e.unwrap().path().extension().is_none_or(|x| x != "payload"))
        }
    );

    down.store(false, Ordering::Relaxed);
    intake.wait_for("every count, from the spill", |r| intake_sum(r) == sent);
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    assert_eq!(intake_sum(&intake.requests()), sent, "every count once");
    assert_eq!(jsonl_sum(&out), sent);
    // Each downstream's telemetry under its own name, in every downstream.
    let text = std::fs::read_to_string(&out).unwrap();
    for name in ["datadog", "prometheus-remote-write"] {
        assert!(
            text.contains(&format!("\"downstream:{name}\"")),
            "no telemetry tagged downstream:{name}"
        );
    }
}

#[test]
fn the_agents_additional_endpoints_are_more_datadog_downstreams_with_their_own_keys() {
    let dir = temp_dir("additional-endpoints");
    let (main, extra) = (Intake::start(|_, _| 202), Intake::start(|_, _| 202));
    let config = dir.join("datadog.yaml");
    std::fs::write(
        &config,
        format!(
            "additional_endpoints:\n  '{}': [key-2, key-3]\n",
            extra.url()
        ),
    )
    .unwrap();
    let server = Server::start_with_env(
        &[
            "--downstream",
            "datadog",
            "--dd-url",
            &main.url(),
            "--dd-counters-as",
            "count",
            "--config",
            config.to_str().unwrap(),
            "--bucket-secs",
            "3600",
            "--cores",
            "0",
            "--no-self-metrics",
        ],
        &[("DD_API_KEY", "key-1")],
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"c.x:5|c", server.addr).unwrap();
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    let keys = |i: &Intake| -> Vec<String> {
        let mut k: Vec<String> = i
            .requests()
            .iter()
            .filter(|r| r.path == "/api/v2/series" && intake_sum(std::slice::from_ref(r)) == 5.0)
            .map(|r| r.header("DD-API-KEY").unwrap_or_default().to_string())
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(&main), ["key-1"]);
    assert_eq!(keys(&extra), ["key-2", "key-3"]);
    for name in ["datadog-2", "datadog-3"] {
        assert!(
            done.stderr
                .iter()
                .any(|l| l.starts_with(&format!("corestatsd: {name}: delivered 1 payloads"))),
            "{name}: {:#?}",
            done.stderr
        );
    }
}

#[test]
fn the_config_files_downstream_list_sends_every_window_to_each() {
    let dir = temp_dir("config-downstreams");
    let (a, b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    let config = dir.join("corestatsd.yaml");
    std::fs::write(
        &config,
        format!(
            "downstream:\n  - jsonl:{}\n  - jsonl:{}\n",
            a.display(),
            b.display()
        ),
    )
    .unwrap();
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--bucket-secs",
        "3600",
        "--cores",
        "0",
        "--no-self-metrics",
    ]);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"c.x:5|c\nc.x:2|c", server.addr).unwrap();
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    assert_eq!(jsonl_sum(&a), 7.0);
    assert_eq!(jsonl_sum(&b), 7.0);
    assert!(
        done.lines.is_empty(),
        "nothing on stdout: jsonl:- is only the default"
    );
}
