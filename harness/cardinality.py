"""The cardinality rows of scripts/bench.sh: corestatsd alone (no peer takes these shapes), one
server core, corestatsd-blast on the generator core, UDP loopback, every line a counter of 1 with
10 tags, one unique per context (the `new-contexts` and `churn` presets; `mixed-100k` for the
cold start).

  cold-start    mixed-100k at 1.5M metrics/s from a fresh start: no warm-up, so its 100k
                contexts are created under full load
  new-contexts  500k brand-new contexts/s for 3 s (every line a new context)
  live-1m       1M contexts created at 500k/s, then all of them cycled at 1M metrics/s for
                --live-secs (default 60) with 10 s windows
  churn         the same 1M live, 10 % replaced every 10 s window, at 1M metrics/s for
                --churn-secs (default 600); the server runs with --counter-zero-fill-secs 20 so
                a replaced counter goes when other contexts do (300 s of zero-fill would hold
                30 windows of replaced counters: by design, not a leak)

Per row: what was sent and what the server counted (its window lines on stderr: the downstream is
jsonl:/dev/null, as 1M points a window would fill the disk), kernel drops and the windows that had
any, peak RSS, RSS (above idle) and heap per live context from the window line with the most
contexts (heap as the server's allocator counts it), the longest flush and receive pause, and for
churn how far RSS moved after the second window, window peak against window peak.
"""

import json
import os
import re
import subprocess
import threading
import time

SCENARIOS = ["cold-start", "new-contexts", "live-1m", "churn"]


def phases(name, args):
    """(preset, metrics/s, seconds, extra blast flags) per phase, and extra server flags."""
    create = ("churn", 500_000, 2.2, ["--churn-share", "0"])
    if name == "cold-start":
        return [("mixed-100k", 1_500_000, args.seconds, [])], []
    if name == "new-contexts":
        return [("new-contexts", 500_000, 3, [])], []
    if name == "live-1m":
        return [create, ("churn", 1_000_000, args.live_secs, ["--churn-share", "0"])], []
    if name == "churn":
        churn = ("churn", 1_000_000, args.churn_secs, ["--churn-share", "0.1"])
        return [create, churn], ["--counter-zero-fill-secs", "20"]
    raise ValueError(name)


def blast(h, port, core, preset, rate, seconds, extra):
    cmd = [os.path.join(h.ROOT, "target/release/corestatsd-blast"), "--target",
           f"127.0.0.1:{port}", "--preset", preset, "--cores", str(core), "--duration-secs",
           str(seconds), "--metrics-per-sec", str(rate)] + extra
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


class RssSampler(threading.Thread):
    """VmRSS every half second, with the time since it started."""

    def __init__(self, h, pid):
        super().__init__(daemon=True)
        self.h, self.pid, self.samples, self.done = h, pid, [], threading.Event()
        self.start()

    def run(self):
        t0 = time.monotonic()
        while not self.done.wait(0.5):
            self.samples.append((time.monotonic() - t0, self.h.status_kib(self.pid, "VmRSS")))


def windows(err_path):
    """The server's window lines: {field: int}."""
    out = []
    with open(err_path) as f:
        for line in f:
            if re.match(r"corestatsd: window \d+:", line):
                out.append({k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)})
    return out


def run_scenario(h, name, args, work):
    plan, server_extra = phases(name, args)
    server = h.Server("corestatsd", args.server_core, work, args,
                      downstream="jsonl:/dev/null", extra=server_extra)
    snmp0 = h.rcvbuf_errors()
    sent, started = [], None
    for i, (preset, rate, seconds, extra) in enumerate(plan):
        if i == len(plan) - 1:
            sampler, started = RssSampler(h, server.pid), time.monotonic()
        sent.append(blast(h, server.port, args.generator_core, preset, rate, seconds, extra))
    sampler.done.set()
    rss_end = h.status_kib(server.pid, "VmRSS")
    hwm = h.status_kib(server.pid, "VmHWM")
    server.stop()  # a clean stop drains the socket and flushes the open window
    w = windows(server.err)
    live = max((x.get("live_contexts", 0) for x in w), default=0)
    # Memory per context from one window line: its live contexts, heap and RSS of one moment
    # (the last line with the most contexts; the stop's own line follows the traffic's end).
    at = next((x for x in reversed(w) if x.get("live_contexts", 0) == live), {})
    counted = sum(x.get("metrics", 0) for x in w)
    total_sent = sum(s["metrics"] for s in sent)
    measured = sent[-1]
    # Churn: how far RSS moved after the second window of the measured phase. Within a window
    # RSS swings by what the close holds for a moment (partials, points: 70 MB at 1.2M
    # contexts), so windows are compared like with like: the highest sample of each 10 s of the
    # phase, from the third on, against the third's. (Until run 3 the first sample after 20 s
    # was compared with the highest after it, a trough against a close's peak: +23.8 % for a
    # run whose peaks went 445, 460, 461, 461, ... MB.)
    peaks = {}
    for t, kib in sampler.samples:
        peaks[int(t // 10)] = max(peaks.get(int(t // 10), 0), kib)
    steady = [peaks[k] for k in sorted(peaks) if k >= 2]
    drift = (max(steady) - steady[0]) / steady[0] if name == "churn" and steady else None
    return {
        "scenario": name,
        "offered_metrics_per_sec": measured["metrics"] / measured["seconds"],
        "seconds": time.monotonic() - started,
        "sent_metrics": total_sent, "counted_metrics": counted,
        "lost_metrics": total_sent - counted,
        "kernel_drops_telemetry": sum(x.get("kernel_drops", 0) for x in w),
        "kernel_drops_snmp": h.rcvbuf_errors() - snmp0,
        "windows": len(w), "windows_with_drops": sum(1 for x in w if x.get("kernel_drops")),
        "live_contexts_max": live, "peak_rss_kib": hwm, "rss_end_kib": rss_end,
        "rss_per_context_bytes": ((at.get("rss_bytes", 0) - server.idle_rss * 1024) / live
                                  if live else None),
        "heap_per_context_bytes": at.get("heap_bytes", 0) / live if live else None,
        "flush_max_ms": max((x.get("flush_duration_us", 0) for x in w), default=0) / 1000,
        "receive_max_pause_ms": max((x.get("receive_max_pause_us", 0) for x in w),
                                    default=0) / 1000,
        "rss_drift_after_second_window": drift,
        "rss_samples_kib": sampler.samples,
    }


def markdown(h, rows):
    out = ["| scenario | offered metrics/s | sent | lost (sent−counted) | kernel drops (server / snmp) "
           "| windows with drops | live contexts | peak RSS MiB | RSS B/context | heap B/context "
           "| flush max ms | receive max pause ms | RSS drift after 2nd window (window peaks) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        drift = (f"{100 * r['rss_drift_after_second_window']:+.1f} %"
                 if r["rss_drift_after_second_window"] is not None else "–")
        out.append(
            f"| {r['scenario']} | {h.fmt(r['offered_metrics_per_sec'])} "
            f"| {h.fmt(float(r['sent_metrics']))} | {h.fmt(float(r['lost_metrics']))} "
            f"| {r['kernel_drops_telemetry']} / {r['kernel_drops_snmp']} "
            f"| {r['windows_with_drops']} of {r['windows']} | {h.fmt(float(r['live_contexts_max']))} "
            f"| {r['peak_rss_kib'] / 1024:.0f} | {h.fmt(r['rss_per_context_bytes'])} "
            f"| {h.fmt(r['heap_per_context_bytes'])} | {h.fmt(r['flush_max_ms'])} "
            f"| {h.fmt(r['receive_max_pause_ms'])} | {drift} |")
    return "\n".join(out)
