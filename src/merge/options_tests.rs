//! The aggregator's options through the merge: `--context-stats` (the busiest contexts of each
//! window), `--gauge-deltas` (statsd's signed gauges) and `|m` meters.

use super::pipeline_tests::{T0, cfg, close_all, feed, point, points};
use crate::aggregate::{Aggregator, ingest};

#[test]
fn with_context_stats_each_close_names_the_busiest_contexts_of_its_window() {
    let mut counting = cfg(1);
    counting.context_stats = true;
    let mut agg = Aggregator::new(counting, T0);
    let mut c = crate::counters::Counters::default();
    let mut lines = String::new();
    for (name, n) in [("few", 2), ("many", 7), ("some", 4)] {
        for _ in 0..n {
            lines.push_str(&format!("{name}:1|c\n"));
        }
    }
    ingest(&mut agg, &mut c, [lines.as_bytes()], T0);
    agg.begin_close();
    // A sample of the next window reaching a context before the sweep does: its old window's
    // samples go with its old aggregate, and it starts again at one.
    ingest(&mut agg, &mut c, [&b"many:1|c"[..]], T0 + 10);
    let closed = loop {
        if let Some(w) = agg.close_step(1) {
            break w;
        }
    };
    let samples: Vec<u32> = closed.busiest.iter().map(|&(_, n)| n).collect();
    assert_eq!(samples, [7, 4, 2]);
    agg.begin_close();
    let closed = loop {
        if let Some(w) = agg.close_step(usize::MAX) {
            break w;
        }
    };
    assert_eq!(
        closed.busiest.iter().map(|&(_, n)| n).collect::<Vec<_>>(),
        [1]
    );
    // Off: nothing is counted.
    let mut plain = Aggregator::new(cfg(1), T0);
    ingest(&mut plain, &mut c, [lines.as_bytes()], T0);
    plain.begin_close();
    let closed = loop {
        if let Some(w) = plain.close_step(usize::MAX) {
            break w;
        }
    };
    assert!(closed.busiest.is_empty());
}

#[test]
fn with_gauge_deltas_a_signed_value_adjusts_the_last_one_across_windows() {
    let mut deltas = cfg(1);
    deltas.gauge_deltas = true;
    let mut a = [Aggregator::new(deltas, T0)];
    // pystatsd `gauge("g", 10)`, then `gauge("g", 5, delta=True)`, `gauge("g", -3, delta=True)`.
    feed(&mut a[0], &["g:10|g", "g:+5|g", "g:-3|g", "new:-2|g"], 10);
    assert_eq!(
        points(&close_all(&mut a)),
        vec![
            point("g", "gauge", 12.0, "box", &[]),
            point("new", "gauge", -2.0, "box", &[]),
        ]
    );
    // The next window starts from the last value; packed values apply left to right, and an
    // unsigned one sets.
    feed(&mut a[0], &["g:+1:+1|g", "new:4:-1|g"], 20);
    assert_eq!(
        points(&close_all(&mut a)),
        vec![
            point("g", "gauge", 14.0, "box", &[]),
            point("new", "gauge", 3.0, "box", &[]),
        ]
    );
    // Without the flag, as the Agent: the signed value is the value.
    let mut plain = [Aggregator::new(cfg(1), T0)];
    feed(&mut plain[0], &["g:10|g", "g:-3|g"], 10);
    assert_eq!(
        points(&close_all(&mut plain)),
        vec![point("g", "gauge", -3.0, "box", &[])]
    );
}

#[test]
fn a_meter_counts_as_a_counter() {
    let mut a = [Aggregator::new(cfg(1), T0)];
    feed(&mut a[0], &["cadence.meter:3|m", "cadence.meter:2|m"], 10);
    assert_eq!(
        points(&close_all(&mut a)),
        vec![point("cadence.meter", "count", 5.0, "box", &[])]
    );
}
