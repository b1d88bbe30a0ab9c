//! The Datadog Agent's listener, host and intake keys, from `--config datadog.yaml` and from
//! their `DD_*` environment variables, with the Agent's meanings: each becomes the corestatsd
//! flag it stands for (`Setting`), placed before the command line's own arguments, so the order
//! of precedence is flags, then the environment, then the file.
//!
//! Reads values; owns no defaults but the Agent's where a key depends on another
//! (`bind_host` is `localhost` and the port 8125 when only one of them is set).

use serde_norway::Value;

/// The keys, by name, in the README's table order.
pub const KEYS: [&str; 21] = [
    "dogstatsd_port",
    "bind_host",
    "dogstatsd_non_local_traffic",
    "dogstatsd_socket",
    "dogstatsd_stream_socket",
    "dogstatsd_buffer_size",
    "dogstatsd_so_rcvbuf",
    "dogstatsd_eol_required",
    "dogstatsd_origin_detection",
    "dogstatsd_expiry_seconds",
    "dogstatsd_context_expiry_seconds",
    "histogram_aggregates",
    "histogram_percentiles",
    "statsd_forward_host",
    "statsd_forward_port",
    "hostname",
    "api_key",
    "site",
    "dd_url",
    "forwarder_timeout",
    "forwarder_num_workers",
];

/// A key's value, from the file or the environment, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub value: Value,
    /// `--config PATH: key` or `DD_KEY`.
    pub source: String,
}

/// One flag a key stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub flag: &'static str,
    /// `None` for a switch.
    pub value: Option<String>,
    pub source: String,
}

/// The environment variable of `key`.
pub fn env_name(key: &str) -> String {
    format!("DD_{}", key.to_ascii_uppercase())
}

/// The value of each key: its environment variable over the file's. An environment list is
/// space-separated, as the Agent reads it.
pub fn gather(
    file: &[(String, Value)],
    file_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(&'static str, Found)> {
    let mut out = Vec::new();
    for key in KEYS {
        let var = env_name(key);
        if let Some(v) = env(&var) {
            let value = if matches!(
                key,
                "histogram_aggregates" | "histogram_percentiles" | "dogstatsd_eol_required"
            ) {
                Value::Sequence(
                    v.split_whitespace()
                        .map(|s| Value::String(s.into()))
                        .collect(),
                )
            } else {
                Value::String(v)
            };
            out.push((key, Found { value, source: var }));
        } else if let Some((_, v)) = file.iter().find(|(k, _)| k == key) {
            out.push((
                key,
                Found {
                    value: v.clone(),
                    source: format!("--config {file_name}: {key}"),
                },
            ));
        }
    }
    out
}

/// A scalar as text (numbers, booleans and strings alike, as the Agent's config reads them).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Sequence(items) => items.iter().map(text).collect(),
        // A comma-separated string, as some datadog.yaml files write them.
        Value::String(s) => Some(
            s.split([',', ' '])
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    }
}

fn boolean(v: &Value) -> Option<bool> {
    match text(v)?.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// The flags the keys stand for. `api_key` is returned apart: no flag takes a key itself.
pub fn settings(found: &[(&'static str, Found)]) -> Result<(Vec<Setting>, Option<String>), String> {
    let get = |key: &str| found.iter().find(|(k, _)| *k == key).map(|(_, f)| f);
    let bad = |f: &Found, what: &str| format!("{}: {what}", f.source);
    let scalar = |key: &str| -> Result<Option<(String, &Found)>, String> {
        match get(key) {
            None => Ok(None),
            Some(f) => text(&f.value)
                .map(|t| Some((t, f)))
                .ok_or_else(|| bad(f, "must be a single value")),
        }
    };
    let mut out = Vec::new();
    let mut set = |flag: &'static str, value: Option<String>, f: &Found| {
        out.push(Setting {
            flag,
            value,
            source: f.source.clone(),
        })
    };
    // The UDP listener: dogstatsd_port (0: none), on bind_host, or every address with
    // dogstatsd_non_local_traffic.
    let port = scalar("dogstatsd_port")?;
    let host = scalar("bind_host")?;
    let non_local = match get("dogstatsd_non_local_traffic") {
        Some(f) => Some((
            boolean(&f.value).ok_or_else(|| bad(f, "must be true or false"))?,
            f,
        )),
        None => None,
    };
    if port.is_some() || host.is_some() || non_local.is_some_and(|(on, _)| on) {
        let source = port
            .as_ref()
            .or(host.as_ref())
            .map(|(_, f)| *f)
            .or(non_local.map(|(_, f)| f))
            .expect("one of them is set");
        let p = port.as_ref().map_or("8125", |(p, _)| p.as_str());
        if p == "0" {
            set("--no-udp", None, source);
        } else {
            let h = match (non_local, &host) {
                (Some((true, _)), _) => "0.0.0.0".to_string(),
                (_, Some((h, _))) if h == "localhost" => "127.0.0.1".into(),
                (_, Some((h, _))) => h.clone(),
                _ => "127.0.0.1".into(),
            };
            let addr = if h.contains(':') {
                format!("[{h}]:{p}")
            } else {
                format!("{h}:{p}")
            };
            set("--udp-addr", Some(addr), source);
        }
    }
    for (key, flag) in [
        ("dogstatsd_socket", "--uds-path"),
        ("dogstatsd_stream_socket", "--uds-stream-path"),
        ("dogstatsd_buffer_size", "--buffer-size-bytes"),
        ("dogstatsd_so_rcvbuf", "--so-rcvbuf-bytes"),
        ("dogstatsd_expiry_seconds", "--counter-zero-fill-secs"),
        ("dogstatsd_context_expiry_seconds", "--context-expiry-secs"),
        ("hostname", "--hostname"),
        ("forwarder_timeout", "--http-timeout-secs"),
        ("forwarder_num_workers", "--http-max-in-flight"),
    ] {
        if let Some((v, f)) = scalar(key)? {
            // The Agent's empty socket path and 0 receive buffer mean "none" and "the OS's".
            let unset = v.is_empty() || (key == "dogstatsd_so_rcvbuf" && v == "0");
            if !unset {
                set(flag, Some(v), f);
            }
        }
    }
    if let Some(f) = get("dogstatsd_origin_detection")
        && boolean(&f.value).ok_or_else(|| bad(f, "must be true or false"))?
    {
        set("--origin-detection", None, f);
    }
    for (key, flag) in [
        ("dogstatsd_eol_required", "--eol-required"),
        ("histogram_aggregates", "--histogram-aggregates"),
        ("histogram_percentiles", "--histogram-percentiles"),
    ] {
        if let Some(f) = get(key) {
            let mut items = list(&f.value).ok_or_else(|| bad(f, "must be a list"))?;
            // Windows' named pipes: nothing to listen on here.
            items.retain(|i| i != "named_pipe");
            set(flag, Some(items.join(",")), f);
        }
    }
    match (
        scalar("statsd_forward_host")?,
        scalar("statsd_forward_port")?,
    ) {
        (Some((h, f)), Some((p, _))) if !h.is_empty() && p != "0" => {
            set("--forward-addr", Some(format!("{h}:{p}")), f)
        }
        (Some((h, f)), None) if !h.is_empty() => {
            return Err(bad(f, "needs statsd_forward_port beside it"));
        }
        _ => {}
    }
    // dd_url wins over site, as in the Agent.
    match (scalar("dd_url")?, scalar("site")?) {
        (Some((url, f)), _) if !url.is_empty() => set("--dd-url", Some(url), f),
        (_, Some((site, f))) if !site.is_empty() => {
            set("--dd-url", Some(format!("https://api.{site}")), f)
        }
        _ => {}
    }
    let api_key = scalar("api_key")?.map(|(k, _)| k).filter(|k| !k.is_empty());
    Ok((out, api_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(yaml: &str) -> Vec<(String, Value)> {
        let v: Value = serde_norway::from_str(yaml).unwrap();
        v.as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
            .collect()
    }

    fn flags(s: &[Setting]) -> Vec<String> {
        s.iter()
            .map(|s| match &s.value {
                Some(v) => format!("{} {v}", s.flag),
                None => s.flag.to_string(),
            })
            .collect()
    }

    #[test]
    fn keys_become_their_flags_with_the_agents_meanings() {
        let f = file(
            "dogstatsd_port: 8200\ndogstatsd_non_local_traffic: true\ndogstatsd_socket: /run/dsd.sock\n\
             dogstatsd_stream_socket: ''\ndogstatsd_buffer_size: 16384\ndogstatsd_so_rcvbuf: 0\n\
             dogstatsd_eol_required: [udp, named_pipe]\ndogstatsd_origin_detection: true\n\
             dogstatsd_expiry_seconds: 60\ndogstatsd_context_expiry_seconds: 30\n\
             histogram_aggregates: [max, count]\nhistogram_percentiles: ['0.5', 0.99]\n\
             statsd_forward_host: 127.0.0.1\nstatsd_forward_port: 9999\nhostname: web-1\n\
             api_key: abc\nsite: datadoghq.eu\nforwarder_timeout: 30\nforwarder_num_workers: 8\n",
        );
        let found = gather(&f, "dd.yaml", &|_| None);
        let (s, key) = settings(&found).unwrap();
        assert_eq!(
            flags(&s),
            [
                "--udp-addr 0.0.0.0:8200",
                "--uds-path /run/dsd.sock",
                "--buffer-size-bytes 16384",
                "--counter-zero-fill-secs 60",
                "--context-expiry-secs 30",
                "--hostname web-1",
                "--http-timeout-secs 30",
                "--http-max-in-flight 8",
                "--origin-detection",
                "--eol-required udp",
                "--histogram-aggregates max,count",
                "--histogram-percentiles 0.5,0.99",
                "--forward-addr 127.0.0.1:9999",
                "--dd-url https://api.datadoghq.eu",
            ]
        );
        assert_eq!(key.as_deref(), Some("abc"));
        assert_eq!(s[0].source, "--config dd.yaml: dogstatsd_port");
    }

    #[test]
    fn the_environment_wins_over_the_file_and_port_0_turns_udp_off() {
        let f = file(
            "dogstatsd_port: 8200\nbind_host: localhost\ndd_url: https://x.example\nsite: datadoghq.eu\n",
        );
        let env = |v: &str| match v {
            "DD_DOGSTATSD_PORT" => Some("0".to_string()),
            "DD_HISTOGRAM_AGGREGATES" => Some("max median".to_string()),
            _ => None,
        };
        let (s, key) = settings(&gather(&f, "dd.yaml", &env)).unwrap();
        assert_eq!(
            flags(&s),
            [
                "--no-udp",
                "--histogram-aggregates max,median",
                "--dd-url https://x.example"
            ]
        );
        assert_eq!(s[0].source, "DD_DOGSTATSD_PORT");
        assert_eq!(key, None);
        let (s, _) = settings(&gather(&file("bind_host: localhost\n"), "f", &|_| None)).unwrap();
        assert_eq!(flags(&s), ["--udp-addr 127.0.0.1:8125"]);
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let e = settings(&gather(
            &file("dogstatsd_origin_detection: maybe\n"),
            "f",
            &|_| None,
        ))
        .unwrap_err();
        assert_eq!(
            e,
            "--config f: dogstatsd_origin_detection: must be true or false"
        );
        let e = settings(&gather(&file("statsd_forward_host: h\n"), "f", &|_| None)).unwrap_err();
        assert!(e.contains("statsd_forward_port"), "{e}");
    }
}
