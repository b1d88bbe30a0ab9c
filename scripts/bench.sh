#!/usr/bin/env bash
# One command, one table: corestatsd and the peers that are installed (netdata's statsd plugin,
# Etsy statsd), each on the server core, against corestatsd-blast on the generator core, for
# every preset at a fixed rate and flat out. Markdown on stdout, JSON and an SVG chart in
# target/bench/. Then corestatsd's cardinality rows (harness/cardinality.py): cold start, new
# contexts/s, 1M live contexts, churn (about 12 minutes; --churn-secs and --live-secs shorten them,
# --cardinality none leaves them out). Options go to harness/harness.py (--help); add --step for
# the highest zero-drop rate per core. Installs nothing: it names the command that installs the
# peers.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins >&2
exec python3 harness/harness.py "$@"
