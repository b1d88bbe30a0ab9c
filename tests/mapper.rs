//! `--config` with mapper profiles, namespace, block list and extra tags, against the real binary.

mod common;

use std::process::Command;

use common::{Server, metric_lines, temp_dir};
use serde_json::{Value, json};

const CONFIG: &str = r#"
# A datadog.yaml fragment, pasted unchanged; keys corestatsd does not use are only listed.
api_key: not-used
logs_enabled: true
dogstatsd_mapper_profiles:
  - name: airflow
    prefix: "airflow."
    mappings:
      - match: "airflow.job.duration_sec.*.*"
        name: "airflow.job.duration"
        tags: { job_type: "$1", job_name: "$2" }
      - match: 'airflow\.pool\.(.*)\.open_slots'
        match_type: regex
        name: "airflow.pool.open_slots"
        tags: { pool: "$1" }
  - name: web
    prefix: "web."
    mappings:
      - match: "web.*.*.latency"
        name: "web.latency"
        tags: { service: "$1", route: "${2}_route" }
      - match: "web.*.secret"
        name: "blocked.$1"
  - name: never-reached
    prefix: "web.api."
    mappings:
      - match: "web.api.*"
        name: "unreachable"
statsd_metric_namespace: corp
metric_filterlist: ["corp.blocked."]
metric_filterlist_match_prefix: true
dogstatsd_tags: ["from:file"]
"#;

fn run(args: &[&str], lines: &[u8]) -> (Vec<Value>, Vec<String>, Vec<Value>) {
    let server = Server::start(args);
    common::send_spread(server.addr, &[lines]);
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    let metrics = metric_lines(&done.lines).into_iter().cloned().collect();
    let others = done
        .lines
        .iter()
        .filter(|l| l["kind"] != "metric")
        .cloned()
        .collect();
    (metrics, done.stderr, others)
}

fn find<'a>(metrics: &'a [Value], name: &str) -> &'a Value {
    metrics
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {metrics:#?}"))
}

#[test]
fn a_config_file_maps_namespaces_blocks_and_tags_in_the_agents_order() {
    let dir = temp_dir("mapper");
    let path = dir.join("datadog.yaml");
    std::fs::write(&path, CONFIG).unwrap();
    let (metrics, stderr, others) = run(
        &[
            "--config",
            path.to_str().unwrap(),
            "--cores",
            "0,1",
            "--bucket-secs",
            "3600",
            "--hostname",
            "box",
        ],
        b"airflow.job.duration_sec.etl.nightly:3|g|#env:prod\n\
          airflow.pool.default.pool.open_slots:5|g\n\
          web.checkout.cart.latency:10|ms\n\
          web.api.users:1|c\n\
          web.x.secret:1|c\n\
          blocked.direct:1|c\n\
          jvm.heap:1|g\n\
          plain:1|c\n\
          _e{2,2}:hi|yo\n",
    );
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("ignoring keys") && l.ends_with(": logs_enabled")),
        "{stderr:#?}"
    );
    let duration = find(&metrics, "airflow.job.duration");
    assert_eq!(
        duration["tags"],
        json!(["env:prod", "from:file", "job_name:nightly", "job_type:etl"]),
        "airflow.* is on the namespace exemption list"
    );
    assert_eq!(
        find(&metrics, "airflow.pool.open_slots")["tags"],
        json!(["from:file", "pool:default.pool"]),
        "a regex group may hold dots"
    );
    assert_eq!(
        find(&metrics, "corp.web.latency.count")["tags"],
        json!(["from:file", "route:cart_route", "service:checkout"])
    );
    assert_eq!(
        find(&metrics, "corp.web.api.users")["value"],
        1.0,
        "the web. profile is selected and has no rule for it: unchanged, then namespaced"
    );
    assert_eq!(find(&metrics, "jvm.heap")["tags"], json!(["from:file"]));
    assert_eq!(find(&metrics, "corp.plain")["value"], 1.0);
    let names: Vec<&str> = metrics
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("blocked") || n.contains("unreachable")),
        "{names:?}"
    );
    assert_eq!(
        others[0]["tags"],
        json!(["from:file"]),
        "events get extra tags"
    );

    // Flags replace the file's values.
    let (metrics, _, _) = run(
        &[
            "--config",
            path.to_str().unwrap(),
            "--namespace",
            "flag",
            "--tag",
            "from:flag",
            "--block-metric",
            "flag.plain",
            "--bucket-secs",
            "3600",
        ],
        b"plain:1|c\nkept:1|c\nweb.x.secret:1|c\n",
    );
    let mut names: Vec<&str> = metrics
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["flag.blocked.x", "flag.kept"],
        "--block-metric replaces the file's prefix list"
    );
    assert_eq!(find(&metrics, "flag.kept")["tags"], json!(["from:flag"]));
}

#[test]
fn profiles_from_the_environment_variable_as_json() {
    let json = r#"[{"name":"env","prefix":"e.","mappings":[{"match":"e.*","name":"env.mapped","tags":{"k":"$1"}}]}]"#;
    let server = Server::start_with_env(
        &["--cores", "0", "--bucket-secs", "3600"],
        &[("DD_DOGSTATSD_MAPPER_PROFILES", json)],
    );
    common::send_spread(server.addr, &[b"e.one:1|c"]);
    let done = server.stop();
    let metrics = metric_lines(&done.lines);
    assert_eq!(metrics[0]["name"], "env.mapped");
    assert_eq!(metrics[0]["tags"], json!(["k:one"]));
}

#[test]
fn a_bad_rule_is_refused_at_start_naming_profile_and_rule() {
    let dir = temp_dir("mapper-bad");
    for (yaml, want) in [
        (
            "dogstatsd_mapper_profiles:\n  - name: ok\n    prefix: a.\n    mappings:\n      - {match: 'a.*', name: x}\n      - {match: 'a.(', match_type: regex, name: y}\n",
            "dogstatsd_mapper_profiles[0] (\"ok\") mappings[1]: regex \"^a.($\" does not compile: unclosed group at column 4",
        ),
        (
            "dogstatsd_mapper_profiles:\n  - name: one\n    prefix: a.\n  - name: two\n    prefix: b.\n    mappings:\n      - {match: 'b.**', name: y}\n",
            "dogstatsd_mapper_profiles[1] (\"two\") mappings[0]: wildcard \"b.**\" holds \"**\"",
        ),
        (
            "dogstatsd_mapper_profiles:\n  - prefix: a.\n",
            "dogstatsd_mapper_profiles[0]: missing name",
        ),
    ] {
        let path = dir.join("bad.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_corestatsd"))
            .args([
                "--config",
                path.to_str().unwrap(),
                "--udp-addr",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("--config {}: {want}", path.display())),
            "{err}"
        );
    }
}

#[test]
fn a_statsd_exporter_mapping_file_maps_drops_and_names_what_it_leaves_unused() {
    let dir = temp_dir("exporter-mapping");
    let path = dir.join("statsd_mapping.yml");
    std::fs::write(
        &path,
        r#"
mappings:
- match: "test.dispatcher.*.*.*"
  name: "dispatcher_events_total"
  labels:
    processor: "$1"
    action: "$2"
    outcome: "$3"
    job: "test_dispatcher"
  ttl: 5m
- match: "noise\\..*"
  match_type: regex
  action: drop
  name: "dropped"
"#,
    )
    .unwrap();
    let lines = b"test.dispatcher.FooProcessor.send.success:3|c\nnoise.a:1|c\nnoise.b:1|g\nkept.as.is:2|c\n";
    let (metrics, stderr, _) = run(
        &["--mapping-config", path.to_str().unwrap(), "--cores", "0,1"],
        lines,
    );
    let d = find(&metrics, "dispatcher_events_total");
    assert_eq!(d["value"], json!(3.0));
    assert_eq!(
        d["tags"],
        json!([
            "action:send",
            "job:test_dispatcher",
            "outcome:success",
            "processor:FooProcessor"
        ])
    );
    assert_eq!(find(&metrics, "kept.as.is")["value"], json!(2.0));
    assert!(
        metrics
            .iter()
            .all(|m| !m["name"].as_str().unwrap().starts_with("noise"))
    );
    // Dropped as blocked, and counted.
    assert!(
        stderr.iter().any(|l| l.contains(" blocked_metrics=2")),
        "{stderr:#?}"
    );
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("--mapping-config: its observer types")
                && l.contains("unused with --downstream jsonl:-")),
        "{stderr:#?}"
    );
}

#[test]
fn a_bad_mapping_file_rule_is_named_by_its_place_in_the_file() {
    let dir = temp_dir("exporter-bad");
    let path = dir.join("m.yml");
    std::fs::write(
        &path,
        "mappings:\n- {match: 'a.*', name: a}\n- {match: '(unclosed', match_type: regex, name: b}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_corestatsd"))
        .args([
            "--udp-addr",
            "127.0.0.1:0",
            "--mapping-config",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--mapping-config {}: mappings[1]: regex",
            path.display()
        )),
        "{stderr}"
    );
}
