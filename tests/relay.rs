//! `--downstream dogstatsd…`: two real processes, edge → global, on loopback. What the global
//! tier writes must equal what one process writes from the same input.

mod common;

use std::collections::BTreeMap;
use std::net::UdpSocket;

use common::{Server, metric_lines, temp_dir};
use serde_json::Value;

/// A deterministic mix of every type, with sample rates, packing and tags.
fn input() -> Vec<String> {
    let mut lines = Vec::new();
    let mut x: u64 = 7;
    let mut next = |n: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    for i in 0..200 {
        let ctx = i % 10;
        lines.push(format!("req:{}|c|@0.5|#route:r{ctx}", next(10)));
        lines.push(format!("queue:{}|g|#q:{}", next(1000), ctx % 3));
        lines.push(format!("users:u{}|s|#app:a{}", next(40), ctx % 2));
        lines.push(format!("lat:{}:{}|ms|#route:r{ctx}", next(500), next(500)));
        lines.push(format!("size:{}|h|@0.25", next(100_000) as f64 / 7.0));
        lines.push(format!(
            "resp:{}:{}|d|#route:r{}",
            next(2000) as f64 / 3.0,
            next(10),
            ctx % 4
        ));
        lines.push(format!("resp:{}|d|@0.1|#route:r{}", next(50_000), ctx % 4));
    }
    lines.push("late:5|g|T1764000000|#src:old".into());
    // Origin fields and the internal entity tag travel too.
    lines.push(
        "origin.hits:2|c|#a:b,dd.internal.entity_id:pod-9|c:ci-abc,in-42|e:it-false,cn-web|card:low"
            .into(),
    );
    lines.push("origin.lat:3|d|#a:b|c:ci-abc|card:high".into());
    lines.push("_e{6,13}:deploy|done\\nand ok|#env:prod|t:success|k:d1".into());
    lines.push("_sc|db.up|2|#env:prod|m:down".into());
    lines
}

fn send(addr: std::net::SocketAddr, lines: &[String]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    // 175 datagrams of about 300 bytes: far within the servers' receive buffers.
    for chunk in lines.chunks(8) {
        s.send_to(chunk.join("\n").as_bytes(), addr).unwrap();
    }
}

/// Points by (name, host, tags), in one window.
fn by_context(lines: &[Value]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for l in metric_lines(lines) {
        let key = format!("{} {} {}", l["name"], l["host"], l["tags"]);
        let prev = out.insert(key.clone(), l.clone());
        assert!(prev.is_none(), "{key} appears twice: one window expected");
    }
    out
}

/// What a global tier wrote (`got`) equals what one process fed everything wrote (`want`),
/// context by context: values, origins, sketches; events and service checks.
fn assert_same_output(want: &[Value], got: &[Value]) {
    let want_points = by_context(want);
    let got_points = by_context(got);
    assert_eq!(
        want_points.keys().collect::<Vec<_>>(),
        got_points.keys().collect::<Vec<_>>(),
        "the same contexts"
    );
    assert!(want_points.len() > 40, "{}", want_points.len());
    let hits = want_points
        .values()
        .find(|p| p["name"] == "origin.hits")
        .expect("origin.hits");
    assert_eq!(
        (
            &hits["container_id"],
            &hits["pod_uid"],
            &hits["cardinality"]
        ),
        (&"abc".into(), &"pod-9".into(), &"low".into()),
        "the input carries an origin: {hits}"
    );
    for (key, w) in &want_points {
        let g = &got_points[key];
        assert_eq!(w["type"], g["type"], "{key}");
        for f in [
            "container_id",
            "cgroup_inode",
            "external_data",
            "cardinality",
            "pod_uid",
        ] {
            assert_eq!(w[f], g[f], "{key} {f}");
        }
        if w["type"] == "distribution" {
            let (ws, gs) = (&w["sketch"], &g["sketch"]);
            for f in ["count", "min", "max", "p50", "p90", "p99"] {
                assert_eq!(ws[f], gs[f], "{key} {f}");
            }
            assert_eq!(ws["bins"], gs["bins"], "{key}");
            let (a, b) = (ws["sum"].as_f64().unwrap(), gs["sum"].as_f64().unwrap());
            assert!(close(a, b, 0.01), "{key} sum {a} vs {b}");
            continue;
        }
        let (a, b) = (w["value"].as_f64().unwrap(), g["value"].as_f64().unwrap());
        assert!(close(a, b, 1e-12), "{key}: {a} vs {b}");
        if w["name"] == "late" {
            assert_eq!(
                w["ts"], g["ts"],
                "{key}: a client's timestamp survives the relay"
            );
        }
    }

    let others = |lines: &[Value], kind: &str| -> Vec<Value> {
        lines
            .iter()
            .filter(|l| l["kind"] == kind)
            .cloned()
            .collect()
    };
    assert_eq!(others(want, "event"), others(got, "event"));
    assert_eq!(others(want, "service_check"), others(got, "service_check"));
    assert_eq!(others(got, "event").len(), 1);
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()) + 1e-9
}

#[test]
fn the_global_tier_writes_what_one_process_would() {
    let dir = temp_dir("relay");
    let sock = dir.join("global.sock");
    // One window for the whole test: a boundary between the edge's and the single process's
    // input would split their points differently.
    let common = [
        "--cores",
        "0",
        "--no-self-metrics",
        "--hostname",
        "edge-1",
        "--bucket-secs",
        "3600",
    ];
    let global = Server::start(&[&common[..], &["--uds-path", sock.to_str().unwrap()]].concat());
    let target = format!("dogstatsd+uds:{}", sock.display());
    let edge = Server::start(&[&common[..], &["--downstream", &target]].concat());
    let single = Server::start(&common);

    let lines = input();
    send(edge.addr, &lines);
    send(single.addr, &lines);
    // A stop drains each server's socket; the edge's last relayed datagrams are in the global's
    // socket once the edge has exited.
    let edge_done = edge.stop();
    assert_eq!(edge_done.status, 0, "{:#?}", edge_done.stderr);
    assert!(
        edge_done
            .stderr
            .iter()
            .any(|l| l.contains("relay to dogstatsd+uds:") && l.contains("0 send errors")),
        "{:#?}",
        edge_done.stderr
    );
    let want = single.stop();
    let got = global.stop();
    assert_eq!((want.status, got.status), (0, 0), "{:#?}", got.stderr);

    assert_same_output(&want.lines, &got.lines);
}

#[test]
fn a_udp_relay_sums_counters_from_its_edge() {
    let one_window = ["--bucket-secs", "3600"];
    let global = Server::start(&[&["--cores", "0", "--no-self-metrics"][..], &one_window].concat());
    let target = format!("dogstatsd:{}", global.addr);
    let edge = Server::start(&[
        "--cores",
        "0",
        "--no-self-metrics",
        "--hostname",
        "edge-2",
        "--downstream",
        &target,
        "--relay-max-packet-bytes",
        "200",
        "--bucket-secs",
        "3600",
    ]);
    let lines: Vec<String> = (0..50)
        .map(|i| format!("hits:{i}|c|#k:v{}", i % 5))
        .collect();
    send(edge.addr, &lines);
    assert_eq!(edge.stop().status, 0);
    let got = global.stop();
    let points = metric_lines(&got.lines);
    assert_eq!(points.len(), 5);
    let total: f64 = points.iter().map(|p| p["value"].as_f64().unwrap()).sum();
    assert_eq!(total, (0..50).sum::<i32>() as f64);
    assert!(points.iter().all(|p| p["host"] == "edge-2"));
}

/// Three global nodes behind a `dogstatsd+uds:` list.
fn globals(dir: &std::path::Path, extra: &[&str]) -> (Vec<Server>, String) {
    let socks: Vec<String> = (0..3)
        .map(|i| dir.join(format!("g{i}.sock")).display().to_string())
        .collect();
    let servers = socks
        .iter()
        .map(|s| {
            let mut a = vec!["--cores", "0", "--no-self-metrics", "--uds-path", s];
            a.extend_from_slice(extra);
            Server::start(&a)
        })
        .collect();
    (servers, format!("dogstatsd+uds:{}", socks.join(",")))
}

#[test]
fn a_sharded_global_tier_behind_two_edges_writes_what_one_process_would() {
    let dir = temp_dir("relay-sharded");
    let one_window = ["--bucket-secs", "3600"];
    let (globals, target) = globals(&dir, &one_window);
    // Two edges of one fleet: the same host name, so a series both see is one context.
    let edge_args = [
        "--cores",
        "0",
        "--no-self-metrics",
        "--hostname",
        "fleet",
        "--bucket-secs",
        "3600",
        "--downstream",
        &target,
    ];
    let edges = [Server::start(&edge_args), Server::start(&edge_args)];
    let single = Server::start(&[
        "--cores",
        "0",
        "--no-self-metrics",
        "--hostname",
        "fleet",
        "--bucket-secs",
        "3600",
    ]);
    // Sixty more counter contexts, so each node's share (about a third, by the hash of the
    // temporary socket paths) is far from the floor asserted below.
    let mut lines = input();
    lines.extend((0..60).map(|i| format!("spread:{i}|c|#n:{i}")));
    // Gauges through one edge (the last value of two edges is whichever arrives last); the
    // rest dealt to both, so the globals merge what two edges saw of each context.
    let (gauges, rest): (Vec<String>, Vec<String>) =
        lines.iter().cloned().partition(|l| l.contains("|g"));
    send(edges[0].addr, &gauges);
    let (a, b): (Vec<String>, Vec<String>) = (
        rest.iter().step_by(2).cloned().collect(),
        rest.iter().skip(1).step_by(2).cloned().collect(),
    );
    send(edges[0].addr, &a);
    send(edges[1].addr, &b);
    send(single.addr, &lines);
    for e in edges {
        let done = e.stop();
        assert_eq!(done.status, 0, "{:#?}", done.stderr);
        assert!(
            done.stderr
                .iter()
                .filter(|l| l.contains("relay to dogstatsd+uds:"))
                .all(|l| l.contains(" 0 send errors")),
            "{:#?}",
            done.stderr
        );
    }
    let want = single.stop();
    let mut union = Vec::new();
    let mut owner = BTreeMap::new();
    for (i, g) in globals.into_iter().enumerate() {
        let done = g.stop();
        assert_eq!(done.status, 0, "{:#?}", done.stderr);
        let points = by_context(&done.lines);
        assert!(points.len() > 5, "node {i} has a share: {}", points.len());
        for key in points.keys() {
            if let Some(other) = owner.insert(key.clone(), i) {
                panic!("{key} on nodes {other} and {i}");
            }
        }
        union.extend(done.lines);
    }
    assert_same_output(&want.lines, &union);
}

#[test]
fn a_global_node_that_stops_has_its_contexts_moved_to_the_others_counted() {
    let dir = temp_dir("relay-failover");
    let (mut globals, target) = globals(&dir, &["--bucket-secs", "1"]);
    let mut edge = Server::start(&[
        "--cores",
        "0",
        "--hostname",
        "e",
        "--bucket-secs",
        "1",
        "--downstream",
        &target,
    ]);
    let lines: Vec<String> = (0..300).map(|i| format!("c:1|c|#k:{i}")).collect();
    let mut sent = 0.0;
    let mut round = |edge: &mut Server| {
        send(edge.addr, &lines);
        sent += lines.len() as f64;
        edge.wait_for_stderr("the window's relay", |l| {
            l.contains("relay window") && l.contains(" lines=") && !l.contains(" lines=0 ")
        });
    };
    round(&mut edge);
    let stopped = globals.remove(1).stop();
    assert_eq!(stopped.status, 0);
    for _ in 0..3 {
        round(&mut edge);
    }
    let done = edge.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    let rerouted: u64 = done
        .stderr
        .iter()
        .filter_map(|l| {
            let n = l
                .split(" points rerouted here")
                .next()?
                .rsplit(", ")
                .next()?;
            l.contains("points rerouted here")
                .then(|| n.parse::<u64>().ok())?
        })
        .sum();
    assert!(
        rerouted >= 150,
        "about a third of 300 contexts, 3 windows: {rerouted}"
    );
    assert!(
        done.stderr
            .iter()
            .any(|l| l.contains("is down: its contexts go to the next node")),
        "{:#?}",
        done.stderr
    );
    let counted = |lines: &[Value]| -> f64 {
        metric_lines(lines)
            .into_iter()
            .filter(|l| l["name"] == "c")
            .map(|l| l["value"].as_f64().unwrap())
            .sum()
    };
    let mut total = counted(&stopped.lines);
    for g in globals {
        total += counted(&g.stop().lines);
    }
    assert_eq!(total, sent, "every count once, on one node or another");
}
