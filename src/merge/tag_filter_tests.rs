//! `metric_tag_filterlist` and `--strip-host`: contexts that become equal once filtered are one
//! context, for every type, on one shard or across two.

use super::pipeline_tests::{T0, cfg, close_all, feed, point, points};
use crate::aggregate::{AggregateConfig, Aggregator};
use crate::map::tag_filter::TagFilters;

fn filtered(owners: usize) -> AggregateConfig {
    let mut c = cfg(owners);
    c.names.tag_filters = TagFilters::new(
        vec![
            ("req".into(), false, vec!["pod".into()]),
            ("lat".into(), true, vec!["env".into()]),
            ("users".into(), false, vec!["pod".into()]),
            ("size".into(), false, vec!["pod".into()]),
            ("temp".into(), false, vec!["pod".into()]),
        ],
        &["svc.*".into()],
    );
    c
}

#[test]
fn filtered_contexts_aggregate_together_for_every_type_across_shards() {
    let mut a = [
        Aggregator::new(filtered(2), T0),
        Aggregator::new(filtered(2), T0),
    ];
    feed(
        &mut a[0],
        &[
            "req:1|c|#env:prod,pod:a",
            "req:2|c|#pod:b,env:prod",
            "lat:10|ms|#env:prod,pod:a,zone:x",
            "users:u1|s|#pod:a",
            "size:1|d|#pod:a",
            "temp:1|g|#pod:a",
            "svc.up:1|c|#host:web-1,env:prod",
        ],
        0,
    );
    feed(
        &mut a[1],
        &[
            "req:4|c|#env:prod,pod:c",
            "lat:30|ms|#pod:b,env:prod",
            "users:u1|s|#pod:b",
            "users:u2|s|#pod:c",
            "size:3|d|#pod:b",
            "temp:2|g|#pod:b",
            "svc.up:2|c|#host:web-2,env:prod",
            // A name no rule names keeps every tag.
            "other:1|c|#pod:a",
        ],
        1,
    );
    let got = points(&close_all(&mut a));
    let want = vec![
        point("lat.count", "count", 2.0, "box", &["env:prod"]),
        point("lat.max", "gauge", 30.0, "box", &["env:prod"]),
        point("other", "count", 1.0, "box", &["pod:a"]),
        point("req", "count", 7.0, "box", &["env:prod"]),
        point("svc.up", "count", 3.0, "", &["env:prod"]),
        point("temp", "gauge", 2.0, "box", &[]),
        point("users", "gauge", 2.0, "box", &[]),
    ];
    for w in &want {
        assert!(got.contains(w), "{w:?} missing from {got:#?}");
    }
    // The distribution's two samples, from two pods and two shards, are one sketch.
    let size: Vec<_> = got.iter().filter(|p| p.0 == "size").collect();
    assert_eq!(size.len(), 1, "{got:#?}");
    assert_eq!(
        (size[0].2, size[0].4.len()),
        (2.0, 0),
        "two samples, no tags"
    );
    assert_eq!(got.iter().filter(|p| p.0 == "req").count(), 1);
}
