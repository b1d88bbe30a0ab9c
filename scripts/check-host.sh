#!/usr/bin/env bash
# Reads the live values that matter to corestatsd on this host and says what to change.
# Read-only: it changes nothing. Exit status 1 when something should be changed.
#   scripts/check-host.sh [CORES]     (CORES: the --cores you plan, e.g. 2-7)
set -u
CORES=${1:-}
advice=0
read_sys() { cat "/proc/sys/$1" 2>/dev/null || echo "?"; }
want_at_least() { # key value why
  local have; have=$(read_sys "$1")
  if [ "$have" = "?" ]; then
    printf '%-34s %12s   (cannot read)\n' "$1" "$have"
  elif [ "$have" -lt "$2" ]; then
    printf '%-34s %12s   -> raise to %s: %s\n' "$1" "$have" "$2" "$3"; advice=1
  else
    printf '%-34s %12s   ok\n' "$1" "$have"
  fi
}
echo "corestatsd host check ($(uname -r), $(nproc) CPUs)"
want_at_least net/core/rmem_max 33554432 "lets --so-rcvbuf-bytes take effect without CAP_NET_ADMIN"
want_at_least net/core/rmem_default 4194304 "buffers for sockets that ask for none"
want_at_least net/core/wmem_max 8388608 "clients' send buffers"
want_at_least net/core/netdev_max_backlog 250000 "bursts of small datagrams from the NIC"
want_at_least net/unix/max_dgram_qlen 1024 "unix datagram clients block or drop at a short queue"
uring=$(read_sys kernel/io_uring_disabled)
if [ "$uring" != "?" ] && [ "$uring" != "0" ]; then
  echo "kernel.io_uring_disabled            $uring   -> set to 0: corestatsd's runtime needs io_uring"; advice=1
fi
memlock=$(ulimit -l)
if [ "$memlock" != "unlimited" ] && [ "$memlock" -lt 8192 ]; then
  echo "ulimit -l (memlock, KiB)            $memlock   -> raise (LimitMEMLOCK= in the unit): each shard locks io_uring memory"; advice=1
else
  echo "ulimit -l (memlock, KiB)            $memlock   ok"
fi
if [ -n "$CORES" ]; then
  # NIC interrupts on ingest cores steal the time corestatsd needs there.
  expand() { local out=() a b p; IFS=, read -ra parts <<< "$1"
    for p in "${parts[@]}"; do if [[ $p == *-* ]]; then a=${p%-*}; b=${p#*-}; out+=($(seq "$a" "$b")); else out+=("$p"); fi; done
    echo "${out[@]}"; }
  ingest=" $(expand "$CORES") "
  for irq in /proc/irq/[0-9]*; do
    n=${irq##*/}; list=$(cat "$irq/smp_affinity_list" 2>/dev/null) || continue
    name=$(awk -v n="$n:" '$1==n {print $NF}' /proc/interrupts)
    case "$name" in *eth*|*ens*|*eno*|*enp*|*mlx*|*ice*|*i40e*|*ixgbe*|*virtio*-input*) ;; *) continue;; esac
    for c in $(expand "$list"); do
      if [[ $ingest == *" $c "* ]]; then
        echo "IRQ $n ($name) may run on ingest CPU $c -> echo <non-ingest CPUs> > /proc/irq/$n/smp_affinity_list"; advice=1; break
      fi
    done
  done
  if pgrep -x irqbalance >/dev/null; then
    echo "irqbalance is running: it may move NIC interrupts back onto ingest cores (IRQBALANCE_BANNED_CPULIST)"
  fi
fi
if [ "$advice" -eq 0 ]; then echo "nothing to change"; else echo "see tuning/README.md and tuning/sysctl.conf"; fi
exit "$advice"
