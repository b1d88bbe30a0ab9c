//! Remote write's names, labels and series encoding.

use super::*;

#[test]
fn names_and_labels_fit_the_prometheus_charset() {
    assert_eq!(metric_name(b"page.views-total"), "page_views_total");
    assert_eq!(metric_name(b"9lives:x"), "_9lives:x");
    assert_eq!(metric_name(b""), "_");
    assert_eq!(label_name(b"k8s.pod-name"), "k8s_pod_name");
    assert_eq!(label_name(b"2fa"), "_2fa");
    assert_eq!(label_name(b"__name__"), "tag__name__");
    assert_eq!(label_name(b""), "_");
}

#[test]
fn labels_are_sorted_merged_and_name_goes_in_order() {
    let mut arena = Vec::new();
    let tags: [&[u8]; 6] = [b"b:2", b"a:1", b"a:3", b"Zed:x", b"noval", b"empty:"];
    let off = crate::flushed::desc::encode(
        &mut arena,
        crate::protocol::MetricType::Gauge,
        b"m",
        Some(b"h"),
        None,
        tags.into_iter(),
    );
    let d = crate::flushed::desc::Desc::decode(&arena, off);
    let (mut text, mut pt, mut scratch) = (String::from("x"), String::new(), Vec::new());
    let r = push_labels(&mut text, &mut pt, &mut scratch, &d);
    let want = [
        "Zed", "x", "a", "1,3", "b", "2", "host", "h", "noval", "true", "",
    ]
    .join("\0");
    assert_eq!(&text[r.clone()], want);
    let mut out = Vec::new();
    encode_series(&mut out, "m", &text[r], Some("0.5"), 1.0, 5);
    // Label names in the order they were written: sorted, `__name__` and `quantile` merged in.
    let names: Vec<&[u8]> = [
        &b"Zed"[..],
        b"__name__",
        b"a",
        b"b",
        b"host",
        b"noval",
        b"quantile",
    ]
    .into_iter()
    .collect();
    let mut at = 0;
    for n in names {
        let pos = out[at..]
            .windows(n.len())
            .position(|w| w == n)
            .unwrap_or_else(|| panic!("{} missing or out of order", String::from_utf8_lossy(n)));
        at += pos + n.len();
    }
}
