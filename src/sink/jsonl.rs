//! The `jsonl` sink: one JSON object per line, the product's canonical flushed form.
//!
//! `{"kind":"metric","name":"page.views","type":"count","value":3.0,"ts":1764000000,"interval":10,
//! "host":"web-1","tags":["env:prod","zone:a"]}`; distributions carry a `sketch` object instead of
//! `value`. Lines are formatted into a buffer written out every `CHUNK_BYTES` (one call per chunk):
//! formatting a 1M-context window whole held a 250 MB string (`scripts/bench.sh`, mixed-1m).

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::protocol::origin::Origin;

use super::Sink;
use crate::flushed::{FlushedEvent, FlushedMetric, FlushedServiceCheck, OutKind, Suffix, View};

/// Formatted bytes the sink holds before writing them out.
const CHUNK_BYTES: usize = 1 << 20;

pub struct JsonlSink {
    out: Box<dyn Write + Send>,
    buf: String,
}

impl JsonlSink {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        JsonlSink {
            out,
            buf: String::new(),
        }
    }
}

impl Sink for JsonlSink {
    fn write(&mut self, batch: View<'_>) -> io::Result<()> {
        self.buf.clear();
        for m in &batch.metrics {
            format_metric(&mut self.buf, batch, m);
            if self.buf.len() >= CHUNK_BYTES {
                self.out.write_all(self.buf.as_bytes())?;
                self.buf.clear();
            }
        }
        for e in &batch.events {
            format_event(&mut self.buf, e);
        }
        for sc in &batch.service_checks {
            format_service_check(&mut self.buf, sc);
        }
        self.out.write_all(self.buf.as_bytes())?;
        if self.buf.capacity() > 2 * CHUNK_BYTES {
            // Events can make one batch's buffer large; do not keep that between flushes.
            self.buf = String::new();
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Appends one JSON line for `m`.
pub fn format_metric(out: &mut String, batch: View<'_>, m: &FlushedMetric) {
    let d = batch.desc(m);
    out.push_str("{\"kind\":\"metric\",\"name\":\"");
    escape_into(out, d.name);
    match m.suffix {
        Suffix::None => {}
        Suffix::Max => out.push_str(".max"),
        Suffix::Min => out.push_str(".min"),
        Suffix::Median => out.push_str(".median"),
        Suffix::Avg => out.push_str(".avg"),
        Suffix::Count => out.push_str(".count"),
        Suffix::Sum => out.push_str(".sum"),
        Suffix::Percentile(p) => {
            let _ = write!(out, ".{p}percentile");
        }
    }
    out.push_str("\",\"type\":\"");
    out.push_str(match m.kind {
        OutKind::Count => "count",
        OutKind::Gauge => "gauge",
        OutKind::Distribution => "distribution",
    });
    out.push('"');
    match (&m.sketch, m.kind) {
        (Some(s), OutKind::Distribution) => {
            out.push_str(",\"sketch\":{\"count\":");
            push_f64(out, s.count);
            for (label, v) in [
                ("min", s.min),
                ("max", s.max),
                ("sum", s.sum),
                ("avg", s.avg()),
                ("p50", s.quantile(0.5)),
                ("p90", s.quantile(0.9)),
                ("p99", s.quantile(0.99)),
            ] {
                let _ = write!(out, ",\"{label}\":");
                push_f64(out, v);
            }
            out.push_str(",\"bins\":{\"k\":[");
            for (i, (k, _)) in s.bins().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{k}");
            }
            out.push_str("],\"n\":[");
            for (i, (_, n)) in s.bins().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_f64(out, n);
            }
            out.push_str("]}}");
        }
        _ => {
            out.push_str(",\"value\":");
            push_f64(out, m.value);
        }
    }
    let _ = write!(
        out,
        ",\"ts\":{},\"interval\":{},\"host\":\"",
        m.ts, m.interval
    );
    escape_into(out, d.host.unwrap_or_default());
    out.push('"');
    push_tags(out, d.tags());
    push_origin(out, d.origin);
    out.push_str("}\n");
}

/// `{"kind":"event","title":..,"text":..,"ts":..,"host":..,"aggregation_key":..,"priority":..,
/// "source_type":..,"alert_type":..,"tags":[..]}`; absent optional fields are omitted.
pub fn format_event(out: &mut String, e: &FlushedEvent) {
    out.push_str("{\"kind\":\"event\"");
    push_str_field(out, "title", &e.title);
    push_str_field(out, "text", &e.text);
    if let Some(ts) = e.ts {
        let _ = write!(out, ",\"ts\":{ts}");
    }
    push_opt_field(out, "host", e.host.as_deref());
    push_opt_field(out, "aggregation_key", e.aggregation_key.as_deref());
    push_str_field(out, "priority", e.priority.as_str().as_bytes());
    push_opt_field(out, "source_type", e.source_type.as_deref());
    push_str_field(out, "alert_type", e.alert_type.as_str().as_bytes());
    push_tags(out, e.tags.iter().map(Vec::as_slice));
    push_origin(out, e.origin.as_deref());
    out.push_str("}\n");
}

/// `{"kind":"service_check","name":..,"status":0,"ts":..,"host":..,"message":..,"tags":[..]}`.
pub fn format_service_check(out: &mut String, sc: &FlushedServiceCheck) {
    out.push_str("{\"kind\":\"service_check\"");
    push_str_field(out, "name", &sc.name);
    let _ = write!(out, ",\"status\":{}", sc.status);
    if let Some(ts) = sc.ts {
        let _ = write!(out, ",\"ts\":{ts}");
    }
    push_opt_field(out, "host", sc.host.as_deref());
    push_opt_field(out, "message", sc.message.as_deref());
    push_tags(out, sc.tags.iter().map(Vec::as_slice));
    push_origin(out, sc.origin.as_deref());
    out.push_str("}\n");
}

/// The origin's fields, each only when present: `"container_id":"..","cgroup_inode":N,
/// "external_data":{"init":false,"container_name":"..","pod_uid":".."},"cardinality":"..",
/// "pod_uid":".."`.
fn push_origin(out: &mut String, blob: Option<&[u8]>) {
    let Some(blob) = blob else { return };
    let o = Origin::decode(blob);
    push_opt_field(out, "container_id", o.container_id);
    if let Some(inode) = o.cgroup_inode {
        let _ = write!(out, ",\"cgroup_inode\":{inode}");
    }
    let e = o.external;
    if !e.is_empty() {
        out.push_str(",\"external_data\":{");
        let len = out.len();
        if let Some(init) = e.init {
            let _ = write!(out, ",\"init\":{init}");
        }
        push_opt_field(out, "container_name", e.container_name);
        push_opt_field(out, "pod_uid", e.pod_uid);
        // Drop the first item's leading comma.
        out.remove(len);
        out.push('}');
    }
    if let Some(c) = o.cardinality {
        push_str_field(out, "cardinality", c.as_str().as_bytes());
    }
    push_opt_field(out, "pod_uid", o.pod_uid);
}

fn push_str_field(out: &mut String, key: &str, value: &[u8]) {
    let _ = write!(out, ",\"{key}\":\"");
    escape_into(out, value);
    out.push('"');
}

fn push_opt_field(out: &mut String, key: &str, value: Option<&[u8]>) {
    if let Some(v) = value {
        push_str_field(out, key, v);
    }
}

fn push_tags<'t>(out: &mut String, tags: impl Iterator<Item = &'t [u8]>) {
    out.push_str(",\"tags\":[");
    for (i, tag) in tags.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        escape_into(out, tag);
        out.push('"');
    }
    out.push(']');
}

/// A JSON number; integral values keep a `.0` so the type reads as float. Non-finite values
/// (possible only through overflowing sums) are written as `null`.
fn push_f64(out: &mut String, v: f64) {
    if !v.is_finite() {
        out.push_str("null");
        return;
    }
    let start = out.len();
    let _ = write!(out, "{v}");
    if !out[start..].contains(['.', 'e']) {
        out.push_str(".0");
    }
}

/// Bytes a JSON string cannot hold as they are (quote, backslash, controls), and non-ASCII ones
/// (UTF-8 to check).
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b < 0x20 || b == b'"' as usize || b == b'\\' as usize || b >= 0x80;
        b += 1;
    }
    t
};

/// Appends `bytes` as the inside of a JSON string: invalid UTF-8 replaced (U+FFFD), quotes,
/// backslashes and control characters escaped. Plain ASCII, nearly every name and tag, is
/// copied whole after one table scan: char by char this was 16 % of writing a 1M-point window,
/// and a match per byte then UTF-8 validation 37 % (`cargo bench --bench contexts -- sink`).
fn escape_into(out: &mut String, bytes: &[u8]) {
    if !bytes.iter().any(|&b| SPECIAL[b as usize]) {
        // SAFETY: every byte is below 0x80, so `bytes` is ASCII and valid UTF-8.
        out.push_str(unsafe { std::str::from_utf8_unchecked(bytes) });
        return;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => escape_str(out, s),
        Err(_) => escape_str(out, &String::from_utf8_lossy(bytes)),
    }
}

fn escape_str(out: &mut String, s: &str) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flushed::{Contexts, DescRef, FlushBatch, desc};
    use crate::protocol::MetricType;

    fn line(
        m: FlushedMetric,
        name: &[u8],
        host: Option<&[u8]>,
        tags: &[&[u8]],
        cid: Option<&[u8]>,
    ) -> String {
        let mut arena = Vec::new();
        let off = desc::encode(
            &mut arena,
            MetricType::Counter,
            name,
            host,
            cid,
            tags.iter().copied(),
        );
        let batch = FlushBatch {
            arenas: vec![arena],
            metrics: vec![FlushedMetric {
                desc: DescRef::Arena {
                    arena: 0,
                    offset: off,
                },
                ..m
            }],
            ..FlushBatch::default()
        };
        let mut s = String::new();
        let contexts = Contexts::default();
        format_metric(&mut s, View::new(&batch, &contexts), &batch.metrics[0]);
        s
    }

    fn point(kind: OutKind, suffix: Suffix, value: f64) -> FlushedMetric {
        FlushedMetric {
            suffix,
            kind,
            value,
            ts: 1764000000,
            interval: 10,
            ..FlushedMetric::default()
        }
    }

    #[test]
    fn writes_the_canonical_line() {
        let s = line(
            point(OutKind::Count, Suffix::None, 3.0),
            b"page.views",
            Some(b"web-1"),
            &[b"env:prod", b"zone:a"],
            None,
        );
        assert_eq!(
            s,
            "{\"kind\":\"metric\",\"name\":\"page.views\",\"type\":\"count\",\"value\":3.0,\"ts\":1764000000,\"interval\":10,\"host\":\"web-1\",\"tags\":[\"env:prod\",\"zone:a\"]}\n"
        );
    }

    #[test]
    fn escaping_keeps_plain_runs_and_escapes_every_control_byte() {
        let mut out = String::new();
        escape_into(&mut out, b"plain \x01a\"b\\c\x1f\xc3\xa9\xff\x7f end");
        assert_eq!(
            out,
            "plain \\u0001a\\\"b\\\\c\\u001f\u{e9}\u{fffd}\u{7f} end"
        );
    }

    #[test]
    fn suffixes_container_and_escaping() {
        let s = line(
            point(OutKind::Gauge, Suffix::Percentile(95), 0.25),
            b"la\"t\\ency\n\xff",
            None,
            &[],
            Some(&origin_blob(b"ci-abc")),
        );
        assert_eq!(
            s,
            "{\"kind\":\"metric\",\"name\":\"la\\\"t\\\\ency\\n\u{fffd}.95percentile\",\"type\":\"gauge\",\"value\":0.25,\"ts\":1764000000,\"interval\":10,\"host\":\"\",\"tags\":[],\"container_id\":\"abc\"}\n"
        );
    }

    #[test]
    fn events_and_service_checks_omit_absent_fields() {
        use crate::protocol::event::{AlertType, Priority};
        let mut s = String::new();
        format_event(
            &mut s,
            &FlushedEvent {
                title: b"Deploy".to_vec(),
                text: b"line 1\nline \"2\"".to_vec(),
                ts: Some(1700000000),
                host: Some(b"h".to_vec()),
                aggregation_key: None,
                priority: Priority::Low,
                source_type: None,
                alert_type: AlertType::Success,
                tags: vec![b"a".to_vec(), b"b:c".to_vec()],
                origin: None,
            },
        );
        assert_eq!(
            s,
            "{\"kind\":\"event\",\"title\":\"Deploy\",\"text\":\"line 1\\nline \\\"2\\\"\",\"ts\":1700000000,\"host\":\"h\",\"priority\":\"low\",\"alert_type\":\"success\",\"tags\":[\"a\",\"b:c\"]}\n"
        );
        s.clear();
        format_service_check(
            &mut s,
            &FlushedServiceCheck {
                name: b"app.up".to_vec(),
                status: 2,
                ts: None,
                host: None,
                message: Some(b"down".to_vec()),
                tags: vec![],
                origin: Some(origin_blob(b"ci-1")),
            },
        );
        assert_eq!(
            s,
            "{\"kind\":\"service_check\",\"name\":\"app.up\",\"status\":2,\"message\":\"down\",\"tags\":[],\"container_id\":\"1\"}\n"
        );
    }

    fn origin_blob(local: &[u8]) -> Vec<u8> {
        use crate::protocol::origin::{InternalTags, OriginFields, Precedence, encode};
        let mut blob = Vec::new();
        let fields = OriginFields {
            local: Some(local),
            ..OriginFields::default()
        };
        encode(
            &mut blob,
            &fields,
            InternalTags::default(),
            Precedence::Client,
        );
        blob
    }

    #[test]
    fn every_origin_field_is_written_when_present() {
        use crate::protocol::origin::{InternalTags, OriginFields, Precedence, encode};
        let mut blob = Vec::new();
        let fields = OriginFields {
            local: Some(b"ci-abc,in-12"),
            external: Some(b"it-false,cn-web,pu-p1"),
            cardinality: Some(b"high"),
            socket_container: None,
        };
        let internal = InternalTags {
            entity_id: Some(b"pod-9"),
            card: None,
        };
        encode(&mut blob, &fields, internal, Precedence::Client);
        let s = line(
            point(OutKind::Gauge, Suffix::None, 1.0),
            b"g",
            None,
            &[],
            Some(&blob),
        );
        assert!(
            s.ends_with(",\"container_id\":\"abc\",\"cgroup_inode\":12,\"external_data\":{\"init\":false,\"container_name\":\"web\",\"pod_uid\":\"p1\"},\"cardinality\":\"high\",\"pod_uid\":\"pod-9\"}\n"),
            "{s}"
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["external_data"]["pod_uid"], "p1");
        blob.clear();
        let only_name = OriginFields {
            external: Some(b"cn-x"),
            ..OriginFields::default()
        };
        encode(
            &mut blob,
            &only_name,
            InternalTags::default(),
            Precedence::Client,
        );
        let s = line(
            point(OutKind::Gauge, Suffix::None, 1.0),
            b"g",
            None,
            &[],
            Some(&blob),
        );
        assert!(
            s.ends_with(",\"external_data\":{\"container_name\":\"x\"}}\n"),
            "{s}"
        );
    }

    #[test]
    fn distribution_lines_carry_the_sketch() {
        let mut sk = crate::values::sketch::Sketch::default();
        sk.insert(1.0, 1.0);
        sk.insert(1.0, 1.0);
        let mut m = point(OutKind::Distribution, Suffix::None, 2.0);
        m.sketch = Some(Box::new(sk));
        let s = line(m, b"d", Some(b"h"), &[], None);
        let k = crate::values::sketch::key(1.0);
        assert!(
            s.contains(&format!(
                "\"sketch\":{{\"count\":2.0,\"min\":1.0,\"max\":1.0,\"sum\":2.0,\"avg\":1.0,\"p50\":1.0,\"p90\":1.0,\"p99\":1.0,\"bins\":{{\"k\":[{k}],\"n\":[2.0]}}}}"
            )),
            "{s}"
        );
        assert!(!s.contains("\"value\""));
    }
}
