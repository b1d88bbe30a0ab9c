#!/usr/bin/env bash
# Each downstream under the same load: corestatsd on CPU 0 (its sink and delivery threads land on
# CPU 1 with the generator), corestatsd-blast mixed-100k at RATE metrics/s (default 1000000) for
# SECONDS_EACH (default 10) seconds, then a stop. Prints, per downstream, what the generator sent,
# what the server received, kernel drops, and the downstream's own stop summary.
# Peers: a Python intake that answers 202 (datadog, and datadog with --durable-delivery), Debian's prometheus with its remote-write
# receiver (skipped when not installed), a second corestatsd on a unix socket (relay), all on
# CPU 1.
# Build first: cargo build --release.
set -u
cd "$(dirname "$0")/.."
W=$(mktemp -d)
RATE=${RATE:-1000000}
SECS=${SECONDS_EACH:-10}
trap 'kill $(jobs -p) 2>/dev/null; rm -rf $W' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cat > $W/intake.py <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(202); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY

export DD_API_KEY=bench
run() { # name, downstream flag value, extra server flags
  local name=$1 ds=$2
  : > $W/err
  target/release/corestatsd ${3:-} --cores 0 --no-self-metrics --downstream "$ds" \
    --so-rcvbuf-bytes 16777216 --udp-addr 127.0.0.1:0 >/dev/null 2>$W/err &
  local pid=$!
  for _ in $(seq 50); do grep -q "listening" $W/err && break; sleep 0.1; done
  local tgt="127.0.0.1:$(grep -o 'listening udp 127.0.0.1:[0-9]* (' $W/err | cut -d: -f2 | cut -d' ' -f1)"
  local sent
  sent=$(target/release/corestatsd-blast --target "$tgt" --cores 1 --preset mixed-100k \
    --metrics-per-sec "$RATE" --duration-secs "$SECS" | grep -o '"metrics":[0-9]*' | cut -d: -f2)
  sleep 1; kill -TERM $pid; wait $pid; local rc=$?
  local recv kd
  recv=$(grep -o ' metrics=[0-9]*' $W/err | cut -d= -f2 | awk '{s+=$1} END {print s+0}')
  kd=$(grep -o 'kernel_drops=[0-9]*' $W/err | cut -d= -f2 | awk '{s+=$1} END {print s+0}')
  echo "| $name | $sent | $recv | $kd | $rc | $(grep -E 'delivered|relay to|stopped;' $W/err | sed 's/corestatsd: //' | paste -sd' ') |"
}

echo "| downstream | sent | received | kernel drops | exit | summary |"
echo "|---|---:|---:|---:|---:|---|"
run jsonl "jsonl:/dev/null"

P=$(port); taskset -c 1 python3 $W/intake.py $P & sleep 0.5
run datadog datadog "--dd-url=http://127.0.0.1:$P"
# The cost of --durable-delivery: every payload written and synced to the spill directory first.
run "datadog, durable" datadog "--dd-url=http://127.0.0.1:$P --durable-delivery --retry-spill-dir=$W/spill"

if command -v prometheus >/dev/null; then
  P=$(port); echo 'scrape_configs: []' > $W/p.yml
  taskset -c 1 prometheus --config.file=$W/p.yml --storage.tsdb.path=$W/tsdb --web.listen-address=127.0.0.1:$P \
    --web.enable-remote-write-receiver >/dev/null 2>&1 &
  for _ in $(seq 100); do curl -sf 127.0.0.1:$P/-/ready >/dev/null && break; sleep 0.1; done
  run prometheus-remote-write "prometheus-remote-write:http://127.0.0.1:$P/api/v1/write"
fi

target/release/corestatsd --cores 1 --no-udp --uds-path $W/global.sock --downstream jsonl:/dev/null \
  --no-self-metrics 2>$W/global.err &
sleep 0.5
run "relay (dogstatsd+uds)" "dogstatsd+uds:$W/global.sock"
