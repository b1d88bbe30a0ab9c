#!/usr/bin/env bash
# Core-scaling run: corestatsd on 1, 2, 4, 8 and 14 pinned cores against the corestatsd-blast load
# generator pinned to other cores, at full blast for SECONDS each. Prints a Markdown table.
#
#   [CONTEXTS=10000] [SIZES="1 2 4 8 14"] scripts/scale.sh [BIN_DIR] [SECONDS]
#                                            (BIN_DIR holds corestatsd and corestatsd-blast;
#                                             default target/release)
#
# Loopback: the kernel's receive work runs on the sender's cores, so these figures flatter the
# receiver compared with a NIC. Drops are the kernel's UDP receive-buffer errors during the run.
set -euo pipefail
BIN=${1:-}
SECS=${2:-8}
SERVER=${BIN:-target/release}/corestatsd
BLAST=${BIN:-target/release}/corestatsd-blast
NCPU=$(nproc)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

rcvbuf_errors() { awk '/^Udp:/ { if (++n == 2) print $6 }' /proc/net/snmp; }
no_ports() { awk '/^Udp:/ { if (++n == 2) print $3 }' /proc/net/snmp; }
sum_metric() { grep "\"name\":\"$1\"" "$2" | sed 's/.*"value":\([^,]*\),.*/\1/' | awk '{s+=$1} END {printf "%d", s}'; }

echo "| server cores | generator cores | sent metrics/s | received metrics/s | per server core | kernel drops | drops counted by corestatsd | max receive pause µs |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
for S in ${SIZES:-1 2 4 8 14}; do
  [ "$S" -lt "$NCPU" ] || continue
  G=$(( NCPU - S )); [ "$G" -gt 8 ] && G=8
  # Fresh files per run: `cmd 2>file &` truncates in the child, after this shell may already
  # have read the previous run's port from the old file.
  rm -f "$WORK/out" "$WORK/err"; : >"$WORK/err"
  "$SERVER" --cores "0-$((S-1))" --udp-addr 127.0.0.1:0 --bucket-secs 1 \
    --so-rcvbuf-bytes 16777216 >"$WORK/out" 2>"$WORK/err" &
  pid=$!
  port=""
  for _ in $(seq 100); do
    # Match through the " (" after the port: a line can be read half-written.
    port=$(grep -o 'listening udp 127.0.0.1:[0-9]* (' "$WORK/err" | cut -d: -f2 | cut -d' ' -f1 || true)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { cat "$WORK/err"; exit 1; }
  before=$(rcvbuf_errors); noport_before=$(no_ports)
  # One sender thread per generator core; counters with 3 tags, about 10 lines per datagram.
  sent=$("$BLAST" --target "127.0.0.1:$port" --threads "$G" --cores "$S-$((S+G-1))" \
    --duration-secs "$SECS" --contexts "${CONTEXTS:-10000}" --weights c=1 --tags-per-metric 3 \
    --packet-bytes 720 | sed 's/.*"metrics":\([0-9]*\).*/\1/')
  sleep 1
  after=$(rcvbuf_errors); noport_after=$(no_ports)
  if [ $((noport_after - noport_before)) -gt 0 ]; then
    echo "$((noport_after - noport_before)) datagrams to port $port found no socket; server log:" >&2
    cat "$WORK/err" >&2
    ss -uanp 2>/dev/null | grep ":$port " >&2 || true
  fi
  kill -TERM "$pid"
  status=0; wait "$pid" || status=$?
  if [ "$status" -ne 0 ] || ! grep -q corestatsd.metrics "$WORK/out"; then
    echo "corestatsd on $S cores exited with $status:" >&2
    tail -20 "$WORK/err" >&2
  fi
  received=$(sum_metric corestatsd.metrics "$WORK/out")
  counted=$(sum_metric corestatsd.kernel_drops "$WORK/out")
  pause=$(grep -o 'receive_max_pause_us=[0-9]*' "$WORK/err" | cut -d= -f2 | sort -n | tail -1)
  printf '| %d | %d | %d | %d | %d | %d | %d | %s |\n' "$S" "$G" $((sent / SECS)) $((received / SECS)) \
    $((received / SECS / S)) $((after - before)) "$counted" "${pause:-?}"
done
