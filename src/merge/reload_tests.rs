//! A reload (SIGHUP) between two samples of one window: what was aggregated stays, names map by
//! the new stage from the next sample, and caps turned on apply to new contexts.

use super::pipeline_tests::{T0, cfg, close_all, feed, point, points};
use crate::aggregate::{Aggregator, Discard, Reload};
use crate::map::{Mapper, NameConfig, ProfileSpec, check};
use crate::protocol::parse_metric;

fn names(rule_name: &str, blocked: &str) -> NameConfig {
    let yaml = format!(
        "- name: p\n  prefix: app.\n  mappings:\n    - {{match: 'app.*.hits', name: '{rule_name}', tags: {{page: '$1'}}}}\n"
    );
    let specs: Vec<ProfileSpec> = serde_norway::from_str(&yaml).unwrap();
    NameConfig {
        mapper: Some(std::sync::Arc::new(
            Mapper::new(&check(&specs).unwrap()).unwrap(),
        )),
        cache_size: 100,
        namespace: Some("ns.".into()),
        block_exact: vec![blocked.into()],
        extra_tags: vec!["dc:eu".into()],
        ..NameConfig::default()
    }
}

/// Feeds `lines`, returning how many were blocked.
fn blocked(agg: &mut Aggregator, lines: &[&str]) -> usize {
    let mut n = 0;
    for l in lines {
        match agg.insert(&parse_metric(l.as_bytes()).unwrap(), 0) {
            Ok(()) => {}
            Err(Discard::Blocked) => n += 1,
            Err(e) => panic!("{l}: {e:?}"),
        }
    }
    n
}

#[test]
fn a_reload_mid_window_keeps_what_was_aggregated_and_maps_by_the_new_rules() {
    let mut c = cfg(1);
    c.names = names("hits", "ns.noisy");
    let mut a = [Aggregator::new(c, T0)];
    let before = [
        "plain:1|c",
        "plain:1|c",
        "app.home.hits:1|c",
        "app.home.hits:1|c",
    ];
    feed(&mut a[0], &before, 0);
    assert_eq!(
        blocked(&mut a[0], &["noisy:1|c", "noisy:1|c", "other:1|c"]),
        2
    );
    a[0].reload(Reload {
        names: names("views", "ns.other"),
        max_contexts: None,
        max_contexts_per_metric: None,
    });
    let after = ["plain:1|c", "plain:1|c", "plain:1|c", "app.home.hits:1|c"];
    feed(&mut a[0], &after, 0);
    feed(&mut a[0], &["app.home.hits:1|c", "app.home.hits:1|c"], 0);
    assert_eq!(
        blocked(&mut a[0], &["noisy:1|c", "other:1|c", "other:1|c"]),
        2
    );
    // `plain` found its context again and took it as its fast-path alias; `views` and `noisy`
    // are new contexts with their own. (`other` is blocked now.)
    assert_eq!(a[0].aliases(), 3);
    let host = "box";
    assert_eq!(
        points(&close_all(&mut a)),
        [
            point("ns.hits", "count", 2.0, host, &["dc:eu", "page:home"]),
            point("ns.noisy", "count", 1.0, host, &["dc:eu"]),
            point("ns.other", "count", 1.0, host, &["dc:eu"]),
            point("ns.plain", "count", 5.0, host, &["dc:eu"]),
            point("ns.views", "count", 3.0, host, &["dc:eu", "page:home"]),
        ]
    );
}

#[test]
fn a_cap_turned_on_by_a_reload_sends_new_contexts_to_overflow_and_keeps_totals() {
    let mut a = [Aggregator::new(cfg(1), T0)];
    feed(&mut a[0], &["req:1|c|#id:1", "req:1|c|#id:2"], 0);
    a[0].reload(Reload {
        names: NameConfig::default(),
        max_contexts: Some(2),
        max_contexts_per_metric: None,
    });
    feed(
        &mut a[0],
        &["req:1|c|#id:1", "req:2|c|#id:3", "req:4|c|#id:4"],
        0,
    );
    assert_eq!(
        points(&close_all(&mut a)),
        [
            point("req", "count", 1.0, "box", &["id:2"]),
            point("req", "count", 2.0, "box", &["id:1"]),
            point("req", "count", 6.0, "box", &["corestatsd_overflow:true"]),
        ]
    );
}
