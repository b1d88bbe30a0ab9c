//! Aggregation semantics end to end inside one process: lines into one or more shards'
//! `Aggregator`s, windows closed, batches merged by their owners, flushed points out. Here and not
//! in `aggregate` because it drives `merge` too (a stage's tests follow the same layering).

use super::{HistogramOutput, Merger};
use crate::aggregate::{AggregateConfig, Aggregator, Discard, GROUP, ingest};
use crate::flushed::{Contexts, DescRef, FlushBatch, FlushedMetric, OutKind, Suffix};
use crate::protocol::origin::Precedence;
use crate::protocol::{Metric, parse_metric};
use crate::values::Limits;

pub(super) const T0: u64 = 1_000_000;

pub(super) fn cfg(owners: usize) -> AggregateConfig {
    AggregateConfig {
        bucket_secs: 10,
        exact_samples: 100,
        set_exact_members: 100,
        counter_zero_fill_secs: 30,
        context_expiry_secs: 20,
        default_host: Some(b"box".to_vec()),
        owners,
        max_pending_events: 2,
        origin_precedence: Precedence::Client,
        names: Default::default(),
        max_contexts: None,
        max_contexts_per_metric: None,
        context_stats: false,
        gauge_deltas: false,
    }
}

pub(super) fn hist_out() -> HistogramOutput {
    HistogramOutput {
        aggregates: vec![Suffix::Max, Suffix::Median, Suffix::Avg, Suffix::Count],
        percentiles: vec![(95, 0.95)],
    }
}

/// One flushed point, readable: (name, type, value, host, tags).
pub(super) type Point = (String, &'static str, f64, String, Vec<String>);

pub(super) fn points(batch: &FlushBatch) -> Vec<Point> {
    let mut out: Vec<Point> = batch
        .metrics
        .iter()
        .map(|m| {
            let d = batch.desc(m);
            let mut name = String::from_utf8_lossy(d.name).into_owned();
            match m.suffix {
                Suffix::None => {}
                Suffix::Percentile(p) => name.push_str(&format!(".{p}percentile")),
                s => name.push_str(&format!(".{s:?}").to_lowercase()),
            }
            let kind = match m.kind {
                OutKind::Count => "count",
                OutKind::Gauge => "gauge",
                OutKind::Distribution => "distribution",
            };
            let host = String::from_utf8_lossy(d.host.unwrap_or_default()).into_owned();
            let tags = d
                .tags()
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .collect();
            (name, kind, m.value, host, tags)
        })
        .collect();
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

pub(super) fn feed(agg: &mut Aggregator, lines: &[&str], at: u64) {
    for l in lines {
        agg.insert(&parse_metric(l.as_bytes()).unwrap(), at)
            .unwrap();
    }
}

thread_local! {
    /// This test's sink-side context table (each test runs on a thread of its own).
    static CONTEXTS: std::cell::RefCell<Contexts> = Default::default();
}

/// Closes the open window of every aggregator and merges everything the owners receive, each
/// point described as the sink's context table describes it.
pub(super) fn close_all(aggs: &mut [Aggregator]) -> FlushBatch {
    let owners = aggs.len();
    let mut mergers: Vec<Merger> = (0..owners)
        .map(|_| Merger::new(owners, 10, Limits::histogram(100), hist_out()))
        .collect();
    let mut all = FlushBatch::default();
    for agg in aggs.iter_mut() {
        agg.begin_close();
        let closed = agg
            .close_step(usize::MAX)
            .expect("one step sweeps everything");
        learn_news(agg);
        for (owner, batch) in closed.batches.into_iter().enumerate() {
            if let Some(out) = mergers[owner].add(batch) {
                append(&mut all, described(out));
            }
        }
    }
    all
}

/// What a shard sends the sink before its batches: the descriptions of its new contexts.
fn learn_news(agg: &mut Aggregator) {
    if let Some(news) = agg.take_news(0) {
        CONTEXTS.with_borrow_mut(|c| c.learn(&news));
    }
}

/// `out` with its context points described from the test's context table.
fn described(mut out: FlushBatch) -> FlushBatch {
    CONTEXTS.with_borrow_mut(|c| c.describe(&mut out));
    out
}

fn append(all: &mut FlushBatch, out: FlushBatch) {
    let base = all.arenas.len() as u32;
    all.arenas.extend(out.arenas);
    all.metrics
        .extend(out.metrics.into_iter().map(|m| match m.desc {
            DescRef::Arena { arena, offset } => FlushedMetric {
                desc: DescRef::Arena {
                    arena: arena + base,
                    offset,
                },
                ..m
            },
            _ => m,
        }));
}

pub(super) fn point(
    name: &str,
    kind: &'static str,
    value: f64,
    host: &str,
    tags: &[&str],
) -> Point {
    (
        name.into(),
        kind,
        value,
        host.into(),
        tags.iter().map(|t| t.to_string()).collect(),
    )
}

#[test]
fn counter_sums_weighted_by_sample_rate() {
    let mut a = [Aggregator::new(cfg(1), T0)];
    feed(
        &mut a[0],
        &["hits:1|c", "hits:2|c|@0.5", "hits:1:1|c|@0.25"],
        0,
    );
    assert_eq!(
        points(&close_all(&mut a)),
        vec![point("hits", "count", 13.0, "box", &[])]
    );
}

#[test]
fn tags_are_sorted_deduplicated_and_order_free_and_host_tag_sets_the_host() {
    let mut a = [Aggregator::new(cfg(1), T0)];
    feed(
        &mut a[0],
        &[
            "m:1|c|#b,a,a",
            "m:1|c|#a,b",
            "m:1|c|#a,b,host:web",
            "m:1|c|#host:,a,b",
            "m:1|c|#host:x,a,b,host:web",
        ],
        0,
    );
    assert_eq!(
        points(&close_all(&mut a)),
        vec![
            point("m", "count", 1.0, "", &["a", "b"]),
            point("m", "count", 2.0, "box", &["a", "b"]),
            point("m", "count", 2.0, "web", &["a", "b"]),
        ]
    );
}

#[test]
fn gauge_keeps_the_last_value_across_shards() {
    let mut a = [Aggregator::new(cfg(2), T0), Aggregator::new(cfg(2), T0)];
    feed(&mut a[0], &["g:1|g"], 10);
    feed(&mut a[1], &["g:2|g"], 30);
    feed(&mut a[0], &["g:3|g|@0.5"], 20);
    assert_eq!(
        points(&close_all(&mut a)),
        vec![point("g", "gauge", 2.0, "box", &[])]
    );
}

#[test]
fn set_counts_the_union_of_members_across_shards() {
    let mut a = [Aggregator::new(cfg(2), T0), Aggregator::new(cfg(2), T0)];
    feed(&mut a[0], &["u:a|s", "u:b|s", "u:a|s"], 0);
    feed(&mut a[1], &["u:b|s", "u:c:d|s"], 0);
    assert_eq!(
        points(&close_all(&mut a)),
        vec![point("u", "gauge", 3.0, "box", &[])]
    );
}

#[test]
fn histogram_and_timer_expand_like_the_agent() {
    let mut a = [Aggregator::new(cfg(1), T0)];
    let samples: Vec<String> = (1..=100).map(|i| format!("lat:{i}|ms")).collect();
    let lines: Vec<&str> = samples.iter().map(String::as_str).collect();
    feed(&mut a[0], &lines, 0);
    feed(&mut a[0], &["h:10|h|@0.5", "h:20|h"], 0);
    assert_eq!(
        points(&close_all(&mut a)),
        vec![
            point("h.95percentile", "gauge", 20.0, "box", &[]),
            point("h.avg", "gauge", 40.0 / 3.0, "box", &[]),
            point("h.count", "count", 3.0, "box", &[]),
            point("h.max", "gauge", 20.0, "box", &[]),
            point("h.median", "gauge", 10.0, "box", &[]),
            point("lat.95percentile", "gauge", 95.0, "box", &[]),
            point("lat.avg", "gauge", 50.5, "box", &[]),
            point("lat.count", "count", 100.0, "box", &[]),
            point("lat.max", "gauge", 100.0, "box", &[]),
            point("lat.median", "gauge", 50.0, "box", &[]),
        ]
    );
}

#[test]
fn distribution_is_a_weighted_sketch() {
    let mut a = [Aggregator::new(cfg(1), T0)];
    feed(&mut a[0], &["d:1:2:3|d", "d:4|d|@0.5"], 0);
    let flushed = close_all(&mut a);
    let s = flushed.metrics[0].sketch.as_ref().expect("a sketch");
    assert_eq!((s.count, s.min, s.max, s.sum), (5.0, 1.0, 4.0, 14.0));
    assert_eq!(flushed.metrics[0].kind, OutKind::Distribution);
}

#[test]
fn timestamped_gauges_and_counters_bypass_windows_others_are_unsupported() {
    let mut agg = Aggregator::new(cfg(1), T0);
    feed(
        &mut agg,
        &["g:1|g|T1700000000|#b,a,host:h", "c:2:3|c|T1700000001"],
        0,
    );
    for line in ["h:1|h|T5", "s:x|s|T5", "d:1|d|T5", "t:1|ms|T5"] {
        assert_eq!(
            agg.insert(&parse_metric(line.as_bytes()).unwrap(), 0),
            Err(Discard::TimestampedType),
            "{line}"
        );
    }
    let ts = agg.take_pending();
    let stamps: Vec<u64> = ts.metrics.iter().map(|m| m.ts).collect();
    assert_eq!(stamps, vec![1700000000, 1700000001, 1700000001]);
    assert_eq!(
        points(&ts),
        vec![
            point("c", "count", 2.0, "box", &[]),
            point("c", "count", 3.0, "box", &[]),
            point("g", "gauge", 1.0, "h", &["a", "b"]),
        ]
    );
    assert_eq!(agg.live_contexts(), 0);
    assert!(agg.take_pending().metrics.is_empty());
}

#[test]
fn idle_counters_zero_fill_then_expire_and_other_contexts_expire() {
    let mut a = [Aggregator::new(cfg(1), T0)];
    feed(&mut a[0], &["c:1|c", "g:1|g"], 0);
    assert_eq!(close_all(&mut a).metrics.len(), 2);
    // zero fill 30 s = 3 windows of 10 s; gauge expiry 20 s = 2 windows.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let p = points(&close_all(&mut a));
        seen.push((p, a[0].live_contexts()));
    }
    let zero = point("c", "count", 0.0, "box", &[]);
    assert_eq!(seen[0], (vec![zero.clone()], 2));
    assert_eq!(seen[1], (vec![zero.clone()], 1));
    assert_eq!(seen[2], (vec![zero], 0));
    assert_eq!(seen[3], (vec![], 0));
    assert_eq!(seen[4], (vec![], 0));
}

#[test]
fn after_a_take_over_idle_counters_are_not_zero_filled_into_the_handed_over_window() {
    let mut a = [Aggregator::new(cfg(1), T0)];
    feed(&mut a[0], &["idle:1|c", "busy:1|c"], 0);
    close_all(&mut a);
    let zero = point("idle", "count", 0.0, "box", &[]);
    feed(&mut a[0], &["busy:2|c"], 0);
    assert!(points(&close_all(&mut a)).contains(&zero), "filled before");
    feed(&mut a[0], &["busy:3|c"], 0);
    a[0].stop_zero_fill();
    assert_eq!(
        points(&close_all(&mut a)),
        vec![point("busy", "count", 3.0, "box", &[])],
        "the new process would take a fill for a sample"
    );
}

#[test]
fn samples_arriving_during_a_sweep_land_in_the_new_window() {
    let mut agg = Aggregator::new(cfg(1), T0);
    feed(&mut agg, &["a:1|c", "b:1|c"], 0);
    agg.begin_close();
    // Sweep nothing yet; a sample for `b` of the new window forces b's old aggregate out first.
    feed(&mut agg, &["b:5|c"], 0);
    let closed = agg.close_step(usize::MAX).unwrap();
    learn_news(&mut agg);
    let mut m = Merger::new(1, 10, Limits::histogram(100), hist_out());
    let first = points(&described(
        m.add(closed.batches.into_iter().next().unwrap()).unwrap(),
    ));
    assert_eq!(
        first,
        vec![
            point("a", "count", 1.0, "box", &[]),
            point("b", "count", 1.0, "box", &[])
        ]
    );
    let mut a = [agg];
    assert_eq!(
        points(&close_all(&mut a)),
        vec![
            point("a", "count", 0.0, "box", &[]),
            point("b", "count", 5.0, "box", &[])
        ]
    );
}

#[test]
fn merging_partials_from_several_shards_equals_aggregating_on_one() {
    // A deterministic mix of every type over a few contexts, dealt to 3 shards vs kept on 1.
    let mut x: u64 = 7;
    let mut lines = Vec::new();
    for _ in 0..3000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let name = ["a", "b", "c"][(x >> 60) as usize % 3];
        let tag = ["env:x", "env:y"][(x >> 58) as usize % 2];
        let v = (x >> 40) % 1000;
        let ty = ["c", "h", "ms", "s", "d", "c|@0.5"][(x >> 50) as usize % 6];
        lines.push(format!("{name}:{v}|{ty}|#{tag}"));
    }
    let mut one = [Aggregator::new(cfg(1), T0)];
    let mut three = [
        Aggregator::new(cfg(3), T0),
        Aggregator::new(cfg(3), T0),
        Aggregator::new(cfg(3), T0),
    ];
    for (i, l) in lines.iter().enumerate() {
        feed(&mut one[0], &[l], 0);
        feed(&mut three[i % 3], &[l], 0);
    }
    let (a, b) = (close_all(&mut one), close_all(&mut three));
    let (pa, pb) = (points(&a), points(&b));
    assert_eq!(pa.len(), pb.len());
    for (x, y) in pa.iter().zip(&pb) {
        assert_eq!((&x.0, x.1, &x.3, &x.4), (&y.0, y.1, &y.3, &y.4));
        assert!(
            (x.2 - y.2).abs() <= 1e-9 * x.2.abs().max(1.0),
            "{x:?} vs {y:?}"
        );
    }
    let sketches = |f: &FlushBatch| {
        let mut v: Vec<Vec<(i32, f64)>> = f
            .metrics
            .iter()
            .filter_map(|m| m.sketch.as_ref().map(|s| s.bins().collect()))
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    };
    assert_eq!(sketches(&a), sketches(&b));
}

#[test]
fn a_group_creating_a_context_twice_or_in_two_tag_orders_makes_one_context() {
    let mut a = [Aggregator::new(cfg(1), T0)];
    let lines = [
        "n:1|c|#b,a",
        "n:2|c|#b,a",
        "n:4|c|#a,b",
        "n:8|c|#a,b,a",
        "g:1|g",
        "g:3|g",
    ];
    let ms: Vec<Metric<'_>> = lines
        .iter()
        .map(|l| parse_metric(l.as_bytes()).unwrap())
        .collect();
    a[0].insert_group(&ms, 0, |u| panic!("{u:?}"));
    assert_eq!(a[0].live_contexts(), 2);
    assert_eq!(
        points(&close_all(&mut a)),
        vec![
            point("g", "gauge", 3.0, "box", &[]),
            point("n", "count", 15.0, "box", &["a", "b"])
        ]
    );
}

#[test]
fn ingest_handles_more_lines_than_a_group_across_datagrams() {
    let mut a = [Aggregator::new(cfg(1), T0)];
    let mut c = crate::counters::Counters::default();
    let first: String = (0..GROUP + 3)
        .map(|i| format!("m{}:1|c\n", i % 5))
        .collect();
    let second = "m0:1|c\nbad\nm1:1|h|T5\n_sc|x|0\n";
    ingest(&mut a[0], &mut c, [first.as_bytes(), second.as_bytes()], 0);
    assert_eq!(c.metrics, (GROUP + 5) as u64);
    assert_eq!(c.parse_errors.iter().map(|(_, n)| n).sum::<u64>(), 1);
    let timestamped = c.unsupported[crate::counters::Unsupported::TimestampedType];
    assert_eq!((timestamped, c.service_checks), (1, 1));
    let total: f64 = points(&close_all(&mut a)).iter().map(|p| p.2).sum();
    assert_eq!(total, (GROUP + 4) as f64);
}

#[test]
fn events_and_checks_resolve_host_sort_tags_and_are_bounded_per_flush() {
    use crate::protocol::{parse_event, parse_service_check};
    let mut agg = Aggregator::new(cfg(1), T0);
    let e = parse_event(b"_e{2,6}:hi|a\\nb c|#z,a,host:tagged,a").unwrap();
    agg.insert_event(&e).unwrap();
    let e = parse_event(b"_e{2,1}:hi|x|h:field|#host:tagged").unwrap();
    agg.insert_event(&e).unwrap();
    let e = parse_event(b"_e{2,1}:hi|x").unwrap();
    assert_eq!(
        agg.insert_event(&e),
        Err(Discard::EventOverflow),
        "limit is 2"
    );
    let sc = parse_service_check(b"_sc|up|1|#host:,b|m:msg").unwrap();
    agg.insert_service_check(&sc).unwrap();
    let out = agg.take_pending();
    assert_eq!(out.events.len(), 2);
    assert_eq!(out.events[0].text, b"a\nb c");
    assert_eq!(out.events[0].host.as_deref(), Some(&b"tagged"[..]));
    assert_eq!(out.events[0].tags, vec![b"a".to_vec(), b"z".to_vec()]);
    assert_eq!(
        out.events[1].host.as_deref(),
        Some(&b"field"[..]),
        "h: wins over host:"
    );
    assert_eq!(
        out.service_checks[0].host, None,
        "empty host: tag means no host"
    );
    assert_eq!(out.service_checks[0].tags, vec![b"b".to_vec()]);
    assert!(
        agg.take_pending().events.is_empty(),
        "the bound is per flush"
    );
}

fn mapped_cfg(owners: usize) -> AggregateConfig {
    use crate::map::{Mapper, ProfileSpec, check};
    let specs: Vec<ProfileSpec> = serde_norway::from_str(
        "- name: p\n  prefix: app.\n  mappings:\n    - {match: 'app.*.hits', name: 'hits', tags: {page: '$1', host: 'mapped-host'}}\n",
    )
    .unwrap();
    let mut c = cfg(owners);
    c.names = crate::map::NameConfig {
        mapper: Some(std::sync::Arc::new(
            Mapper::new(&check(&specs).unwrap()).unwrap(),
        )),
        cache_size: 100,
        namespace: Some("ns.".into()),
        namespace_exempt: vec!["jvm".into()],
        block_exact: vec!["ns.noisy".into()],
        block_prefix: vec![],
        extra_tags: vec!["dc:eu".into()],
        name_tags: Default::default(),
        mapping_not_honoured: Vec::new(),
        exposition: Default::default(),
        tag_filters: Default::default(),
    };
    c
}

#[test]
fn mapped_names_and_tags_form_one_context_across_shards_and_raw_names() {
    let mut a = [
        Aggregator::new(mapped_cfg(2), T0),
        Aggregator::new(mapped_cfg(2), T0),
    ];
    // Two raw spellings of one mapped context, on two shards; the mapped `host` tag sets the host.
    feed(&mut a[0], &["app.home.hits:1|c|#x:1"], 0);
    feed(&mut a[1], &["app.home.hits:2|c|#x:1,page:home"], 0);
    feed(&mut a[1], &["hits:4|c|#page:home,x:1,host:mapped-host"], 0);
    feed(&mut a[0], &["jvm.heap:5|g", "other:1|c|#dc:eu"], 0);
    let mut c = crate::counters::Counters::default();
    ingest(
        &mut a[0],
        &mut c,
        [&b"noisy:1|c\nnoisy:1|c\nnoisy:2|c|#b"[..]],
        0,
    );
    assert_eq!(c.blocked_metrics, 3);
    assert_eq!(
        points(&close_all(&mut a)),
        vec![
            point("jvm.heap", "gauge", 5.0, "box", &["dc:eu"]),
            point(
                "ns.hits",
                "count",
                7.0,
                "mapped-host",
                &["dc:eu", "page:home", "x:1"]
            ),
            point("ns.other", "count", 1.0, "box", &["dc:eu"]),
        ]
    );
}

#[test]
fn extra_tags_reach_events_checks_and_timestamped_points() {
    use crate::protocol::{parse_event, parse_service_check};
    let mut agg = Aggregator::new(mapped_cfg(1), T0);
    agg.insert_event(&parse_event(b"_e{1,1}:a|b|#z").unwrap())
        .unwrap();
    agg.insert_service_check(&parse_service_check(b"_sc|up|0").unwrap())
        .unwrap();
    agg.insert(&parse_metric(b"app.x.hits:3|g|T100").unwrap(), 0)
        .unwrap();
    assert_eq!(
        agg.insert(&parse_metric(b"noisy:3|g|T100").unwrap(), 0),
        Err(Discard::Blocked)
    );
    let out = agg.take_pending();
    assert_eq!(out.events[0].tags, vec![b"dc:eu".to_vec(), b"z".to_vec()]);
    assert_eq!(out.service_checks[0].tags, vec![b"dc:eu".to_vec()]);
    let p = points(&out);
    assert_eq!(
        p,
        vec![point(
            "ns.hits",
            "gauge",
            3.0,
            "mapped-host",
            &["dc:eu", "page:x"]
        )]
    );
}
