//! Context caps and the memory limit against the real binary: past a cap every sample still
//! counts (in its metric's overflow context), every refusal is counted and named, and the
//! memory limit keeps the process' resident size within 10 % of it.

mod common;

use common::{Finished, Server, metric_lines, self_metric, send_unix, temp_dir};

const OVERFLOW: &str = "corestatsd_overflow:true";

/// Sum of a metric's values over every point, and over its overflow points alone.
fn totals(done: &Finished, name: &str) -> (f64, f64) {
    let points = metric_lines(&done.lines);
    let of = |overflow: bool| -> f64 {
        points
            .iter()
            .filter(|p| p["name"] == name)
            .filter(|p| {
                let tags = p["tags"].as_array().unwrap();
                tags.iter().any(|t| t == OVERFLOW) == overflow
            })
            .map(|p| p["value"].as_f64().unwrap())
            .sum()
    };
    (of(false) + of(true), of(true))
}

#[test]
fn past_the_caps_every_sample_counts_in_its_metrics_overflow_context() {
    let dir = temp_dir("caps");
    let path = dir.join("dsd.socket");
    let server = Server::start(&[
        "--cores",
        "0",
        "--uds-path",
        path.to_str().unwrap(),
        "--bucket-secs",
        "3600",
        "--max-contexts",
        "150",
        "--max-contexts-per-metric",
        "100",
    ]);
    // 500 contexts of `req` (100 fit its per-metric cap), then 100 of `other` (50 fit what is
    // left of --max-contexts once `req` and its overflow context hold 101).
    let mut lines: Vec<String> = (0..500).map(|i| format!("req:1|c|#pod:{i}")).collect();
    lines.extend((0..100).map(|i| format!("other:2|c|#pod:{i}")));
    send_unix(&path, &lines, 25);
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    assert_eq!(totals(&done, "req"), (500.0, 400.0));
    let (other, other_overflow) = totals(&done, "other");
    assert_eq!(other, 200.0, "every sample of `other` counts");
    let refused = |reason: &str| {
        self_metric(
            &done.lines,
            "corestatsd.contexts_refused",
            &[&format!("reason:{reason}")],
        )
    };
    assert_eq!(refused("max_contexts_per_metric"), 400.0);
    assert_eq!(
        refused("max_contexts") * 2.0,
        other_overflow,
        "each refused `other` context's one sample is in its overflow context"
    );
    assert!(refused("max_contexts") > 0.0);
    assert_eq!(
        self_metric(
            &done.lines,
            "corestatsd.contexts_refused_by_metric",
            &["metric:req"]
        ),
        400.0
    );
    assert!(
        done.stderr
            .iter()
            .any(|l| l.contains("; contexts refused most by: req=400,other=")),
        "{:#?}",
        done.stderr
    );
}

#[test]
fn a_memory_limit_refuses_new_contexts_before_the_process_passes_it() {
    const LIMIT: u64 = 64 << 20;
    let dir = temp_dir("memory-limit");
    let path = dir.join("dsd.socket");
    let mut server = Server::start(&[
        "--cores",
        "0",
        "--no-udp",
        "--uds-path",
        path.to_str().unwrap(),
        "--bucket-secs",
        "3600",
        "--memory-limit-bytes",
        &LIMIT.to_string(),
    ]);
    // About 300 B of memory each: 400k unique contexts need twice the limit.
    let lines: Vec<String> = (0..400_000)
        .map(|i| {
            format!(
                "unique.{}:1|c|#env:prod,region:eu-west-1,service:checkout,request_id:{i:010}",
                i % 10
            )
        })
        .collect();
    send_unix(&path, &lines, 20);
    server.wait_for_stderr("the memory limit engaging", |l| {
        l.contains("corestatsd: memory ") && l.contains("new contexts go to overflow contexts")
            || l.contains("also dropping events")
    });
    let peak = server.peak_rss_bytes();
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    assert!(
        done.stderr.iter().any(|l| l.contains(&format!(
            "; memory limit {LIMIT} bytes (--memory-limit-bytes)"
        ))),
        "the start-up line states the limit: {:#?}",
        done.stderr
    );
    assert!(
        peak <= LIMIT + LIMIT / 10,
        "peak resident {peak} bytes, limit {LIMIT}"
    );
    let total: f64 = (0..10)
        .map(|n| totals(&done, &format!("unique.{n}")).0)
        .sum();
    assert_eq!(total, 400_000.0, "every sample counts");
    let refused = self_metric(
        &done.lines,
        "corestatsd.contexts_refused",
        &["reason:memory_limit"],
    );
    assert!(refused > 0.0, "refusals are counted");
    let live = self_metric(&done.lines, "corestatsd.live_contexts", &[]);
    assert!(
        live + refused >= 400_000.0,
        "{live} live, {refused} refused"
    );
}
