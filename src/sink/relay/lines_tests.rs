//! Tests of `lines`: what the relay writes reads back, within every datagram limit.

use super::*;
use crate::flushed::{Contexts, DescRef, FlushBatch, desc};
use crate::protocol::{Lines, parse_metric};
use crate::values::Limits;
use crate::values::set::Set;

/// A batch of one point whose desc is `name` with `tags` on host `h1`.
fn batch_of(t: MetricType, m: FlushedMetric) -> FlushBatch {
    let mut arena = Vec::new();
    let tags: [&[u8]; 2] = [b"env:prod", b"zone:a"];
    let d = desc::encode(&mut arena, t, b"lat", Some(b"h1"), None, tags.into_iter());
    FlushBatch {
        arenas: vec![arena],
        metrics: vec![FlushedMetric {
            desc: DescRef::Arena {
                arena: 0,
                offset: d,
            },
            ..m
        }],
        ..FlushBatch::default()
    }
}

fn point() -> FlushedMetric {
    FlushedMetric {
        ts: 1_764_000_000,
        interval: 10,
        ..FlushedMetric::default()
    }
}

/// A batch of one distribution point holding `sk`.
fn distribution(sk: &Sketch) -> FlushBatch {
    batch_of(
        MetricType::Distribution,
        FlushedMetric {
            kind: OutKind::Distribution,
            value: sk.count,
            sketch: Some(Box::new(sk.clone())),
            ..point()
        },
    )
}

fn packets(batch: &FlushBatch, max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let contexts = Contexts::default();
    let view = View::new(batch, &contexts);
    Encoder::new(max).encode(view, &mut |p: &[u8], _| out.push(p.to_vec()));
    out
}

/// Parses every relayed line back into an aggregate, as the downstream tier does.
/// Reads a distribution's packets back and checks that count, extremes and bins survived.
fn same_bins_back(packets: &[Vec<u8>], sk: &Sketch) -> Box<Sketch> {
    let Agg::Distribution(back) = reaggregate(MetricType::Distribution, packets) else {
        unreachable!()
    };
    assert_eq!(back.count, sk.count);
    assert_eq!((back.min, back.max), (sk.min, sk.max));
    assert_eq!(
        back.bins().collect::<Vec<_>>(),
        sk.bins().collect::<Vec<_>>()
    );
    back
}

fn reaggregate(t: MetricType, packets: &[Vec<u8>]) -> Agg {
    let mut agg = Agg::new(t);
    for p in packets {
        for line in Lines::new(p) {
            let m = parse_metric(line).unwrap_or_else(|e| panic!("{e:?}: {line:?}"));
            assert_eq!(m.metric_type, t);
            assert_eq!(m.tags, b"env:prod,zone:a,host:h1");
            agg.insert(
                &m,
                0,
                Limits {
                    histogram_samples: 1 << 20,
                    set_members: 1 << 20,
                },
            );
        }
    }
    agg
}

#[test]
fn a_client_timestamped_point_keeps_its_timestamp() {
    let b = batch_of(
        MetricType::Counter,
        FlushedMetric {
            kind: OutKind::Count,
            value: 12.5,
            ..point()
        },
    );
    assert_eq!(
        packets(&b, 1432),
        vec![b"lat:12.5|c|#env:prod,zone:a,host:h1|T1764000000".to_vec()]
    );
}

#[test]
fn a_contexts_window_sum_goes_without_its_timestamp_so_the_next_tier_aggregates_it() {
    use crate::flushed::{Contexts, DescRef, NewContexts, desc};
    let mut news = NewContexts::default();
    let offset = desc::encode_new(
        &mut news.arena,
        MetricType::Counter,
        b"req",
        Some(b"h1"),
        None,
        [b"env:prod", b"", b""],
    );
    news.contexts.push((7, offset));
    let mut contexts = Contexts::default();
    contexts.learn(&news);
    let mut b = FlushBatch {
        metrics: vec![FlushedMetric {
            desc: DescRef::Context(7),
            kind: OutKind::Count,
            value: 3.0,
            ts: 1764000000,
            interval: 10,
            ..FlushedMetric::default()
        }],
        ..FlushBatch::default()
    };
    contexts.resolve(&mut b);
    let mut out = Vec::new();
    Encoder::new(1432).encode(View::new(&b, &contexts), &mut |p: &[u8], _| {
        out.push(p.to_vec())
    });
    assert_eq!(out, vec![b"req:3|c|#env:prod,host:h1".to_vec()]);
}

#[test]
fn weighted_histogram_samples_come_back_exactly() {
    let samples = vec![(1.5, 1.0), (2.0, 4.0), (7.25, 4.0), (3.0, 3.0), (0.1, 1.0)];
    let h = Agg::Histogram(Box::new(Histogram::Exact(samples.clone())));
    let b = batch_of(
        MetricType::Histogram,
        FlushedMetric {
            whole: Some(Box::new(h)),
            ..point()
        },
    );
    let ps = packets(&b, 1432);
    let text = String::from_utf8(ps.concat()).unwrap();
    assert!(text.contains("lat:2:7.25|h|@0.25|#"), "{text}");
    let Agg::Histogram(back) = reaggregate(MetricType::Histogram, &ps) else {
        unreachable!()
    };
    let Histogram::Exact(mut got) = *back else {
        panic!("exact expected")
    };
    let mut want = samples;
    got.sort_by(|a, b| a.partial_cmp(b).unwrap());
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(got, want, "weights snap back to whole numbers");
}

#[test]
fn sketch_bins_count_min_and_max_come_back_exactly() {
    let mut sk = Sketch::default();
    for i in 0..2000 {
        sk.insert(
            f64::from(i) * 0.37 - 20.0,
            if i % 3 == 0 { 10.0 } else { 1.0 },
        );
    }
    let b = distribution(&sk);
    let ps = packets(&b, 512);
    assert!(ps.iter().all(|p| p.len() <= 512));
    let back = same_bins_back(&ps, &sk);
    assert!((back.sum - sk.sum).abs() <= sk.sum.abs() * 0.01 + 1.0);
    for q in [0.5, 0.9, 0.99] {
        assert_eq!(back.quantile(q), sk.quantile(q));
    }
}

#[test]
fn heavy_weights_split_into_ones_the_next_tier_accepts() {
    for (n, want) in [
        (1.0, vec![1.0]),
        (1.5, vec![1.5]),
        (1e6, vec![1e6]),
        (2.5e6, vec![1e6, 1e6, 5e5]),
        (3e6, vec![1e6, 1e6, 1e6]),
        (2e6 + 0.5, vec![1e6, 500_000.25, 500_000.25]),
    ] {
        let got: Vec<f64> = split_weight(n).collect();
        assert_eq!(got, want, "{n}");
        assert_eq!(got.iter().sum::<f64>(), n);
    }
}

#[test]
fn a_sketch_heavier_than_any_one_sample_is_relayed_in_pieces_that_parse_back() {
    // 3 samples at the lowest rate land in one bin, plus a fractional weight in another:
    // every line must carry a rate in [MIN_SAMPLE_RATE, 1] and the totals must survive.
    let mut sk = Sketch::default();
    for _ in 0..3 {
        sk.insert(1.0, MAX_SAMPLE_WEIGHT);
    }
    sk.insert(5.0, 1.5);
    let b = distribution(&sk);
    let ps = packets(&b, 1432);
    same_bins_back(&ps, &sk);
}

#[test]
fn set_members_each_get_a_line() {
    let mut members = hashbrown::HashSet::new();
    members.insert(b"u1".to_vec().into_boxed_slice());
    members.insert(b"u:2".to_vec().into_boxed_slice());
    let b = batch_of(
        MetricType::Set,
        FlushedMetric {
            value: 2.0,
            whole: Some(Box::new(Agg::Set(Box::new(Set::Exact(members.clone()))))),
            ..point()
        },
    );
    let Agg::Set(back) = reaggregate(MetricType::Set, &packets(&b, 1432)) else {
        unreachable!()
    };
    assert_eq!(*back, Set::Exact(members));
}

#[test]
fn an_estimated_set_crosses_in_register_chunks_that_fit_a_packet() {
    let mut edge = Set::default();
    for i in 0..50_000 {
        edge.insert(format!("user-{i}").as_bytes(), 100);
    }
    assert!(edge.is_estimate());
    let b = batch_of(
        MetricType::Set,
        FlushedMetric {
            value: edge.count(),
            whole: Some(Box::new(Agg::Set(Box::new(edge.clone())))),
            ..point()
        },
    );
    let sent = packets(&b, 1432);
    assert!(sent.iter().all(|p| p.len() <= 1432));
    let Agg::Set(back) = reaggregate(MetricType::Set, &sent) else {
        unreachable!()
    };
    assert_eq!(*back, edge);
}

#[test]
fn events_and_checks_parse_back() {
    let b = FlushBatch {
        events: vec![FlushedEvent {
            title: b"deploy".to_vec(),
            text: b"line 1\nline 2".to_vec(),
            ts: Some(1_764_000_000),
            host: Some(b"web-1".to_vec()),
            aggregation_key: Some(b"k".to_vec()),
            priority: Priority::Low,
            source_type: Some(b"ci".to_vec()),
            alert_type: AlertType::Error,
            tags: vec![b"env:prod".to_vec()],
            origin: None,
        }],
        service_checks: vec![FlushedServiceCheck {
            name: b"db.up".to_vec(),
            status: 2,
            ts: None,
            host: None,
            message: Some(b"down\nhard".to_vec()),
            tags: vec![],
            origin: None,
        }],
        ..FlushBatch::default()
    };
    let ps = packets(&b, 8192);
    let lines: Vec<&[u8]> = Lines::new(&ps[0]).collect();
    let e = crate::protocol::parse_event(lines[0]).unwrap();
    assert_eq!(crate::protocol::event::unescape(e.text), b"line 1\nline 2");
    assert_eq!((e.title, e.host), (&b"deploy"[..], Some(&b"web-1"[..])));
    assert_eq!(
        (e.priority, e.alert_type),
        (Priority::Low, AlertType::Error)
    );
    assert_eq!(e.tags, b"env:prod");
    let sc = crate::protocol::parse_service_check(lines[1]).unwrap();
    assert_eq!((sc.name, sc.status), (&b"db.up"[..], 2));
    assert_eq!(sc.message, Some(&b"down\\nhard"[..]));
}
