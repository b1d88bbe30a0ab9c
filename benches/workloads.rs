//! Shared metric workloads for the benchmarks: the shapes the targets name.

#![allow(dead_code)]

use corestatsd::bench_api::{AggregateConfig, Aggregator};

/// Ten tags of realistic length; with the name and value the line is about 250 bytes.
pub fn tagged_line(ctx: usize, kind: &str, value: u64) -> String {
    format!(
        "checkout.request.latency.{:05}:{value}|{kind}|#env:production,region:eu-west-1,\
         az:eu-west-1a,service:checkout-api,version:1.24.3-build.512,pod:checkout-api-7d9f8b6c5-xk2lp,\
         team:payments,tier:backend,cluster:prod-eu-1,endpoint:/api/v2/checkout/orders/{:07}",
        ctx % 100_000,
        ctx
    )
}

/// A line of a context never seen before (issue 13's shape): a 30-byte name (1000 distinct),
/// ten tags of which one (`request_id`) is unique to the context; about 230 bytes.
pub fn unique_line(ctx: usize) -> String {
    format!(
        "svc.checkout.request.time.{:04}:1|c|#env:production,region:eu-west-1,az:eu-west-1a,\
         service:checkout-api,version:1.24.3,team:payments,tier:backend,cluster:prod-eu-1,\
         endpoint:/api/v2/orders,request_id:{ctx:010}",
        ctx % 1000
    )
}

/// `n` mixed-type tagged lines over `contexts` contexts (types rotate with the context).
pub fn mixed_tagged(n: usize, contexts: usize) -> Vec<Vec<u8>> {
    const KINDS: [&str; 6] = ["c", "g", "h", "ms", "d", "s"];
    (0..n)
        .map(|i| {
            let ctx = (i * 7919) % contexts;
            tagged_line(ctx, KINDS[ctx % KINDS.len()], (i % 1000) as u64).into_bytes()
        })
        .collect()
}

/// `n` packed untagged counters (`name:1:2:3|c`) over `contexts` names.
pub fn packed_counters(n: usize, contexts: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("app.requests.{}:1:2:3|c", (i * 7919) % contexts).into_bytes())
        .collect()
}

pub fn aggregator() -> Aggregator {
    aggregator_with(|_| {})
}

/// The benchmarks' aggregator with `adjust` applied to its configuration.
pub fn aggregator_with(adjust: impl FnOnce(&mut AggregateConfig)) -> Aggregator {
    let mut cfg = AggregateConfig {
        bucket_secs: 10,
        exact_samples: 512,
        set_exact_members: 4096,
        counter_zero_fill_secs: 300,
        context_expiry_secs: 20,
        default_host: Some(b"bench-host".to_vec()),
        owners: 1,
        max_pending_events: 10_000,
        origin_precedence: Default::default(),
        names: Default::default(),
        max_contexts: None,
        max_contexts_per_metric: None,
        context_stats: false,
        gauge_deltas: false,
    };
    adjust(&mut cfg);
    Aggregator::new(cfg, 1_000_000)
}
