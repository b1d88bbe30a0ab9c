//! Cardinality through the merge: the caps (`--max-contexts`, `--max-contexts-per-metric`, the
//! memory limit) send a refused context's samples to its metric's overflow context, whose totals
//! stay exact for every type; churn reuses what freed contexts leave (slots, the sink table's
//! entries and strings).

use super::pipeline_tests::{T0, cfg, close_all, feed, point, points};
use crate::aggregate::{AggregateConfig, Aggregator, OVERFLOW_TAG, ingest};
use crate::counters::{Counters, Refusal};
use crate::memory::Pressure;

const OVERFLOW: &str = "corestatsd_overflow:true";

fn capped(max_contexts: Option<usize>, per_metric: Option<usize>) -> AggregateConfig {
    AggregateConfig {
        max_contexts,
        max_contexts_per_metric: per_metric,
        context_stats: false,
        gauge_deltas: false,
        ..cfg(1)
    }
}

#[test]
fn past_max_contexts_samples_go_to_the_metrics_overflow_context_and_totals_stay_exact() {
    assert_eq!(OVERFLOW_TAG, OVERFLOW.as_bytes());
    let mut a = [Aggregator::new(capped(Some(3), None), T0)];
    feed(
        &mut a[0],
        &[
            "req:1|c|#pod:a",
            "req:2|c|#pod:b",
            "req:3|c|#pod:c",
            "req:4|c|#pod:d",
            "req:5|c|#pod:e",
            // A refused context's later samples find the overflow context directly.
            "req:6|c|#pod:d",
            "req:7|c|#pod:a",
        ],
        0,
    );
    let r = a[0].take_refusals();
    assert_eq!(
        r.refused[Refusal::MaxContexts],
        2,
        "pod:d and pod:e, once each"
    );
    assert_eq!(r.by_name.get(&b"req"[..]), Some(&2));
    assert_eq!(
        points(&close_all(&mut a)),
        vec![
            point("req", "count", 2.0, "box", &["pod:b"]),
            point("req", "count", 3.0, "box", &["pod:c"]),
            point("req", "count", 8.0, "box", &["pod:a"]),
            point("req", "count", 15.0, "box", &[OVERFLOW]),
        ]
    );
}

#[test]
fn every_type_aggregates_into_its_overflow_context_as_it_would_alone() {
    // One context per type fits; each type's second context overflows, keeping its host.
    let mut a = [Aggregator::new(capped(None, Some(1)), T0)];
    feed(
        &mut a[0],
        &[
            "g:1|g|#k:a",
            "g:5|g|#k:b",
            "g:7|g|#k:c",
            "s:x|s|#k:a",
            "s:y|s|#k:b",
            "s:z|s|#k:c",
            "s:y|s|#k:c",
            "h:10|h|#k:a",
            "h:20|h|#k:b,host:web",
            "h:40|h|#k:c,host:web",
            "d:1|d|#k:a",
            "d:3|d|#k:b",
            "d:5|d|#k:c",
        ],
        0,
    );
    let got = points(&close_all(&mut a));
    let want = vec![
        point("d", "distribution", 1.0, "box", &["k:a"]),
        point("d", "distribution", 2.0, "box", &[OVERFLOW]),
        point("g", "gauge", 1.0, "box", &["k:a"]),
        point("g", "gauge", 7.0, "box", &[OVERFLOW]),
        point("h.95percentile", "gauge", 10.0, "box", &["k:a"]),
        point("h.95percentile", "gauge", 40.0, "web", &[OVERFLOW]),
        point("h.avg", "gauge", 10.0, "box", &["k:a"]),
        point("h.avg", "gauge", 30.0, "web", &[OVERFLOW]),
        point("h.count", "count", 1.0, "box", &["k:a"]),
        point("h.count", "count", 2.0, "web", &[OVERFLOW]),
        point("h.max", "gauge", 10.0, "box", &["k:a"]),
        point("h.max", "gauge", 40.0, "web", &[OVERFLOW]),
        point("h.median", "gauge", 10.0, "box", &["k:a"]),
        point("h.median", "gauge", 20.0, "web", &[OVERFLOW]),
        point("s", "gauge", 1.0, "box", &["k:a"]),
        point("s", "gauge", 2.0, "box", &[OVERFLOW]),
    ];
    assert_eq!(
        got, want,
        "sets union y and z, the gauge keeps the last value"
    );
}

#[test]
fn a_per_metric_cap_refuses_only_the_metric_past_it() {
    let mut a = [Aggregator::new(capped(None, Some(2)), T0)];
    feed(
        &mut a[0],
        &[
            "a:1|c|#i:1",
            "a:1|c|#i:2",
            "a:1|c|#i:3",
            "a:1|c|#i:4",
            "b:1|c|#i:1",
        ],
        0,
    );
    let r = a[0].take_refusals();
    assert_eq!(r.refused[Refusal::MaxContextsPerMetric], 2);
    let p = points(&close_all(&mut a));
    let overflow: Vec<_> = p.iter().filter(|p| p.4 == [OVERFLOW]).collect();
    assert_eq!(overflow, [&point("a", "count", 2.0, "box", &[OVERFLOW])]);
    assert_eq!(p.len(), 4, "a twice, a's overflow, b: {p:?}");
}

#[test]
fn near_the_memory_limit_new_contexts_overflow_and_events_are_shed() {
    let mut a = [Aggregator::new(cfg(1), T0)];
    feed(&mut a[0], &["m:1|c|#i:1"], 0);
    a[0].force_pressure(Pressure::RefuseContexts);
    feed(&mut a[0], &["m:1|c|#i:1", "m:1|c|#i:2"], 0);
    assert_eq!(a[0].take_refusals().refused[Refusal::MemoryLimit], 1);
    a[0].force_pressure(Pressure::Shed);
    let mut c = Counters::default();
    ingest(
        &mut a[0],
        &mut c,
        [&b"_e{1,1}:a|b\n_sc|x|0\nm:1|c|#i:3"[..]],
        0,
    );
    assert_eq!(c.memory_shed_drops.iter().map(|(_, n)| n).sum::<u64>(), 2);
    assert!(a[0].take_pending().events.is_empty());
    assert_eq!(
        points(&close_all(&mut a)),
        vec![
            point("m", "count", 2.0, "box", &[OVERFLOW]),
            point("m", "count", 2.0, "box", &["i:1"]),
        ]
    );
}

#[test]
fn when_contexts_expire_a_refused_context_is_made_again() {
    let mut a = [Aggregator::new(capped(Some(1), None), T0)];
    feed(&mut a[0], &["g:1|g|#i:1", "g:2|g|#i:2"], 0);
    assert_eq!(
        points(&close_all(&mut a)),
        vec![
            point("g", "gauge", 1.0, "box", &["i:1"]),
            point("g", "gauge", 2.0, "box", &[OVERFLOW]),
        ]
    );
    // Two idle windows expire both (20 s of 10 s windows).
    for _ in 0..2 {
        close_all(&mut a);
    }
    assert_eq!(a[0].live_contexts(), 0);
    feed(&mut a[0], &["g:3|g|#i:2"], 0);
    assert_eq!(
        points(&close_all(&mut a)),
        vec![point("g", "gauge", 3.0, "box", &["i:2"])]
    );
}

#[test]
fn a_refused_context_gets_its_own_once_another_expires_though_its_overflow_lives_on() {
    let mut a = [Aggregator::new(capped(Some(1), None), T0)];
    feed(&mut a[0], &["g:1|g|#i:1", "g:2|g|#i:2"], 0);
    close_all(&mut a);
    // i:2 keeps its overflow context busy while i:1 idles for two windows and expires.
    for v in [3, 4] {
        feed(&mut a[0], &[&format!("g:{v}|g|#i:2")], 0);
        assert_eq!(
            points(&close_all(&mut a)),
            vec![point("g", "gauge", f64::from(v), "box", &[OVERFLOW])]
        );
    }
    feed(&mut a[0], &["g:5|g|#i:2"], 0);
    assert_eq!(
        points(&close_all(&mut a)),
        vec![point("g", "gauge", 5.0, "box", &["i:2"])]
    );
    assert_eq!(a[0].take_refusals().refused[Refusal::MaxContexts], 1);
}

#[test]
fn unique_names_past_every_cap_fill_the_overflow_reserve_then_are_dropped_and_counted() {
    let mut a = Aggregator::new(capped(Some(1), None), T0);
    let lines: String = (0..1100).map(|i| format!("n{i}:1|c\n")).collect();
    let mut c = Counters::default();
    ingest(&mut a, &mut c, [lines.as_bytes()], 0);
    let r = a.take_refusals();
    assert_eq!(r.refused[Refusal::MaxContexts], 1099);
    assert_eq!(
        c.overflow_full_drops,
        1099 - 1024,
        "1024 overflow contexts at most"
    );
    assert_eq!(c.blocked_metrics, 0);
    assert_eq!(a.live_contexts(), 1 + 1024);
    // A dropped context's next sample is dropped too, without counting another refusal.
    ingest(&mut a, &mut c, [&b"n1099:1|c\n"[..]], 0);
    assert_eq!(c.overflow_full_drops, 1099 - 1024 + 1);
    assert_eq!(a.take_refusals().refused[Refusal::MaxContexts], 0);
}

#[test]
fn churn_reuses_freed_slots_table_entries_and_strings() {
    use crate::flushed::Contexts;
    // Contexts expire after two idle windows (20 s of 10 s windows); gauges have no zero-fill.
    let mut agg = Aggregator::new(cfg(1), T0);
    let mut table = Contexts::default();
    let mut sizes = Vec::new();
    for round in 0..4 {
        let lines: String = (0..1000)
            .map(|i| format!("g:1|g|#env:prod,pod:{round}-{i}\n"))
            .collect();
        ingest(&mut agg, &mut Counters::default(), [lines.as_bytes()], 0);
        for _ in 0..3 {
            agg.begin_close();
            let closed = agg.close_step(usize::MAX).expect("one step");
            if let Some(news) = agg.take_news(0) {
                table.learn(&news);
            }
            for batch in closed.batches {
                table.forget(&batch.freed);
            }
        }
        assert_eq!((agg.live_contexts(), table.len()), (0, 0), "round {round}");
        sizes.push((agg.slots(), table.slots(), table.strings()));
    }
    assert_eq!(sizes, vec![(1000, 1000, 0); 4], "nothing grows with churn");
}
