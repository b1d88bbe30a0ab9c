#!/usr/bin/env bash
# Throughput per transport: corestatsd on CPU 0, corestatsd-blast on CPU 1, counters with 3 tags
# over 10k contexts in packets of up to 720 bytes (about 10 lines), SECONDS_EACH (default 5) each.
# Build first: cargo build --release.
# Unix and TCP senders block when the server falls behind, so "received" is what one core takes;
# UDP is sent flat out and may be generator-bound. Loopback: kernel work lands on the sender core.
set -u
cd "$(dirname "$0")/.."
W=$(mktemp -d)
for T in udp uds uds_stream tcp; do
  rm -f $W/out $W/err; : > $W/err
  case $T in
    udp) ARGS="--udp-addr 127.0.0.1:0";;
    uds) ARGS="--no-udp --uds-path $W/d.sock";;
    uds_stream) ARGS="--no-udp --uds-stream-path $W/s.sock";;
    tcp) ARGS="--no-udp --tcp-addr 127.0.0.1:0 --tcp-framing length";;  # blast sends 4-byte frames
  esac
  target/release/corestatsd --cores 0 --bucket-secs 1 --so-rcvbuf-bytes 16777216 $ARGS >$W/out 2>$W/err &
  pid=$!
  for _ in $(seq 50); do grep -q "listening" $W/err && break; sleep 0.1; done
  case $T in
    udp) TGT="127.0.0.1:$(grep -o 'listening udp 127.0.0.1:[0-9]* (' $W/err | cut -d: -f2 | cut -d' ' -f1)";;
    uds) TGT="uds:$W/d.sock";;
    uds_stream) TGT="uds-stream:$W/s.sock";;
    tcp) TGT="tcp:$(grep -o 'tcp 127.0.0.1:[0-9]* (' $W/err | cut -d' ' -f2)";;
  esac
  res=$(target/release/corestatsd-blast --target "$TGT" --cores 1 --duration-secs "${SECONDS_EACH:-5}" \
    --contexts 10000 --weights c=1 --tags-per-metric 3 --packet-bytes 720 |
    grep -o '"packets":[0-9]*\|"metrics":[0-9]*' | tr -d '"' | tr ':' '=' | paste -sd' ')
  sleep 1; kill -TERM $pid; wait $pid
  recv=$(grep '"name":"corestatsd.metrics"' $W/out | sed 's/.*"value":\([^,]*\),.*/\1/' | awk '{s+=$1} END {printf "%d", s}')
  kd=$(grep '"name":"corestatsd.kernel_drops"' $W/out | sed 's/.*"value":\([^,]*\),.*/\1/' | awk '{s+=$1} END {printf "%d", s}')
  echo "$T $res received_metrics=$recv per_s=$((recv/${SECONDS_EACH:-5})) kernel_drops=$kd"
done
rm -rf $W
