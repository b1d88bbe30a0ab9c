//! A test intake: HTTP/1.1 on loopback that records every request and answers with a scripted
//! status, plus a protobuf wire-format reader written from the encoding spec, independent of
//! the sink's encoder.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status the intake answered.
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body with its Content-Encoding undone.
    pub fn decoded(&self) -> Vec<u8> {
        match self.header("content-encoding").unwrap_or("") {
            "zstd" => zstd::stream::decode_all(&self.body[..]).expect("valid zstd"),
            "deflate" => {
                let mut out = Vec::new();
                flate2::read::ZlibDecoder::new(&self.body[..])
                    .read_to_end(&mut out)
                    .expect("valid zlib");
                out
            }
            "snappy" => snap::raw::Decoder::new()
                .decompress_vec(&self.body)
                .expect("valid snappy"),
            "" => self.body.clone(),
            other => panic!("unexpected Content-Encoding {other}"),
        }
    }
}

pub type Script = dyn Fn(usize, &Request) -> u16 + Send + Sync;

pub struct Intake {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Intake {
    /// Listens on 127.0.0.1; `script(n, request)` picks the status of the n-th request to
    /// arrive (from 0). Requests are recorded in the order their answers were decided.
    pub fn start(script: impl Fn(usize, &Request) -> u16 + Send + Sync + 'static) -> Intake {
        Intake::start_on("127.0.0.1:0".parse().unwrap(), script)
    }

    /// `start` on a given address (a port a test reserved earlier).
    pub fn start_on(
        addr: SocketAddr,
        script: impl Fn(usize, &Request) -> u16 + Send + Sync + 'static,
    ) -> Intake {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let reqs = Arc::clone(&requests);
        let arrivals = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let reqs = Arc::clone(&reqs);
                let script = Arc::clone(&script);
                let arrivals = Arc::clone(&arrivals);
                std::thread::spawn(move || serve(conn, &reqs, &arrivals, &*script));
            }
        });
        Intake { addr, requests }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits (bounded) until `pred` holds for the requests so far.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.requests();
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "intake never saw {what}; got {r:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(
    conn: std::net::TcpStream,
    reqs: &Mutex<Vec<Request>>,
    arrivals: &AtomicUsize,
    script: &Script,
) {
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("POST"), "request line {line:?}");
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').expect("header line");
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .expect("a Content-Length");
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let mut req = Request {
            path,
            headers,
            body,
            status: 0,
        };
        // Numbered on arrival: a request the script holds up does not shift the next one's number.
        let n = arrivals.fetch_add(1, Ordering::SeqCst);
        req.status = script(n, &req);
        reqs.lock().unwrap().push(req.clone());
        let reply = format!(
            "HTTP/1.1 {} X\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{{}}",
            req.status
        );
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// One field of a protobuf message, by wire type.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Varint(u64),
    Fixed64(u64),
    Bytes(Vec<u8>),
    Fixed32(u32),
}

/// Reads a message into (field number, value) pairs, in order.
pub fn fields(mut b: &[u8]) -> Vec<(u32, Field)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let (num, wire) = ((key >> 3) as u32, key & 7);
        let f = match wire {
            0 => Field::Varint(varint(&mut b)),
            1 => {
                let v = u64::from_le_bytes(b[..8].try_into().unwrap());
                b = &b[8..];
                Field::Fixed64(v)
            }
            2 => {
                let len = varint(&mut b) as usize;
                let v = b[..len].to_vec();
                b = &b[len..];
                Field::Bytes(v)
            }
            5 => {
                let v = u32::from_le_bytes(b[..4].try_into().unwrap());
                b = &b[4..];
                Field::Fixed32(v)
            }
            w => panic!("wire type {w}"),
        };
        out.push((num, f));
    }
    out
}

/// Accessors over a decoded message.
pub struct Msg(pub Vec<(u32, Field)>);

impl Msg {
    pub fn parse(b: &[u8]) -> Msg {
        Msg(fields(b))
    }

    pub fn all(&self, n: u32) -> impl Iterator<Item = &Field> {
        self.0.iter().filter(move |(k, _)| *k == n).map(|(_, f)| f)
    }

    pub fn msgs(&self, n: u32) -> Vec<Msg> {
        self.all(n)
            .map(|f| match f {
                Field::Bytes(b) => Msg::parse(b),
                other => panic!("field {n} is {other:?}, not a message"),
            })
            .collect()
    }

    pub fn msg(&self, n: u32) -> Msg {
        self.msgs(n).into_iter().next().unwrap_or(Msg(Vec::new()))
    }

    pub fn strs(&self, n: u32) -> Vec<String> {
        self.all(n)
            .map(|f| match f {
                Field::Bytes(b) => String::from_utf8(b.clone()).unwrap(),
                other => panic!("field {n} is {other:?}, not a string"),
            })
            .collect()
    }

    /// A string field; "" when absent (the proto3 default).
    pub fn str(&self, n: u32) -> String {
        self.strs(n).pop().unwrap_or_default()
    }

    pub fn uint(&self, n: u32) -> u64 {
        match self.all(n).last() {
            Some(Field::Varint(v)) => *v,
            None => 0,
            Some(other) => panic!("field {n} is {other:?}, not a varint"),
        }
    }

    pub fn double(&self, n: u32) -> f64 {
        match self.all(n).last() {
            Some(Field::Fixed64(v)) => f64::from_bits(*v),
            None => 0.0,
            Some(other) => panic!("field {n} is {other:?}, not a double"),
        }
    }

    /// A packed repeated varint field.
    pub fn packed(&self, n: u32) -> Vec<u64> {
        let mut out = Vec::new();
        for f in self.all(n) {
            let Field::Bytes(b) = f else {
                panic!("field {n} is not packed")
            };
            for (_, v) in fields_of_varints(b) {
                out.push(v);
            }
        }
        out
    }
}

fn fields_of_varints(mut b: &[u8]) -> Vec<((), u64)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[0];
            b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
        }
        out.push(((), v));
    }
    out
}

/// Undoes zigzag encoding (sint32).
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}
