//! Command-line flags → a validated `Config`. Every flag documents its default; every error names
//! the flag and the bad value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::aggregate::AggregateConfig;
use crate::merge::HistogramOutput;
use crate::sink::Suffix;

/// A thread-per-core DogStatsD server: UDP in on every pinned core, per-core aggregation,
/// cross-core merge, flushed downstream every window.
#[derive(Parser, Debug)]
#[command(name = "corestatsd", version)]
pub struct Flags {
    /// CPUs to run one shard each on, as `0-3`, `0,2` or `0-1,4`. Defaults to every CPU in the
    /// process' affinity mask.
    #[arg(long, value_parser = parse_cores)]
    pub cores: Option<CoreList>,

    /// UDP address every shard binds with SO_REUSEPORT; `0.0.0.0:8125` takes non-local traffic,
    /// port 0 picks a free port (logged). Defaults to 127.0.0.1:8125.
    #[arg(long, hide_default_value = true, default_value = "127.0.0.1:8125")]
    pub udp_addr: SocketAddr,

    /// SO_RCVBUF requested for each socket; the granted value is logged. Larger absorbs longer
    /// bursts at the cost of kernel memory. 0 keeps the OS default. Defaults to 4194304 (4 MiB).
    #[arg(long, hide_default_value = true, default_value_t = 4 << 20)]
    pub so_rcvbuf_bytes: usize,

    /// Size of each receive buffer; a longer datagram is counted as truncated and its cut last
    /// line dropped. Defaults to 8192, the Agent's `dogstatsd_buffer_size`.
    #[arg(long, hide_default_value = true, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(64..=1<<20))]
    pub buffer_size_bytes: u32,

    /// Datagrams taken per `recvmmsg` call, and so buffers in each shard's pool. More amortises
    /// the syscall; fewer keeps the pool small. Defaults to 32.
    #[arg(long, hide_default_value = true, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub recv_batch_datagrams: u32,

    /// Host of metrics without a `host:` tag; an empty string means no host. Defaults to the
    /// machine's hostname.
    #[arg(long)]
    pub hostname: Option<String>,

    /// Aggregation window, aligned to the wall clock. Defaults to 10 (the Agent's bucket).
    #[arg(long, hide_default_value = true, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub bucket_secs: u32,

    /// Histogram/timer aggregates to emit, from max, min, median, avg, count, sum.
    /// Defaults to max,median,avg,count.
    #[arg(long, hide_default_value = true, default_value = "max,median,avg,count", value_parser = parse_aggregates)]
    pub histogram_aggregates: HistogramAggregates,

    /// Histogram/timer percentiles to emit, each in (0, 1); `0.95` emits `name.95percentile`.
    /// Defaults to 0.95.
    #[arg(long, hide_default_value = true, default_value = "0.95", value_parser = parse_percentiles)]
    pub histogram_percentiles: Percentiles,

    /// Histogram/timer samples kept exactly per context and window; beyond that a DDSketch
    /// (1/128 relative accuracy) bounds memory. Defaults to 512.
    #[arg(long, hide_default_value = true, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1<<20))]
    pub histogram_exact_samples: u32,

    /// How long an idle counter keeps emitting 0 after its last sample; 0 disables.
    /// Defaults to 300 (the Agent's `dogstatsd_expiry_seconds`).
    #[arg(long, hide_default_value = true, default_value_t = 300)]
    pub counter_zero_fill_secs: u64,

    /// How long any other idle context is kept before its memory is freed.
    /// Defaults to 20 (the Agent's `dogstatsd_context_expiry_seconds`).
    #[arg(long, hide_default_value = true, default_value_t = 20)]
    pub context_expiry_secs: u64,

    /// Where flushed metrics go: `jsonl:-` (stdout) or `jsonl:PATH` (appended).
    /// Defaults to jsonl:-.
    #[arg(long, hide_default_value = true, default_value = "jsonl:-", value_parser = parse_downstream)]
    pub downstream: Downstream,

    /// Copies every received datagram, before parsing, to this UDP address (HOST:PORT), from the
    /// shard that received it, without ever blocking receive; failed sends are counted. The
    /// Agent's statsd_forward_host/port. Defaults to off.
    #[arg(long, value_parser = parse_forward_addr)]
    pub forward_addr: Option<SocketAddr>,

    /// Transports whose datagrams must end with `\n`: on those, a last line without one is
    /// dropped and counted (`corestatsd.unterminated_lines`), as the Agent's
    /// `dogstatsd_eol_required`. Only `udp` exists yet. Defaults to none.
    #[arg(long, value_parser = parse_eol_required)]
    pub eol_required: Option<EolRequired>,

    /// Events, and separately service checks, one shard holds between two flushes; more are
    /// dropped and counted (`corestatsd.pending_full_drops`). Bounds memory under an event
    /// flood. Defaults to 10000.
    #[arg(long, hide_default_value = true, default_value_t = 10_000)]
    pub max_pending_events: usize,

    /// Do not emit corestatsd.* self metrics (the per-window log line stays).
    #[arg(long)]
    pub no_self_metrics: bool,

    /// Microseconds an idle shard busy-polls before parking. Spinning trades CPU for fewer drops
    /// on bursty UDP (wake-up latency). Defaults to 0 (park at once).
    #[arg(long, hide_default_value = true, default_value_t = 0)]
    pub spin_before_park_us: u64,
}

/// A `--cores` list, in the order given.
#[derive(Debug, Clone)]
pub struct CoreList(pub Vec<usize>);

#[derive(Debug, Clone)]
pub struct HistogramAggregates(pub Vec<Suffix>);

#[derive(Debug, Clone)]
pub struct Percentiles(pub Vec<(u8, f64)>);

#[derive(Debug, Clone, PartialEq)]
pub enum Downstream {
    JsonlStdout,
    JsonlFile(PathBuf),
}

impl std::fmt::Display for Downstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Downstream::JsonlStdout => write!(f, "jsonl:-"),
            Downstream::JsonlFile(p) => write!(f, "jsonl:{}", p.display()),
        }
    }
}

fn parse_cores(s: &str) -> Result<CoreList, String> {
    let mut cores = Vec::new();
    for part in s.split(',') {
        let bad = || format!("{part:?} is not a CPU number or range like 0-3");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(format!("range {part:?} runs backwards"));
                }
                cores.extend(a..=b);
            }
            None => cores.push(part.parse().map_err(|_| bad())?),
        }
    }
    let mut sorted = cores.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != cores.len() {
        return Err("a CPU is listed twice".into());
    }
    Ok(CoreList(cores))
}

fn parse_aggregates(s: &str) -> Result<HistogramAggregates, String> {
    s.split(',')
        .filter(|a| !a.is_empty())
        .map(|a| {
            Suffix::from_aggregate(a)
                .ok_or_else(|| format!("{a:?} is not one of max, min, median, avg, count, sum"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(HistogramAggregates)
}

fn parse_percentiles(s: &str) -> Result<Percentiles, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.parse::<f64>() {
            Ok(q) if q > 0.0 && q < 1.0 => Ok(((q * 100.0 + 0.5) as u8, q)),
            _ => Err(format!("{p:?} is not a number in (0, 1)")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Percentiles)
}

/// `--eol-required` transports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EolRequired {
    pub udp: bool,
}

fn parse_eol_required(s: &str) -> Result<EolRequired, String> {
    let mut eol = EolRequired::default();
    for t in s.split(',').filter(|t| !t.is_empty()) {
        match t {
            "udp" => eol.udp = true,
            other => {
                return Err(format!(
                    "{other:?} is not a transport corestatsd listens on (udp)"
                ));
            }
        }
    }
    Ok(eol)
}

fn parse_forward_addr(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("{s:?} is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

fn parse_downstream(s: &str) -> Result<Downstream, String> {
    match s.split_once(':') {
        Some(("jsonl", "-")) => Ok(Downstream::JsonlStdout),
        Some(("jsonl", "")) => Err("jsonl needs a path or - for stdout".into()),
        Some(("jsonl", path)) => Ok(Downstream::JsonlFile(PathBuf::from(path))),
        _ => Err(format!(
            "{s:?} is not a known downstream (jsonl:- or jsonl:PATH)"
        )),
    }
}

/// Validated settings for one run.
#[derive(Debug, Clone)]
pub struct Config {
    pub cores: Vec<usize>,
    pub udp_addr: SocketAddr,
    pub so_rcvbuf_bytes: usize,
    pub buffer_size_bytes: usize,
    pub recv_batch_datagrams: usize,
    pub aggregate: AggregateConfig,
    pub histogram: HistogramOutput,
    pub downstream: Downstream,
    pub forward_addr: Option<SocketAddr>,
    pub eol_required: EolRequired,
    pub self_metrics: bool,
    pub spin_before_park: Duration,
}

impl Config {
    /// Resolves defaults that need the machine (CPUs, hostname).
    pub fn from_flags(f: Flags) -> Result<Config, String> {
        let available: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        let cores = match f.cores {
            Some(CoreList(c)) => {
                if let Some(bad) = c.iter().find(|c| !available.contains(c)) {
                    return Err(format!(
                        "--cores: CPU {bad} is not in this process' affinity mask {available:?}"
                    ));
                }
                c
            }
            None if available.is_empty() => {
                return Err("--cores: cannot read the CPU affinity mask; pass --cores".into());
            }
            None => available,
        };
        let hostname = match f.hostname {
            Some(h) => h,
            None => nix::unistd::gethostname()
                .map_err(|e| {
                    format!("--hostname: cannot read the machine's hostname ({e}); pass --hostname")
                })?
                .to_string_lossy()
                .into_owned(),
        };
        Ok(Config {
            udp_addr: f.udp_addr,
            so_rcvbuf_bytes: f.so_rcvbuf_bytes,
            buffer_size_bytes: f.buffer_size_bytes as usize,
            recv_batch_datagrams: f.recv_batch_datagrams as usize,
            aggregate: AggregateConfig {
                bucket_secs: f.bucket_secs,
                exact_samples: f.histogram_exact_samples as usize,
                counter_zero_fill_secs: f.counter_zero_fill_secs,
                context_expiry_secs: f.context_expiry_secs,
                default_host: (!hostname.is_empty()).then(|| hostname.into_bytes()),
                owners: cores.len(),
                max_pending_events: f.max_pending_events,
            },
            cores,
            histogram: HistogramOutput {
                aggregates: f.histogram_aggregates.0,
                percentiles: f.histogram_percentiles.0,
            },
            downstream: f.downstream,
            forward_addr: f.forward_addr,
            eol_required: f.eol_required.unwrap_or_default(),
            self_metrics: !f.no_self_metrics,
            spin_before_park: Duration::from_micros(f.spin_before_park_us),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_accept_lists_and_ranges() {
        assert_eq!(parse_cores("0-3").unwrap().0, vec![0, 1, 2, 3]);
        assert_eq!(parse_cores("0,2").unwrap().0, vec![0, 2]);
        assert_eq!(parse_cores("0-1,4").unwrap().0, vec![0, 1, 4]);
        assert!(parse_cores("3-1").is_err());
        assert!(parse_cores("0,0").is_err());
        assert!(parse_cores("a").is_err());
        assert!(parse_cores("").is_err());
    }

    #[test]
    fn percentiles_and_aggregates_are_validated() {
        assert_eq!(
            parse_percentiles("0.95,0.5").unwrap().0,
            vec![(95, 0.95), (50, 0.5)]
        );
        assert!(parse_percentiles("1.5").is_err());
        assert!(parse_percentiles("0").is_err());
        assert_eq!(
            parse_aggregates("max,sum").unwrap().0,
            vec![Suffix::Max, Suffix::Sum]
        );
        assert!(parse_aggregates("p99").is_err());
    }

    #[test]
    fn eol_required_names_known_transports_only() {
        assert!(parse_eol_required("udp").unwrap().udp);
        assert!(!parse_eol_required("").unwrap().udp);
        assert!(parse_eol_required("udp,smoke").is_err());
    }

    #[test]
    fn downstream_forms() {
        assert_eq!(
            parse_downstream("jsonl:-").unwrap(),
            Downstream::JsonlStdout
        );
        assert_eq!(
            parse_downstream("jsonl:/tmp/x.jsonl").unwrap(),
            Downstream::JsonlFile("/tmp/x.jsonl".into())
        );
        assert!(parse_downstream("datadog").is_err());
        assert!(parse_downstream("jsonl:").is_err());
    }
}
