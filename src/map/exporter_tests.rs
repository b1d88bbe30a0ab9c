//! statsd_exporter's README examples through the compiled mapper.

use super::*;
use crate::map::{Mapper, Outcome};

fn mapper(yaml: &str) -> (Mapper, ExporterMappings) {
    let m = compile(yaml).unwrap();
    (Mapper::new(std::slice::from_ref(&m.profile)).unwrap(), m)
}

/// (name, tags, dropped), or `None` when no rule matches.
fn map(m: &Mapper, name: &str) -> Option<(String, Vec<String>, bool)> {
    match m.map(&mut m.scratch(), name.as_bytes()) {
        Outcome::Mapped(x) => Some((
            String::from_utf8(x.name).unwrap(),
            x.tags
                .into_iter()
                .map(|t| String::from_utf8(t).unwrap())
                .collect(),
            x.drop,
        )),
        _ => None,
    }
}

fn mapped(name: &str, tags: &[&str]) -> Option<(String, Vec<String>, bool)> {
    Some((
        name.into(),
        tags.iter().map(|t| t.to_string()).collect(),
        false,
    ))
}

#[test]
fn the_readmes_glob_example() {
    let (m, _) = mapper(
        r#"
mappings:
- match: "test.dispatcher.*.*.*"
  name: "dispatcher_events_total"
  labels:
    processor: "$1"
    action: "$2"
    outcome: "$3"
    job: "test_dispatcher"
- match: "*.signup.*.*"
  name: "signup_events_total"
  labels:
    provider: "$2"
    outcome: "$3"
    job: "${1}_server"
"#,
    );
    assert_eq!(
        map(&m, "test.dispatcher.FooProcessor.send.success"),
        mapped(
            "dispatcher_events_total",
            &[
                "action:send",
                "job:test_dispatcher",
                "outcome:success",
                "processor:FooProcessor"
            ]
        )
    );
    assert_eq!(
        map(&m, "foo_product.signup.facebook.failure"),
        mapped(
            "signup_events_total",
            &[
                "job:foo_product_server",
                "outcome:failure",
                "provider:facebook"
            ]
        )
    );
    assert_eq!(map(&m, "test.web-server.foo.bar"), None);
    // `*` is one dot-free run: one component more or fewer is no match.
    assert_eq!(map(&m, "test.dispatcher.a.b"), None);
    assert_eq!(map(&m, "test.dispatcher.a.b.c.d"), None);
}

#[test]
fn the_readmes_name_template_and_regex_examples() {
    let (m, _) = mapper(
        r#"
mappings:
- match: "test.*.*.counter"
  name: "${2}_total"
  labels:
    provider: "$1"
"#,
    );
    assert_eq!(
        map(&m, "test.aws.requests.counter"),
        mapped("requests_total", &["provider:aws"])
    );
    let (m, _) = mapper(
        r#"
mappings:
- match: "test\\.(\\w+)\\.(\\w+)\\.counter"
  match_type: regex
  name: "${2}_total"
  labels:
    provider: "$1"
# (The README writes `status\.` with one backslash, which YAML refuses in double quotes.)
- match: "(.*)\\.(.*)--(.*)\\.status\\.(.*)\\.count"
  match_type: regex
  name: "request_total"
  labels:
    hostname: "$1"
    exec: "$2"
    protocol: "$3"
    code: "$4"
"#,
    );
    assert_eq!(
        map(&m, "test.aws.requests.counter"),
        mapped("requests_total", &["provider:aws"])
    );
    assert_eq!(
        map(&m, "web1.checkout--https.status.200.count"),
        mapped(
            "request_total",
            &[
                "code:200",
                "exec:checkout",
                "hostname:web1",
                "protocol:https"
            ]
        )
    );
}

#[test]
fn the_readmes_match_group_zero_and_drop_examples() {
    let (m, _) = mapper(
        r#"
mappings:
- match: ".+"
  match_type: regex
  name: "$0"
  labels:
    statsd_metric_name: "$0"
"#,
    );
    assert_eq!(
        map(&m, "my.statsd_counter"),
        mapped(
            "my.statsd_counter",
            &["statsd_metric_name:my.statsd_counter"]
        )
    );
    let (m, _) = mapper(
        r#"
mappings:
# This metric would match as normal.
- match: "test.timing.*.*.*"
  name: "my_timer"
  labels:
    provider: "$2"
    outcome: "$3"
    job: "${1}_server"
# Any metric not matched will be dropped because "." matches all metrics.
- match: "."
  match_type: regex
  action: drop
  name: "dropped"
"#,
    );
    assert_eq!(
        map(&m, "test.timing.web.aws.ok"),
        mapped(
            "my_timer",
            &["job:web_server", "outcome:ok", "provider:aws"]
        )
    );
    // A regex matches anywhere in the name, as Go's does: "." drops every other name.
    assert_eq!(map(&m, "anything.else").map(|x| x.2), Some(true));
    assert_eq!(map(&m, "x").map(|x| x.2), Some(true));
}

#[test]
fn globs_win_over_regexes_whatever_their_order_and_the_first_of_a_kind_wins() {
    let (m, c) = mapper(
        r#"
defaults:
  match_type: regex
mappings:
- match: "^a\\.(.*)$"
  name: "regex_first"
- match: "a.*"
  match_type: glob
  name: "glob_one"
- match: "a.b"
  match_type: glob
  name: "glob_two"
- match: "^a\\.b$"
  name: "regex_second"
"#,
    );
    assert_eq!(c.origin, [1, 2, 0, 3]);
    assert_eq!(map(&m, "a.b"), mapped("glob_one", &[]));
    assert_eq!(map(&m, "a.b.c"), mapped("regex_first", &[]));
}

#[test]
fn keys_it_cannot_honour_are_named_and_bad_rules_refused_by_place() {
    let c = compile(
        r#"
defaults:
  observer_type: histogram
  quantiles: [{quantile: 0.5, error: 0.05}]
  glob_disable_ordering: true
  summary_options:
    max_age: 5m
mappings:
- match: "a.*"
  name: "a"
  ttl: 1m30s
  match_metric_type: counter
  timer_type: summary
  scale: 0.001
  help: "A's help."
"#,
    )
    .unwrap();
    assert_eq!(
        c.not_honoured,
        [
            "defaults.glob_disable_ordering (rules stay in file order)",
            "defaults.summary_options.max_age",
            "mappings[0].match_metric_type",
            "mappings[0].scale",
        ]
    );
    // The exposition keys are read: the mapping's over the defaults, for the names it makes.
    let a = c.exposition.options_for("a");
    assert_eq!(a.observer, Some(Observer::Summary));
    assert_eq!(a.quantiles, Some(vec![0.5]));
    assert_eq!(a.ttl_secs, Some(90));
    assert_eq!(a.help.as_deref(), Some("A's help."));
    let other = c.exposition.options_for("b");
    assert_eq!(
        (other.observer, other.ttl_secs),
        (Some(Observer::Histogram), None)
    );
    for (yaml, want) in [
        (
            "defaults: {observer_type: gauge}\n",
            "defaults: observer type \"gauge\" is neither summary nor histogram",
        ),
        (
            "mappings:\n- {match: a, name: a, ttl: 10x}\n",
            "mappings[0]: ttl: \"10x\": unknown unit \"x\"",
        ),
        (
            "mappings:\n- {match: a, name: a, quantiles: [{quantile: 2}]}\n",
            "mappings[0]: quantile 2 is not between 0 and 1",
        ),
        ("mappings:\n- match: 'a.*'\n", "mappings[0]: missing name"),
        ("mappings:\n- name: x\n", "mappings[0]: missing match"),
        (
            "mappings:\n- {match: a, name: a}\n- {match: '1a.b', name: b}\n",
            "mappings[1]: invalid glob match \"1a.b\"",
        ),
        (
            "mappings:\n- {match: a, name: a, labels: {'bad-key': x}}\n",
            "mappings[0]: invalid label key \"bad-key\"",
        ),
        (
            "mappings:\n- {match: a, name: a, action: keep}\n",
            "mappings[0]: action \"keep\" is neither map nor drop",
        ),
    ] {
        assert_eq!(compile(yaml).unwrap_err(), want, "{yaml}");
    }
}
