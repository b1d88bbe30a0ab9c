//! Command-line flags → a validated `Config`. Every flag documents its default; every error names
//! the flag and the bad value.

mod agent;
mod downstream;
mod file;
mod flag_values;
mod flags;
mod names;
mod reload;

pub use downstream::{Downstream, DownstreamSettings};
use flags::CoreList;
pub use flags::{Command, EolRequired, Flags};
pub use reload::reload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::aggregate::AggregateConfig;
use crate::listen::{Framing, Transport};
use crate::merge::HistogramOutput;

/// `--origin-detection` settings.
#[derive(Debug, Clone)]
pub struct OriginDetection {
    pub cache_ttl: Duration,
    pub proc_root: PathBuf,
}

/// Where the operator's HTTP endpoint listens (`--http-addr`, `--no-http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpListen {
    Off,
    /// The default address: if taken, the server runs without the endpoint.
    Default(SocketAddr),
    /// Given with `--http-addr`: if it cannot be bound, the server does not start.
    Given(SocketAddr),
}

/// `--http-addr` when neither it nor `--no-http` is given.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8135";

/// Validated settings for one run.
#[derive(Debug, Clone)]
pub struct Config {
    pub cores: Vec<usize>,
    /// `None` with `--no-udp`.
    pub udp_addr: Option<SocketAddr>,
    pub uds_paths: Vec<PathBuf>,
    pub uds_mode: u32,
    pub uds_stream_path: Option<PathBuf>,
    pub tcp_addr: Option<SocketAddr>,
    pub tcp_framing: Framing,
    /// `None` never closes an idle connection.
    pub tcp_idle_timeout: Option<Duration>,
    /// `None` never closes an idle connection.
    pub uds_stream_idle_timeout: Option<Duration>,
    /// `None`: a partial frame may wait for ever.
    pub stream_frame_timeout: Option<Duration>,
    pub max_connections_per_shard: usize,
    pub origin: Option<OriginDetection>,
    pub so_rcvbuf_bytes: usize,
    pub buffer_size_bytes: usize,
    pub recv_batch_datagrams: usize,
    pub aggregate: AggregateConfig,
    pub histogram: HistogramOutput,
    /// Every window goes to each, in this order.
    pub downstream: Vec<Downstream>,
    pub downstream_settings: DownstreamSettings,
    pub forward_addr: Option<SocketAddr>,
    pub eol_required: EolRequired,
    pub self_metrics: bool,
    pub self_metrics_per_shard: bool,
    /// `--memory-limit-bytes` as resolved (flag, file, or the cgroup's), and where from.
    pub memory_limit: Option<(u64, &'static str)>,
    pub spin_before_park: Duration,
    /// `--sink-queue-max-points`.
    pub sink_queue_max_points: u64,
    pub http: HttpListen,
    /// `--capture-dir`.
    pub capture_dir: PathBuf,
    /// `--control-socket`.
    pub control_socket: Option<PathBuf>,
    /// `--take-over`.
    pub take_over: bool,
    /// Keys of `--config` that corestatsd does not use (logged at start-up).
    pub ignored_config_keys: Vec<String>,
}

/// Why the command line could not be read.
#[derive(Debug)]
pub enum FlagsError {
    /// clap's, for the command line itself (and `--help`, `--version`).
    Clap(clap::Error),
    /// A key of `--config` or a `DD_*` variable, named.
    Setting(String),
}

/// The command line, after the Datadog Agent's keys of `--config` and their `DD_*` variables
/// (`agent.rs`): each stands for a flag, placed before the command line's own arguments, so
/// flags win over the environment, which wins over the file.
pub fn parse_args(args: Vec<std::ffi::OsString>) -> Result<Flags, FlagsError> {
    use clap::{CommandFactory, FromArgMatches, Parser};
    let given = Flags::try_parse_from(&args).map_err(FlagsError::Clap)?;
    if given.command.is_some() {
        return Ok(given);
    }
    let (file_keys, file_name) = match &given.config {
        Some(p) => (
            file::load(p).map_err(FlagsError::Setting)?.agent,
            p.display().to_string(),
        ),
        None => (Vec::new(), String::new()),
    };
    let env = |v: &str| std::env::var(v).ok().filter(|v| !v.is_empty());
    let found = agent::gather(&file_keys, &file_name, &env);
    let (settings, _) = agent::settings(&found).map_err(FlagsError::Setting)?;
    if settings.is_empty() {
        return Ok(given);
    }
    let prog = args.first().cloned().unwrap_or_else(|| "corestatsd".into());
    let on_line = |flag: &str| {
        args.iter().skip(1).any(|a| {
            a.to_str()
                .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
        })
    };
    let mut argv = vec![prog.clone()];
    let mut no_udp_source = None;
    for s in settings {
        // The command line's own choice of listener wins whole.
        let overridden = match s.flag {
            "--uds-path" => on_line("--uds-path"),
            "--no-udp" => on_line("--udp-addr"),
            "--udp-addr" => on_line("--no-udp"),
            _ => false,
        };
        if overridden {
            continue;
        }
        let mut one = vec![prog.clone(), s.flag.into()];
        one.extend(s.value.clone().map(Into::into));
        // Alone first, so a bad value is named by its key.
        if let Err(e) = Flags::try_parse_from(&one) {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("bad value");
            return Err(FlagsError::Setting(format!(
                "{} (as {}): {}",
                s.source,
                s.flag,
                first.trim_start_matches("error: ")
            )));
        }
        argv.extend(one.into_iter().skip(1));
        if s.flag == "--no-udp" && !on_line("--no-udp") {
            no_udp_source = Some(format!("{} 0 (as --no-udp)", s.source));
        }
    }
    argv.extend(args.into_iter().skip(1));
    let matches = Flags::command()
        .args_override_self(true)
        .try_get_matches_from(argv)
        .map_err(FlagsError::Clap)?;
    let mut flags = Flags::from_arg_matches(&matches).map_err(FlagsError::Clap)?;
    flags.no_udp_source = no_udp_source;
    Ok(flags)
}

/// How an error names a key of `--config`: `--config PATH: KEY`.
pub(super) fn file_key(config: Option<&std::path::Path>, key: &str) -> String {
    let path = config.unwrap_or(std::path::Path::new(""));
    format!("--config {}: {key}", path.display())
}

/// `--downstream` when no flag gives one: the `downstream` list of `--config`, else `jsonl:-`.
fn file_downstreams(f: &Flags, file: &file::FileConfig) -> Result<Vec<Downstream>, String> {
    if file.downstream.is_empty() {
        return Ok(vec![Downstream::JsonlStdout]);
    }
    file.downstream
        .iter()
        .enumerate()
        .map(|(i, d)| {
            downstream::parse_downstream(d).map_err(|e| {
                format!(
                    "{} {d:?}: {e}",
                    file_key(f.config.as_deref(), &format!("downstream[{i}]"))
                )
            })
        })
        .collect()
}

/// The Agent's `additional_endpoints`, from `DD_ADDITIONAL_ENDPOINTS` (JSON, as the Agent reads
/// it) over the file: (URL, API key) pairs, URLs checked.
fn additional_endpoints(file: &file::FileConfig) -> Result<Vec<(String, String)>, String> {
    let (endpoints, source) = match std::env::var("DD_ADDITIONAL_ENDPOINTS")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        Some(json) => (
            serde_json::from_str::<std::collections::BTreeMap<String, Vec<String>>>(&json)
                .map_err(|e| {
                    format!("DD_ADDITIONAL_ENDPOINTS is not a JSON object of URL to API keys: {e}")
                })?
                .into_iter()
                .collect(),
            "DD_ADDITIONAL_ENDPOINTS",
        ),
        None => (
            file.additional_endpoints.clone(),
            "additional_endpoints in --config",
        ),
    };
    let mut out = Vec::new();
    for (url, keys) in endpoints {
        let url = downstream::check_url(source, &url)?;
        for key in keys.into_iter().map(|k| k.trim().to_owned()) {
            if key.is_empty() {
                return Err(format!("{source}: {url} has an empty API key"));
            }
            out.push((url.clone(), key));
        }
    }
    Ok(out)
}

/// `--sink-queue-max-points` when neither the flag nor the file sets it.
pub const DEFAULT_SINK_QUEUE_MAX_POINTS: u64 = 4_000_000;

impl Config {
    /// The downstreams as given, `, `-separated.
    pub fn downstream_names(&self) -> String {
        let names: Vec<String> = self.downstream.iter().map(ToString::to_string).collect();
        names.join(", ")
    }

    /// Whether some downstream is `d`.
    pub fn has_downstream(&self, d: &Downstream) -> bool {
        self.downstream.contains(d)
    }

    /// The transports something listens on.
    pub fn transports(&self) -> Vec<Transport> {
        Transport::ALL
            .into_iter()
            .filter(|t| match t {
                Transport::Udp => self.udp_addr.is_some(),
                Transport::Uds => !self.uds_paths.is_empty(),
                Transport::UdsStream => self.uds_stream_path.is_some(),
                Transport::Tcp => self.tcp_addr.is_some(),
            })
            .collect()
    }

    /// Resolves defaults that need the machine (CPUs, hostname).
    pub fn from_flags(mut f: Flags) -> Result<Config, String> {
        let file = match &f.config {
            Some(path) => file::load(path)?,
            None => file::FileConfig::default(),
        };
        let from_file = f.downstream.is_empty();
        if from_file {
            f.downstream = file_downstreams(&f, &file)?;
        }
        let env_profiles = std::env::var("DD_DOGSTATSD_MAPPER_PROFILES").ok();
        let names = names::names_config(&f, &file, env_profiles.as_deref())?;
        let mut downstream_settings = downstream::settings(&f)?;
        // The file's own api_key (its DD_API_KEY and --dd-api-key-file are read at start-up).
        let file_name = f.config.as_ref().map(|p| p.display().to_string());
        let found = agent::gather(&file.agent, file_name.as_deref().unwrap_or(""), &|_| None);
        downstream_settings.dd_api_key = agent::settings(&found)?.1;
        downstream_settings.dd_additional = additional_endpoints(&file)?;
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
        if f.take_over && f.control_socket.is_none() {
            return Err(
                "--take-over takes the listeners through --control-socket: give its path".into(),
            );
        }
        if f.no_udp && f.uds_paths.is_empty() && f.uds_stream_path.is_none() && f.tcp_addr.is_none()
        {
            return Err(format!(
                "{} leaves nothing to listen on: add --uds-path, --uds-stream-path or --tcp-addr",
                f.no_udp_source.as_deref().unwrap_or("--no-udp")
            ));
        }
        for (i, p) in f.uds_paths.iter().enumerate() {
            if f.uds_paths[..i].contains(p) || f.uds_stream_path.as_ref() == Some(p) {
                return Err(format!(
                    "--uds-path {}: the path is given twice",
                    p.display()
                ));
            }
        }
        let max_contexts = f.max_contexts.or(file.max_contexts.map(|n| n as u64));
        let max_per_metric = f
            .max_contexts_per_metric
            .or(file.max_contexts_per_metric.map(|n| n as u64));
        // A series per context at most, by default.
        if downstream_settings.scrape_max_series.is_none() {
            downstream_settings.scrape_max_series = max_contexts.map(|n| n as usize);
        }
        if let Some(twice) = f
            .downstream
            .iter()
            .enumerate()
            .find(|(i, d)| f.downstream[..*i].contains(d))
        {
            let source = if from_file {
                file_key(f.config.as_deref(), "downstream")
            } else {
                "--downstream".to_owned()
            };
            return Err(format!("{source}: {} is given twice", twice.1));
        }
        if f.downstream.contains(&Downstream::PrometheusScrape) && f.no_http {
            return Err(
                "--downstream prometheus-scrape is served at /metrics on the HTTP endpoint: \
                 drop --no-http (and choose its address with --http-addr)"
                    .into(),
            );
        }
        // Each shard holds its share, rounded up: the process holds at most about the cap.
        let shards = cores.len() as u64;
        let share = |cap: Option<u64>| cap.map(|n| n.div_ceil(shards) as usize);
        let memory_limit = match (f.memory_limit_bytes, file.memory_limit_bytes) {
            (Some(0), _) | (None, Some(0)) => None,
            (Some(b), _) => Some((b, "--memory-limit-bytes")),
            (None, Some(b)) => Some((b, "memory_limit_bytes in --config")),
            (None, None) => {
                crate::memory::cgroup_limit().map(|b| (b / 10 * 9, "90% of the cgroup limit"))
            }
        };
        Ok(Config {
            ignored_config_keys: file.ignored,
            udp_addr: (!f.no_udp).then_some(f.udp_addr),
            uds_paths: f.uds_paths,
            uds_mode: f.uds_mode,
            uds_stream_path: f.uds_stream_path,
            tcp_addr: f.tcp_addr,
            tcp_framing: f.tcp_framing,
            tcp_idle_timeout: (f.tcp_idle_timeout_secs > 0)
                .then(|| Duration::from_secs(f.tcp_idle_timeout_secs)),
            uds_stream_idle_timeout: (f.uds_stream_idle_timeout_secs > 0)
                .then(|| Duration::from_secs(f.uds_stream_idle_timeout_secs)),
            stream_frame_timeout: (f.stream_frame_timeout_secs > 0)
                .then(|| Duration::from_secs(f.stream_frame_timeout_secs)),
            max_connections_per_shard: f.max_connections_per_shard as usize,
            origin: f.origin_detection.then(|| OriginDetection {
                cache_ttl: Duration::from_secs(f.origin_cache_ttl_secs),
                proc_root: f.proc_root,
            }),
            so_rcvbuf_bytes: f.so_rcvbuf_bytes,
            buffer_size_bytes: f.buffer_size_bytes as usize,
            recv_batch_datagrams: f.recv_batch_datagrams as usize,
            aggregate: AggregateConfig {
                bucket_secs: f.bucket_secs,
                exact_samples: f.histogram_exact_samples as usize,
                set_exact_members: f.set_exact_members as usize,
                counter_zero_fill_secs: f.counter_zero_fill_secs,
                context_expiry_secs: f.context_expiry_secs,
                default_host: (!hostname.is_empty()).then(|| hostname.into_bytes()),
                owners: cores.len(),
                max_pending_events: f.max_pending_events,
                origin_precedence: f.origin_precedence,
                names,
                max_contexts: share(max_contexts),
                max_contexts_per_metric: share(max_per_metric),
                context_stats: f.context_stats || file.context_stats.unwrap_or(false),
                gauge_deltas: f.gauge_deltas,
            },
            cores,
            histogram: HistogramOutput {
                aggregates: f.histogram_aggregates.0,
                percentiles: f.histogram_percentiles.0,
            },
            downstream: f.downstream,
            downstream_settings,
            forward_addr: f.forward_addr,
            eol_required: f.eol_required.unwrap_or_default(),
            memory_limit,
            self_metrics: !f.no_self_metrics,
            self_metrics_per_shard: f.self_metrics_per_shard,
            spin_before_park: Duration::from_micros(f.spin_before_park_us),
            sink_queue_max_points: f
                .sink_queue_max_points
                .or(file.sink_queue_max_points)
                .unwrap_or(DEFAULT_SINK_QUEUE_MAX_POINTS),
            control_socket: f.control_socket.clone(),
            take_over: f.take_over,
            capture_dir: f
                .capture_dir
                .or(file.capture_dir)
                .unwrap_or_else(std::env::temp_dir),
            http: match (f.no_http, f.http_addr) {
                (true, _) => HttpListen::Off,
                (false, Some(a)) => HttpListen::Given(a),
                (false, None) => HttpListen::Default(
                    DEFAULT_HTTP_ADDR
                        .parse()
                        .expect("the default is an address"),
                ),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn a_config_files_dogstatsd_port_0_with_nothing_else_is_named_by_its_key() {
        // Found by the config fuzz target: the error named --no-udp, a flag nobody gave.
        let dir = std::env::temp_dir().join(format!("corestatsd-cfg-port0-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dd.yaml");
        std::fs::write(&path, "dogstatsd_port: 0\n").unwrap();
        let args = [
            "corestatsd",
            "--hostname",
            "h",
            "--config",
            path.to_str().unwrap(),
        ];
        let flags = parse_args(args.iter().map(Into::into).collect()).unwrap_or_else(|_| panic!());
        let err = Config::from_flags(flags).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "--config {}: dogstatsd_port 0 (as --no-udp) leaves nothing",
                path.display()
            )),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_udp_needs_another_listener() {
        let flags = |args: &[&str]| {
            Flags::try_parse_from(["corestatsd", "--hostname", "h"].iter().chain(args)).unwrap()
        };
        let err = Config::from_flags(flags(&["--no-udp"])).unwrap_err();
        assert!(err.contains("--no-udp"), "{err}");
        let cfg = Config::from_flags(flags(&["--no-udp", "--tcp-addr", "127.0.0.1:0"])).unwrap();
        assert_eq!(cfg.udp_addr, None);
        let err = Config::from_flags(flags(&["--uds-path", "/tmp/a", "--uds-path", "/tmp/a"]))
            .unwrap_err();
        assert!(err.contains("given twice"), "{err}");
    }

    #[test]
    fn the_config_files_downstream_list_is_used_when_no_flag_gives_one() {
        let dir = std::env::temp_dir().join(format!("corestatsd-cfg-ds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let from = |yaml: &str, args: &[&str]| {
            let path = dir.join("c.yaml");
            std::fs::write(&path, yaml).unwrap();
            let base = [
                "corestatsd",
                "--hostname",
                "h",
                "--config",
                path.to_str().unwrap(),
            ];
            Config::from_flags(Flags::try_parse_from(base.iter().chain(args)).unwrap())
        };
        let listed = "downstream: [jsonl:/tmp/a.jsonl, datadog]\n";
        let cfg = from(listed, &[]).unwrap();
        assert_eq!(
            cfg.downstream,
            [
                Downstream::JsonlFile("/tmp/a.jsonl".into()),
                Downstream::Datadog
            ]
        );
        let cfg = from(listed, &["--downstream", "jsonl:-"]).unwrap();
        assert_eq!(cfg.downstream, [Downstream::JsonlStdout], "the flag wins");
        let cfg = from("downstream: datadog\n", &[]).unwrap();
        assert_eq!(
            cfg.downstream,
            [Downstream::Datadog],
            "one value, not a list"
        );
        let cfg = from("{}\n", &[]).unwrap();
        assert_eq!(cfg.downstream, [Downstream::JsonlStdout], "the default");
        let err = from("downstream: [datadog, 'jsonl:']\n", &[]).unwrap_err();
        assert!(
            err.contains("c.yaml: downstream[1] \"jsonl:\""),
            "names the file, the entry and its value: {err}"
        );
        let err = from("downstream: [datadog, datadog]\n", &[]).unwrap_err();
        assert!(
            err.contains("c.yaml: downstream: datadog is given twice"),
            "{err}"
        );
        let err = from("downstream: {a: b}\n", &[]).unwrap_err();
        assert!(err.contains("downstream:"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
