#!/usr/bin/env bash
# Installs corestatsd and corestatsd-blast with `cargo install`: into ~/.cargo/bin by default, or
# DIR/bin with --root DIR. With --system (as root) the binaries go to /usr/local/bin, where
# tuning/corestatsd.service expects them, and the host is prepared the way tuning/README.md
# describes: the `corestatsd` system user, the systemd unit and the sysctl profile (applied).
# The service is not enabled: edit its --cores and CPUAffinity for the host first.
#
#   scripts/install.sh                 # binaries for this user
#   sudo scripts/install.sh --system   # binaries, user, unit and sysctl profile
set -euo pipefail
cd "$(dirname "$0")/.."

root=""
system=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    --system) system=1; root=/usr/local; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$system" = 1 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: --system writes /usr/local/bin, /etc/systemd and /etc/sysctl.d: run it as root" >&2
  exit 2
fi

# The workspace's own target directory: a later install rebuilds only what changed.
args=(--locked --target-dir target)
[ -n "$root" ] && args+=(--root "$root")
cargo install "${args[@]}" --path .
cargo install "${args[@]}" --path blast
bin="${root:-${CARGO_HOME:-$HOME/.cargo}}/bin"
echo "install.sh: installed $bin/corestatsd and $bin/corestatsd-blast"
case ":$PATH:" in
  *":$bin:"*) ;;
  *) echo "install.sh: $bin is not on PATH; add it: export PATH=\"$bin:\$PATH\"" ;;
esac
[ "$system" = 1 ] || exit 0

if ! id -u corestatsd >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin corestatsd
  echo "install.sh: created the corestatsd system user"
fi
install -D -m 0644 tuning/corestatsd.service /etc/systemd/system/corestatsd.service
install -D -m 0644 tuning/sysctl.conf /etc/sysctl.d/90-corestatsd.conf
echo "install.sh: installed /etc/systemd/system/corestatsd.service and /etc/sysctl.d/90-corestatsd.conf"
if ! sysctl -q -p /etc/sysctl.d/90-corestatsd.conf; then
  echo "install.sh: the sysctl profile could not be applied here (a container?); it applies at boot" >&2
fi
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
echo "install.sh: next: set --cores and CPUAffinity in the unit (tuning/README.md,"
echo "  scripts/check-host.sh), then: systemctl enable --now corestatsd"
