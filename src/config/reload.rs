//! SIGHUP: the command line read again, with its `--config` file and the environment, into a
//! new `Config`, and what of it a running server takes.
//!
//! The map stage (mapper, namespace, block list, extra tags, tags in names, mapper cache) and the
//! context caps are applied on every shard between two samples (`aggregate::Reload`). Everything
//! else (listeners, cores, windows, downstream, limits) needs a restart: a reload that changes
//! it applies the rest and names each of those settings once. A file that does not load, or a
//! setting that does not check, is refused whole and the running configuration stays.

use std::ffi::OsString;

use super::{Config, FlagsError, parse_args};
use crate::aggregate::Reload;

/// The configuration `args` give now: what a reload applies, and the settings it changed that
/// only a restart applies (by flag).
pub fn reload(old: &Config, args: Vec<OsString>) -> Result<(Reload, Vec<&'static str>), String> {
    let flags = parse_args(args).map_err(|e| match e {
        FlagsError::Setting(s) => s,
        FlagsError::Clap(e) => e.kind().to_string(),
    })?;
    let new = Config::from_flags(flags)?;
    let restart = restart_only_changes(old, &new);
    let a = new.aggregate;
    Ok((
        Reload {
            names: a.names,
            max_contexts: a.max_contexts,
            max_contexts_per_metric: a.max_contexts_per_metric,
        },
        restart,
    ))
}

/// The settings a running server keeps until a restart that differ between `old` and `new`.
pub(crate) fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |differs: bool, flag: &'static str| {
        if differs && !changed.contains(&flag) {
            changed.push(flag);
        }
    };
    let dbg =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let (a, b) = (&old.aggregate, &new.aggregate);
    check(old.cores != new.cores, "--cores");
    check(old.udp_addr != new.udp_addr, "--udp-addr");
    check(old.uds_paths != new.uds_paths, "--uds-path");
    check(old.uds_mode != new.uds_mode, "--uds-mode");
    check(
        old.uds_stream_path != new.uds_stream_path,
        "--uds-stream-path",
    );
    check(old.tcp_addr != new.tcp_addr, "--tcp-addr");
    check(dbg(&old.tcp_framing, &new.tcp_framing), "--tcp-framing");
    check(
        old.tcp_idle_timeout != new.tcp_idle_timeout,
        "--tcp-idle-timeout-secs",
    );
    check(
        old.max_connections_per_shard != new.max_connections_per_shard,
        "--max-connections-per-shard",
    );
    check(dbg(&old.origin, &new.origin), "--origin-detection");
    check(
        old.so_rcvbuf_bytes != new.so_rcvbuf_bytes,
        "--so-rcvbuf-bytes",
    );
    check(
        old.buffer_size_bytes != new.buffer_size_bytes,
        "--buffer-size-bytes",
    );
    check(
        old.recv_batch_datagrams != new.recv_batch_datagrams,
        "--recv-batch-datagrams",
    );
    check(a.bucket_secs != b.bucket_secs, "--bucket-secs");
    check(
        a.exact_samples != b.exact_samples,
        "--histogram-exact-samples",
    );
    check(
        a.counter_zero_fill_secs != b.counter_zero_fill_secs,
        "--counter-zero-fill-secs",
    );
    check(
        a.context_expiry_secs != b.context_expiry_secs,
        "--context-expiry-secs",
    );
    check(a.default_host != b.default_host, "--hostname");
    check(
        a.max_pending_events != b.max_pending_events,
        "--max-pending-events",
    );
    check(
        dbg(&a.origin_precedence, &b.origin_precedence),
        "--origin-precedence",
    );
    check(a.context_stats != b.context_stats, "--context-stats");
    check(a.gauge_deltas != b.gauge_deltas, "--gauge-deltas");
    check(
        dbg(&old.histogram, &new.histogram),
        "--histogram-aggregates",
    );
    check(old.downstream != new.downstream, "--downstream");
    check(
        dbg(&old.downstream_settings, &new.downstream_settings),
        "the downstream's settings",
    );
    check(old.forward_addr != new.forward_addr, "--forward-addr");
    check(dbg(&old.eol_required, &new.eol_required), "--eol-required");
    check(old.self_metrics != new.self_metrics, "--no-self-metrics");
    check(
        old.self_metrics_per_shard != new.self_metrics_per_shard,
        "--self-metrics-per-shard",
    );
    check(old.memory_limit != new.memory_limit, "--memory-limit-bytes");
    check(
        old.spin_before_park != new.spin_before_park,
        "--spin-before-park-us",
    );
    check(
        old.sink_queue_max_points != new.sink_queue_max_points,
        "--sink-queue-max-points",
    );
    check(old.http != new.http, "--http-addr");
    check(old.capture_dir != new.capture_dir, "--capture-dir");
    check(old.control_socket != new.control_socket, "--control-socket");
    changed
}
