//! Origins through the merge: the container, `|c:`/`|e:`/`|card:` fields and internal tags are
//! part of a context, and the same origin is one context on every shard whatever its form.

use super::pipeline_tests::{T0, cfg, close_all, feed};
use crate::aggregate::{Aggregator, ingest};
use crate::flushed::FlushBatch;
use crate::protocol::origin::{Cardinality, Origin, Precedence};

#[test]
fn type_and_container_are_part_of_the_context() {
    let mut a = [Aggregator::new(cfg(1), T0)];
    feed(&mut a[0], &["m:1|c", "m:5|g", "m:2|c|c:ci-1"], 0);
    let mut flushed = close_all(&mut a);
    flushed.metrics.sort_by(|x, y| x.value.total_cmp(&y.value));
    let cids: Vec<Option<Vec<u8>>> = flushed
        .metrics
        .iter()
        .map(|m| {
            let o = flushed
                .desc(m)
                .origin
                .map(Origin::decode)
                .unwrap_or_default();
            o.container_id.map(<[u8]>::to_vec)
        })
        .collect();
    assert_eq!(cids, vec![None, Some(b"1".to_vec()), None]);
}

/// Each point's tags and decoded origin, by value.
fn origins(batch: &FlushBatch) -> Vec<(f64, Vec<Vec<u8>>, Origin<'_>)> {
    let mut out: Vec<_> = batch
        .metrics
        .iter()
        .map(|m| {
            let d = batch.desc(m);
            let o = d.origin.map(Origin::decode).unwrap_or_default();
            (m.value, d.tags().map(<[u8]>::to_vec).collect(), o)
        })
        .collect();
    out.sort_by(|x, y| x.0.total_cmp(&y.0));
    out
}

#[test]
fn internal_tags_become_origin_fields_and_the_same_origin_is_one_context_everywhere() {
    let mut a = [Aggregator::new(cfg(2), T0), Aggregator::new(cfg(2), T0)];
    // Same context: tag order, |e: item order of valid items, and internal tags' position differ.
    feed(
        &mut a[0],
        &["m:1|c|#dd.internal.entity_id:pod-1,env:a,dd.internal.card:high|e:cn-web,it-false"],
        0,
    );
    feed(
        &mut a[1],
        &["m:2|c|e:it-false,cn-web|#env:a,dd.internal.card:high,dd.internal.entity_id:pod-1"],
        0,
    );
    // |card: wins over dd.internal.card:, and a different cardinality is another context.
    feed(
        &mut a[1],
        &[
            "m:100|c|#env:a,dd.internal.entity_id:pod-1,dd.internal.card:high|e:cn-web,it-false|card:low",
        ],
        0,
    );
    // A malformed |c: is left out: the context is the one without it.
    feed(&mut a[0], &["m:1000|c|#env:a|c:in-notanumber"], 0);
    let flushed = close_all(&mut a);
    let got = origins(&flushed);
    assert_eq!(got.len(), 3, "{got:?}");
    let (v, tags, o) = &got[0];
    assert_eq!(*v, 3.0);
    assert_eq!(
        tags,
        &vec![b"env:a".to_vec()],
        "internal tags leave the tag list"
    );
    assert_eq!(o.pod_uid, Some(&b"pod-1"[..]));
    assert_eq!(o.cardinality, Some(Cardinality::High));
    assert_eq!(o.external.container_name, Some(&b"web"[..]));
    assert_eq!(o.external.init, Some(false));
    assert_eq!(got[1].2.cardinality, Some(Cardinality::Low));
    assert_eq!(got[2].0, 1000.0);
    assert_eq!(got[2].2, Origin::default());
}

#[test]
fn the_socket_container_joins_the_context_by_precedence() {
    use crate::aggregate::Packet;
    let sock = || Some(b"sock".to_vec());
    let expected = [
        (
            Precedence::Client,
            vec![(1.0, Some(b"client".to_vec())), (2.0, sock()), (4.0, None)],
        ),
        // The socket's id overrides |c:, so both lines are one context.
        (Precedence::Socket, vec![(3.0, sock()), (4.0, None)]),
    ];
    for (precedence, want) in expected {
        let mut c = cfg(1);
        c.origin_precedence = precedence;
        let mut a = [Aggregator::new(c, T0)];
        let mut counters = crate::counters::Counters::default();
        let packets = [
            Packet {
                bytes: b"m:1|c|c:ci-client\nm:2|c",
                container: Some(b"sock"),
            },
            Packet {
                bytes: b"m:4|c",
                container: None,
            },
        ];
        ingest(&mut a[0], &mut counters, packets, 0);
        let flushed = close_all(&mut a);
        let got: Vec<(f64, Option<Vec<u8>>)> = origins(&flushed)
            .into_iter()
            .map(|(v, _, o)| (v, o.container_id.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(got, want, "{precedence:?}");
    }
}

#[test]
fn malformed_origin_fields_are_counted_per_message() {
    let mut a = Aggregator::new(cfg(1), T0);
    let mut c = crate::counters::Counters::default();
    let lines: &[u8] =
        b"m:1|c|c:ci-\nm:1|c|card:extreme|e:it-maybe\n_sc|x|0|card:bogus\nm:1|c|c:ci-ok";
    ingest(&mut a, &mut c, [lines], 0);
    assert_eq!(c.metrics, 3);
    use crate::protocol::origin::OriginField;
    let by_field: Vec<(OriginField, u64)> =
        c.origin_field_errors.iter().map(|(f, &n)| (f, n)).collect();
    assert_eq!(
        by_field,
        [
            (OriginField::Local, 1),
            (OriginField::External, 1),
            (OriginField::Cardinality, 2)
        ]
    );
}
