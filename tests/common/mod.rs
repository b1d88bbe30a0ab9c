//! Runs the real `corestatsd` binary on loopback and reads back its JSONL output.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub mod intake;
pub mod prometheus;

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// The TCP address, when started with `--tcp-addr`.
    pub tcp: Option<SocketAddr>,
    /// The HTTP endpoint's address (the launcher asks for port 0 unless the test chose).
    pub http: Option<SocketAddr>,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    /// Reads stdout while the server runs: a full pipe would block its sink.
    stdout: Option<std::thread::JoinHandle<String>>,
    /// With `start_holding_stdout`: stdout is read only once this is sent on (or dropped).
    hold_stdout: Option<mpsc::Sender<()>>,
}

/// A test that panics before `stop` must not leave its server running.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Everything the server printed, after it exited.
pub struct Finished {
    pub status: i32,
    pub lines: Vec<Value>,
    pub stderr: Vec<String>,
}

impl Server {
    /// Starts the binary with `--udp-addr 127.0.0.1:0` plus `args`, and waits for its start-up
    /// line to learn the ports. Unless `args` choose (`--http-addr`, `--no-http`), the HTTP
    /// endpoint gets a free port, so no test takes the default one.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// `start` with extra environment variables for the server process.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch(args, env, false)
    }

    /// `args` alone (no `--udp-addr 127.0.0.1:0`, no HTTP port): for tests of where the
    /// listeners come from.
    pub fn start_bare(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch_with(args, env, false, true)
    }

    /// `start`, with nothing read from stdout until `release_stdout` (or `stop`): once the pipe
    /// is full, the server's sink thread blocks on it, as on a slow downstream.
    pub fn start_holding_stdout(args: &[&str]) -> Server {
        Server::launch(args, &[], true)
    }

    /// Starts reading stdout (see `start_holding_stdout`).
    pub fn release_stdout(&mut self) {
        self.hold_stdout = None;
    }

    fn launch(args: &[&str], env: &[(&str, &str)], hold: bool) -> Server {
        Server::launch_with(args, env, hold, false)
    }

    /// `start`, as systemd socket activation would: `fds` become descriptors 3, 4, ... of the
    /// server, announced in `LISTEN_PID` and `LISTEN_FDS`. `args` alone, as `start_bare`.
    pub fn start_activated(args: &[&str], fds: &[std::os::fd::RawFd]) -> Server {
        Server::launch_full(args, &[], false, true, fds)
    }

    fn launch_with(args: &[&str], env: &[(&str, &str)], hold: bool, bare: bool) -> Server {
        Server::launch_full(args, env, hold, bare, &[])
    }

    fn launch_full(
        args: &[&str],
        env: &[(&str, &str)],
        hold: bool,
        bare: bool,
        fds: &[std::os::fd::RawFd],
    ) -> Server {
        let http_chosen = bare
            || args
                .iter()
                .any(|a| *a == "--http-addr" || *a == "--no-http");
        let http_default: &[&str] = if http_chosen {
            &[]
        } else {
            &["--http-addr", "127.0.0.1:0"]
        };
        let udp_default: &[&str] = if bare {
            &[]
        } else {
            &["--udp-addr", "127.0.0.1:0"]
        };
        let mut cmd = if fds.is_empty() {
            Command::new(env!("CARGO_BIN_EXE_corestatsd"))
        } else {
            activated(fds)
        };
        let mut child = cmd
            .args(udp_default)
            .args(http_default)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let mut stdout = child.stdout.take().unwrap();
        let (hold_tx, held) = mpsc::channel::<()>();
        let stdout = std::thread::spawn(move || {
            if hold {
                // Released by a send or by the sender's drop.
                let _ = held.recv();
            }
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            out
        });
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let line = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no start-up line; stderr so far: {seen:?}"));
            seen.push(line.clone());
            if line.contains("; listening ") {
                break line;
            }
        };
        let after = |marker: &str| -> Option<SocketAddr> {
            let rest = line.split(marker).nth(1)?;
            Some(rest.split_whitespace().next()?.parse().unwrap())
        };
        Server {
            child,
            addr: after("listening udp ").unwrap_or_else(|| "127.0.0.1:9".parse().unwrap()),
            tcp: after("tcp "),
            http: line
                .split("HTTP endpoint http://")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .map(|a| a.parse().unwrap()),
            stderr_lines: rx,
            stderr_seen: seen,
            stdout: Some(stdout),
            hold_stdout: Some(hold_tx),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for a stderr line that satisfies `pred` and returns it; every line read
    /// on the way is kept for `stop`.
    pub fn wait_for_stderr(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_for_stderr_within(what, Duration::from_secs(20), pred)
    }

    /// `wait_for_stderr` with its own bound, for a line that takes a loaded server longer.
    pub fn wait_for_stderr_within(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.stderr_lines.recv_timeout(left) else {
                panic!(
                    "no stderr line with {what}; so far: {:#?}",
                    self.stderr_seen
                );
            };
            self.stderr_seen.push(line.clone());
            if pred(&line) {
                return line;
            }
        }
    }

    /// The most resident memory the server has used so far (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib << 10
    }

    /// SIGTERM, then waits (bounded) for exit and collects stdout and stderr.
    pub fn stop(mut self) -> Finished {
        self.release_stdout();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let threads = thread_states(self.child.id());
                let _ = self.child.kill();
                let mut log = self.stderr_seen.clone();
                while let Ok(l) = self.stderr_lines.recv_timeout(Duration::from_millis(500)) {
                    log.push(l);
                }
                panic!(
                    "server did not stop within 20 s of SIGTERM; threads: {threads:#?}; its log: {log:#?}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = self
            .stdout
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let lines = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect();
        let mut stderr = std::mem::take(&mut self.stderr_seen);
        while let Ok(l) = self.stderr_lines.recv_timeout(Duration::from_secs(2)) {
            stderr.push(l);
        }
        Finished {
            status: status.code().unwrap_or(-1),
            lines,
            stderr,
        }
    }
}

/// The server's command as systemd socket activation would start it: `fds` become its
/// descriptors 3, 4, ..., announced in `LISTEN_PID` and `LISTEN_FDS`.
pub fn activated(fds: &[std::os::fd::RawFd]) -> Command {
    let bin = env!("CARGO_BIN_EXE_corestatsd");
    // The shell's pid is the server's once it execs: LISTEN_PID names it.
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!(
            "export LISTEN_PID=$$ LISTEN_FDS={}; exec \"$@\"",
            fds.len()
        ))
        .arg("sh")
        .arg(bin);
    let fds = fds.to_vec();
    // SAFETY: between fork and exec only fcntl and dup2 run, both async-signal-safe;
    // the descriptors are first moved above 100 so placing one at 3.. cannot clobber
    // another still to be placed.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, move || {
            for (i, &fd) in fds.iter().enumerate() {
                let high = 100 + i as i32;
                if libc::dup2(fd, high) < 0
                    || libc::fcntl(high, libc::F_SETFD, libc::FD_CLOEXEC) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for i in 0..fds.len() as i32 {
                if libc::dup2(100 + i, 3 + i) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    c
}

/// A fresh, empty directory for one test's socket files.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("corestatsd-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `lines` in datagrams of `per` lines each, over a blocking unix datagram socket: the sender
/// waits for the server instead of losing anything.
pub fn send_unix(path: &std::path::Path, lines: &[String], per: usize) {
    let tx = std::os::unix::net::UnixDatagram::unbound().unwrap();
    tx.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    for chunk in lines.chunks(per) {
        tx.send_to(chunk.join("\n").as_bytes(), path).unwrap();
    }
}

/// A 4-byte little-endian length, then the packet: unix stream and default TCP framing.
pub fn frame(packet: &[u8]) -> Vec<u8> {
    let mut v = (packet.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(packet);
    v
}

/// Sends each datagram from its own socket (own source port), so SO_REUSEPORT spreads them
/// across shards.
pub fn send_spread(addr: SocketAddr, datagrams: &[&[u8]]) {
    let sockets: Vec<UdpSocket> = (0..datagrams.len())
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (s, d) in sockets.iter().zip(datagrams) {
        s.send_to(d, addr).unwrap();
    }
}

pub fn metric_lines(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| l["kind"] == "metric")
        .filter(|l| !l["name"].as_str().unwrap().starts_with("corestatsd."))
        .collect()
}

/// Sum of a self metric over windows, shards, for points carrying every tag in `tags`.
pub fn self_metric(lines: &[Value], name: &str, tags: &[&str]) -> f64 {
    lines
        .iter()
        .filter(|l| l["name"] == name)
        .filter(|l| {
            let have: Vec<&str> = l["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            tags.iter().all(|t| have.contains(t))
        })
        .map(|l| l["value"].as_f64().unwrap())
        .sum()
}

/// The single point named `name` (panics if there are none or several).
pub fn one<'a>(lines: &'a [&Value], name: &str) -> &'a Value {
    let found: Vec<&&Value> = lines.iter().filter(|l| l["name"] == name).collect();
    assert_eq!(found.len(), 1, "expected one {name}, got {found:?}");
    found[0]
}

/// Each thread's name and kernel wait channel, for a server that would not stop.
fn thread_states(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .flatten()
        .map(|t| {
            let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
            format!(
                "{} {} {}",
                read("comm").trim(),
                read("wchan"),
                read("stat").split(' ').nth(2).unwrap_or("")
            )
        })
        .collect()
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn value(done: &Finished, name: &str) -> f64 {
    one(&metric_lines(&done.lines), name)["value"]
        .as_f64()
        .unwrap()
}

pub fn stopped_ok(server: Server) -> Finished {
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    done
}

pub fn closed(done: &Finished, transport: &str, reason: &str) -> f64 {
    self_metric(
        &done.lines,
        "corestatsd.connections_closed",
        &[
            &format!("transport:{transport}"),
            &format!("reason:{reason}"),
        ],
    )
}

/// Reads until the server closes the connection (EOF or reset); panics after 10 s.
pub fn wait_closed(s: &mut impl Read) {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Status and body of a GET.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut resp = agent
        .get(&format!("http://{addr}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let mut body = String::new();
    resp.body_mut()
        .as_reader()
        .read_to_string(&mut body)
        .unwrap();
    (resp.status().as_u16(), body)
}

/// Polls (bounded) until `pred` holds for the path's body; returns that body.
pub fn wait_for(addr: SocketAddr, path: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(addr, path);
        if status == 200 && pred(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never matched; last: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The payload files in a spill directory (its `lock` file and leftovers aside).
#[allow(dead_code)]
pub fn spilled_payloads(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "payload")
        })
        .count()
}
