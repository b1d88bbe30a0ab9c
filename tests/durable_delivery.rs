//! `--durable-delivery`: a payload is on disk before it is sent, so `kill -9` while the intake
//! refuses it loses nothing; the next process on the same spill directory delivers it.

mod common;

use common::intake::{Intake, Msg};
use common::{Server, temp_dir};

fn start(url: &str, spill: &str) -> Server {
    let args = [
        "--downstream",
        "datadog",
        "--dd-url",
        url,
        "--durable-delivery",
        "--retry-spill-dir",
        spill,
        "--retry-backoff-base-ms",
        "60000",
        "--bucket-secs",
        "1",
        "--no-self-metrics",
        "--cores",
        "0",
    ];
    Server::start_with_env(&args, &[("DD_API_KEY", "test-key")])
}

/// The sum of `name`'s points over every accepted series request.
fn delivered(intake: &Intake, name: &str) -> f64 {
    intake
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v2/series" && r.status == 200)
        .flat_map(|r| Msg::parse(&r.decoded()).msgs(1))
        .filter(|s| s.str(2) == name)
        .flat_map(|s| s.msgs(4))
        .map(|p| p.double(1))
        .sum()
}

#[test]
fn kill_9_loses_no_payload_that_left_the_sink() {
    let dir = temp_dir("durable");
    let spill = dir.join("spill");
    let spill_arg = spill.to_str().unwrap();
    let refusing = Intake::start(|_, _| 503);
    let first = start(&refusing.url(), spill_arg);
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"durable.count:5|c", first.addr).unwrap();
    // Its window's payload has been sent once (and refused): it was on disk before that.
    refusing.wait_for("the payload's first attempt", |r| {
        r.iter().any(|r| r.path == "/api/v2/series")
    });
    let on_disk = common::spilled_payloads(&spill);
    assert!(on_disk >= 1, "{on_disk} payload files");
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(first.pid() as i32, libc::SIGKILL) };
    drop(first);

    let accepting = Intake::start(|_, _| 200);
    let second = start(&accepting.url(), spill_arg);
    accepting.wait_for("the spilled payload", |_| {
        delivered(&accepting, "durable.count") >= 5.0
    });
    let done = second.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    assert_eq!(delivered(&accepting, "durable.count"), 5.0);
}

#[test]
fn durable_delivery_needs_a_spill_directory() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corestatsd"))
        .args(["--downstream", "datadog", "--durable-delivery"])
        .env("DD_API_KEY", "k")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--durable-delivery") && stderr.contains("--retry-spill-dir"));
}
