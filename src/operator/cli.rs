//! `corestatsd top`, `corestatsd stats` and `corestatsd capture`: clients of a running
//! server's endpoint. `top` is a
//! live terminal view over `/status` and `/contexts` (ratatui), refreshed every second, `q`
//! quits; `top --batch` prints one frame as plain text and exits. `stats` prints `/contexts` as
//! a table. Both render from the JSON alone (`frame`, `contexts_table`), so what the terminal
//! shows is what the tests read.

use std::fmt::Write as _;
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Names of the top metric names `top` lists.
const TOP_NAMES: usize = 10;

/// GETs `path` as JSON; errors name the address and say what to check.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .into()
}

fn fetch(addr: SocketAddr, path: &str) -> Result<Value, String> {
    let url = format!("http://{addr}{path}");
    let mut resp = agent().get(&url).call().map_err(|e| {
        format!("cannot reach corestatsd at {url}: {e} (is it running, and is --http-addr right?)")
    })?;
    let mut body = String::new();
    resp.body_mut()
        .as_reader()
        .read_to_string(&mut body)
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(format!("{url}: HTTP {status}: {}", body.trim()));
    }
    serde_json::from_str(&body).map_err(|e| format!("{url}: not JSON: {e}"))
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// A count the way `top` shows it: 1234567 as `1.23M`.
fn short(n: f64) -> String {
    match n.abs() {
        x if x >= 1e9 => format!("{:.2}G", n / 1e9),
        x if x >= 1e6 => format!("{:.2}M", n / 1e6),
        x if x >= 1e4 => format!("{:.1}k", n / 1e3),
        _ => format!("{n:.0}"),
    }
}

/// One frame of `top`, from `/status` and `/contexts?by=contexts`.
pub fn frame(status: &Value, names: Option<&Value>) -> String {
    let mut out = String::new();
    let cfg = &status["config"];
    let _ = writeln!(
        out,
        "corestatsd {}  up {:.0} s  {}  windows of {} s: {} done, last {}  heap {} B  rss {} B",
        status["version"].as_str().unwrap_or("?"),
        num(&status["uptime_secs"]),
        if status["ready"] == true {
            "ready"
        } else {
            "not ready"
        },
        cfg["window_secs"],
        status["windows"],
        status["last_window"],
        short(num(&status["heap_bytes"])),
        short(num(&status["rss_bytes"])),
    );
    let _ = writeln!(
        out,
        "\n{:<6} {:>4} {:>10} {:>10} {:>8} {:>8} {:>10} {:>9} {:>9}",
        "shard",
        "cpu",
        "packets/s",
        "metrics/s",
        "k.drops",
        "p.errors",
        "contexts",
        "flush ms",
        "pause ms"
    );
    let row = |out: &mut String, label: String, cpu: String, w: &Value| {
        let _ = writeln!(
            out,
            "{label:<6} {cpu:>4} {:>10} {:>10} {:>8} {:>8} {:>10} {:>9.1} {:>9.2}",
            short(num(&w["packets_per_sec"])),
            short(num(&w["metrics_per_sec"])),
            short(num(&w["drops"]["kernel_drops"])),
            short(num(&w["drops"]["parse_errors"])),
            short(num(&w["live_contexts"])),
            num(&w["flush_ms"]),
            num(&w["receive_max_pause_ms"]),
        );
    };
    for s in status["shards"].as_array().into_iter().flatten() {
        row(&mut out, s["shard"].to_string(), s["cpu"].to_string(), s);
    }
    row(&mut out, "total".into(), String::new(), &status["total"]);
    let drops: Vec<String> = status["total"]["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| num(v) > 0.0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(
        out,
        "drops last window: {}",
        if drops.is_empty() {
            "none".into()
        } else {
            drops.join(" ")
        }
    );
    let _ = writeln!(
        out,
        "\n{:<40} {:>10} {:>8} {:>9} {:>9} {:>8}  state",
        "downstream", "written", "failed", "queued B", "spilled B", "retries"
    );
    for d in status["downstreams"].as_array().into_iter().flatten() {
        let state = match (d["failing"] == true, d["last_error"].as_str()) {
            (true, Some(e)) => format!("FAILING: {e}"),
            (true, None) => "FAILING".into(),
            (false, Some(e)) => format!("ok (last error: {e})"),
            (false, None) => "ok".into(),
        };
        let _ = writeln!(
            out,
            "{:<40} {:>10} {:>8} {:>9} {:>9} {:>8}  {state}",
            d["name"].as_str().unwrap_or("?"),
            short(num(&d["written_points"])),
            short(num(&d["failed_points"])),
            short(num(&d["queued_bytes"])),
            short(num(&d["spilled_bytes"])),
            short(num(&d["retries"])),
        );
    }
    if let Some(names) = names {
        let _ = writeln!(out, "\n{:>10}  metric names by live contexts", "contexts");
        for n in names["names"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "{:>10}  {}",
                short(num(&n["contexts"])),
                n["name"].as_str().unwrap_or("?")
            );
        }
    }
    out
}

/// `/contexts` as a table.
pub fn contexts_table(v: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "window {}, {} live contexts",
        v["window"], v["live_contexts"]
    );
    if let Some(contexts) = v["contexts"].as_array() {
        let _ = writeln!(out, "{:>10}  {:<12} {:<50} tags", "samples", "type", "name");
        for c in contexts {
            let mut tags: Vec<String> = c["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect();
            if let Some(h) = c["host"].as_str() {
                tags.insert(0, format!("host:{h}"));
            }
            let _ = writeln!(
                out,
                "{:>10}  {:<12} {:<50} {}",
                c["samples"],
                c["type"].as_str().unwrap_or("?"),
                c["name"].as_str().unwrap_or("?"),
                tags.join(",")
            );
        }
    }
    if let Some(names) = v["names"].as_array() {
        let _ = writeln!(out, "{:>10}  name", "contexts");
        for n in names {
            let _ = writeln!(
                out,
                "{:>10}  {}",
                n["contexts"],
                n["name"].as_str().unwrap_or("?")
            );
        }
    }
    out
}

/// `corestatsd capture`: starts a capture, waits for it to end, prints what it wrote.
pub fn capture(
    addr: SocketAddr,
    seconds: u64,
    zstd: bool,
    dir: Option<&std::path::Path>,
) -> Result<(), String> {
    let mut path = format!("/capture?seconds={seconds}&zstd={zstd}");
    if let Some(d) = dir {
        let d = d.display().to_string();
        let escaped = percent_encoding::utf8_percent_encode(&d, percent_encoding::NON_ALPHANUMERIC);
        let _ = write!(path, "&dir={escaped}");
    }
    let url = format!("http://{addr}{path}");
    let mut resp = agent().post(&url).send_empty().map_err(|e| {
        format!("cannot reach corestatsd at {url}: {e} (is it running, and is --http-addr right?)")
    })?;
    let mut body = String::new();
    let _ = resp.body_mut().as_reader().read_to_string(&mut body);
    if resp.status().as_u16() != 202 {
        return Err(format!(
            "{url}: HTTP {}: {}",
            resp.status().as_u16(),
            body.trim()
        ));
    }
    let started: Value = serde_json::from_str(&body).map_err(|e| format!("{url}: {e}"))?;
    eprintln!(
        "corestatsd: capturing for {seconds} s into {}",
        started["file"].as_str().unwrap_or("?")
    );
    let deadline = Instant::now() + Duration::from_secs(seconds + 30);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let r = fetch(addr, "/capture")?;
        if r["running"] == false {
            if let Some(e) = r["error"].as_str() {
                return Err(format!("capture failed: {e}"));
            }
            println!(
                "{}: {} packets ({} dropped)",
                r["file"].as_str().unwrap_or("?"),
                r["packets"],
                r["dropped"]
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the capture did not end within {} s", seconds + 30));
        }
    }
}

/// Runs a client command.
pub fn command(cmd: crate::config::Command) -> Result<(), String> {
    use crate::config::Command;
    match cmd {
        Command::Top { http_addr, batch } => top(http_addr, batch),
        Command::Stats { http_addr, top, by } => stats(http_addr, usize::from(top), by.as_deref()),
        Command::Capture {
            http_addr,
            seconds,
            zstd,
            dir,
        } => capture(http_addr, seconds, zstd, dir.as_deref()),
    }
}

fn one_frame(addr: SocketAddr) -> Result<String, String> {
    let status = fetch(addr, "/status")?;
    let names = fetch(addr, &format!("/contexts?by=contexts&top={TOP_NAMES}")).ok();
    Ok(frame(&status, names.as_ref()))
}

/// `corestatsd stats`.
pub fn stats(addr: SocketAddr, top: usize, by: Option<&str>) -> Result<(), String> {
    let mut path = format!("/contexts?top={top}");
    if let Some(by) = by {
        let _ = write!(path, "&by={by}");
    }
    print!("{}", contexts_table(&fetch(addr, &path)?));
    Ok(())
}

/// `corestatsd top`: one plain frame with `batch`, else the live view until `q`.
pub fn top(addr: SocketAddr, batch: bool) -> Result<(), String> {
    if batch {
        print!("{}", one_frame(addr)?);
        return Ok(());
    }
    live(addr).map_err(|e| format!("terminal: {e}"))
}

fn live(addr: SocketAddr) -> std::io::Result<()> {
    use ratatui::crossterm::event::{self, Event, KeyCode};
    use ratatui::widgets::{Block, Paragraph};

    let mut terminal = ratatui::init();
    let result = (|| {
        let mut text = String::new();
        let mut fetched: Option<Instant> = None;
        loop {
            if fetched.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                text = one_frame(addr).unwrap_or_else(|e| format!("{e}\n\nretrying every second"));
                fetched = Some(Instant::now());
            }
            terminal.draw(|f| {
                let title = format!(" corestatsd top: http://{addr}/  (q quits) ");
                let view = Paragraph::new(text.as_str()).block(Block::bordered().title(title));
                f.render_widget(view, f.area());
            })?;
            if event::poll(Duration::from_millis(200))?
                && let Event::Key(k) = event::read()?
                && matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
            {
                return Ok(());
            }
        }
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_frame_has_a_row_per_shard_the_total_and_each_downstream() {
        let w = |pps: f64| {
            json!({"packets_per_sec": pps, "metrics_per_sec": 2.0 * pps, "drops": {"kernel_drops": 3, "parse_errors": 0},
                   "live_contexts": 12345, "flush_ms": 1.5, "receive_max_pause_ms": 0.25})
        };
        let mut s0 = w(1000.0);
        s0["shard"] = json!(0);
        s0["cpu"] = json!(4);
        let status = json!({"version": "9.9", "uptime_secs": 5.0, "ready": true,
            "config": {"window_secs": 10}, "windows": 2, "last_window": 100,
            "heap_bytes": 2_000_000, "rss_bytes": 5_000_000, "shards": [s0], "total": w(1000.0),
            "downstreams": [{"name": "datadog", "written_points": 10, "failed_points": 0,
              "queued_bytes": 0, "spilled_bytes": 0, "retries": 4, "failing": true, "last_error": "HTTP 503"}]});
        let names = json!({"names": [{"name": "api.hits", "contexts": 77}]});
        let f = frame(&status, Some(&names));
        assert!(f.starts_with("corestatsd 9.9  up 5 s  ready"), "{f}");
        let row = f.lines().find(|l| l.starts_with("0 ")).expect(&f);
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["0", "4", "1000", "2000", "3", "0", "12.3k", "1.5", "0.25"]
        );
        assert!(f.lines().any(|l| l.starts_with("total ")));
        assert!(f.contains("drops last window: kernel_drops=3"));
        assert!(f.contains("FAILING: HTTP 503"));
        assert!(f.lines().any(|l| l.trim() == "77  api.hits"));
    }

    #[test]
    fn contexts_read_as_a_table() {
        let v = json!({"window": 10, "live_contexts": 3, "contexts": [
            {"name": "a.b", "type": "counter", "host": "h1", "tags": ["env:prod"], "samples": 42}]});
        let t = contexts_table(&v);
        let row = t.lines().nth(2).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["42", "counter", "a.b", "host:h1,env:prod"]
        );
    }
}
