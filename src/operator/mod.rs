//! The operator's HTTP endpoint: `/readyz`, `/healthz`, `/metrics` (Prometheus text exposition),
//! `/status` and `/contexts` (JSON), answered from the board (`telemetry::board`) on a thread of
//! its own; `/capture` starts and reports a traffic capture (`listen::capture`).
//!
//! hyper's HTTP/1 server on a one-thread tokio runtime, off the ingest cores (the thread is
//! started from `run`'s thread, which keeps helpers off them). A request reads a copy of the
//! board and never reaches a shard, so no client can slow receive down. Bounded: at most
//! `MAX_CONNECTIONS` connections (more are closed on accept), request heads of at most
//! `MAX_HEAD_BYTES` read within `HEAD_TIMEOUT`, a connection closed after `CONNECTION_TIMEOUT`.
//! Must not touch shard or sink state: what it shows is what they post. `cli` holds the
//! endpoint's clients, `corestatsd top` and `corestatsd stats`.

pub mod cli;
mod exposition;
mod routes;
mod status;

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;

use crate::config::HttpListen;
use crate::listen::capture::Capture;
use crate::telemetry::board::Board;

pub use routes::Reply;

const MAX_CONNECTIONS: usize = 64;
const MAX_HEAD_BYTES: usize = 16 << 10;
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// What `/status` says of the configuration, fixed at start-up.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub version: &'static str,
    pub cores: Vec<usize>,
    pub listening: Vec<String>,
    pub downstream: String,
    pub window_secs: u32,
    pub memory_limit_bytes: Option<u64>,
    /// Transports with a listener (series of the others are left out).
    pub transports: Vec<&'static str>,
}

/// Binds the endpoint's address. `Ok(None)`: off, or the default address is taken (said in
/// one line); an address given with `--http-addr` that cannot be bound is an error naming it.
/// The endpoint's listener: `passed` (the one a process taken over served) when it is on the
/// address asked for, else a new one. A passed listener on another address is closed.
pub fn bind(
    listen: HttpListen,
    passed: Option<TcpListener>,
) -> Result<Option<TcpListener>, String> {
    let (addr, given) = match listen {
        HttpListen::Off => return Ok(None),
        HttpListen::Default(a) => (a, false),
        HttpListen::Given(a) => (a, true),
    };
    if let Some(l) = passed
        && let Ok(at) = l.local_addr()
        && (at == addr || (addr.port() == 0 && at.ip() == addr.ip()))
    {
        return Ok(Some(l));
    }
    match TcpListener::bind(addr) {
        Ok(l) => Ok(Some(l)),
        Err(e) if given => Err(format!("--http-addr {addr}: cannot listen: {e}")),
        Err(e) => {
            eprintln!(
                "corestatsd: HTTP endpoint off: its default address {addr} is taken ({e}); \
                 pass --http-addr to choose another"
            );
            Ok(None)
        }
    }
}

/// What requests are answered from.
pub struct Served {
    pub board: Arc<Board>,
    pub summary: Summary,
    pub capture: Arc<Capture>,
    /// Where captures go unless a request names a directory (`--capture-dir`).
    pub capture_dir: std::path::PathBuf,
    /// `--downstream prometheus-scrape`: its text, served at `/metrics`.
    pub scrape: Option<Arc<crate::sink::scrape::Published>>,
}

/// The endpoint's thread; dropping it stops the thread.
pub struct Endpoint {
    pub addr: SocketAddr,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts answering on `listener`.
pub fn serve(listener: TcpListener, served: Served) -> io::Result<Endpoint> {
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = stop.clone();
    let served = Arc::new(served);
    let thread = thread::Builder::new()
        .name("corestatsd-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("corestatsd: HTTP endpoint {addr}: {e}");
                        return;
                    }
                };
                let stopping = async {
                    stopped.notified().await;
                    None
                };
                let accepting = accept_loop(listener, served);
                futures_lite::future::or(stopping, accepting).await;
            });
        })?;
    Ok(Endpoint {
        addr,
        stop,
        thread: Some(thread),
    })
}

async fn accept_loop(listener: tokio::net::TcpListener, served: Arc<Served>) -> Option<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, most likely: wait instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Past the bound: closed at once.
            continue;
        };
        let served = served.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let reply = routes::respond(
                    req.method().as_str(),
                    req.uri().path(),
                    req.uri().query().unwrap_or(""),
                    &served,
                );
                async move { Ok::<_, Infallible>(to_response(reply)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
        });
    }
}

fn to_response(r: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(r.body)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(r.content_type),
    );
    response
}
