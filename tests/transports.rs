//! Unix datagram, unix stream and TCP listeners, and origin detection, against the real binary.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::Duration;

use common::{
    Finished, Server, closed, frame, metric_lines, one, self_metric, stopped_ok, temp_dir, value,
    wait_closed,
};
use serde_json::Value;

#[test]
fn unix_stream_frames_split_anywhere_and_a_bad_frame_closes_only_its_connection() {
    let path = temp_dir("stream-frames").join("s.sock");
    let server = Server::start(&[
        "--cores",
        "0,1",
        "--uds-stream-path",
        path.to_str().unwrap(),
        "--buffer-size-bytes",
        "64",
        "--bucket-secs",
        "3600",
    ]);
    let mut good = UnixStream::connect(&path).unwrap();
    let mut bytes = Vec::new();
    for i in 0..20 {
        bytes.extend(frame(
            format!("s.count:{i}|c\ns.set:m{}|s", i % 3).as_bytes(),
        ));
    }
    bytes.extend(frame(b"")); // an empty frame is a valid, empty packet
    // Byte-sized and odd-sized writes: frames and headers cut at every position.
    for piece in bytes.chunks(7) {
        good.write_all(piece).unwrap();
    }

    let mut too_long = UnixStream::connect(&path).unwrap();
    too_long.write_all(&frame(b"before:1|c")).unwrap();
    too_long.write_all(&frame(&[b'x'; 65])).unwrap();
    wait_closed(&mut too_long);

    let mut partial = UnixStream::connect(&path).unwrap();
    partial.write_all(&frame(b"whole:1|c")).unwrap();
    partial.write_all(&frame(b"lost:1|c")[..7]).unwrap();
    drop(partial);

    good.write_all(&frame(b"after:1|c")).unwrap();
    drop(good);
    let done = stopped_ok(server);
    assert_eq!(value(&done, "s.count"), (0..20).sum::<i32>() as f64);
    assert_eq!(value(&done, "s.set"), 3.0);
    assert_eq!(value(&done, "before"), 1.0);
    assert_eq!(value(&done, "whole"), 1.0);
    assert_eq!(value(&done, "after"), 1.0, "other connections go on");
    assert!(
        metric_lines(&done.lines)
            .iter()
            .all(|m| m["name"] != "lost")
    );
    assert_eq!(closed(&done, "uds_stream", "too_long"), 1.0);
    assert_eq!(closed(&done, "uds_stream", "partial_frame"), 1.0);
    assert_eq!(closed(&done, "uds_stream", "eof"), 1.0);
    assert_eq!(
        self_metric(
            &done.lines,
            "corestatsd.connections_opened",
            &["transport:uds_stream"]
        ),
        3.0
    );
    assert_eq!(
        self_metric(&done.lines, "corestatsd.packets", &["transport:uds_stream"]),
        21.0 + 1.0 + 1.0 + 1.0
    );
    assert!(!path.exists(), "a clean stop removes the socket file");
}

#[test]
fn a_stop_reads_what_open_connections_sent_and_the_gauge_counts_them() {
    let path = temp_dir("stream-stop").join("s.sock");
    let mut server = Server::start(&[
        "--cores",
        "0,1",
        "--uds-stream-path",
        path.to_str().unwrap(),
        "--tcp-addr",
        "127.0.0.1:0",
        "--bucket-secs",
        "1",
    ]);
    let mut unix = UnixStream::connect(&path).unwrap();
    let mut tcp = TcpStream::connect(server.tcp.unwrap()).unwrap();
    unix.write_all(&frame(b"open.unix:1|c")).unwrap();
    tcp.write_all(b"open.tcp:1|c\n").unwrap();
    // A window closes while both are open.
    server.wait_for_stderr("a window with both connections open", |l| {
        l.contains(": window ") && l.contains(" connections=2 ")
    });
    unix.write_all(&frame(b"open.unix:2|c")).unwrap();
    tcp.write_all(b"open.tcp:2|c\n").unwrap();
    let done = stopped_ok(server);
    let sum = |name: &str| -> f64 {
        metric_lines(&done.lines)
            .iter()
            .filter(|m| m["name"] == name)
            .map(|m| m["value"].as_f64().unwrap())
            .sum()
    };
    assert_eq!((sum("open.unix"), sum("open.tcp")), (3.0, 3.0));
    let gauge_max = |transport: &str| {
        done.lines
            .iter()
            .filter(|l| l["name"] == "corestatsd.connections")
            .filter(|l| {
                l["tags"]
                    .as_array()
                    .unwrap()
                    .contains(&Value::from(transport))
            })
            .map(|l| l["value"].as_f64().unwrap())
            .fold(0.0, f64::max)
    };
    assert_eq!(gauge_max("transport:uds_stream"), 1.0);
    assert_eq!(gauge_max("transport:tcp"), 1.0);
    assert_eq!(closed(&done, "uds_stream", "stopped"), 1.0);
    assert_eq!(closed(&done, "tcp", "stopped"), 1.0);
}

#[test]
fn unix_datagram_paths_are_shared_or_dealt_and_eol_is_checked_per_transport() {
    let dir = temp_dir("uds-paths");
    let paths: Vec<String> = (0..3)
        .map(|i| dir.join(format!("d{i}.sock")).to_str().unwrap().to_owned())
        .collect();
    // A stale socket file from an earlier run is replaced.
    drop(UnixDatagram::bind(&paths[0]).unwrap());
    let mut args = vec![
        "--cores",
        "0,1",
        "--bucket-secs",
        "3600",
        "--eol-required",
        "uds",
    ];
    for p in &paths {
        args.extend(["--uds-path", p.as_str()]);
    }
    let server = Server::start(&args);
    let tx = UnixDatagram::unbound().unwrap();
    for p in &paths {
        for _ in 0..5 {
            tx.send_to(b"u.count:1|c\nu.cut:1|c", p).unwrap();
        }
    }
    // UDP is not under --eol-required here.
    common::send_spread(server.addr, &[b"u.count:1|c"]);
    let done = stopped_ok(server);
    assert_eq!(value(&done, "u.count"), 16.0);
    assert!(
        metric_lines(&done.lines)
            .iter()
            .all(|m| m["name"] != "u.cut")
    );
    assert_eq!(
        self_metric(&done.lines, "corestatsd.unterminated_lines", &[]),
        15.0
    );
    assert_eq!(
        self_metric(&done.lines, "corestatsd.packets", &["transport:uds"]),
        15.0
    );

    // One path, two shards: both read it.
    let one_path = &paths[..1];
    let server = Server::start(&[
        "--cores",
        "0,1",
        "--uds-path",
        &one_path[0],
        "--bucket-secs",
        "3600",
    ]);
    for _ in 0..200 {
        tx.send_to(b"shared:1|c", &one_path[0]).unwrap();
    }
    let done = stopped_ok(server);
    assert_eq!(value(&done, "shared"), 200.0);
}

/// Sum of a (non-self) metric over every window it was flushed in.
fn total(done: &Finished, name: &str) -> f64 {
    metric_lines(&done.lines)
        .iter()
        .filter(|l| l["name"] == name)
        .map(|l| l["value"].as_f64().unwrap())
        .sum()
}

#[test]
fn empty_unix_datagrams_are_counted_and_freeze_nothing() {
    // Regression: 10 000 empty datagrams latched glommio's end of stream on the readiness
    // wrapper, the receive loop spun without yielding, and no window closed nor SIGTERM
    // worked on any shard; well-behaved UDP traffic was lost with them.
    let dir = temp_dir("empty-datagrams");
    let path = dir.join("dsd.socket");
    let mut server = Server::start(&["--uds-path", path.to_str().unwrap(), "--bucket-secs", "1"]);
    let tx = UnixDatagram::unbound().unwrap();
    // A frozen server stops reading and the 10-deep queue fills: fail, do not hang.
    tx.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..10_000 {
        tx.send_to(b"", &path)
            .unwrap_or_else(|e| panic!("empty datagram {i} not taken: {e}"));
    }
    tx.send_to(b"uds.after:1|c", &path).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..600 {
        udp.send_to(b"udp.after:1|c", server.addr).unwrap();
    }
    // Windows go on closing while the server runs.
    server.wait_for_stderr("a window that saw metrics", |l| {
        l.contains(": window ") && !l.contains(" metrics=0 ")
    });
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    assert_eq!(total(&done, "uds.after"), 1.0);
    assert_eq!(total(&done, "udp.after"), 600.0);
    assert_eq!(
        self_metric(&done.lines, "corestatsd.packets", &["transport:uds"]),
        10_001.0,
        "every empty datagram is counted as a packet"
    );
}

#[test]
fn a_uds_path_that_is_not_a_socket_is_refused_by_name() {
    let path = temp_dir("not-socket").join("file");
    std::fs::write(&path, b"keep me").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corestatsd"))
        .args([
            "--uds-path",
            path.to_str().unwrap(),
            "--udp-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--uds-path") && err.contains("not a socket"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}

/// What this process' cgroup file names as its container, by the rule the server documents:
/// a 64-hex-digit path component (after a runtime prefix and `.scope`).
fn own_container_id() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .flat_map(|path| path.rsplit('/'))
        .map(|c| c.trim_end_matches(".scope"))
        .map(|c| c.rsplit('-').next().unwrap_or(c))
        .find(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

const FAKE_ID: &str = "d8e7f1c2b3a4958677685a4b3c2d1e0f0a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// A proc root where this process' cgroup file names `FAKE_ID` (docker, cgroup v2 layout).
fn fake_proc(dir: &Path) -> String {
    let pid_dir = dir.join("proc").join(std::process::id().to_string());
    std::fs::create_dir_all(&pid_dir).unwrap();
    std::fs::write(
        pid_dir.join("cgroup"),
        format!("0::/system.slice/docker-{FAKE_ID}.scope\n"),
    )
    .unwrap();
    dir.join("proc").to_str().unwrap().to_owned()
}

fn container_of(done: &Finished, name: &str) -> Option<String> {
    one(&metric_lines(&done.lines), name)["container_id"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn origin_detection_names_the_senders_container_on_both_unix_sockets() {
    let dir = temp_dir("origin");
    let proc_root = fake_proc(&dir);
    let dgram = dir.join("d.sock");
    let stream = dir.join("s.sock");
    let server = Server::start(&[
        "--cores",
        "0,1",
        "--origin-detection",
        "--proc-root",
        &proc_root,
        "--uds-path",
        dgram.to_str().unwrap(),
        "--uds-stream-path",
        stream.to_str().unwrap(),
        "--bucket-secs",
        "3600",
    ]);
    let tx = UnixDatagram::unbound().unwrap();
    tx.send_to(
        b"o.dgram:1|c\no.client:1|c|c:ci-fromclient\n_sc|o.check|0",
        &dgram,
    )
    .unwrap();
    let mut s = UnixStream::connect(&stream).unwrap();
    s.write_all(&frame(b"o.stream:1|c|#a")).unwrap();
    drop(s);
    // UDP has no credentials: no container.
    common::send_spread(server.addr, &[b"o.udp:1|c"]);
    let done = stopped_ok(server);
    assert_eq!(container_of(&done, "o.dgram").as_deref(), Some(FAKE_ID));
    assert_eq!(container_of(&done, "o.stream").as_deref(), Some(FAKE_ID));
    assert_eq!(
        container_of(&done, "o.client").as_deref(),
        Some("fromclient"),
        "|c: wins by default"
    );
    assert_eq!(container_of(&done, "o.udp"), None);
    let check = done
        .lines
        .iter()
        .find(|l| l["kind"] == "service_check")
        .unwrap();
    assert_eq!(check["container_id"], FAKE_ID);
    assert_eq!(
        self_metric(&done.lines, "corestatsd.origin_resolved", &[]),
        2.0
    );

    let server = Server::start(&[
        "--cores",
        "0",
        "--origin-detection",
        "--origin-precedence",
        "socket",
        "--proc-root",
        &proc_root,
        "--uds-path",
        dgram.to_str().unwrap(),
        "--bucket-secs",
        "3600",
    ]);
    tx.send_to(b"o.client:1|c|c:ci-fromclient", &dgram).unwrap();
    let done = stopped_ok(server);
    assert_eq!(container_of(&done, "o.client").as_deref(), Some(FAKE_ID));
}

#[test]
fn origin_detection_on_the_real_proc_resolves_or_counts_this_process() {
    let dir = temp_dir("origin-real");
    let dgram = dir.join("d.sock");
    let server = Server::start(&[
        "--cores",
        "0",
        "--origin-detection",
        "--uds-path",
        dgram.to_str().unwrap(),
        "--bucket-secs",
        "3600",
    ]);
    let tx = UnixDatagram::unbound().unwrap();
    tx.send_to(b"real:1|c", &dgram).unwrap();
    let done = stopped_ok(server);
    match own_container_id() {
        Some(id) => {
            assert_eq!(container_of(&done, "real"), Some(id));
            assert_eq!(
                self_metric(&done.lines, "corestatsd.origin_resolved", &[]),
                1.0
            );
        }
        None => {
            assert_eq!(container_of(&done, "real"), None);
            assert_eq!(
                self_metric(
                    &done.lines,
                    "corestatsd.origin_unresolved",
                    &["reason:no_container"]
                ),
                1.0
            );
        }
    }
    assert_eq!(
        value(&done, "real"),
        1.0,
        "an unresolved sender's metrics are kept"
    );
}

#[test]
fn origin_fields_and_internal_tags_reach_the_jsonl() {
    let server = Server::start(&["--cores", "0", "--bucket-secs", "3600"]);
    common::send_spread(
        server.addr,
        &[
            b"f.all:1|c|#env:a,dd.internal.entity_id:pod-7|c:ci-abc,in-42|e:it-true,cn-web,pu-p1|card:orchestrator\n\
              f.bad:1|c|c:in-x|e:it-maybe|card:extreme|#dd.internal.card:high\n\
              _e{1,1}:t|x|#dd.internal.entity_id:pod-8|card:low",
        ],
    );
    let done = stopped_ok(server);
    let metrics = metric_lines(&done.lines);
    let all = one(&metrics, "f.all");
    assert_eq!(all["tags"], serde_json::json!(["env:a"]));
    assert_eq!(all["container_id"], "abc");
    assert_eq!(all["cgroup_inode"], 42);
    assert_eq!(
        all["external_data"],
        serde_json::json!({"init": true, "container_name": "web", "pod_uid": "p1"})
    );
    assert_eq!(all["cardinality"], "orchestrator");
    assert_eq!(all["pod_uid"], "pod-7");
    let bad = one(&metrics, "f.bad");
    assert_eq!(
        bad["cardinality"], "high",
        "a malformed |card: leaves the tag's"
    );
    assert!(bad.get("container_id").is_none() && bad.get("external_data").is_none());
    let event = done.lines.iter().find(|l| l["kind"] == "event").unwrap();
    assert_eq!(
        (&event["pod_uid"], &event["cardinality"]),
        (&"pod-8".into(), &"low".into())
    );
    for field in ["c", "e", "card"] {
        assert_eq!(
            self_metric(
                &done.lines,
                "corestatsd.origin_field_errors",
                &[&format!("field:{field}")]
            ),
            1.0,
            "{field}"
        );
    }
}
