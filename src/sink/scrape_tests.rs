//! The scrape sink's series and text, fed batches as owners hand them over.

use super::*;
use crate::flushed::{Contexts, DescRef, OutKind, desc};
use crate::map::exporter::{NamePattern, ObserverOptions, compile};

struct Batch(FlushBatch);

impl Batch {
    fn new() -> Batch {
        Batch(FlushBatch {
            arenas: vec![Vec::new()],
            ..FlushBatch::default()
        })
    }

    fn push(&mut self, t: MetricType, name: &str, tags: &[&str], host: &str, m: FlushedMetric) {
        let offset = desc::encode(
            &mut self.0.arenas[0],
            t,
            name.as_bytes(),
            Some(host.as_bytes()),
            None,
            tags.iter().map(|t| t.as_bytes()),
        );
        self.0.metrics.push(FlushedMetric {
            desc: DescRef::Arena { arena: 0, offset },
            ..m
        });
    }

    fn number(mut self, t: MetricType, name: &str, tags: &[&str], value: f64, ts: u64) -> Batch {
        let kind = if t == MetricType::Counter {
            OutKind::Count
        } else {
            OutKind::Gauge
        };
        self.push(
            t,
            name,
            tags,
            "me",
            FlushedMetric {
                kind,
                value,
                ts,
                interval: 10,
                ..Default::default()
            },
        );
        self
    }

    fn observed(mut self, t: MetricType, name: &str, samples: &[(f64, f64)], ts: u64) -> Batch {
        let whole = Agg::Histogram(Box::new(Histogram::Exact(samples.to_vec())));
        let m = FlushedMetric {
            ts,
            interval: 10,
            whole: Some(Box::new(whole)),
            ..Default::default()
        };
        self.push(t, name, &["env:prod"], "me", m);
        self
    }
}

fn sink(exposition: Exposition) -> (ScrapeSink, Arc<Published>) {
    let published = Arc::new(Published::default());
    let settings = ScrapeSettings {
        exposition,
        ttl_secs: None,
        max_series: 100,
        default_host: Some(b"me".to_vec()),
    };
    (ScrapeSink::new(settings, published.clone()), published)
}

fn write(s: &mut ScrapeSink, b: Batch) {
    s.write(View::new(&b.0, &Contexts::default())).unwrap();
    s.emit_telemetry(&mut FlushBatch::default(), 0);
}

/// The sample lines of `text` (no comments), without the sink's own series.
fn samples(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("corestatsd_"))
        .collect()
}

#[test]
fn counters_add_up_across_windows_and_gauges_keep_their_last_value() {
    let (mut s, published) = sink(Exposition::default());
    write(
        &mut s,
        Batch::new()
            .number(MetricType::Counter, "page.views", &["b:2", "a:1"], 3.0, 10)
            .number(MetricType::Gauge, "temp", &[], 21.5, 10)
            .number(MetricType::Counter, "done_total", &[], 1.0, 10),
    );
    write(
        &mut s,
        Batch::new()
            .number(MetricType::Counter, "page.views", &["a:1", "b:2"], 4.0, 20)
            .number(MetricType::Gauge, "temp", &[], 19.0, 20),
    );
    let text = published.text();
    assert_eq!(
        samples(&text),
        [
            "done_total 1",
            "page_views_total{a=\"1\",b=\"2\"} 7",
            "temp 19",
        ]
    );
    assert!(text.contains("# TYPE page_views_total counter\n"));
    assert!(text.contains("# TYPE temp gauge\n"));
    assert!(text.contains("corestatsd_scrape_series 3\n"));
}

#[test]
fn timers_are_summaries_in_seconds_and_histograms_keep_their_unit() {
    let (mut s, published) = sink(Exposition::default());
    let samples_ms: Vec<(f64, f64)> = (1..=100).map(|v| (v as f64, 1.0)).collect();
    write(
        &mut s,
        Batch::new()
            .observed(MetricType::Timer, "req.time", &samples_ms, 10)
            .observed(MetricType::Histogram, "size", &[(3.0, 2.0), (5.0, 1.0)], 10),
    );
    write(
        &mut s,
        Batch::new().observed(MetricType::Timer, "req.time", &[(1000.0, 1.0)], 20),
    );
    let text = published.text();
    let lines = samples(&text);
    assert!(text.contains("# TYPE req_time summary\n"), "{text}");
    // The last window's quantiles; sum and count over both windows.
    assert!(
        lines.contains(&"req_time{env=\"prod\",quantile=\"0.5\"} 1"),
        "{text}"
    );
    assert!(
        lines.contains(&"req_time_count{env=\"prod\"} 101"),
        "{text}"
    );
    assert!(lines.contains(&"req_time_sum{env=\"prod\"} 6.05"), "{text}");
    assert!(
        lines.contains(&"size{env=\"prod\",quantile=\"0.99\"} 5"),
        "{text}"
    );
    assert!(lines.contains(&"size_sum{env=\"prod\"} 11"), "{text}");
    assert!(lines.contains(&"size_count{env=\"prod\"} 3"), "{text}");
}

#[test]
fn the_median_of_the_first_window_is_its_middle_sample_in_seconds() {
    let (mut s, published) = sink(Exposition::default());
    let ms: Vec<(f64, f64)> = [10.0, 20.0, 30.0].iter().map(|&v| (v, 1.0)).collect();
    write(
        &mut s,
        Batch::new().observed(MetricType::Timer, "t", &ms, 10),
    );
    let text = published.text();
    assert!(
        samples(&text).contains(&"t{env=\"prod\",quantile=\"0.5\"} 0.02"),
        "{text}"
    );
    assert!(
        samples(&text).contains(&"t{env=\"prod\",quantile=\"0.99\"} 0.03"),
        "{text}"
    );
}

#[test]
fn a_mapping_file_makes_histograms_with_its_buckets_for_the_names_it_maps() {
    let m = compile(
        r#"
defaults:
  observer_type: summary
  quantiles: [{quantile: 0.9, error: 0.01}]
mappings:
- match: "api.*.latency"
  name: "api_${1}_latency_seconds"
  observer_type: histogram
  histogram_options:
    buckets: [0.1, 1]
"#,
    )
    .unwrap();
    assert!(m.not_honoured.is_empty(), "{:?}", m.not_honoured);
    let (mut s, published) = sink(m.exposition);
    let ms = [(50.0, 1.0), (100.0, 1.0), (500.0, 2.0), (5000.0, 1.0)];
    write(
        &mut s,
        Batch::new()
            .observed(MetricType::Timer, "api_users_latency_seconds", &ms, 10)
            .observed(MetricType::Timer, "other", &ms, 10),
    );
    write(
        &mut s,
        Batch::new().observed(
            MetricType::Timer,
            "api_users_latency_seconds",
            &[(0.5, 1.0)],
            20,
        ),
    );
    let text = published.text();
    let lines = samples(&text);
    assert!(
        text.contains("# TYPE api_users_latency_seconds histogram\n"),
        "{text}"
    );
    for want in [
        "api_users_latency_seconds_bucket{env=\"prod\",le=\"0.1\"} 3",
        "api_users_latency_seconds_bucket{env=\"prod\",le=\"1\"} 5",
        "api_users_latency_seconds_bucket{env=\"prod\",le=\"+Inf\"} 6",
        "api_users_latency_seconds_count{env=\"prod\"} 6",
        // The defaults' one quantile for a name no mapping makes.
        "other{env=\"prod\",quantile=\"0.9\"} 5",
    ] {
        assert!(lines.contains(&want), "{want} missing:\n{text}");
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("other{env=\"prod\",quantile=\"0.5\"}"))
    );
}

#[test]
fn a_name_of_two_types_keeps_the_first_and_counts_the_other() {
    let (mut s, published) = sink(Exposition::default());
    write(
        &mut s,
        Batch::new()
            .number(MetricType::Gauge, "x", &[], 1.0, 10)
            .observed(MetricType::Histogram, "x", &[(1.0, 1.0)], 10),
    );
    let text = published.text();
    assert_eq!(samples(&text), ["x 1"]);
    assert!(
        text.contains("corestatsd_scrape_conflicts_total 1\n"),
        "{text}"
    );
}

#[test]
fn a_host_other_than_the_servers_is_a_label_and_values_are_escaped() {
    let (mut s, published) = sink(Exposition::default());
    let mut b = Batch::new();
    let m = FlushedMetric {
        value: 2.0,
        ts: 10,
        ..Default::default()
    };
    b.push(
        MetricType::Gauge,
        "g",
        &["path:a\"b\\c", "flag"],
        "web-1",
        m,
    );
    write(&mut s, b);
    assert_eq!(
        samples(&published.text()),
        ["g{flag=\"true\",host=\"web-1\",path=\"a\\\"b\\\\c\"} 2"]
    );
}

#[test]
fn series_expire_after_their_ttl_and_the_limit_refuses_new_ones() {
    let (mut s, published) = sink(Exposition {
        defaults: ObserverOptions {
            ttl_secs: Some(30),
            ..Default::default()
        },
        by_name: vec![(
            NamePattern::new("keep_$1"),
            ObserverOptions {
                ttl_secs: Some(0),
                ..Default::default()
            },
        )],
    });
    s.settings.max_series = 3;
    write(
        &mut s,
        Batch::new()
            .number(MetricType::Gauge, "old", &[], 1.0, 10)
            .number(MetricType::Gauge, "keep_me", &[], 1.0, 10)
            .number(MetricType::Gauge, "new", &[], 1.0, 10)
            .number(MetricType::Gauge, "one_too_many", &[], 1.0, 10),
    );
    assert!(
        published
            .text()
            .contains("corestatsd_scrape_series_refused_total 1\n")
    );
    write(
        &mut s,
        Batch::new().number(MetricType::Gauge, "new", &[], 2.0, 40),
    );
    let text = published.text();
    assert_eq!(samples(&text), ["keep_me 1", "new 2"]);
    assert!(
        text.contains("corestatsd_scrape_series_expired_total 1\n"),
        "{text}"
    );
}

#[test]
fn events_and_checks_are_counted_not_shown() {
    let (mut s, published) = sink(Exposition::default());
    let mut b = Batch::new();
    b.0.service_checks
        .push(crate::flushed::FlushedServiceCheck {
            name: b"db".to_vec(),
            status: 0,
            ts: None,
            host: None,
            message: None,
            tags: Vec::new(),
            origin: None,
        });
    write(&mut s, b);
    assert!(
        published
            .text()
            .contains("corestatsd_scrape_events_dropped_total 1\n")
    );
}

#[test]
fn name_patterns_match_what_a_template_makes() {
    let p = NamePattern::new("${1}_server.${2}_total");
    assert!(p.matches("web_server_req_total"));
    assert!(!p.matches("_server_req_total"));
    assert!(!p.matches("web_server_total"));
    // As Go's Expand reads it: `$2_total` names the group `2_total`.
    assert!(NamePattern::new("${1}_server.$2_total").matches("web_server_total"));
    assert!(NamePattern::new("plain").matches("plain"));
    assert!(!NamePattern::new("plain").matches("plainer"));
}
