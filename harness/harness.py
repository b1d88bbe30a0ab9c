#!/usr/bin/env python3
"""The benchmark harness behind scripts/bench.sh: corestatsd and, where installed, its peers
(netdata's statsd plugin, Etsy statsd), each pinned to the server core and fed the same
corestatsd-blast workload from the generator core over UDP loopback, preset by preset, at a fixed
rate and flat out; optionally a step mode that raises the rate until the first drop.

Per run: metrics/s offered and processed; drops three ways (sender count minus what the server
counted, the server's own kernel-drop telemetry, /proc/net/snmp RcvbufErrors); server CPU seconds
and ns per metric (/proc/PID/stat); peak RSS and RSS per live context (/proc/PID/status); longest
window flush. Peers are measured the same way except that they count nothing themselves: their
"processed" is what the kernel delivered to their socket (sent minus RcvbufErrors, scaled from
datagrams to metrics), and they ignore DogStatsD tags.

Writes a Markdown table to stdout, OUT/bench.json and OUT/bench.svg. Standard library only.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")

# name: (fixed rate in metric lines/s, what the target is about)
PRESETS = {
    "counters-1k": 4_000_000,
    "mixed-100k": 1_500_000,
    "mixed-1m": 1_500_000,
    # ~3 samples per line: 700k lines/s is ~2.1M samples/s.
    "distributions": 700_000,
    "one-per-datagram": 400_000,
}


def rcvbuf_errors():
    with open("/proc/net/snmp") as f:
        rows = [l.split() for l in f if l.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 (1-based); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Server:
    """One server process under test, pinned to `core`, listening on a UDP loopback port."""

    def __init__(self, kind, core, work, args, downstream=None, extra=()):
        self.kind, self.core, self.work = kind, core, work
        self.out = os.path.join(work, f"{kind}.out")
        self.err = os.path.join(work, f"{kind}.err")
        for p in (self.out, self.err):
            if os.path.exists(p):
                os.remove(p)
        self.port = free_udp_port()
        pin = ["taskset", "-c", str(core)]
        if kind == "corestatsd":
            cmd = [os.path.join(ROOT, "target/release/corestatsd"), "--cores", str(core),
                   "--udp-addr", f"127.0.0.1:{self.port}",
                   "--so-rcvbuf-bytes", str(args.rcvbuf),
                   "--downstream", downstream or f"jsonl:{self.out}",
                   "--hostname", "bench"] + list(extra) + shlex.split(args.server_args)
        elif kind == "netdata":
            conf = write_netdata_conf(work, self.port)
            cmd = pin + ["netdata", "-D", "-c", conf]
        elif kind == "statsd":
            conf = os.path.join(work, "statsd.js")
            with open(conf, "w") as f:
                f.write('{port: %d, address: "127.0.0.1", backends: [], flushInterval: 1000,\n'
                        ' mgmt_port: %d, mgmt_address: "127.0.0.1"}\n' % (self.port, free_tcp_port()))
            cmd = pin + ["node", statsd_bin(), conf]
        self.proc = subprocess.Popen(cmd, stdout=open(self.err + ".stdout", "w"),
                                     stderr=open(self.err, "w"), start_new_session=True)
        wait_for_udp_port(self.port, self.proc)
        time.sleep(1.0)  # warm-up: idle RSS is read after it
        self.pid = self.proc.pid
        self.idle_rss = status_kib(self.pid, "VmRSS")

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def free_udp_port():
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_tcp_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for_udp_port(port, proc):
    hexport = f"{port:04X}"
    for _ in range(300):
        if proc.poll() is not None:
            sys.exit(f"the server under test exited with {proc.returncode} before listening")
        with open("/proc/net/udp") as f:
            if any(l.split()[1].endswith(":" + hexport) for l in list(f)[1:]):
                return
        time.sleep(0.05)
    sys.exit(f"nothing listens on udp port {port} after 15 s")


def write_netdata_conf(work, port):
    d = os.path.join(work, "netdata")
    for sub in ("cache", "lib", "log", "run"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    plugins = "\n".join(f"    {p} = no" for p in (
        "proc", "diskspace", "cgroups", "tc", "idlejitter", "timex", "checks", "apps", "python.d",
        "charts.d", "go.d", "ebpf", "perf", "slabinfo"))
    conf = os.path.join(d, "netdata.conf")
    with open(conf, "w") as f:
        f.write(f"""[global]
    run as user = {os.environ.get("USER", "root")}
    update every = 1
    memory mode = ram
[db]
    mode = ram
[directories]
    cache = {d}/cache
    lib = {d}/lib
    log = {d}/log
    run = {d}/run
[logs]
    debug = /dev/null
    error = {d}/log/error.log
    access = none
[web]
    mode = none
[health]
    enabled = no
[ml]
    enabled = no
[registry]
    enabled = no
[plugins]
    enable running new plugins = no
{plugins}
    statsd = yes
[statsd]
    enabled = yes
    bind to = udp:127.0.0.1:{port}
    update every (flushInterval) = 1
    threads = 1
""")
    return conf


def statsd_bin():
    return os.path.join(ROOT, "harness/peers/node_modules/statsd/bin/statsd")


def peers_available():
    found = []
    if shutil.which("netdata"):
        found.append("netdata")
    if shutil.which("node") and os.path.exists(statsd_bin()):
        found.append("statsd")
    return found


def blast(port, preset, core, seconds, rate):
    cmd = [os.path.join(ROOT, "target/release/corestatsd-blast"), "--target", f"127.0.0.1:{port}",
           "--preset", preset, "--cores", str(core), "--duration-secs", str(seconds)]
    if rate:
        cmd += ["--metrics-per-sec", str(rate)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def self_metrics(path):
    """Sums (counts) or maxima (gauges) of corestatsd.* metrics in a JSONL file."""
    total = {}
    with open(path) as f:
        for line in f:
            if '"corestatsd.' not in line:
                continue
            m = json.loads(line)
            name, v = m["name"], m.get("value") or 0.0
            if m["type"] == "gauge":
                total[name] = max(total.get(name, 0.0), v)
            else:
                total[name] = total.get(name, 0.0) + v
    return total


CONTEXTS = {"counters-1k": 1000, "mixed-100k": 100_000, "mixed-1m": 1_000_000,
            "distributions": 1000, "one-per-datagram": 1000}
# Warm-up pace: slow enough for any server here to create contexts without loss.
WARM_RATE = 200_000


def run_one(kind, preset, rate, args, work):
    server = Server(kind, args.server_core, work, args)
    # Warm-up: every context is created before the measured phase, as on a server that has
    # been running (creating a context costs far more than updating one).
    snmp_w = rcvbuf_errors()
    warm_secs = max(0.5, 1.3 * CONTEXTS[preset] / WARM_RATE)
    warm = blast(server.port, preset, args.generator_core, warm_secs, WARM_RATE)
    time.sleep(0.5)
    warm_drops = rcvbuf_errors() - snmp_w
    snmp0, cpu0 = rcvbuf_errors(), cpu_seconds(server.pid)
    sent = blast(server.port, preset, args.generator_core, args.seconds, rate)
    time.sleep(1.5)  # the last window closes and everything queued is read
    snmp1, cpu1 = rcvbuf_errors(), cpu_seconds(server.pid)
    rss, hwm = status_kib(server.pid, "VmRSS"), status_kib(server.pid, "VmHWM")
    server.stop()
    secs = sent["seconds"]
    kernel = snmp1 - snmp0
    row = {
        "server": kind, "preset": preset, "mode": "fixed" if rate else "flat out",
        "offered_metrics_per_sec": sent["metrics"] / secs,
        "offered_samples_per_sec": sent["samples"] / secs,
        "sent_metrics": sent["metrics"], "sent_packets": sent["packets"],
        "kernel_drops_snmp": kernel, "cpu_seconds": cpu1 - cpu0,
        "warmup_metrics": warm["metrics"], "warmup_kernel_drops": warm_drops,
        "idle_rss_kib": server.idle_rss, "peak_rss_kib": hwm,
    }
    if kind == "corestatsd":
        t = self_metrics(server.out)
        # The telemetry covers the warm-up too; take its share out.
        received = t.get("corestatsd.metrics", 0) - warm["metrics"]
        live = t.get("corestatsd.live_contexts", 0)
        row.update({
            "processed_metrics": received,
            "drops_sender_minus_server": sent["metrics"] - received,
            "kernel_drops_telemetry": t.get("corestatsd.kernel_drops", 0) - warm_drops,
            "live_contexts": live,
            "rss_per_context_bytes": (rss - server.idle_rss) * 1024 / live if live else None,
            "flush_max_ms": t.get("corestatsd.flush_duration_us", 0) / 1000,
        })
    else:
        delivered = 1 - kernel / sent["packets"] if sent["packets"] else 0
        row.update({
            "processed_metrics": sent["metrics"] * max(delivered, 0),
            "drops_sender_minus_server": None, "kernel_drops_telemetry": None,
            "live_contexts": None, "rss_per_context_bytes": None, "flush_max_ms": None,
        })
    row["processed_metrics_per_sec"] = row["processed_metrics"] / secs
    row["ns_per_metric"] = (row["cpu_seconds"] * 1e9 / row["processed_metrics"]
                            if row["processed_metrics"] else None)
    row["zero_drop"] = (kernel == 0 and warm_drops == 0
                        and (row["drops_sender_minus_server"] in (None, 0)))
    return row


def step(preset, args, work):
    """Raises the rate by 25 % a step from the preset's fixed rate until the first drop, or
    until the generator cannot go faster (then the result is a lower bound). If the fixed rate
    already drops, lowers it by 20 % a step until a run has none."""
    rate, best, steps, limit = PRESETS[preset], None, [], "steps"
    going_down = False
    for _ in range(args.max_steps):
        row = run_one("corestatsd", preset, rate, args, work)
        achieved = row["offered_metrics_per_sec"]
        steps.append({"rate": rate, "achieved": achieved, "zero_drop": row["zero_drop"],
                      "kernel_drops": row["kernel_drops_snmp"],
                      "lost_metrics": row["drops_sender_minus_server"]})
        if going_down:
            if row["zero_drop"]:
                best, limit = achieved, "drops"
                break
            rate = int(rate * 0.8)
            continue
        if not row["zero_drop"]:
            if best is None:
                going_down = True
                rate = int(rate * 0.8)
                continue
            limit = "drops"
            break
        best = achieved
        if achieved < rate * 0.95:  # the generator cannot go faster: no drop seen at its limit
            limit = "generator"
            break
        rate = int(rate * 1.25)
    return {"preset": preset, "best_zero_drop_metrics_per_sec": best, "limited_by": limit,
            "steps": steps}


def fmt(v, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float) and abs(v) >= 1e6:
        return f"{v / 1e6:.2f}M{unit}"
    if isinstance(v, float) and abs(v) >= 1e4:
        return f"{v / 1e3:.0f}k{unit}"
    if isinstance(v, float) and v.is_integer():
        return f"{int(v)}{unit}"
    if isinstance(v, float):
        return f"{v:.1f}{unit}"
    return f"{v}{unit}"


def markdown(rows, steps):
    out = ["| preset | mode | server | offered metrics/s | processed metrics/s | drops (sent−counted) "
           "| kernel drops (server / snmp) | CPU s | ns/metric | peak RSS MiB | RSS B/context "
           "| flush max ms | vs netdata | vs statsd |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        peers = {p["server"]: p for p in rows
                 if p["preset"] == r["preset"] and p["mode"] == r["mode"]}
        ratio = lambda p: (f"{r['processed_metrics_per_sec'] / peers[p]['processed_metrics_per_sec']:.2f}x"
                           if r["server"] == "corestatsd" and p in peers
                           and peers[p]["processed_metrics_per_sec"] else "–")
        kd = (f"{fmt(r['kernel_drops_telemetry'])} / {r['kernel_drops_snmp']}"
              if r["kernel_drops_telemetry"] is not None else f"– / {r['kernel_drops_snmp']}")
        out.append(
            f"| {r['preset']} | {r['mode']} | {r['server']} | {fmt(r['offered_metrics_per_sec'])} "
            f"| {fmt(r['processed_metrics_per_sec'])}{'' if r['server'] == 'corestatsd' else ' ≈'} "
            f"| {fmt(r['drops_sender_minus_server'])} | {kd} | {r['cpu_seconds']:.2f} "
            f"| {fmt(r['ns_per_metric'])} | {r['peak_rss_kib'] / 1024:.1f} "
            f"| {fmt(r['rss_per_context_bytes'])} | {fmt(r['flush_max_ms'])} "
            f"| {ratio('netdata')} | {ratio('statsd')} |")
    if steps:
        out += ["", "| preset | highest zero-drop metrics/s per server core | stopped by "
                "| steps (achieved rate, ✗ = drops) |", "|---|---:|---|---|"]
        for s in steps:
            trail = ", ".join(f"{fmt(float(x['achieved']))}{'' if x['zero_drop'] else ' ✗'}"
                              for x in s["steps"])
            bound = "≥ " if s["limited_by"] != "drops" else ""
            out.append(f"| {s['preset']} | {bound}{fmt(s['best_zero_drop_metrics_per_sec'])} "
                       f"| {s['limited_by']} | {trail} |")
    return "\n".join(out)


def svg(rows):
    """Grouped bars: processed metrics/s per preset and server, flat out; drop % above each bar."""
    flat = [r for r in rows if r["mode"] == "flat out"]
    presets = list(dict.fromkeys(r["preset"] for r in flat))
    servers = list(dict.fromkeys(r["server"] for r in flat))
    colors = {"corestatsd": "#1f77b4", "netdata": "#ff7f0e", "statsd": "#2ca02c"}
    top = max([r["processed_metrics_per_sec"] for r in flat] + [1])
    w, h, left, bottom = 160 * len(presets) + 80, 360, 60, 300
    bar = 120 / max(len(servers), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
             f'<text x="{left}" y="16" font-size="13">processed metrics/s, flat out, server on 1 core '
             f'(drop % of offered above each bar)</text>',
             f'<line x1="{left}" y1="{bottom}" x2="{w - 10}" y2="{bottom}" stroke="black"/>']
    for i, p in enumerate(presets):
        x0 = left + 20 + i * 160
        parts.append(f'<text x="{x0}" y="{bottom + 16}">{p}</text>')
        for j, s in enumerate(servers):
            r = next((r for r in flat if r["preset"] == p and r["server"] == s), None)
            if not r:
                continue
            v = r["processed_metrics_per_sec"]
            bh = 250 * v / top
            x = x0 + j * bar
            drop = 100 * (1 - v / r["offered_metrics_per_sec"]) if r["offered_metrics_per_sec"] else 0
            parts.append(f'<rect x="{x:.0f}" y="{bottom - bh:.0f}" width="{bar - 4:.0f}" height="{bh:.0f}" '
                         f'fill="{colors.get(s, "gray")}"><title>{s}: {v:.0f}/s</title></rect>')
            parts.append(f'<text x="{x:.0f}" y="{bottom - bh - 14:.0f}">{v / 1e6:.2f}M</text>')
            parts.append(f'<text x="{x:.0f}" y="{bottom - bh - 3:.0f}" fill="#a00">{drop:.0f}%</text>')
    for j, s in enumerate(servers):
        parts.append(f'<rect x="{left + j * 110}" y="{h - 22}" width="10" height="10" fill="{colors.get(s, "gray")}"/>'
                     f'<text x="{left + j * 110 + 14}" y="{h - 13}">{s}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default=",".join(PRESETS), help="'none' for no preset rows")
    ap.add_argument("--cardinality", default="all",
                    help="cardinality rows (harness/cardinality.py): all, none, or a list of "
                    "cold-start, new-contexts, live-1m, churn")
    ap.add_argument("--live-secs", type=float, default=60, help="live-1m's measured phase")
    ap.add_argument("--churn-secs", type=float, default=600, help="churn's measured phase")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--generator-core", type=int, default=1)
    ap.add_argument("--peers", default="auto", help="auto (those installed), none, or a list")
    ap.add_argument("--modes", default="fixed,flat", help="fixed, flat or both")
    ap.add_argument("--step", action="store_true", help="also find the highest zero-drop rate")
    ap.add_argument("--max-steps", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(ROOT, "target/bench"))
    ap.add_argument("--rcvbuf", type=int, default=16 << 20,
                    help="corestatsd's --so-rcvbuf-bytes (peers get the kernel default)")
    ap.add_argument("--server-args", default="", help="more corestatsd flags, e.g. "
                    "'--spin-before-park-us 50'")
    args = ap.parse_args()

    for bin in ("corestatsd", "corestatsd-blast"):
        if not os.path.exists(os.path.join(ROOT, "target/release", bin)):
            sys.exit("build first: cargo build --release")
    import cardinality
    presets = [p for p in args.presets.split(",") if p and p != "none"]
    scenarios = (cardinality.SCENARIOS if args.cardinality == "all" else
                 [c for c in args.cardinality.split(",") if c and c != "none"])
    for c in scenarios:
        if c not in cardinality.SCENARIOS:
            sys.exit(f"--cardinality: {c!r} is not one of {', '.join(cardinality.SCENARIOS)}")
    for p in presets:
        if p not in PRESETS:
            sys.exit(f"--presets: {p!r} is not one of {', '.join(PRESETS)}")
    peers = (peers_available() if args.peers == "auto"
             else [] if args.peers == "none" else args.peers.split(","))
    missing = [p for p in ("netdata", "statsd") if p not in peers_available()]
    if args.peers == "auto" and missing:
        print(f"peers not installed, left out: {', '.join(missing)}. To include them: "
              "apt-get install --no-install-recommends netdata; "
              "(cd harness/peers && npm install statsd@0.9.0)", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="corestatsd-bench-")
    rows, steps, card = [], [], []
    try:
        for preset in presets:
            for mode in args.modes.split(","):
                rate = PRESETS[preset] if mode == "fixed" else None
                for kind in ["corestatsd"] + peers:
                    print(f"{preset} {mode} {kind} ...", file=sys.stderr)
                    rows.append(run_one(kind, preset, rate, args, work))
            if args.step:
                steps.append(step(preset, args, work))
        for c in scenarios:
            print(f"cardinality {c} ...", file=sys.stderr)
            card.append(cardinality.run_scenario(sys.modules[__name__], c, args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = markdown(rows, steps) if rows else ""
    if card:
        table += ("\n\n" if table else "") + cardinality.markdown(sys.modules[__name__], card)
    print(table)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump({"rows": rows, "steps": steps, "cardinality": card, "seconds": args.seconds,
                   "rcvbuf": args.rcvbuf, "server_args": args.server_args,
                   "server_core": args.server_core, "generator_core": args.generator_core}, f, indent=1)
    if rows:
        with open(os.path.join(args.out, "bench.svg"), "w") as f:
            f.write(svg(rows))
    print(f"\nJSON: {args.out}/bench.json  chart: {args.out}/bench.svg", file=sys.stderr)


if __name__ == "__main__":
    main()
