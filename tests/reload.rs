//! SIGHUP reloads `--config` on a running server: the map stage changes between two samples,
//! nothing sent is lost, a file that does not load is refused with one line, and settings only a
//! restart applies are named.

mod common;

use std::collections::BTreeMap;

use common::{Server, metric_lines, send_unix, temp_dir, wait_for};
use serde_json::Value;

fn hangup(server: &Server) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
}

/// Waits for every shard's `reloads_applied` in `/status` to reach `n`.
fn wait_applied(server: &Server, n: u64) {
    let http = server.http.expect("an HTTP endpoint");
    wait_for(http, "/status", |body| {
        let v: Value = serde_json::from_str(body).unwrap();
        v["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["reloads_applied"] == n)
    });
}

fn lines(name: &str, n: usize) -> Vec<String> {
    (0..n).map(|_| format!("{name}:1|c")).collect()
}

/// Sum of each (name, sorted tags) over every window.
fn totals(out: &[Value]) -> BTreeMap<(String, String), f64> {
    let mut t = BTreeMap::new();
    for m in metric_lines(out) {
        let name = m["name"].as_str().unwrap().to_string();
        if name.starts_with("corestatsd.") {
            continue;
        }
        let mut tags: Vec<&str> = m["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        tags.sort();
        *t.entry((name, tags.join(","))).or_insert(0.0) += m["value"].as_f64().unwrap();
    }
    t
}

#[test]
fn sighup_reloads_the_config_without_losing_a_sample_and_refuses_a_bad_file() {
    let dir = temp_dir("reload");
    let (file, sock) = (dir.join("datadog.yaml"), dir.join("dsd.sock"));
    std::fs::write(
        &file,
        "statsd_metric_namespace: old\ndogstatsd_tags: [\"gen:1\"]\n",
    )
    .unwrap();
    let (file_arg, sock_arg) = (file.to_str().unwrap(), sock.to_str().unwrap());
    let mut server = Server::start(&[
        "--cores",
        "0,1",
        "--config",
        file_arg,
        "--uds-path",
        sock_arg,
    ]);
    send_unix(&sock, &lines("a", 300), 50);
    send_unix(&sock, &lines("web.home.hits", 200), 50);

    std::fs::write(
        &file,
        r#"
statsd_metric_namespace: new
dogstatsd_tags: ["gen:2"]
metric_filterlist: ["new.a"]
dogstatsd_buffer_size: 16384
dogstatsd_mapper_profiles:
  - name: web
    prefix: "web."
    mappings:
      - match: "web.*.hits"
        name: "web.hits"
        tags: { page: "$1" }
"#,
    )
    .unwrap();
    hangup(&server);
    let line = server.wait_for_stderr("the reload line", |l| l.contains("SIGHUP: reloaded"));
    assert!(
        line.contains("mapper 1 rules, namespace new.")
            && line.contains("kept until a restart: --buffer-size-bytes"),
        "{line}"
    );
    wait_applied(&server, 1);
    send_unix(&sock, &lines("a", 70), 50);
    send_unix(&sock, &lines("b", 40), 20);
    send_unix(&sock, &lines("web.home.hits", 90), 30);

    // A file that does not parse: refused, and the running configuration keeps mapping.
    std::fs::write(&file, "dogstatsd_mapper_profiles: [ {name: \n").unwrap();
    hangup(&server);
    let line = server.wait_for_stderr("the refusal", |l| l.contains("SIGHUP: not reloaded"));
    assert!(line.contains(file_arg), "{line}");
    let http = server.http.unwrap();
    wait_for(http, "/status", |b| b.contains("\"reloads_refused\": 1"));
    send_unix(&sock, &lines("web.home.hits", 10), 10);

    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    let got = totals(&done.lines);
    let key = |n: &str, t: &str| (n.to_string(), t.to_string());
    let want = BTreeMap::from([
        (key("old.a", "gen:1"), 300.0),
        (key("old.web.home.hits", "gen:1"), 200.0),
        (key("new.b", "gen:2"), 40.0),
        (key("new.web.hits", "gen:2,page:home"), 100.0),
    ]);
    assert_eq!(got, want, "{:#?}", done.stderr);
    // The 70 `a` lines after the reload were blocked, and counted as such.
    assert_eq!(
        common::self_metric(&done.lines, "corestatsd.blocked_metrics", &[]),
        70.0
    );
}
