//! `/status`: JSON for people and scripts (`corestatsd top` reads it): the version and the
//! configuration's summary, then per shard and in total the last window's rates (packets,
//! metrics, bytes per second), its drops by cause, live contexts, close time and receive pause,
//! and per downstream its delivery state.

use serde_json::{Map, Value, json};

use super::Summary;
use crate::counters::{Counters, Series};
use crate::telemetry::board::{Board, Published};

/// The counters that count something lost or refused, by the name `/status` gives the cause.
pub const DROPS: &[&str] = &[
    "kernel_drops",
    "parse_errors",
    "event_parse_errors",
    "service_check_parse_errors",
    "truncated_datagrams",
    "unterminated_lines",
    "unsupported",
    "blocked_metrics",
    "pending_full_drops",
    "memory_shed_drops",
    "overflow_full_drops",
    "sink_queue_drops",
    "receive_errors",
    "forward_errors",
];

fn sum(series: &dyn Series) -> u64 {
    let mut n = 0;
    series.each(&mut Vec::new(), &mut |_, v| n += v);
    n
}

fn window_of(c: &Counters, secs: f64) -> Value {
    let mut drops = Map::new();
    let found = |name: &str| -> u64 {
        let mut out = 0;
        c.visit(&mut |spec, series| {
            if spec.name == name {
                out = sum(series);
            }
        });
        out
    };
    for name in DROPS {
        drops.insert((*name).into(), json!(found(name)));
    }
    let (packets, bytes) = (found("packets"), found("bytes"));
    json!({
        "packets": packets,
        "metrics": c.metrics,
        "bytes": bytes,
        "packets_per_sec": packets as f64 / secs,
        "metrics_per_sec": c.metrics as f64 / secs,
        "bytes_per_sec": bytes as f64 / secs,
        "drops": drops,
        "live_contexts": c.live_contexts,
        "flush_ms": c.flush_duration_us as f64 / 1e3,
        "receive_max_pause_ms": c.receive_max_pause_us as f64 / 1e3,
    })
}

pub fn render(p: &Published, board: &Board, summary: &Summary) -> String {
    let secs = f64::from(summary.window_secs.max(1));
    let mut total = Counters::default();
    for c in &p.last {
        total.fold(c);
    }
    let beats = board.since_beats();
    let reloads = board.reloads_applied();
    let (refused, last_refusal) = board.refused_reloads();
    let shards: Vec<Value> = p
        .last
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut v = window_of(c, secs);
            v["shard"] = json!(i);
            v["cpu"] = json!(summary.cores.get(i));
            v["heartbeat_age_ms"] = json!(beats.get(i).copied().flatten().map(|a| a.as_millis()));
            v["reloads_applied"] = json!(reloads.get(i));
            v
        })
        .collect();
    let doc = json!({
        "version": summary.version,
        "uptime_secs": board.uptime().as_secs_f64(),
        "ready": board.is_ready(),
        "config": summary,
        "windows": p.windows,
        "last_window": p.last_window,
        "heap_bytes": p.heap_bytes,
        "rss_bytes": p.rss_bytes,
        "shards": shards,
        "total": window_of(&total, secs),
        "downstreams": p.downstreams,
        "reloads_refused": refused,
        "last_refused_reload": last_refusal,
    });
    let mut out =
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::Transport;
    use crate::protocol::ParseError;

    #[test]
    fn every_drop_cause_is_a_counter() {
        let names: Vec<&str> = Counters::SPECS.iter().map(|s| s.name).collect();
        for d in DROPS {
            assert!(names.contains(d), "{d} is no counter");
        }
    }

    #[test]
    fn the_last_window_reads_as_rates_per_shard_and_in_total() {
        let board = Board::new(2);
        let mut c = Counters::default();
        c.packets[Transport::Udp] = 50;
        c.metrics = 100;
        c.kernel_drops = 4;
        c.parse_errors[ParseError::ALL[0]] = 2;
        c.live_contexts = 7;
        c.flush_duration_us = 2_500;
        board.post_window(10, [(0, &c), (1, &c)], 1, 2);
        let s = super::super::routes::tests::summary();
        let v: Value = serde_json::from_str(&render(&board.published(), &board, &s)).unwrap();
        assert_eq!(v["shards"][1]["metrics_per_sec"], json!(10.0));
        assert_eq!(v["shards"][0]["cpu"], json!(0));
        assert_eq!(v["total"]["packets"], json!(100));
        assert_eq!(v["total"]["drops"]["kernel_drops"], json!(8));
        assert_eq!(v["total"]["drops"]["parse_errors"], json!(4));
        assert_eq!(v["total"]["live_contexts"], json!(14));
        assert_eq!(v["total"]["flush_ms"], json!(2.5));
        assert_eq!(v["config"]["downstream"], json!("jsonl:-"));
        assert_eq!(v["windows"], json!(1));
    }
}
