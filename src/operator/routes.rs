//! Which answer each request gets: a pure function of the method, the path and the board, so
//! every route is tested without a socket.

use std::time::Duration;

use super::Served;
use crate::listen::capture::Spec;
use crate::telemetry::board::Board;

/// A shard whose heartbeat is older than this fails `/healthz`.
pub const STALL: Duration = Duration::from_secs(1);

/// One answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

const TEXT: &str = "text/plain; charset=utf-8";

fn text(status: u16, body: String) -> Reply {
    Reply {
        status,
        content_type: TEXT,
        body,
    }
}

pub fn respond(method: &str, path: &str, query: &str, served: &Served) -> Reply {
    let (board, summary) = (&*served.board, &served.summary);
    if path == "/capture" {
        return capture(method, query, served);
    }
    if method != "GET" && method != "HEAD" {
        return text(405, format!("{method} {path}: only GET is answered here\n"));
    }
    let stopping = crate::shard::stop_requested();
    match path {
        "/readyz" => match (board.is_ready(), stopping) {
            (true, false) => text(200, "ready\n".into()),
            (false, false) => text(503, "starting: not every shard runs yet\n".into()),
            (_, true) => text(503, "stopping\n".into()),
        },
        "/healthz" => {
            let problems = problems(board, stopping);
            if problems.is_empty() {
                text(200, "ok\n".into())
            } else {
                text(503, problems.join("\n") + "\n")
            }
        }
        "/metrics" => {
            let mut body = super::exposition::render(&board.published(), board, summary);
            // `prometheus-scrape`: the aggregated series after the server's own.
            if let Some(scrape) = &served.scrape {
                body.push_str(&scrape.text());
            }
            Reply {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body,
            }
        }
        "/status" => Reply {
            status: 200,
            content_type: "application/json",
            body: super::status::render(&board.published(), board, summary),
        },
        "/contexts" => contexts(query, board),
        _ => text(
            404,
            format!(
                "{path}: not found; try /readyz, /healthz, /metrics, /status, /contexts or /capture\n"
            ),
        ),
    }
}

/// `POST /capture?seconds=N[&zstd=true][&dir=DIR]` starts a capture (202, its file); `GET
/// /capture` reports the running or last one.
fn capture(method: &str, query: &str, served: &Served) -> Reply {
    let json = |status: u16, v: serde_json::Value| Reply {
        status,
        content_type: "application/json",
        body: format!("{v:#}\n"),
    };
    match method {
        "GET" | "HEAD" => json(200, serde_json::json!(served.capture.report())),
        "POST" => {
            let mut spec = Spec {
                seconds: 0,
                zstd: false,
                dir: served.capture_dir.clone(),
            };
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                match k {
                    "seconds" => match v.parse() {
                        Ok(n) => spec.seconds = n,
                        Err(_) => return text(400, format!("seconds={v}: a number of seconds\n")),
                    },
                    "zstd" => spec.zstd = matches!(v, "" | "1" | "true"),
                    "dir" => {
                        let dir = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
                        spec.dir = dir.into_owned().into();
                    }
                    _ => {
                        return text(
                            400,
                            format!("{k}: unknown; /capture takes seconds, zstd, dir\n"),
                        );
                    }
                }
            }
            match served.capture.start(spec) {
                Ok(file) => json(
                    202,
                    serde_json::json!({"file": file.display().to_string(), "running": true}),
                ),
                Err(e) => text(409, format!("capture: {e}\n")),
            }
        }
        _ => text(405, format!("{method} /capture: GET or POST\n")),
    }
}

/// Most entries `/contexts` lists (what the shards and the sink keep).
pub const MAX_TOP: usize = 100;

/// `/contexts?top=N&by=samples|contexts`: the last window's busiest contexts, or the metric
/// names holding the most live contexts.
fn contexts(query: &str, board: &Board) -> Reply {
    let stats = board.context_stats();
    let (mut top, mut by) = (20, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "top" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_TOP).contains(&n) => top = n,
                _ => return text(400, format!("top={v}: a number from 1 to {MAX_TOP}\n")),
            },
            "by" => match v {
                "samples" | "contexts" => by = Some(v),
                _ => return text(400, format!("by={v}: `samples` or `contexts`\n")),
            },
            _ => return text(400, format!("{k}: unknown; /contexts takes top and by\n")),
        }
    }
    let by = by.unwrap_or(if stats.samples_counted {
        "samples"
    } else {
        "contexts"
    });
    if by == "samples" && !stats.samples_counted {
        return text(
            409,
            "samples per context are not counted: start corestatsd with --context-stats \
             (file key dogstatsd_stats_enable), or ask by=contexts\n"
                .into(),
        );
    }
    let mut doc = serde_json::json!({
        "window": stats.window,
        "by": by,
        "live_contexts": stats.live_contexts,
    });
    if by == "samples" {
        let busiest = &stats.busiest[..stats.busiest.len().min(top)];
        doc["contexts"] = serde_json::json!(busiest);
    } else {
        let names: Vec<serde_json::Value> = stats
            .names
            .iter()
            .take(top)
            .map(|(name, n)| serde_json::json!({"name": name, "contexts": n}))
            .collect();
        doc["names"] = serde_json::json!(names);
    }
    Reply {
        status: 200,
        content_type: "application/json",
        body: format!("{doc:#}\n"),
    }
}

/// Why the server is not healthy, one line each (none: healthy).
fn problems(board: &Board, stopping: bool) -> Vec<String> {
    let mut out = Vec::new();
    if !board.is_ready() {
        out.push("starting: not every shard runs yet".into());
    }
    if stopping {
        out.push("stopping".into());
    }
    if board.is_ready() && !stopping {
        for (shard, age) in board.since_beats().into_iter().enumerate() {
            match age {
                Some(a) if a <= STALL => {}
                Some(a) => out.push(format!(
                    "shard {shard} has not run its loop for {} ms",
                    a.as_millis()
                )),
                None => out.push(format!("shard {shard} has never run its loop")),
            }
        }
    }
    for d in board.published().downstreams {
        if d.failing {
            out.push(format!(
                "downstream {} gave payloads up in the last window{}",
                d.name,
                d.last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            ));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::telemetry::board::DownstreamStatus;

    pub(crate) fn served(board: Board) -> Served {
        Served {
            board: std::sync::Arc::new(board),
            summary: summary(),
            capture: crate::listen::capture::Capture::new(1),
            capture_dir: std::env::temp_dir(),
            scrape: None,
        }
    }

    pub(crate) fn summary() -> super::super::Summary {
        super::super::Summary {
            version: "test",
            cores: vec![0, 1],
            listening: vec!["udp 127.0.0.1:8125".into()],
            downstream: "jsonl:-".into(),
            window_secs: 10,
            memory_limit_bytes: None,
            transports: vec!["udp"],
        }
    }

    #[test]
    fn readiness_follows_the_board_and_health_names_what_is_wrong() {
        let s = served(Board::new(2));
        let board = &s.board;
        let get = |path: &str| respond("GET", path, "", &s);
        assert_eq!(get("/readyz").status, 503);
        assert!(get("/healthz").body.contains("starting"));
        board.set_ready();
        board.beat(0);
        assert_eq!(get("/readyz").status, 200);
        let h = get("/healthz");
        assert_eq!(h.status, 503);
        assert_eq!(h.body, "shard 1 has never run its loop\n");
        board.beat(1);
        assert_eq!(get("/healthz"), text(200, "ok\n".into()));
        board.post_downstreams(vec![DownstreamStatus {
            name: "datadog".into(),
            failing: true,
            last_error: Some("HTTP 503".into()),
            ..DownstreamStatus::default()
        }]);
        let h = get("/healthz");
        assert_eq!(h.status, 503);
        assert!(
            h.body.contains("downstream datadog gave payloads up") && h.body.contains("HTTP 503"),
            "{}",
            h.body
        );
    }

    #[test]
    fn contexts_answer_by_samples_only_when_they_are_counted() {
        use crate::telemetry::board::{BusyContext, ContextStats};
        let s = served(Board::new(1));
        let board = &s.board;
        let get = |q: &str| respond("GET", "/contexts", q, &s);
        let busy = |name: &str, samples| BusyContext {
            name: name.into(),
            metric_type: "counter",
            host: None,
            tags: vec!["env:prod".into()],
            samples,
        };
        board.post_contexts(ContextStats {
            window: Some(10),
            samples_counted: false,
            names: vec![("a".into(), 5), ("b".into(), 2)],
            live_contexts: 7,
            ..ContextStats::default()
        });
        let r = get("by=samples");
        assert_eq!(r.status, 409);
        assert!(r.body.contains("--context-stats"), "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&get("top=1").body).unwrap();
        assert_eq!(v["by"], "contexts");
        assert_eq!(
            v["names"],
            serde_json::json!([{"name": "a", "contexts": 5}])
        );
        board.post_contexts(ContextStats {
            window: Some(20),
            samples_counted: true,
            busiest: vec![busy("x", 9), busy("y", 3)],
            ..ContextStats::default()
        });
        let v: serde_json::Value = serde_json::from_str(&get("").body).unwrap();
        assert_eq!(v["by"], "samples");
        assert_eq!(v["contexts"][1]["name"], "y");
        assert_eq!(v["contexts"][0]["samples"], 9);
        assert_eq!(v["contexts"][0]["type"], "counter");
        for bad in ["top=0", "top=101", "top=x", "by=bytes", "sort=1"] {
            assert_eq!(get(bad).status, 400, "{bad}");
        }
    }

    #[test]
    fn unknown_paths_and_methods_are_refused_by_name() {
        let s = served(Board::new(1));
        let r = respond("GET", "/nope", "", &s);
        assert_eq!(r.status, 404);
        assert!(r.body.contains("/nope") && r.body.contains("/metrics"));
        let r = respond("POST", "/metrics", "", &s);
        assert_eq!(r.status, 405);
        assert_eq!(respond("GET", "/metrics", "", &s).status, 200);
        assert_eq!(respond("PUT", "/capture", "", &s).status, 405);
        assert_eq!(respond("POST", "/capture", "seconds=x", &s).status, 400);
        assert_eq!(respond("POST", "/capture", "seconds=0", &s).status, 409);
        let idle = respond("GET", "/capture", "", &s);
        assert!(idle.body.contains("\"running\": false"), "{}", idle.body);
        let st = respond("GET", "/status", "", &s);
        assert_eq!((st.status, st.content_type), (200, "application/json"));
    }
}
