#!/usr/bin/env bash
# scripts/soak.sh [MINUTES] (default 30): corestatsd under steady churning load while everything
# that happens to a production server happens to it, then an exact account.
#
# - Load: corestatsd-blast's churn preset (counters of 1, 10 tags, one unique per context),
#   CONTEXTS live (default 50000), 10 % replaced every 10 s window, over UDP at 70 % of what one
#   server core took in a 10 s flat-out calibration run (RATE=N metrics/s skips the calibration).
# - The server: one shard on CPU 0, windows of 10 s, two downstreams: jsonl into a FIFO that a
#   summer reads (the account of every count), and datadog to a Python intake that answers 202
#   (deflate), with a spill directory; the generator, the sink thread and both readers on CPU 1.
# - Every RELOAD_SECS (60): the --config file changes (its block list) and the server gets SIGHUP.
# - Every TAKEOVER_SECS (300, first at 150): a new binary with the same flags plus --take-over.
# - Every INTAKE_SECS (240, first at 140): the intake stops for INTAKE_DOWN_SECS (20), so payloads
#   queue, spill and retry; the take-overs at 150 s and 1350 s fall inside such an outage.
# - Every 30 s: 200 inputs of the committed fuzz corpus (fuzz/corpus/datagram) as datagrams.
# At the end: a table of RSS, sent and accounted over time; then the counts sent against those
# written (jsonl), the drops the servers counted, and the items jsonl wrote against the Datadog
# points delivered, dropped and still spilled (both downstreams get every batch). Exits 1 on a count written twice or lost without a
# counted drop, a Datadog point unaccounted for, a process that did not exit 0, or when the last
# third's peak RSS passes the first third's (after the first 2 minutes) by more than 10 %.
# Build first: cargo build --release (or point BIN and BLAST at the binaries to soak).
set -u
cd "$(dirname "$0")/.."
MIN=${1:-30}
SECS=$((MIN * 60))
CONTEXTS=${CONTEXTS:-50000}
RELOAD_SECS=${RELOAD_SECS:-60}
TAKEOVER_SECS=${TAKEOVER_SECS:-300}
INTAKE_SECS=${INTAKE_SECS:-240}
INTAKE_DOWN_SECS=${INTAKE_DOWN_SECS:-20}
W=$(mktemp -d)
BIN=${BIN:-target/release/corestatsd}
BLAST=${BLAST:-target/release/corestatsd-blast}
for b in $BIN $BLAST; do [ -x $b ] || { echo "soak: $b missing: cargo build --release" >&2; exit 2; }; done
trap 'kill $(jobs -p) 2>/dev/null; pkill -f "$W/" 2>/dev/null; rm -rf $W' EXIT

port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket,sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' $1; }
UDP=$(port SOCK_DGRAM)
IPORT=$(port SOCK_STREAM)
HPORT=$(port SOCK_STREAM)

cat > $W/intake.py <<'PY'
# The Datadog intake: reads each payload and answers 202 (what it held is accounted from the
# server's own stop lines and spill files).
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(202); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY

cat > $W/summer.py <<'PY'
# Reads one server's jsonl (a FIFO) to its end: the sum of the churn counters, every item (point,
# event, service check), and the corestatsd.* counters; written to OUT every 5 s and at the end.
import json, os, sys, time
fifo, out, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
T = {"counted": 0.0, "points": 0, "self": {}}
def dump():
    with open(out + ".tmp", "w") as o:
        json.dump(T, o)
    os.replace(out + ".tmp", out)
last = time.time()
with open(fifo) as f:
    for line in f:
        T["points"] += 1
        if '"kind":"metric"' not in line:
            continue
        if prefix in line or '"corestatsd.' in line:
            v = json.loads(line)
            if v["name"].startswith(prefix):
                T["counted"] += v["value"]
            elif v["type"] == "count":
                T["self"][v["name"]] = T["self"].get(v["name"], 0) + v["value"]
        if time.time() - last > 5:
            dump(); last = time.time()
dump()
PY

intake_up() { taskset -c 1 python3 $W/intake.py $IPORT & echo $! > $W/intake.pid;
  for _ in $(seq 50); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$IPORT))" 2>/dev/null && return; sleep 0.1; done; }
intake_down() { kill $(cat $W/intake.pid) 2>/dev/null; wait $(cat $W/intake.pid) 2>/dev/null; }

config() { # the --config file, with block list variant $1
  printf 'dogstatsd_tags: []\nmetric_filterlist: ["soak.never.sent.%s"]\n' "$1" > $W/datadog.yaml.tmp
  mv $W/datadog.yaml.tmp $W/datadog.yaml
}

FLAGS=(--cores 0 --udp-addr 127.0.0.1:$UDP --hostname soak --config $W/datadog.yaml
  --control-socket $W/control.sock --downstream jsonl:$W/out.fifo
  --downstream datadog --dd-url http://127.0.0.1:$IPORT
  --dd-compression deflate --dd-counters-as count --retry-spill-dir $W/spill
  --http-addr 127.0.0.1:$HPORT --so-rcvbuf-bytes 4194304)
export DD_API_KEY=soak
GEN=0
start_server() { # [--take-over]; the new process' pid in $W/pid once it is listening
  GEN=$((GEN + 1))
  # Each process its own FIFO (the flag names one path: it is re-pointed before each start).
  rm -f $W/out.fifo; mkfifo $W/out.$GEN; ln -s $W/out.$GEN $W/out.fifo
  taskset -c 1 python3 $W/summer.py $W/out.$GEN $W/sum.$GEN.json checkout.request.latency. &
  $BIN "${FLAGS[@]}" "$@" > /dev/null 2> $W/server.$GEN.err &
  local pid=$!
  for _ in $(seq 300); do grep -q "; listening " $W/server.$GEN.err && break; sleep 0.1; done
  grep -q "; listening " $W/server.$GEN.err || { echo "soak: server $GEN did not start:"; cat $W/server.$GEN.err; exit 1; }
  echo $pid > $W/pid
  echo $pid >> $W/pids
}
rss_kb() { awk '/VmRSS/ {print $2}' /proc/$1/status 2>/dev/null || echo 0; }
accounted() { python3 - "$W" <<'PY'
import glob, json, sys
c = k = 0
for f in glob.glob(sys.argv[1] + "/sum.*.json"):
    try:
        t = json.load(open(f))
    except ValueError:
        continue
    c += t["counted"]; k += t["self"].get("corestatsd.kernel_drops", 0)
print(int(c), int(k))
PY
}

config a
intake_up
start_server
if [ -z "${RATE:-}" ]; then
  # Calibration: flat out for 10 s; what the server received (its /status) is one core's take.
  $BLAST --target 127.0.0.1:$UDP --cores 1 --preset churn --contexts $CONTEXTS \
    --duration-secs 10 > $W/calibration.json
  took=$(python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$HPORT/status').read().decode())")
  RATE=$(python3 -c "import json,sys; t=json.loads(sys.argv[1])['total']; print(int(0.7 * t['metrics'] / 10))" "$took")
  echo "soak: calibration: one core took $(python3 -c "import json,sys; print(json.loads(sys.argv[1])['total']['metrics'])" "$took") metrics in 10 s; soaking at $RATE/s"
  # A fresh server for the soak itself: the calibration's counts are not in the account.
  kill -INT $(cat $W/pid); wait $(cat $W/pid); : > $W/pids
  sleep 1; rm -f $W/sum.*.json $W/server.*.err; rm -rf $W/spill
  start_server
fi

$BLAST --target 127.0.0.1:$UDP --cores 1 --preset churn --contexts $CONTEXTS \
  --metrics-per-sec $RATE --duration-secs $SECS > $W/sent.json 2> $W/blast.err &
BLAST_PID=$!
T0=$(date +%s)
printf '%6s %8s %8s %12s %12s %8s  %s\n' minute pid rss_mib sent_approx written k_drops events > $W/table
events=""
variant=a
intake_back=0
status_ok=1
last_minute=-1
next_reload=$RELOAD_SECS next_intake=140 next_takeover=150 next_fuzz=15
while kill -0 $BLAST_PID 2>/dev/null; do
  sleep 1
  t=$(( $(date +%s) - T0 ))
  if [ $t -ge $next_reload ]; then
    next_reload=$((next_reload + RELOAD_SECS))
    variant=$([ $variant = a ] && echo b || echo a); config $variant
    kill -HUP $(cat $W/pid); events="$events reload"
  fi
  if [ $t -ge $next_intake ]; then
    next_intake=$((next_intake + INTAKE_SECS))
    intake_down; intake_back=$((t + INTAKE_DOWN_SECS)); events="$events intake-down"
  fi
  if [ $t -ge $next_takeover ]; then
    next_takeover=$((next_takeover + TAKEOVER_SECS))
    old=$(cat $W/pid)
    start_server --take-over
    wait $old; rc=$?
    [ $rc -eq 0 ] || { echo "soak: process $old exited $rc after its take-over"; status_ok=0; }
    events="$events take-over"
  fi
  if [ $intake_back -gt 0 ] && [ $t -ge $intake_back ]; then
    intake_up; intake_back=0; events="$events intake-up"
  fi
  if [ $t -ge $next_fuzz ]; then
    next_fuzz=$((next_fuzz + 30))
    python3 - "$UDP" <<'PY'
import os, random, socket, sys
d = "fuzz/corpus/datagram"
files = sorted(os.listdir(d)); random.seed(len(files) + int(sys.argv[1]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for f in random.sample(files, min(200, len(files))):
    b = open(os.path.join(d, f), "rb").read()[:8192]
    if b"checkout.request.latency." not in b:
        s.sendto(b, ("127.0.0.1", int(sys.argv[1])))
PY
    events="$events fuzz"
  fi
  m=$((t / 60))
  if [ $m -ne $last_minute ]; then
    last_minute=$m
    kb=$(rss_kb $(cat $W/pid))
    printf '%6d %8s %8.1f %12d %12s %8s  %s\n' $m $(cat $W/pid) $(awk "BEGIN {print $kb / 1024}") \
      $((t * RATE)) $(accounted) "$events" >> $W/table
    echo "$m $kb" >> $W/rss
    events=""
  fi
done
wait $BLAST_PID
[ $intake_back -gt 0 ] && intake_up
# Two windows for the last samples, then a clean stop delivers everything held.
sleep 21
kill -INT $(cat $W/pid); wait $(cat $W/pid); rc=$?
[ $rc -eq 0 ] || { echo "soak: the last process exited $rc"; status_ok=0; }
sleep 2
# What the last stop left spilled (the intake was up: nothing should be).
spill_points=0
for f in $W/spill/*.payload; do [ -f "$f" ] && spill_points=$((spill_points + $(sed -n 5p "$f"))); done
echo $spill_points > $W/spill_points
cat $W/table
python3 - "$W" "$MIN" "$status_ok" <<'PY'
import glob, json, re, sys
w, minutes, status_ok = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
sent = json.load(open(w + "/sent.json"))
got = points = kernel = 0
selfs = {}
for f in glob.glob(w + "/sum.*.json"):
    t = json.load(open(f))
    got += t["counted"]; points += t["points"]
    for k, v in t["self"].items():
        selfs[k] = selfs.get(k, 0) + v
kernel = selfs.get("corestatsd.kernel_drops", 0)
per_packet = sent["metrics"] / max(sent["packets"], 1)
lost_sink = dd_delivered = dd_dropped = 0
for f in glob.glob(w + "/server.*.err"):
    for l in open(f):
        m = re.search(r"stopped; \d+ points written, (\d+) lost", l)
        if m:
            lost_sink += int(m.group(1))
        m = re.search(r"datadog: delivered \d+ payloads \(\d+ bytes, (\d+) points\), \d+ retries, \d+ payloads \((\d+) points\) dropped", l)
        if m:
            dd_delivered += int(m.group(1)); dd_dropped += int(m.group(2))
spill_left = int(open(w + "/spill_points").read())
drops = {k: v for k, v in selfs.items() if re.search(r"drop|error|refused|lost", k) and v and k != "corestatsd.kernel_drops"}
rss = [tuple(map(int, l.split())) for l in open(w + "/rss")]
third = max(minutes // 3, 1)
first = [r for m, r in rss if 2 <= m < 2 + third]
last = [r for m, r in rss if m >= minutes - third]
growth = (max(last) / max(first) - 1) if first and last else 0.0
lost = sent["metrics"] - got
print()
print("| | |\n|---|---:|")
print("| minutes | %d |" % minutes)
print("| rate (metrics/s) | %d |" % (sent["metrics"] / sent["seconds"]))
print("| counter lines sent | %d |" % sent["metrics"])
print("| counts written (jsonl, every process) | %d |" % got)
print("| lost | %d |" % lost)
print("| kernel drops counted (datagrams, %.1f lines each) | %d |" % (per_packet, kernel))
print("| other drops and errors counted (the fuzz corpus' lines) | %s |" % (", ".join("%s %d" % kv for kv in sorted(drops.items())) or "none"))
print("| items written to jsonl (points, events, checks) | %d |" % points)
print("| datadog points delivered / dropped / left spilled | %d / %d / %d |" % (dd_delivered, dd_dropped, spill_left))
print("| points lost to sink errors at stop | %d |" % lost_sink)
print("| peak RSS first third / last third (MiB) | %.1f / %.1f (%+.1f %%) |" % (max(first or [0]) / 1024, max(last or [0]) / 1024, growth * 100))
ok = status_ok
if got > sent["metrics"]:
    print("FAIL: %d counts written twice" % (got - sent["metrics"])); ok = False
if lost > kernel * per_packet:
    print("FAIL: %d counts lost, %d explained by counted kernel drops" % (lost, kernel * per_packet)); ok = False
# Both downstreams get every batch: what jsonl wrote, the Datadog downstream delivered, dropped
# (counted) or left spilled.
if dd_delivered + dd_dropped + spill_left != points:
    print("FAIL: datadog: %d items written, %d accounted for" % (points, dd_delivered + dd_dropped + spill_left)); ok = False
if growth > 0.10:
    print("FAIL: RSS grew %.1f %%" % (growth * 100)); ok = False
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
