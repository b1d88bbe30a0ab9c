//! What statsd clients put on the wire beyond the Agent's grammar, through the real binary:
//! gauge deltas (pystatsd `delta=True`, hot-shots and statsd-client `gaugeDelta`) with and
//! without `--gauge-deltas`, and cadence's `|m` meters.

mod common;

use common::{Server, metric_lines};

fn gauge(lines: &[serde_json::Value], name: &str) -> Vec<f64> {
    metric_lines(lines)
        .iter()
        .filter(|l| l["name"] == name)
        .map(|l| l["value"].as_f64().unwrap())
        .collect()
}

#[test]
fn gauge_deltas_adjust_with_the_flag_and_set_without_it() {
    // As pystatsd sends `gauge("q", 10)`, `gauge("q", 5, delta=True)`, `gauge("q", -3, delta=True)`.
    let wire = b"q.depth:10|g\nq.depth:+5|g\nq.depth:-3|g\ncadence.meter:2|m\ncadence.meter:1|m";
    for (flags, want) in [(&["--gauge-deltas"][..], 12.0), (&[][..], -3.0)] {
        let mut args = vec!["--cores", "0"];
        args.extend_from_slice(flags);
        let server = Server::start(&args);
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(wire, server.addr).unwrap();
        let done = server.stop();
        assert_eq!(done.status, 0);
        assert_eq!(gauge(&done.lines, "q.depth"), [want], "{flags:?}");
        let meter: Vec<_> = metric_lines(&done.lines)
            .into_iter()
            .filter(|l| l["name"] == "cadence.meter")
            .collect();
        assert_eq!(meter.len(), 1);
        assert_eq!(
            (meter[0]["type"].as_str(), meter[0]["value"].as_f64()),
            (Some("count"), Some(3.0))
        );
    }
}

#[test]
fn tags_inside_names_are_read_in_the_formats_asked_for_and_malformed_ones_counted() {
    let server = Server::start(&[
        "--cores",
        "0",
        "--name-tag-formats",
        "influxdb,librato,signalfx",
    ]);
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // hot-shots `telegraf: true`, Librato, SignalFx, the same context each time, and one
    // malformed tag.
    let wire = b"req,env=prod:1|c|#az:a\nreq#env=prod:2|c|#az:a\n[env=prod]req:3|c|#az:a\nreq,env=prod,bad:4|c|#az:a";
    s.send_to(wire, server.addr).unwrap();
    let done = server.stop();
    assert_eq!(done.status, 0);
    let req: Vec<_> = metric_lines(&done.lines)
        .into_iter()
        .filter(|l| l["name"] == "req")
        .collect();
    assert_eq!(req.len(), 1, "{req:?}");
    assert_eq!(req[0]["value"], 10.0);
    assert_eq!(req[0]["tags"], serde_json::json!(["az:a", "env:prod"]));
    assert_eq!(
        common::self_metric(
            &done.lines,
            "corestatsd.name_tag_errors",
            &["reason:no_equals"]
        ),
        1.0
    );
    // Without the flag, as the Agent: the tags stay in the name.
    let plain = Server::start(&["--cores", "0"]);
    s.send_to(b"req,env=prod:1|c", plain.addr).unwrap();
    let done = plain.stop();
    assert!(
        metric_lines(&done.lines)
            .iter()
            .any(|l| l["name"] == "req,env=prod")
    );
}
