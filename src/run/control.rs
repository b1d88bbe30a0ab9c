//! The control socket (`--control-socket`) and a take-over through it (`--take-over`).
//!
//! The running process listens on an owner-only unix stream socket. A new process started with
//! `--take-over` and the same flags connects and says hello; the running one answers with every
//! listening socket it holds (each UDP SO_REUSEPORT socket, the unix sockets, the TCP listeners)
//! as SCM_RIGHTS, so no kernel queue is ever closed. The new process takes them instead of
//! binding, starts its shards and says ready. From then on both read the same sockets until the
//! old one has drained: it stops receiving, sends the windows it still closes over the same
//! connection as relay lines without their `|T` (`sink::handover`), which the new process
//! aggregates into its open window (each context's window is written once, by the new process),
//! closes the connection and exits 0. Then the new process serves the control socket. The HTTP
//! endpoint's listener is passed too (last, named in the `fds` line), so the endpoint keeps its
//! address: both processes answer on it until the old one exits. Stream
//! connections already open stay on the old process until it stops (it reads what their clients
//! sent first, as at any stop); new connections land on the new one.

use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::listen::activation::{Passed, describe};
use crate::shard;
use crate::sink::handover::Handover;

const HELLO: &str = "corestatsd take-over 1\n";
const READY: &str = "ready\n";
const GO: &str = "go\n";
/// Listening sockets one take-over passes, at most.
const MAX_FDS: usize = 1024;
/// How long the running process waits for the new one to say ready.
const READY_WAIT: Duration = Duration::from_secs(60);

/// Serves `path` from a thread of its own: the first take-over that completes hands over
/// `listeners` (and the HTTP endpoint's, `http`) and stops this process. A stale socket file is
/// replaced; one another process serves is refused.
pub fn serve(
    path: &Path,
    listeners: Vec<OwnedFd>,
    http: Option<OwnedFd>,
    handover: Handover,
) -> io::Result<()> {
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::other(
            "another process serves it (start this one with --take-over)",
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("corestatsd-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                match hand_over(conn, &listeners, http.as_ref(), &handover) {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => eprintln!(
                        "corestatsd: --control-socket {}: a take-over failed: {e}; still serving",
                        path.display()
                    ),
                }
            }
        })?;
    Ok(())
}

/// One control connection: a take-over, or not (false).
fn hand_over(
    conn: UnixStream,
    listeners: &[OwnedFd],
    http: Option<&OwnedFd>,
    handover: &Handover,
) -> io::Result<bool> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut hello = String::new();
    reader.read_line(&mut hello)?;
    if hello != HELLO {
        let _ = (&conn).write_all(b"error: not a take-over\n");
        return Ok(false);
    }
    let raw: Vec<RawFd> = listeners
        .iter()
        .chain(http)
        .map(AsRawFd::as_raw_fd)
        .collect();
    let line = format!(
        "fds {}{}\n",
        raw.len(),
        if http.is_some() { " http" } else { "" }
    );
    sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(line.as_bytes())],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::empty(),
        None,
    )?;
    conn.set_read_timeout(Some(READY_WAIT))?;
    let mut ready = String::new();
    reader.read_line(&mut ready)?;
    if ready != READY {
        // The new process failed to start: this one keeps serving.
        return Ok(false);
    }
    conn.set_read_timeout(None)?;
    // Where whole windows go, then every window ready from here on is whole; then the new
    // process may read.
    let go = conn.try_clone()?;
    *handover.stream.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
    shard::request_handover();
    (&go).write_all(GO.as_bytes())?;
    eprintln!(
        "corestatsd: take-over: a new process reads this one's sockets; sending it the windows \
         still open and stopping"
    );
    Ok(true)
}

/// What a take-over hands the new process.
pub struct Taken {
    /// The connection the old process' last windows come over.
    pub conn: UnixStream,
    pub passed: Vec<Passed>,
    /// The old process' HTTP endpoint listener.
    pub http: Option<std::net::TcpListener>,
}

/// The new process' side: the listening sockets of the process serving `path`, and the
/// connection its last windows will come over.
pub fn take_over(path: &Path) -> Result<Taken, String> {
    let at = |e: io::Error| format!("--take-over: --control-socket {}: {e}", path.display());
    let conn = UnixStream::connect(path).map_err(at)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(at)?;
    (&conn).write_all(HELLO.as_bytes()).map_err(at)?;
    let mut buf = [0u8; 64];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| at(e.into()))?;
    let mut fds = Vec::new();
    for c in msg.cmsgs() {
        if let ControlMessageOwned::ScmRights(received) = c {
            // SAFETY: descriptors just received with SCM_RIGHTS belong to this process alone.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let n = msg.bytes;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    if !text.starts_with("fds ") || fds.is_empty() {
        return Err(format!(
            "--take-over: --control-socket {}: no sockets came ({:?})",
            path.display(),
            text.trim()
        ));
    }
    conn.set_read_timeout(None).map_err(at)?;
    let http = match text.trim_end().ends_with(" http") {
        true => fds.pop().map(std::net::TcpListener::from),
        false => None,
    };
    let passed = fds
        .into_iter()
        .map(|fd| {
            let kind = describe(&fd);
            Passed { fd, kind }
        })
        .collect();
    Ok(Taken { conn, passed, http })
}

/// Tells the old process this one runs, then feeds what it sends (its last windows, as
/// length-prefixed relay packets) to `inject` until it closes the connection; then serves the
/// control socket itself (`serve`).
pub fn after_ready(
    conn: UnixStream,
    inject: mpsc::Sender<Vec<u8>>,
    then_serve: Option<(PathBuf, Vec<OwnedFd>, Option<OwnedFd>, Handover)>,
) -> io::Result<()> {
    (&conn).write_all(READY.as_bytes())?;
    conn.set_read_timeout(Some(READY_WAIT))?;
    let mut r = BufReader::new(conn);
    let mut go = String::new();
    r.read_line(&mut go)?;
    if go != GO {
        return Err(io::Error::other(format!("the old process answered {go:?}")));
    }
    r.get_ref().set_read_timeout(None)?;
    shard::release_receive();
    std::thread::Builder::new()
        .name("corestatsd-take-over".into())
        .spawn(move || {
            let mut packets = 0u64;
            loop {
                let mut len = [0u8; 4];
                if r.read_exact(&mut len).is_err() {
                    break;
                }
                let mut packet = vec![0u8; u32::from_le_bytes(len) as usize];
                if r.read_exact(&mut packet).is_err() || inject.send(packet).is_err() {
                    break;
                }
                packets += 1;
            }
            eprintln!(
                "corestatsd: take-over: done; {packets} packets of the old process' last windows \
                 taken in"
            );
            if let Some((path, listeners, http, handover)) = then_serve
                && let Err(e) = serve(&path, listeners, http, handover)
            {
                eprintln!("corestatsd: --control-socket {}: {e}", path.display());
            }
        })?;
    Ok(())
}
