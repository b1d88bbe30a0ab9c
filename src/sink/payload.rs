//! What an HTTP downstream's encoder produces and its delivery moves: `Payload`s, compressed
//! (`Compression`) and cut to size (`Limits`, `Splitter`). Shared by the Datadog and remote-write
//! encoders; knows nothing of HTTP or of either format.

use std::io::{self, Write};

/// One request body, encoded and compressed, with what it needs to be sent again later.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    /// Path under the base URL, e.g. `/api/v2/series`.
    pub path: String,
    pub content_type: String,
    /// `Content-Encoding`, empty for none.
    pub encoding: String,
    /// Points (or events, checks) inside, for telemetry.
    pub points: u64,
    pub body: Vec<u8>,
}

impl Payload {
    /// What the payload weighs against a queue's byte limit.
    pub fn cost(&self) -> usize {
        self.body.len() + self.path.len() + self.content_type.len() + 64
    }
}

/// Payload size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_items: usize,
    pub max_uncompressed: usize,
    pub max_compressed: usize,
}

/// A compressed body and the items in it.
pub type Body = (Vec<u8>, u64);

/// Accumulates encoded items (whole repeated-field entries) into bodies within the limits.
pub struct Splitter {
    limits: Limits,
    /// Finished bodies: (raw bytes, item end offsets).
    done: Vec<(Vec<u8>, Vec<usize>)>,
    cur: Vec<u8>,
    ends: Vec<usize>,
    /// Items too large for any payload, dropped.
    pub oversized: u64,
}

impl Splitter {
    pub fn new(limits: Limits) -> Self {
        Splitter {
            limits,
            done: Vec::new(),
            cur: Vec::new(),
            ends: Vec::new(),
            oversized: 0,
        }
    }

    /// Adds one encoded item and clears `item` for the next.
    pub fn push(&mut self, item: &mut Vec<u8>) {
        if item.len() > self.limits.max_uncompressed {
            self.oversized += 1;
        } else {
            if self.cur.len() + item.len() > self.limits.max_uncompressed
                || self.ends.len() >= self.limits.max_items
            {
                self.cut();
            }
            self.cur.extend_from_slice(item);
            self.ends.push(self.cur.len());
        }
        item.clear();
    }

    fn cut(&mut self) {
        if !self.ends.is_empty() {
            self.done.push((
                std::mem::take(&mut self.cur),
                std::mem::take(&mut self.ends),
            ));
        }
    }

    /// Compresses each body, halving (at an item boundary) any that compresses past the limit.
    /// Returns (compressed body, items).
    pub fn finish(mut self, c: Compression) -> io::Result<(Vec<Body>, u64)> {
        self.cut();
        let mut out = Vec::new();
        let mut work: Vec<(Vec<u8>, Vec<usize>)> = self.done;
        work.reverse();
        while let Some((raw, ends)) = work.pop() {
            let z = c.compress(&raw)?;
            if z.len() <= self.limits.max_compressed {
                out.push((z, ends.len() as u64));
            } else if ends.len() == 1 {
                self.oversized += 1;
            } else {
                let mid = ends.len() / 2;
                let cut_at = ends[mid - 1];
                let second: Vec<usize> = ends[mid..].iter().map(|e| e - cut_at).collect();
                let first = ends[..mid].to_vec();
                work.push((raw[cut_at..].to_vec(), second));
                work.push((raw[..cut_at].to_vec(), first));
            }
        }
        Ok((out, self.oversized))
    }
}

/// A payload's `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Deflate,
    /// Snappy's block format, as remote write requires.
    Snappy,
    None,
}

impl Compression {
    pub fn header(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Deflate => "deflate",
            Compression::Snappy => "snappy",
            Compression::None => "",
        }
    }

    /// zstd at level 1 (the Agent's default), zlib-wrapped deflate at the default level.
    pub fn compress(self, raw: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Compression::Zstd => zstd::bulk::compress(raw, 1),
            Compression::Deflate => {
                let mut e = flate2::write::ZlibEncoder::new(
                    Vec::with_capacity(raw.len() / 4),
                    flate2::Compression::default(),
                );
                e.write_all(raw)?;
                e.finish()
            }
            Compression::Snappy => snap::raw::Encoder::new()
                .compress_vec(raw)
                .map_err(io::Error::other),
            Compression::None => Ok(raw.to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn items(n: usize, len: usize) -> Splitter {
        let mut s = Splitter::new(Limits {
            max_items: 3,
            max_uncompressed: 100,
            max_compressed: 60,
        });
        for i in 0..n {
            let mut item = vec![i as u8; len];
            s.push(&mut item);
            assert!(item.is_empty());
        }
        s
    }

    #[test]
    fn splits_by_item_count_and_raw_size() {
        let (bodies, oversized) = items(7, 10).finish(Compression::None).unwrap();
        assert_eq!(oversized, 0);
        let counts: Vec<u64> = bodies.iter().map(|b| b.1).collect();
        assert_eq!(counts, [3, 3, 1]);
        let (bodies, _) = items(4, 40).finish(Compression::None).unwrap();
        // 40-byte items: two per 100-byte body... but 80 > 60 compressed (uncompressed here),
        // so each body is halved to one item.
        assert_eq!(bodies.iter().map(|b| b.1).collect::<Vec<_>>(), [1, 1, 1, 1]);
        assert!(bodies.iter().all(|b| b.0.len() == 40));
        assert_eq!(bodies[2].0, vec![2u8; 40], "order kept through the halving");
    }

    #[test]
    fn an_item_larger_than_any_payload_is_counted() {
        let (bodies, oversized) = items(2, 101).finish(Compression::None).unwrap();
        assert!(bodies.is_empty());
        assert_eq!(oversized, 2);
        let (bodies, oversized) = items(1, 70).finish(Compression::None).unwrap();
        assert!(bodies.is_empty(), "fits raw but not compressed");
        assert_eq!(oversized, 1);
    }

    #[test]
    fn compression_round_trips() {
        let raw = b"series series series series".repeat(100);
        let z = Compression::Zstd.compress(&raw).unwrap();
        assert!(z.len() < raw.len());
        assert_eq!(zstd::bulk::decompress(&z, raw.len()).unwrap(), raw);
        let d = Compression::Deflate.compress(&raw).unwrap();
        let mut back = Vec::new();
        flate2::read::ZlibDecoder::new(&d[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, raw);
        let s = Compression::Snappy.compress(&raw).unwrap();
        assert_eq!(snap::raw::Decoder::new().decompress_vec(&s).unwrap(), raw);
    }
}
