//! `--downstream` and the settings of the downstreams (Datadog, HTTP delivery, remote write,
//! relay): parsing and checking their flags into `DownstreamSettings`. Owns no I/O.

use std::path::PathBuf;
use std::time::Duration;

use super::Flags;
use crate::sink::datadog::CountersAs;
use crate::sink::payload::Compression;
use crate::sink::relay::Target;

/// Where flushed metrics go (`--downstream`).
#[derive(Debug, Clone, PartialEq)]
pub enum Downstream {
    JsonlStdout,
    JsonlFile(PathBuf),
    Datadog,
    PrometheusRemoteWrite(String),
    /// One global node, or several sharded by context (`dogstatsd:H1:P1,H2:P2`).
    Relay(Vec<Target>),
    /// Served at `/metrics` on the HTTP endpoint.
    PrometheusScrape,
}

impl std::fmt::Display for Downstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Downstream::JsonlStdout => write!(f, "jsonl:-"),
            Downstream::JsonlFile(p) => write!(f, "jsonl:{}", p.display()),
            Downstream::Datadog => write!(f, "datadog"),
            Downstream::PrometheusRemoteWrite(url) => write!(f, "prometheus-remote-write:{url}"),
            Downstream::Relay(targets) => {
                let uds = matches!(targets.first(), Some(Target::Uds(_)));
                f.write_str(if uds { "dogstatsd+uds:" } else { "dogstatsd:" })?;
                for (i, t) in targets.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    match t {
                        Target::Udp(a) => write!(f, "{sep}{a}")?,
                        Target::Uds(p) => write!(f, "{sep}{}", p.display())?,
                    }
                }
                Ok(())
            }
            Downstream::PrometheusScrape => write!(f, "prometheus-scrape"),
        }
    }
}

pub(super) fn parse_downstream(s: &str) -> Result<Downstream, String> {
    if s == "datadog" {
        return Ok(Downstream::Datadog);
    }
    if s == "prometheus-scrape" {
        return Ok(Downstream::PrometheusScrape);
    }
    match s.split_once(':') {
        Some(("jsonl", "-")) => Ok(Downstream::JsonlStdout),
        Some(("jsonl", "")) => Err("jsonl needs a path or - for stdout".into()),
        Some(("jsonl", path)) => Ok(Downstream::JsonlFile(PathBuf::from(path))),
        Some(("prometheus-remote-write", url)) => {
            if url.starts_with("http://") || url.starts_with("https://") {
                Ok(Downstream::PrometheusRemoteWrite(url.to_owned()))
            } else {
                Err(format!(
                    "prometheus-remote-write needs an http(s) URL, like \
                     prometheus-remote-write:http://127.0.0.1:9090/api/v1/write, not {url:?}"
                ))
            }
        }
        Some(("dogstatsd", addrs)) => {
            let mut targets = Vec::new();
            for a in addrs.split(',') {
                let t = Target::Udp(super::flag_values::parse_forward_addr(a)?);
                if targets.contains(&t) {
                    return Err(format!("dogstatsd: node {a} is listed twice"));
                }
                targets.push(t);
            }
            Ok(Downstream::Relay(targets))
        }
        Some(("dogstatsd+uds", "")) => Err("dogstatsd+uds needs a socket path".into()),
        Some(("dogstatsd+uds", paths)) => {
            let mut targets = Vec::new();
            for p in paths.split(',') {
                let t = Target::Uds(PathBuf::from(p));
                if p.is_empty() || targets.contains(&t) {
                    return Err(format!(
                        "dogstatsd+uds: {paths:?} lists an empty or repeated path"
                    ));
                }
                targets.push(t);
            }
            Ok(Downstream::Relay(targets))
        }
        _ => Err(format!(
            "{s:?} is not a known downstream (jsonl:-, jsonl:PATH, datadog, \
             prometheus-remote-write:URL, prometheus-scrape, dogstatsd:HOST:PORT, dogstatsd+uds:PATH)"
        )),
    }
}

/// An http(s) base URL without its trailing slash.
pub(super) fn check_url(flag: &str, url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{flag} {url:?} is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{flag} {url:?} has no host"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

pub(super) fn parse_counters_as(s: &str) -> Result<CountersAs, String> {
    match s {
        "rate" => Ok(CountersAs::Rate),
        "count" => Ok(CountersAs::Count),
        _ => Err(format!("{s:?} is not rate or count")),
    }
}

pub(super) fn parse_compression(s: &str) -> Result<Compression, String> {
    match s {
        "zstd" => Ok(Compression::Zstd),
        "deflate" => Ok(Compression::Deflate),
        "none" => Ok(Compression::None),
        _ => Err(format!("{s:?} is not zstd, deflate or none")),
    }
}

/// Settings of the HTTP and relay downstreams.
#[derive(Debug, Clone)]
pub struct DownstreamSettings {
    pub dd_url: String,
    pub dd_api_key_file: Option<PathBuf>,
    /// `api_key` of `--config` (after --dd-api-key-file and DD_API_KEY).
    pub dd_api_key: Option<String>,
    /// `additional_endpoints` (`DD_ADDITIONAL_ENDPOINTS` over `--config`): with `--downstream
    /// datadog`, one more Datadog downstream per (URL, API key).
    pub dd_additional: Vec<(String, String)>,
    pub dd_counters_as: CountersAs,
    pub dd_compression: Compression,
    pub retry_queue_bytes: usize,
    pub retry_spill_dir: Option<PathBuf>,
    pub retry_spill_max_bytes: u64,
    pub http_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub stop_timeout: Duration,
    /// `--http-max-in-flight`.
    pub http_max_in_flight: usize,
    /// `--durable-delivery` (with a spill directory).
    pub durable_delivery: bool,
    pub remote_write_counter_expiry_secs: u64,
    pub scrape_series_ttl_secs: Option<u64>,
    pub scrape_max_series: Option<usize>,
    pub relay_max_packet_bytes: Option<usize>,
}

/// The downstream settings of `f`, checked.
pub(super) fn settings(f: &Flags) -> Result<DownstreamSettings, String> {
    if f.durable_delivery && f.retry_spill_dir.is_none() {
        return Err("--durable-delivery writes each payload to --retry-spill-dir: give one".into());
    }
    Ok(DownstreamSettings {
        dd_url: check_url("--dd-url", &f.dd_url)?,
        dd_api_key_file: f.dd_api_key_file.clone(),
        dd_api_key: None,
        dd_additional: Vec::new(),
        dd_counters_as: f.dd_counters_as,
        dd_compression: f.dd_compression,
        retry_queue_bytes: f.retry_queue_bytes,
        retry_spill_dir: f.retry_spill_dir.clone(),
        retry_spill_max_bytes: f.retry_spill_max_bytes,
        http_timeout: Duration::from_secs(f.http_timeout_secs),
        backoff_base: Duration::from_millis(f.retry_backoff_base_ms),
        backoff_max: Duration::from_millis(f.retry_backoff_max_ms.max(f.retry_backoff_base_ms)),
        stop_timeout: Duration::from_secs(f.downstream_stop_timeout_secs),
        http_max_in_flight: f.http_max_in_flight as usize,
        durable_delivery: f.durable_delivery,
        remote_write_counter_expiry_secs: f.remote_write_counter_expiry_secs,
        scrape_series_ttl_secs: f.scrape_series_ttl_secs,
        scrape_max_series: f.scrape_max_series,
        relay_max_packet_bytes: f.relay_max_packet_bytes.map(|b| b as usize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(parse_downstream("datadog").unwrap(), Downstream::Datadog);
        assert_eq!(
            parse_downstream("prometheus-remote-write:http://127.0.0.1:9090/api/v1/write").unwrap(),
            Downstream::PrometheusRemoteWrite("http://127.0.0.1:9090/api/v1/write".into())
        );
        assert_eq!(
            parse_downstream("dogstatsd:127.0.0.1:8125").unwrap(),
            Downstream::Relay(vec![Target::Udp("127.0.0.1:8125".parse().unwrap())])
        );
        assert_eq!(
            parse_downstream("dogstatsd+uds:/run/dsd.sock").unwrap(),
            Downstream::Relay(vec![Target::Uds("/run/dsd.sock".into())])
        );
        let sharded = parse_downstream("dogstatsd+uds:/run/a.sock,/run/b.sock").unwrap();
        assert_eq!(
            sharded,
            Downstream::Relay(vec![
                Target::Uds("/run/a.sock".into()),
                Target::Uds("/run/b.sock".into())
            ])
        );
        assert_eq!(sharded.to_string(), "dogstatsd+uds:/run/a.sock,/run/b.sock");
        assert!(parse_downstream("dogstatsd:127.0.0.1:1,127.0.0.1:1").is_err());
        assert!(parse_downstream("dogstatsd+uds:/a,,/b").is_err());
        assert!(parse_downstream("prometheus-remote-write:localhost:9090").is_err());
        assert!(parse_downstream("dogstatsd:nohost").is_err());
        assert!(parse_downstream("dogstatsd+uds:").is_err());
        assert!(parse_downstream("statsd").is_err());
        assert!(parse_downstream("jsonl:").is_err());
        assert_eq!(
            check_url("--dd-url", "http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(
            check_url("--dd-url", "api.datadoghq.com")
                .unwrap_err()
                .contains("--dd-url")
        );
        assert!(check_url("--dd-url", "https://").is_err());
    }
}
