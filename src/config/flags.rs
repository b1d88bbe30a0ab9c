//! The command line: every flag, its default, its file key where the Agent or statsd_exporter
//! has one, and the parsers that check each value alone (naming the flag's value at fault).
//! Settings that depend on one another are checked by `Config::from_flags`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::Downstream;
use super::downstream;
use super::flag_values::*;
pub use super::flag_values::{CoreList, EolRequired, HistogramAggregates, Percentiles};
use crate::listen::Framing;
use crate::protocol::origin::Precedence;
use crate::sink::datadog::CountersAs;
use crate::sink::payload::Compression;

/// A format of tags inside metric names (`--name-tag-formats`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameTagFormat {
    Influxdb,
    Librato,
    Signalfx,
}

/// Clients of a running server (its HTTP endpoint).
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// A live view of a running server: per core packets/s, metrics/s, kernel drops, parse
    /// errors, live contexts, window close and receive pause; totals, each downstream's health
    /// and the metric names holding the most contexts. Refreshes every second; q quits.
    Top {
        /// The server's --http-addr.
        #[arg(long, default_value = super::DEFAULT_HTTP_ADDR)]
        http_addr: SocketAddr,
        /// Print one frame as plain text and exit (as `top -b -n 1`), for scripts.
        #[arg(long)]
        batch: bool,
    },
    /// Records every packet the server receives, for --seconds, into one file in the Datadog
    /// Agent's capture format (version 3, `.dog`), which the Agent's `dogstatsd-replay` and
    /// `corestatsd-blast --replay` send again. Waits for the capture to end and prints the
    /// file and its packet count.
    Capture {
        /// The server's --http-addr.
        #[arg(long, default_value = super::DEFAULT_HTTP_ADDR)]
        http_addr: SocketAddr,
        /// How long to record, 1 to 3600.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
        seconds: u64,
        /// Compress the file with zstd (`.dog.zst`).
        #[arg(long)]
        zstd: bool,
        /// Directory on the server's host; defaults to its --capture-dir.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// The last window's busiest contexts (with the server's --context-stats), or the metric
    /// names holding the most live contexts, as a table.
    Stats {
        /// The server's --http-addr.
        #[arg(long, default_value = super::DEFAULT_HTTP_ADDR)]
        http_addr: SocketAddr,
        /// Rows, 1 to 100.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=100))]
        top: u16,
        /// `samples` (the default when the server counts them) or `contexts`.
        #[arg(long, value_parser = ["samples", "contexts"])]
        by: Option<String>,
    },
}

/// A thread-per-core DogStatsD server: UDP in on every pinned core, per-core aggregation,
/// cross-core merge, flushed downstream every window.
#[derive(Parser, Debug)]
#[command(name = "corestatsd", version, args_conflicts_with_subcommands = true)]
pub struct Flags {
    /// With a command, a client of a running server's HTTP endpoint instead of a server.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// CPUs to run one shard each on, as `0-3`, `0,2` or `0-1,4`. Defaults to every CPU in the
    /// process' affinity mask.
    #[arg(long, value_parser = parse_cores)]
    pub cores: Option<CoreList>,

    /// UDP address every shard binds with SO_REUSEPORT; `0.0.0.0:8125` takes non-local traffic,
    /// port 0 picks a free port (logged). Defaults to 127.0.0.1:8125.
    #[arg(long, hide_default_value = true, default_value = "127.0.0.1:8125")]
    pub udp_addr: SocketAddr,

    /// Do not listen on UDP at all (for hosts that take DogStatsD over unix sockets or TCP only).
    #[arg(long)]
    pub no_udp: bool,

    /// The Agent key or variable that set `no_udp` (`dogstatsd_port: 0`), for errors.
    #[arg(skip)]
    pub no_udp_source: Option<String>,

    /// Unix datagram socket to listen on; repeatable. With one path every shard reads the same
    /// socket (the kernel hands each datagram to one reader); several paths are dealt to the
    /// shards round-robin. A stale socket file is replaced; a path that exists and is not a
    /// socket is an error. Defaults to none.
    #[arg(long = "uds-path", value_name = "PATH")]
    pub uds_paths: Vec<PathBuf>,

    /// Permissions of the unix socket files, in octal. Defaults to 0722 (as the Agent: anyone
    /// may send, only the owner may read).
    #[arg(long, hide_default_value = true, default_value = "0722", value_parser = parse_mode)]
    pub uds_mode: u32,

    /// Unix stream socket to listen on: each frame is a 4-byte little-endian length and a
    /// packet. A frame longer than --buffer-size-bytes closes its connection (counted).
    /// Each connection is served by one shard. Defaults to none.
    #[arg(long, value_name = "PATH")]
    pub uds_stream_path: Option<PathBuf>,

    /// TCP address to listen on (every shard accepts, SO_REUSEPORT); port 0 picks a free port
    /// (logged). Defaults to none.
    #[arg(long, value_name = "ADDR")]
    pub tcp_addr: Option<SocketAddr>,

    /// How TCP packets are delimited: `newline` (every line ends with `\n`: what every statsd
    /// TCP client sends, pystatsd and hot-shots among them, and what statsd_exporter and Vector
    /// read) or `length` (4-byte little-endian length, then the packet, as on the unix stream
    /// socket). A length-framed connection that opens with text is closed
    /// (`text_on_length_framing`) and logged. Defaults to newline.
    #[arg(long, hide_default_value = true, default_value = "newline", value_parser = parse_framing)]
    pub tcp_framing: Framing,

    /// A TCP connection that sends nothing for this long is closed (counted); 0 never closes
    /// one. Defaults to 300.
    #[arg(long, hide_default_value = true, default_value_t = 300)]
    pub tcp_idle_timeout_secs: u64,

    /// A unix stream connection that sends nothing for this long is closed (counted); 0 never
    /// closes one. Defaults to 300.
    #[arg(long, hide_default_value = true, default_value_t = 300)]
    pub uds_stream_idle_timeout_secs: u64,

    /// A stream connection that holds part of a frame (or line) for this long without
    /// completing one is closed (counted as frame_timeout; the part is dropped): a client
    /// trickling bytes cannot hold its slot. 0 turns it off. Defaults to 10.
    #[arg(long, hide_default_value = true, default_value_t = 10)]
    pub stream_frame_timeout_secs: u64,

    /// Open connections of each stream transport (TCP, unix stream: each its own) one shard
    /// serves. A new client past it takes the place of the transport's longest-idle connection,
    /// which is read to its end and closed (counted as evicted). Each holds up to
    /// 2 x --buffer-size-bytes. Defaults to 1024.
    #[arg(long, hide_default_value = true, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_shard: u32,

    /// Read the sending process' credentials on unix sockets (SO_PASSCRED / SO_PEERCRED) and
    /// map its pid to a container id through /proc/<pid>/cgroup; the id becomes part of the
    /// context as `|c:` would. Pids that cannot be resolved are counted. Defaults to off.
    #[arg(long)]
    pub origin_detection: bool,

    /// Whose container id wins when a message has both `|c:` and socket credentials:
    /// `client` or `socket`. Defaults to client.
    #[arg(long, hide_default_value = true, default_value = "client", value_parser = parse_precedence)]
    pub origin_precedence: Precedence,

    /// How long a shard caches a pid's container id (or its absence). Defaults to 60 (as the
    /// Agent).
    #[arg(long, hide_default_value = true, default_value_t = 60)]
    pub origin_cache_ttl_secs: u64,

    /// Where the host's /proc is mounted, for origin detection (`/host/proc` when corestatsd
    /// itself runs in a container). Defaults to /proc.
    #[arg(long, hide_default_value = true, default_value = "/proc")]
    pub proc_root: PathBuf,

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

    /// Distinct members a set context keeps exactly per window; past it the set turns into a
    /// HyperLogLog estimate (4 KiB, standard error 1.6 %), so one set cannot take unbounded
    /// memory. Counted in corestatsd.set_estimates. Defaults to 4096.
    #[arg(long, hide_default_value = true, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub set_exact_members: u32,

    /// How long an idle counter keeps emitting 0 after its last sample; 0 disables.
    /// Defaults to 300 (the Agent's `dogstatsd_expiry_seconds`).
    #[arg(long, hide_default_value = true, default_value_t = 300)]
    pub counter_zero_fill_secs: u64,

    /// How long any other idle context is kept before its memory is freed.
    /// Defaults to 20 (the Agent's `dogstatsd_context_expiry_seconds`).
    #[arg(long, hide_default_value = true, default_value_t = 20)]
    pub context_expiry_secs: u64,

    /// Where flushed metrics go: `jsonl:-` (stdout), `jsonl:PATH` (appended), `datadog` (the
    /// intake API at --dd-url), `prometheus-remote-write:URL`, `dogstatsd:HOST:PORT` or
    /// `dogstatsd+uds:PATH` (relay to another DogStatsD tier) or `prometheus-scrape` (served at
    /// /metrics on the HTTP endpoint, as statsd_exporter serves it). Repeatable: every window
    /// goes to each, each with its own queue, retries and telemetry. Config-file key:
    /// `downstream` (a list, or one value), used when no flag is given. Defaults to jsonl:-.
    #[arg(long, action = clap::ArgAction::Append, value_parser = downstream::parse_downstream)]
    pub downstream: Vec<Downstream>,

    /// Copies every received datagram, before parsing, to this UDP address (HOST:PORT), from the
    /// shard that received it, without ever blocking receive; failed sends are counted. The
    /// Agent's statsd_forward_host/port. Defaults to off.
    #[arg(long, value_parser = parse_forward_addr)]
    pub forward_addr: Option<SocketAddr>,

    /// Transports whose packets must end with `\n`, from udp, uds, uds_stream, tcp: on those, a
    /// packet's (or frame's) last line without one is dropped and counted
    /// (`corestatsd.unterminated_lines`), as the Agent's `dogstatsd_eol_required`. With
    /// `--tcp-framing newline` it applies to the bytes left when a client closes.
    /// Defaults to none.
    #[arg(long, value_parser = parse_eol_required)]
    pub eol_required: Option<EolRequired>,

    /// Events, and separately service checks, one shard holds between two flushes; more are
    /// dropped and counted (`corestatsd.pending_full_drops`). Bounds memory under an event
    /// flood. Defaults to 10000.
    #[arg(long, hide_default_value = true, default_value_t = 10_000)]
    pub max_pending_events: usize,

    /// A YAML file for settings too structured for flags, with the Datadog Agent's key names so a
    /// `datadog.yaml` section can be pasted in: `dogstatsd_mapper_profiles`,
    /// `dogstatsd_mapper_cache_size`, `statsd_metric_namespace`,
    /// `statsd_metric_namespace_blacklist`, `metric_filterlist` (+ `metric_filterlist_match_prefix`),
    /// `dogstatsd_tags`. A flag given on the command line replaces the file's value. Keys
    /// corestatsd does not use are listed at start-up and ignored. Defaults to none.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// statsd_exporter's mapping file (its --statsd.mapping-config): `mappings` of glob and
    /// regex rules with `name`, `labels` (as tags) and `action: drop`, matched as
    /// statsd_exporter matches (globs before regexes, first match wins), in the same DFA as the
    /// Agent's profiles (tried after them, for every name). Keys corestatsd does not honour are
    /// named at start-up. Defaults to none.
    #[arg(long, value_name = "FILE")]
    pub mapping_config: Option<PathBuf>,

    /// Names the mapper remembers per shard (hits and misses). Defaults to 1000 (as the Agent's
    /// `dogstatsd_mapper_cache_size`); 0 disables the cache.
    #[arg(long)]
    pub mapper_cache_size: Option<usize>,

    /// Prefix for every metric name, after mapping (a `.` is added if missing), except names
    /// starting with an exempt prefix. Defaults to none.
    #[arg(long)]
    pub namespace: Option<String>,

    /// A prefix exempt from --namespace; repeatable; replaces the default list (the Agent's
    /// standard prefixes: datadog.agent, datadog.dogstatsd, ..., jvm, kafka, runtime).
    #[arg(long = "namespace-exempt", value_name = "PREFIX")]
    pub namespace_exempt: Vec<String>,

    /// Drop metrics with exactly this final name (after mapping and namespace); repeatable.
    /// Counted as corestatsd.blocked_metrics. Defaults to none.
    #[arg(long = "block-metric", value_name = "NAME")]
    pub block_metric: Vec<String>,

    /// Drop metrics whose final name starts with this; repeatable. Defaults to none.
    #[arg(long = "block-metric-prefix", value_name = "PREFIX")]
    pub block_metric_prefix: Vec<String>,

    /// New contexts of final names matching this glob (`*` any run) have no host: the same
    /// series from many hosts aggregates into one. Repeatable; config key `strip_host`.
    /// Defaults to none.
    #[arg(long = "strip-host", value_name = "PATTERN")]
    pub strip_host: Vec<String>,

    /// A `key:value` tag added to every metric, event and service check; repeatable.
    /// Defaults to none.
    #[arg(long = "tag", value_name = "KEY:VALUE")]
    pub tags: Vec<String>,

    /// Contexts the process holds at most (each shard holds its share, rounded up). A sample
    /// whose new context would pass it is aggregated into its metric's overflow context (same
    /// name, type and host, tags `corestatsd_overflow:true`), counted in
    /// corestatsd.contexts_refused{reason:max_contexts}. File key `max_contexts`. Defaults to no
    /// cap.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_contexts: Option<u64>,

    /// Contexts of one metric name the process holds at most (each shard holds its share,
    /// rounded up); past it as --max-contexts. File key `max_contexts_per_metric`. Defaults to
    /// no cap.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_contexts_per_metric: Option<u64>,

    /// The memory the process may use. From 90 % of it new contexts go to overflow contexts,
    /// from 95 % events and service checks are dropped and histograms keep no exact samples,
    /// all counted. 0 turns it off. File key `memory_limit_bytes`. Defaults to 90 % of the
    /// cgroup's memory limit when there is one (a container), else none.
    #[arg(long)]
    pub memory_limit_bytes: Option<u64>,

    /// Points (metrics, events, service checks) that may wait for the sink thread. A window's
    /// points that find this many already waiting (the downstream or the sink thread is behind)
    /// are dropped, counted in corestatsd.sink_queue_drops and logged; descriptions of new
    /// contexts and expiries still go through. File key `sink_queue_max_points`. Defaults to
    /// 4000000 (a FlushedMetric is 56 bytes: about 220 MB).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub sink_queue_max_points: Option<u64>,

    /// Address of the operator's HTTP endpoint (`/readyz`, `/healthz`, `/metrics`, `/status`),
    /// served from a thread of its own; port 0 picks a free port (the start-up line gives it).
    /// Defaults to 127.0.0.1:8135: 8125 + 10, beside DogStatsD's port and clear of the ports
    /// the Agent (5000-5002, 6062, 6162, 8125, 8126, 17123), statsd_exporter (9102, 9125) and
    /// Prometheus (9090) take. When the default is taken (another corestatsd on the host), one
    /// line says so and the server runs without the endpoint; an address given here that cannot
    /// be bound is a start-up error. (statsd_exporter's is its `--web.listen-address` flag; the
    /// Agent has no file key for this.)
    #[arg(long, value_name = "ADDR", conflicts_with = "no_http")]
    pub http_addr: Option<SocketAddr>,

    /// Run without the HTTP endpoint.
    #[arg(long)]
    pub no_http: bool,

    /// Where `corestatsd capture` (`POST /capture`) writes its files unless it names a
    /// directory. File key `dogstatsd_capture_path` (as the Agent). Defaults to the system's
    /// temporary directory.
    #[arg(long, value_name = "DIR")]
    pub capture_dir: Option<PathBuf>,

    /// A unix socket (owner-only) through which a newer corestatsd started with --take-over
    /// takes this one's listeners without closing them. Defaults to none.
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,

    /// Start by taking the listening sockets of the corestatsd serving --control-socket (same
    /// flags): no datagram is refused or lost, its open window is aggregated here, and it exits.
    #[arg(long)]
    pub take_over: bool,

    /// Read tags inside metric names, as statsd_exporter does, for clients that put them there
    /// (hot-shots' `telegraf: true` sends the first): `influxdb` (`name,k=v,k2=v2:1|c`),
    /// `librato` (`name#k=v:1|c`), `signalfx` (`name[k=v]:1|c`), comma separated. Each `k=v`
    /// becomes the tag `k:v` and the mapper sees the bare name; a malformed one is dropped and
    /// counted (`corestatsd.name_tag_errors{reason}`). Defaults to none (as the Agent).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "FORMATS")]
    pub name_tag_formats: Vec<NameTagFormat>,

    /// statsd's gauge deltas: a signed gauge value (`+5|g`, `-3|g`, as pystatsd's
    /// `delta=True`, hot-shots' and statsd-client's `gaugeDelta` send) adjusts the gauge's last
    /// value in the window, or its value at the end of the previous one when the window has
    /// none yet (0 for a new gauge); an unsigned value sets it. Off by default, as the Agent,
    /// which takes `-3` as the value -3.
    #[arg(long)]
    pub gauge_deltas: bool,

    /// Count every context's samples per window, so `/contexts?by=samples` (and
    /// `corestatsd stats`) can name the busiest contexts: 4 bytes a context and one store per
    /// sample. The names holding the most contexts are answered without it. File key
    /// `dogstatsd_stats_enable` (as the Agent, whose `dogstatsd-stats` needs it). Defaults to off.
    #[arg(long)]
    pub context_stats: bool,

    /// Do not emit corestatsd.* self metrics (the per-window log line stays).
    #[arg(long)]
    pub no_self_metrics: bool,

    /// Emit self metrics per shard, tagged `shard:N`, instead of summed over the process.
    /// Defaults to off.
    #[arg(long)]
    pub self_metrics_per_shard: bool,

    /// `--downstream datadog`: the intake's base URL (any http or https URL, e.g. a local
    /// intake). Defaults to https://api.datadoghq.com.
    #[arg(
        long,
        hide_default_value = true,
        default_value = "https://api.datadoghq.com"
    )]
    pub dd_url: String,

    /// `--downstream datadog`: a file holding the API key (surrounding whitespace ignored). The
    /// key is otherwise read from DD_API_KEY; it is never logged. Defaults to none.
    #[arg(long, value_name = "FILE")]
    pub dd_api_key_file: Option<PathBuf>,

    /// `--downstream datadog`: counts go out as `rate` (sum / interval, type RATE, as the Agent
    /// sends them) or `count` (the window's sum, type COUNT). Defaults to rate.
    #[arg(long, hide_default_value = true, default_value = "rate", value_parser = downstream::parse_counters_as)]
    pub dd_counters_as: CountersAs,

    /// `--downstream datadog`: payload compression, `zstd` (level 1, the Agent's default),
    /// `deflate` (zlib) or `none`. Defaults to zstd.
    #[arg(long, hide_default_value = true, default_value = "zstd", value_parser = downstream::parse_compression)]
    pub dd_compression: Compression,

    /// HTTP downstreams: bytes of payloads held in memory while the downstream is slow or down;
    /// past it the oldest go to --retry-spill-dir, or are dropped and counted
    /// (corestatsd.downstream.dropped_payloads). Defaults to 67108864 (64 MiB).
    #[arg(long, visible_alias = "dd-retry-queue-bytes", hide_default_value = true, default_value_t = 64 << 20)]
    pub retry_queue_bytes: usize,

    /// HTTP downstreams: a directory where payloads that do not fit in memory, or are still
    /// undelivered at stop, are written; a later start sends them first. Defaults to none.
    #[arg(long, visible_alias = "dd-retry-spill-dir", value_name = "DIR")]
    pub retry_spill_dir: Option<PathBuf>,

    /// HTTP downstreams: the most --retry-spill-dir may hold; past it the oldest files are
    /// dropped and counted. Defaults to 1073741824 (1 GiB).
    #[arg(long, hide_default_value = true, default_value_t = 1 << 30)]
    pub retry_spill_max_bytes: u64,

    /// HTTP downstreams: the whole-request timeout. Defaults to 20, as the Agent's
    /// `forwarder_timeout` (its file key).
    #[arg(long, hide_default_value = true, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_timeout_secs: u64,

    /// HTTP downstreams: the first retry delay; each further retry doubles it, up to
    /// --retry-backoff-max-ms, each drawn in [1/2, 1] of that. Defaults to 1000.
    #[arg(long, hide_default_value = true, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_backoff_base_ms: u64,

    /// HTTP downstreams: the longest retry delay. Defaults to 32000.
    #[arg(long, hide_default_value = true, default_value_t = 32_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_backoff_max_ms: u64,

    /// HTTP downstreams: write every payload to --retry-spill-dir (synced, directory too)
    /// before sending it, and remove it once delivered, so a crash or kill -9 loses only the
    /// open window and what the sink had not encoded yet; a restart on the same directory sends
    /// the rest. Costs a file write and two syncs per payload. Off by default.
    #[arg(long)]
    pub durable_delivery: bool,

    /// HTTP downstreams: requests out at once, each on its own connection (file key
    /// `forwarder_num_workers`). Datadog payloads go in any order; Prometheus remote write
    /// always keeps one, since Prometheus refuses a series' samples out of order. Defaults to 4.
    #[arg(long, hide_default_value = true, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub http_max_in_flight: u32,

    /// HTTP downstreams: at stop, how long to keep delivering before what is left is spilled
    /// (or dropped and counted, without --retry-spill-dir). Defaults to 5.
    #[arg(long, hide_default_value = true, default_value_t = 5)]
    pub downstream_stop_timeout_secs: u64,

    /// `--downstream prometheus-remote-write`: how long a counter series unseen keeps its
    /// running total; after that it restarts from its next value (a counter reset to
    /// Prometheus). Defaults to 900; 0 keeps totals forever.
    #[arg(long, hide_default_value = true, default_value_t = 900)]
    pub remote_write_counter_expiry_secs: u64,

    /// `--downstream prometheus-scrape`: how long a series no point updates stays on
    /// `/metrics`; 0 keeps it. Defaults to the --mapping-config file's `defaults.ttl` (a
    /// mapping's own `ttl` for the names it makes), else 0, as statsd_exporter.
    #[arg(long)]
    pub scrape_series_ttl_secs: Option<u64>,

    /// `--downstream prometheus-scrape`: series held at most; a new one past it is refused and
    /// counted (corestatsd_scrape_series_refused_total). Defaults to --max-contexts when set,
    /// else 1000000.
    #[arg(long)]
    pub scrape_max_series: Option<usize>,

    /// `--downstream dogstatsd…`: the largest datagram the relay sends. Defaults to 1432 for UDP
    /// and 8192 for unix sockets.
    #[arg(long, value_parser = clap::value_parser!(u64).range(64..=65507))]
    pub relay_max_packet_bytes: Option<u64>,

    /// Microseconds an idle shard busy-polls before parking. Spinning trades CPU for fewer drops
    /// on bursty UDP (wake-up latency). Defaults to 0 (park at once).
    #[arg(long, hide_default_value = true, default_value_t = 0)]
    pub spin_before_park_us: u64,
}
