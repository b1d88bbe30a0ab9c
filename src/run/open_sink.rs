//! The downstream the flushed windows go to, opened (file, API key, delivery threads, relay
//! socket) before anything is bound.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::Arc;

use super::{RunError, usage};
use crate::config::{Config, Downstream};
use crate::sink::datadog::{AGENT_LIMITS, DatadogEncoder, Encoding};
use crate::sink::delivery::{Delivery, DeliveryConfig};
use crate::sink::fanout::{Child, FanoutSink};
use crate::sink::http::HttpSink;
use crate::sink::prometheus;
use crate::sink::relay::RelaySink;
use crate::sink::scrape::{Published, ScrapeSettings, ScrapeSink};
use crate::sink::{Sink, jsonl::JsonlSink};

/// Every `--downstream`, opened; several go behind a fan-out. `scrape`: where a
/// `prometheus-scrape` downstream publishes its text for the endpoint.
pub(super) fn open_sink(
    cfg: &Config,
    scrape: Option<&Arc<Published>>,
) -> Result<Box<dyn Sink>, RunError> {
    let names = downstream_names(&cfg.downstream);
    // The Agent's additional_endpoints: more Datadog downstreams beside `datadog`.
    let additional = match cfg.has_downstream(&Downstream::Datadog) {
        true => &cfg.downstream_settings.dd_additional[..],
        false => &[],
    };
    let http = cfg.downstream.iter().filter(|d| is_http(d)).count() + additional.len();
    let spill = |name: &str, d: &Downstream| match (
        &cfg.downstream_settings.retry_spill_dir,
        http > 1 && is_http(d),
    ) {
        // Several HTTP downstreams: each its own spill directory under the one given.
        (Some(dir), true) => Some(dir.join(name)),
        (dir, _) => dir.clone(),
    };
    let mut children = Vec::new();
    for (d, name) in cfg.downstream.iter().zip(names) {
        let sink = open_one(cfg, d, &name, spill(&name, d), scrape, None)?;
        let whole = matches!(d, Downstream::Relay(_) | Downstream::PrometheusScrape);
        children.push(Child::new(name, sink, whole));
        if *d == Downstream::Datadog {
            for (i, endpoint) in additional.iter().enumerate() {
                let name = format!("datadog-{}", i + 2);
                let sink = open_one(cfg, d, &name, spill(&name, d), scrape, Some(endpoint))?;
                children.push(Child::new(name, sink, false));
            }
        }
    }
    if children.len() == 1 {
        return Ok(children.pop().expect("one").sink);
    }
    Ok(Box::new(FanoutSink::new(children, cfg.histogram.clone())))
}

fn is_http(d: &Downstream) -> bool {
    matches!(
        d,
        Downstream::Datadog | Downstream::PrometheusRemoteWrite(_)
    )
}

/// Each downstream's name in its telemetry (`downstream:<name>`), `/status` and log lines: its
/// kind, then `-2`, `-3` for a kind given again.
fn downstream_names(all: &[Downstream]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for d in all {
        let kind = match d {
            Downstream::JsonlStdout | Downstream::JsonlFile(_) => "jsonl",
            Downstream::Datadog => "datadog",
            Downstream::PrometheusRemoteWrite(_) => "prometheus-remote-write",
            Downstream::PrometheusScrape => "prometheus-scrape",
            Downstream::Relay(_) => "relay",
        };
        let before = names
            .iter()
            .filter(|n| {
                *n == kind
                    || n.strip_prefix(kind)
                        .is_some_and(|r| r.starts_with('-') && r[1..].parse::<u32>().is_ok())
            })
            .count();
        names.push(match before {
            0 => kind.to_owned(),
            n => format!("{kind}-{}", n + 1),
        });
    }
    names
}

fn open_one(
    cfg: &Config,
    downstream: &Downstream,
    name: &str,
    spill_dir: Option<std::path::PathBuf>,
    scrape: Option<&Arc<Published>>,
    // An additional Datadog endpoint: its URL and API key.
    endpoint: Option<&(String, String)>,
) -> Result<Box<dyn Sink>, RunError> {
    let ds = &cfg.downstream_settings;
    let host = cfg.aggregate.default_host.clone();
    let interval = cfg.aggregate.bucket_secs;
    // Named once per downstream at start-up; threads and log lines keep it.
    let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let delivery = |base_url: String, headers: Vec<(String, String)>| {
        // Remote write: one request at a time, so each series' samples arrive in order.
        let max_in_flight = match downstream {
            Downstream::PrometheusRemoteWrite(_) => 1,
            _ => ds.http_max_in_flight,
        };
        Delivery::start(DeliveryConfig {
            max_in_flight,
            durable: ds.durable_delivery,
            name,
            base_url,
            headers,
            timeout: ds.http_timeout,
            queue_bytes: ds.retry_queue_bytes,
            spill_dir: spill_dir.clone(),
            spill_max_bytes: ds.retry_spill_max_bytes,
            backoff_base: ds.backoff_base,
            backoff_max: ds.backoff_max,
            stop_timeout: ds.stop_timeout,
        })
        .map_err(|e| {
            usage(format!(
                "cannot start the {name} delivery (--retry-spill-dir {}): {e}",
                spill_dir
                    .as_deref()
                    .map_or("unset".into(), |p| p.display().to_string())
            ))
        })
    };
    let out: Box<dyn Write + Send> = match downstream {
        Downstream::JsonlStdout => Box::new(io::stdout()),
        Downstream::JsonlFile(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    usage(format!(
                        "cannot open --downstream jsonl:{}: {e}",
                        path.display()
                    ))
                })?,
        ),
        Downstream::Datadog => {
            let (url, key) = match endpoint {
                Some((url, key)) => (url.clone(), key.clone()),
                None => (
                    ds.dd_url.clone(),
                    api_key(ds.dd_api_key_file.as_deref(), ds.dd_api_key.as_deref())?,
                ),
            };
            let enc = Encoding {
                counters_as: ds.dd_counters_as,
                compression: ds.dd_compression,
                limits: AGENT_LIMITS,
            };
            let d = delivery(url, vec![("DD-API-KEY".into(), key)])?;
            let e = DatadogEncoder::new(enc);
            let sink = HttpSink::new(name, e, d, host, interval, cfg.self_metrics);
            return Ok(Box::new(sink));
        }
        Downstream::PrometheusRemoteWrite(url) => {
            let d = delivery(url.clone(), prometheus::headers())?;
            let e = prometheus::Encoder::new(ds.remote_write_counter_expiry_secs);
            let sink = HttpSink::new(name, e, d, host, interval, cfg.self_metrics);
            return Ok(Box::new(sink));
        }
        Downstream::PrometheusScrape => {
            let published = scrape.expect("the endpoint's text, made with the downstream");
            let settings = ScrapeSettings {
                exposition: cfg.aggregate.names.exposition.clone(),
                ttl_secs: ds.scrape_series_ttl_secs,
                max_series: ds.scrape_max_series.unwrap_or(1_000_000),
                default_host: host,
            };
            return Ok(Box::new(ScrapeSink::new(settings, published.clone())));
        }
        Downstream::Relay(targets) => {
            let max = ds
                .relay_max_packet_bytes
                .unwrap_or_else(|| targets[0].default_max_packet_bytes());
            let sink = RelaySink::new(targets.clone(), max, host, interval, cfg.self_metrics)
                .map_err(|e| usage(format!("cannot open --downstream {downstream}: {e}")))?;
            return Ok(Box::new(sink));
        }
    };
    Ok(Box::new(JsonlSink::new(out)))
}

/// The Datadog API key: from --dd-api-key-file, else DD_API_KEY. Never logged.
/// The API key: --dd-api-key-file, else DD_API_KEY, else the config file's `api_key`.
fn api_key(file: Option<&std::path::Path>, configured: Option<&str>) -> Result<String, RunError> {
    let key = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            usage(format!(
                "cannot read --dd-api-key-file {}: {e}",
                path.display()
            ))
        })?,
        None => std::env::var("DD_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())
            .or_else(|| configured.map(str::to_owned))
            .unwrap_or_default(),
    };
    let key = key.trim().to_owned();
    if key.is_empty() {
        return Err(usage(match file {
            Some(path) => format!("--dd-api-key-file {} is empty", path.display()),
            None => "--downstream datadog needs an API key: set DD_API_KEY, --dd-api-key-file or \
                 api_key in --config"
                .into(),
        }));
    }
    if key.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(usage(
            "the Datadog API key holds characters an HTTP header cannot carry".into(),
        ));
    }
    Ok(key)
}
