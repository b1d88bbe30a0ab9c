//! TCP as statsd clients use it: newline framing by default (pystatsd's and hot-shots' TCP
//! clients write lines), length framing by flag, a newline client on a length-framed listener
//! told apart from a long frame (counted, logged naming the flag), idle timeouts and the
//! connection limit.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Server, closed, frame, metric_lines, self_metric, stopped_ok, value, wait_closed};

#[test]
fn tcp_takes_lines_by_default() {
    let server = Server::start(&["--cores", "0", "--tcp-addr", "127.0.0.1:0"]);
    let mut c = TcpStream::connect(server.tcp.unwrap()).unwrap();
    // As pystatsd's TCPStatsClient writes: one line per metric, each ending in \n.
    c.write_all(b"pystatsd.hits:1|c\npystatsd.hits:2|c\n")
        .unwrap();
    drop(c);
    let done = server.stop();
    assert_eq!(done.status, 0);
    let hits: f64 = metric_lines(&done.lines)
        .iter()
        .filter(|l| l["name"] == "pystatsd.hits")
        .map(|l| l["value"].as_f64().unwrap())
        .sum();
    assert_eq!(hits, 3.0);
}

#[test]
fn text_on_a_length_framed_listener_closes_with_its_own_reason_and_names_the_flag() {
    let server = Server::start(&[
        "--cores",
        "0",
        "--tcp-addr",
        "127.0.0.1:0",
        "--tcp-framing",
        "length",
    ]);
    let mut c = TcpStream::connect(server.tcp.unwrap()).unwrap();
    c.write_all(b"hotshots.hits:1|c\n").unwrap();
    // The server closes the connection: the read sees EOF (or a reset).
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    let n = c.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    let done = server.stop();
    assert_eq!(done.status, 0);
    let closed = self_metric(
        &done.lines,
        "corestatsd.connections_closed",
        &["transport:tcp", "reason:text_on_length_framing"],
    );
    assert_eq!(closed, 1.0);
    let logged: Vec<&String> = done
        .stderr
        .iter()
        .filter(|l| l.contains("sent text where a length frame was due"))
        .collect();
    assert_eq!(logged.len(), 1, "{:?}", done.stderr);
    assert!(logged[0].contains("--tcp-framing newline"), "{}", logged[0]);
}

#[test]
fn tcp_length_framing_and_newline_framing_with_eol_required() {
    let server = Server::start(&[
        "--cores",
        "0,1",
        "--tcp-addr",
        "127.0.0.1:0",
        "--tcp-framing",
        "length",
        "--bucket-secs",
        "3600",
    ]);
    let addr = server.tcp.expect("the start-up line names the TCP address");
    let mut conns: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        let payload = format!("t.count:{}|c|#conn:x\nt.gauge:{i}|g\n", i + 1);
        for piece in frame(payload.as_bytes()).chunks(5) {
            c.write_all(piece).unwrap();
            c.flush().unwrap();
        }
    }
    drop(conns);
    let done = stopped_ok(server);
    assert_eq!(value(&done, "t.count"), 10.0);
    assert_eq!(closed(&done, "tcp", "eof"), 4.0);
    assert_eq!(
        self_metric(
            &done.lines,
            "corestatsd.connections_opened",
            &["transport:tcp"]
        ),
        4.0
    );

    let server = Server::start(&[
        "--cores",
        "0",
        "--tcp-addr",
        "127.0.0.1:0",
        "--tcp-framing",
        "newline",
        "--eol-required",
        "tcp",
        "--bucket-secs",
        "3600",
    ]);
    let mut c = TcpStream::connect(server.tcp.unwrap()).unwrap();
    for piece in b"n.a:1|c\nn.a:2|c\r\nn.b:5|g\nn.tail:1|c".chunks(3) {
        c.write_all(piece).unwrap();
        c.flush().unwrap();
    }
    drop(c);
    // Without --eol-required the tail counts.
    let lenient = Server::start(&[
        "--cores",
        "0",
        "--tcp-addr",
        "127.0.0.1:0",
        "--tcp-framing",
        "newline",
        "--bucket-secs",
        "3600",
    ]);
    let mut c = TcpStream::connect(lenient.tcp.unwrap()).unwrap();
    c.write_all(b"n.tail:1|c").unwrap();
    drop(c);
    let done = stopped_ok(server);
    assert_eq!(value(&done, "n.a"), 3.0);
    assert_eq!(value(&done, "n.b"), 5.0);
    assert!(
        metric_lines(&done.lines)
            .iter()
            .all(|m| m["name"] != "n.tail")
    );
    assert_eq!(
        self_metric(&done.lines, "corestatsd.unterminated_lines", &[]),
        1.0
    );
    let done = stopped_ok(lenient);
    assert_eq!(value(&done, "n.tail"), 1.0);
}

#[test]
fn a_newcomer_past_the_limit_takes_the_idle_ones_place_and_idle_clients_are_closed() {
    let server = Server::start(&[
        "--cores",
        "0",
        "--tcp-addr",
        "127.0.0.1:0",
        "--tcp-framing",
        "newline",
        "--tcp-idle-timeout-secs",
        "1",
        "--max-connections-per-shard",
        "1",
        "--bucket-secs",
        "3600",
    ]);
    let addr = server.tcp.unwrap();
    let mut first = TcpStream::connect(addr).unwrap();
    first.write_all(b"idle.sent:1|c\n").unwrap();
    // The shard is at its limit of one: the newcomer evicts the first connection, which is read
    // to its end and closed.
    let mut second = TcpStream::connect(addr).unwrap();
    second.write_all(b"newcomer:1|c\n").unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    wait_closed(&mut first);
    // The newcomer, silent from then on, is closed by the server after about a second.
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    wait_closed(&mut second);
    assert!(started.elapsed() < Duration::from_secs(9));
    let done = stopped_ok(server);
    assert_eq!(value(&done, "idle.sent"), 1.0, "what it sent was kept");
    assert_eq!(value(&done, "newcomer"), 1.0);
    assert_eq!(closed(&done, "tcp", "evicted"), 1.0);
    assert_eq!(closed(&done, "tcp", "idle_timeout"), 1.0);
    assert_eq!(closed(&done, "tcp", "refused"), 0.0);
}
