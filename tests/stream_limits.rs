//! Stream transports under abuse: slowloris clients, then thousands of idle connections, on TCP
//! and unix stream while a well-behaved client on each keeps sending; every one of its lines
//! arrives, trickling connections are closed by the frame timeout, idle ones make room for
//! newcomers.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{Server, closed, frame, temp_dir};

const IDLE: usize = 5000;
const SLOW: usize = 100;
const LIMIT: usize = 200;

/// Raises this process' open-file limit (the server inherits it) to the hard limit; returns it.
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    r.rlim_cur
}

/// A client that trickles a frame it never completes.
enum Slow {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Slow {
    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Slow::Tcp(s) => s,
            Slow::Unix(s) => s,
        }
    }

    /// Sends one more byte; false once the server has closed the connection. Waits up to
    /// 10 ms for the close, which paces the trickle.
    fn trickle(&mut self) -> bool {
        let s = self.stream();
        if s.write_all(b"x").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => true,
            Err(_) => false,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn idle_and_slowloris_connections_never_lock_out_a_client_that_sends() {
    let nofile = raise_nofile();
    assert!(
        nofile >= (IDLE + SLOW + 2 * LIMIT + 200) as u64,
        "this test needs {} descriptors; the hard limit is {nofile}",
        IDLE + SLOW + 2 * LIMIT + 200
    );
    let sock = temp_dir("stream-limits").join("s.sock");
    let server = Server::start(&[
        "--cores",
        "0",
        "--tcp-addr",
        "127.0.0.1:0",
        "--uds-stream-path",
        sock.to_str().unwrap(),
        "--max-connections-per-shard",
        &LIMIT.to_string(),
        "--stream-frame-timeout-secs",
        "1",
    ]);
    let tcp_addr = server.tcp.unwrap();
    let mut good_tcp = TcpStream::connect(tcp_addr).unwrap();
    let mut good_unix = UnixStream::connect(&sock).unwrap();
    let mut slow: Vec<Slow> = (0..SLOW)
        .map(|i| {
            let mut s = if i % 2 == 0 {
                let s = TcpStream::connect(tcp_addr).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                Slow::Tcp(s)
            } else {
                let mut s = UnixStream::connect(&sock).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                // A 100-byte frame whose body never comes whole.
                s.write_all(&100u32.to_le_bytes()).unwrap();
                Slow::Unix(s)
            };
            s.stream().write_all(b"s").unwrap();
            s
        })
        .collect();
    let (mut sent_tcp, mut sent_unix) = (0u64, 0u64);
    // The slowloris clients keep trickling until the server closes each one.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !slow.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} slow clients still open",
            slow.len()
        );
        slow.retain_mut(Slow::trickle);
        good_tcp.write_all(b"good.tcp:1|c\n").unwrap();
        good_unix.write_all(&frame(b"good.unix:1|c")).unwrap();
        sent_tcp += 1;
        sent_unix += 1;
    }

    // Then the idle flood, many times the limit on each transport.
    let mut idle_tcp = Vec::new();
    let mut idle_unix = Vec::new();
    for i in 0..IDLE {
        if i % 2 == 0 {
            idle_tcp.push(TcpStream::connect(tcp_addr).unwrap());
        } else {
            idle_unix.push(UnixStream::connect(&sock).unwrap());
        }
        if i % 20 == 0 {
            good_tcp.write_all(b"good.tcp:1|c\n").unwrap();
            good_unix.write_all(&frame(b"good.unix:1|c")).unwrap();
            sent_tcp += 1;
            sent_unix += 1;
        }
    }
    // Newcomers after the flood, with every slot held by an idle connection: each takes an
    // idle one's place instead of being locked out.
    let mut late_tcp = TcpStream::connect(tcp_addr).unwrap();
    let mut late_unix = UnixStream::connect(&sock).unwrap();
    for _ in 0..50 {
        late_tcp.write_all(b"late.tcp:1|c\n").unwrap();
        late_unix.write_all(&frame(b"late.unix:1|c")).unwrap();
    }
    drop((late_tcp, late_unix));
    let done = server.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    // Summed over windows: the run may cross a window's end.
    let total = |name: &str| common::self_metric(&done.lines, name, &[]);
    assert_eq!(total("good.tcp"), sent_tcp as f64);
    assert_eq!(total("good.unix"), sent_unix as f64);
    assert_eq!(
        (total("late.tcp"), total("late.unix")),
        (50.0, 50.0),
        "{:#?}",
        done.stderr
    );
    for transport in ["tcp", "uds_stream"] {
        let reasons = [
            "eof",
            "frame_timeout",
            "evicted",
            "refused",
            "stopped",
            "idle_timeout",
        ];
        // (`eof`: the late clients, `stopped`: the rest, read to their end at the stop.)
        let by: Vec<(&str, f64)> = reasons.map(|r| (r, closed(&done, transport, r))).to_vec();
        let at = format!("{transport}: {by:?}");
        assert_eq!(by[1].1, (SLOW / 2) as f64, "{at}");
        assert!(by[2].1 > 0.0, "nothing evicted; {at}");
        // Every connection made was accepted and closed for a reason (the stop reads the
        // listen backlog too): none went silently.
        let opened = common::self_metric(
            &done.lines,
            "corestatsd.connections_opened",
            &[&format!("transport:{transport}")],
        );
        assert_eq!(opened, (IDLE / 2 + SLOW / 2 + 2) as f64, "{at}");
        assert_eq!(by.iter().map(|(_, n)| n).sum::<f64>(), opened, "{at}");
    }
    drop((idle_tcp, idle_unix));
}
