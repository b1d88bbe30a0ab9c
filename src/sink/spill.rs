//! The spill directory of an HTTP downstream: payloads that memory could not hold, or that were
//! undelivered at stop, one file each, oldest first, bounded in bytes; a later process on the same
//! directory finds them. Owns the files and their format; must not decide when to spill or send
//! (that is `delivery.rs`).
//!
//! A file is `<seq>.payload`: a `corestatsd-payload 1` line, path, content type, encoding and
//! points, one per line, then the body. It is written as `<seq>.tmp`, synced, then renamed, so a
//! crash leaves a `.tmp` (removed at open), never half a payload.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::payload::Payload;

/// The files of one directory, oldest first.
pub struct SpillDir {
    dir: PathBuf,
    max_bytes: u64,
    files: VecDeque<Spilled>,
    bytes: u64,
    next_seq: u64,
}

/// One spill file, out of the directory's accounting while it is being sent.
pub struct Spilled {
    pub path: PathBuf,
    size: u64,
}

impl Spilled {
    /// The payload, or `None` for a file that cannot be read back.
    pub fn read(&self) -> Option<Payload> {
        decode(&fs::read(&self.path).ok()?)
    }

    /// Delivered (or given up): the file goes.
    pub fn remove(self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl SpillDir {
    /// Creates `dir` if needed, removes `.tmp` leftovers and lists the payload files in order.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<SpillDir> {
        fs::create_dir_all(dir)?;
        let mut found: Vec<(u64, PathBuf, u64)> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_str().unwrap_or_default();
            if name.ends_with(".tmp") {
                // A spill cut short by a crash: never renamed, so never complete.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(seq) = name
                .strip_suffix(".payload")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            found.push((seq, entry.path(), entry.metadata()?.len()));
        }
        found.sort();
        let next_seq = found.last().map_or(0, |&(seq, _, _)| seq + 1);
        let files: VecDeque<Spilled> = found
            .into_iter()
            .map(|(_, path, size)| Spilled { path, size })
            .collect();
        Ok(SpillDir {
            dir: dir.to_path_buf(),
            max_bytes,
            bytes: files.iter().map(|f| f.size).sum(),
            files,
            next_seq,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Bytes of the files not being sent.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes `p` as the newest file. Past `max_bytes` the oldest files are deleted; returns
    /// each one's path and points, for the caller to count.
    pub fn write(&mut self, p: &Payload) -> io::Result<Vec<(PathBuf, u64)>> {
        self.write_synced(p, false)
    }

    /// `write`; with `durable` the directory is synced too, so the file's name survives a
    /// power loss (its data is synced either way).
    pub fn write_synced(&mut self, p: &Payload, durable: bool) -> io::Result<Vec<(PathBuf, u64)>> {
        let path = self.dir.join(format!("{:020}.payload", self.next_seq));
        self.next_seq += 1;
        let tmp = path.with_extension("tmp");
        let mut f = io::BufWriter::new(fs::File::create(&tmp)?);
        encode(p, &mut f)?;
        f.into_inner().map_err(|e| e.into_error())?.sync_data()?;
        fs::rename(&tmp, &path)?;
        if durable {
            fs::File::open(&self.dir)?.sync_all()?;
        }
        let size = fs::metadata(&path)?.len();
        self.bytes += size;
        self.files.push_back(Spilled { path, size });
        let mut evicted = Vec::new();
        while self.bytes > self.max_bytes && self.files.len() > 1 {
            let Some(old) = self.take_oldest() else { break };
            let points = old.read().map_or(0, |p| p.points);
            evicted.push((old.path.clone(), points));
            old.remove();
        }
        Ok(evicted)
    }

    /// The oldest file, taken out of the accounting until it is `remove`d or `put_back`.
    pub fn take_oldest(&mut self) -> Option<Spilled> {
        let f = self.files.pop_front()?;
        self.bytes -= f.size;
        Some(f)
    }

    /// A file taken but not delivered goes back to the head.
    pub fn put_back(&mut self, f: Spilled) {
        self.bytes += f.size;
        self.files.push_front(f);
    }
}

fn encode(p: &Payload, out: &mut impl Write) -> io::Result<()> {
    write!(
        out,
        "corestatsd-payload 1\n{}\n{}\n{}\n{}\n",
        p.path, p.content_type, p.encoding, p.points
    )?;
    out.write_all(&p.body)
}

fn decode(bytes: &[u8]) -> Option<Payload> {
    let mut rest = bytes;
    let mut line = || {
        let at = memchr::memchr(b'\n', rest)?;
        let l = std::str::from_utf8(&rest[..at]).ok()?.to_owned();
        rest = &rest[at + 1..];
        Some(l)
    };
    if line()? != "corestatsd-payload 1" {
        return None;
    }
    let (path, content_type, encoding) = (line()?, line()?, line()?);
    let points = line()?.parse().ok()?;
    Some(Payload {
        path,
        content_type,
        encoding,
        points,
        body: rest.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spill_format_round_trips() {
        let p = Payload {
            path: "/api/v2/series".into(),
            content_type: "application/x-protobuf".into(),
            encoding: "zstd".into(),
            points: 12,
            body: b"\x00\n\xffbody".to_vec(),
        };
        let mut out = Vec::new();
        encode(&p, &mut out).unwrap();
        assert_eq!(decode(&out), Some(p));
        assert_eq!(decode(b"something else\n"), None);
    }
}
