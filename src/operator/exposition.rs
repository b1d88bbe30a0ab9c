//! `/metrics`: every self-metric in the Prometheus text exposition format (version 0.0.4),
//! generated from the counters' declarations like the `corestatsd.*` points: names prefixed
//! `corestatsd_`, counts as counters with `_total` (sums since the start), levels as gauges, and
//! the two per-window maxima (window close time, receive pause) as histograms of one
//! observation per window. Every series is labelled `shard`, and `transport` and the like where
//! its counter has labels; series of transports without a listener are left out.

use std::fmt::Write as _;

use super::Summary;
use crate::counters::{Counters, Kind, Labels};
use crate::telemetry::board::{BUCKETS_US, Board, Histogram, Published};

/// A counter's histogram and name, for the `Kind::Max` counters.
fn histogram_of<'a>(name: &str, p: &'a Published) -> Option<(&'static str, &'a [Histogram])> {
    match name {
        "flush_duration_us" => Some(("corestatsd_flush_duration_seconds", &p.flush)),
        "receive_max_pause_us" => Some(("corestatsd_receive_pause_seconds", &p.pause)),
        _ => None,
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn labels_text(shard: Option<usize>, labels: &Labels) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(s) = shard {
        parts.push(format!("shard=\"{s}\""));
    }
    for (k, v) in labels {
        parts.push(format!("{k}=\"{}\"", escape_label(v)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help.trim()));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

pub fn render(p: &Published, board: &Board, summary: &Summary) -> String {
    let mut out = String::with_capacity(64 << 10);
    let enabled = |labels: &Labels| {
        labels
            .iter()
            .filter(|(k, _)| *k == "transport")
            .all(|(_, v)| summary.transports.contains(v))
    };
    // One pass per counter over every shard, so each family is written together.
    for (i, spec) in Counters::SPECS.iter().enumerate() {
        if spec.kind == Kind::Max {
            if let Some((name, hists)) = histogram_of(spec.name, p) {
                header(&mut out, name, "histogram", spec.help);
                for (shard, h) in hists.iter().enumerate() {
                    write_histogram(&mut out, name, shard, h);
                }
            }
            continue;
        }
        let (name, kind) = match spec.kind {
            Kind::Count => (format!("corestatsd_{}_total", spec.name), "counter"),
            _ => (format!("corestatsd_{}", spec.name), "gauge"),
        };
        header(&mut out, &name, kind, spec.help);
        for (shard, totals) in p.totals.iter().enumerate() {
            let mut at = 0;
            totals.visit(&mut |_, series| {
                if at == i {
                    series.each(&mut Vec::new(), &mut |labels, v| {
                        if enabled(labels) {
                            let l = labels_text(Some(shard), labels);
                            let _ = writeln!(out, "{name}{l} {v}");
                        }
                    });
                }
                at += 1;
            });
        }
    }
    let process: [(&str, &str, &str, f64); 5] = [
        (
            "corestatsd_windows_total",
            "counter",
            "Windows completed (every shard reported its counters).",
            p.windows as f64,
        ),
        (
            "corestatsd_ready",
            "gauge",
            "1 once every shard runs and every socket is bound.",
            f64::from(u8::from(board.is_ready())),
        ),
        (
            "corestatsd_uptime_seconds",
            "gauge",
            "Seconds since the process started.",
            board.uptime().as_secs_f64(),
        ),
        (
            "corestatsd_heap_bytes",
            "gauge",
            "Heap bytes in use at the last window close (the counting allocator's count).",
            p.heap_bytes as f64,
        ),
        (
            "corestatsd_rss_bytes",
            "gauge",
            "Resident set size at the last window close.",
            p.rss_bytes as f64,
        ),
    ];
    for (name, kind, help, v) in process {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    header(
        &mut out,
        "corestatsd_build_info",
        "gauge",
        "The version running, as a label.",
    );
    let _ = writeln!(
        out,
        "corestatsd_build_info{{version=\"{}\"}} 1",
        escape_label(summary.version)
    );
    write_downstreams(&mut out, p);
    out
}

fn write_histogram(out: &mut String, name: &str, shard: usize, h: &Histogram) {
    let mut cumulative = 0;
    for (bound, n) in BUCKETS_US.iter().zip(&h.counts) {
        cumulative += n;
        let le = *bound as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{shard=\"{shard}\",le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{shard=\"{shard}\",le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(
        out,
        "{name}_sum{{shard=\"{shard}\"}} {}",
        h.sum_us as f64 / 1e6
    );
    let _ = writeln!(out, "{name}_count{{shard=\"{shard}\"}} {}", h.count);
}

fn write_downstreams(out: &mut String, p: &Published) {
    type Field = fn(&crate::telemetry::board::DownstreamStatus) -> u64;
    let families: [(&str, &str, &str, Field); 8] = [
        (
            "written_points_total",
            "counter",
            "Points the sink thread handed the downstream.",
            |d| d.written_points,
        ),
        (
            "failed_points_total",
            "counter",
            "Points the downstream could not take (write errors).",
            |d| d.failed_points,
        ),
        (
            "delivered_payloads_total",
            "counter",
            "HTTP payloads delivered.",
            |d| d.delivered_payloads,
        ),
        ("retries_total", "counter", "HTTP requests retried.", |d| {
            d.retries
        }),
        (
            "dropped_payloads_total",
            "counter",
            "HTTP payloads given up (refused, queue and spill full, stop timeout).",
            |d| d.dropped_payloads,
        ),
        (
            "dropped_points_total",
            "counter",
            "Points in the payloads given up.",
            |d| d.dropped_points,
        ),
        (
            "queued_bytes",
            "gauge",
            "Payload bytes waiting in memory.",
            |d| d.queued_bytes,
        ),
        (
            "spilled_bytes",
            "gauge",
            "Payload bytes waiting in the spill directory.",
            |d| d.spilled_bytes,
        ),
    ];
    if p.downstreams.is_empty() {
        return;
    }
    for (suffix, kind, help, field) in families {
        let name = format!("corestatsd_downstream_{suffix}");
        header(out, &name, kind, help);
        for d in &p.downstreams {
            let _ = writeln!(
                out,
                "{name}{{downstream=\"{}\"}} {}",
                escape_label(&d.name),
                field(d)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::Transport;
    use crate::telemetry::board::DownstreamStatus;

    #[test]
    fn counters_sum_over_windows_per_shard_and_disabled_transports_stay_out() {
        let board = Board::new(2);
        let mut c = Counters::default();
        c.packets[Transport::Udp] = 3;
        c.packets[Transport::Tcp] = 9;
        c.live_contexts = 40;
        c.flush_duration_us = 1_500;
        board.post_window(10, [(0, &c), (1, &c)], 100, 200);
        c.live_contexts = 41;
        board.post_window(20, [(0, &c)], 100, 200);
        board.post_downstreams(vec![DownstreamStatus {
            name: "jsonl:\"x\"".into(),
            written_points: 12,
            ..DownstreamStatus::default()
        }]);
        let text = render(
            &board.published(),
            &board,
            &super::super::routes::tests::summary(),
        );
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(has("# TYPE corestatsd_packets_total counter"), "{text}");
        assert!(has(
            "corestatsd_packets_total{shard=\"0\",transport=\"udp\"} 6"
        ));
        assert!(has(
            "corestatsd_packets_total{shard=\"1\",transport=\"udp\"} 3"
        ));
        assert!(!text.contains("transport=\"tcp\""), "tcp has no listener");
        assert!(has("corestatsd_live_contexts{shard=\"0\"} 41"));
        assert!(has("# TYPE corestatsd_flush_duration_seconds histogram"));
        assert!(has(
            "corestatsd_flush_duration_seconds_bucket{shard=\"0\",le=\"0.001\"} 0"
        ));
        assert!(has(
            "corestatsd_flush_duration_seconds_bucket{shard=\"0\",le=\"0.002\"} 2"
        ));
        assert!(has(
            "corestatsd_flush_duration_seconds_count{shard=\"1\"} 1"
        ));
        assert!(has(
            "corestatsd_flush_duration_seconds_sum{shard=\"0\"} 0.003"
        ));
        assert!(!text.contains("corestatsd_flush_duration_us"));
        assert!(has("corestatsd_windows_total 2"));
        assert!(has(
            "corestatsd_downstream_written_points_total{downstream=\"jsonl:\\\"x\\\"\"} 12"
        ));
        // Every family has its help and type, each once.
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types, helps);
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn every_per_window_maximum_has_a_histogram() {
        let p = Published::default();
        for spec in Counters::SPECS.iter().filter(|s| s.kind == Kind::Max) {
            assert!(histogram_of(spec.name, &p).is_some(), "{}", spec.name);
        }
    }
}
