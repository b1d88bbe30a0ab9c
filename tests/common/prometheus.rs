//! A real Prometheus (Debian's `prometheus` package, which `scripts/test` installs), started
//! with its remote-write receiver on a loopback port and a temporary data directory; values are
//! read back through its query API.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::temp_dir;

pub struct Prometheus {
    child: Child,
    pub url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus with `config` as its prometheus.yml and waits until it is ready.
    pub fn start(config: &str) -> Prometheus {
        let dir = temp_dir("prometheus");
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "the `prometheus` binary (Debian package `prometheus`; scripts/test installs it)",
            );
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while ureq::get(&format!("{}/-/ready", p.url)).call().is_err() {
            assert!(Instant::now() < deadline, "prometheus never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// An instant query's result vector.
    pub fn query(&self, expr: &str) -> Vec<Value> {
        let mut resp = ureq::get(&format!("{}/api/v1/query", self.url))
            .query("query", expr)
            .call()
            .unwrap_or_else(|e| panic!("query {expr}: {e}"));
        let mut body = String::new();
        resp.body_mut()
            .as_reader()
            .read_to_string(&mut body)
            .unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"].as_array().unwrap().clone()
    }

    /// Waits (up to a minute, while Prometheus scrapes or receives) until `expr` has one value
    /// and `pred` holds for it; returns it.
    #[allow(dead_code)]
    pub fn wait_value(&self, expr: &str, pred: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.query(expr);
            if r.len() == 1
                && let Some(v) = r[0]["value"][1].as_str().and_then(|v| v.parse().ok())
                && pred(v)
            {
                return v;
            }
            assert!(Instant::now() < deadline, "{expr} never held: {r:#?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The one value of `expr` (panics unless exactly one series answers).
    pub fn value(&self, expr: &str) -> f64 {
        let r = self.query(expr);
        assert_eq!(r.len(), 1, "{expr}: {r:#?}");
        r[0]["value"][1].as_str().unwrap().parse().unwrap()
    }
}
