//! The spill directory of an HTTP downstream: payloads that memory could not hold, or that were
//! undelivered at stop, one file each, oldest first, bounded in bytes; a later process on the same
//! directory finds them. Owns the files and their format; must not decide when to spill or send
//! (that is `delivery.rs`).
//!
//! A file is `<seq>.payload`: a `corestatsd-payload 1` line, path, content type, encoding and
//! points, one per line, then the body. It is written as `<seq>.tmp`, synced, then renamed, so a
//! crash leaves a `.tmp` (removed at open), never half a payload.
//!
//! One process owns a directory at a time: an exclusive `flock` on its `lock` file, which the
//! kernel releases when the owner exits. A process that finds it held (a `--take-over` beside
//! the process it replaces) neither reads, writes nor removes a file there until the lock comes
//! free; then it lists the files as at open. Two processes never number files alike or send the
//! same one.

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
    /// The open `lock` file, and whether this process holds its lock.
    lock: fs::File,
    owned: bool,
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
    /// Creates `dir` if needed and takes its lock; when no other process holds it, removes
    /// `.tmp` leftovers and lists the payload files in order (else that waits for the lock).
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<SpillDir> {
        fs::create_dir_all(dir)?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        let mut sp = SpillDir {
            dir: dir.to_path_buf(),
            max_bytes,
            files: VecDeque::new(),
            bytes: 0,
            next_seq: 0,
            lock,
            owned: false,
        };
        sp.own()?;
        Ok(sp)
    }

    /// Whether this process owns the directory, taking the lock (and listing the files) if it
    /// has come free.
    pub fn own(&mut self) -> io::Result<bool> {
        use nix::fcntl::{FlockArg, flock};
        use std::os::fd::AsRawFd;
        if self.owned {
            return Ok(true);
        }
        match flock(self.lock.as_raw_fd(), FlockArg::LockExclusiveNonblock) {
            Ok(()) => {}
            Err(nix::errno::Errno::EWOULDBLOCK) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let mut found: Vec<(u64, PathBuf, u64)> = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
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
        self.next_seq = found.last().map_or(0, |&(seq, _, _)| seq + 1);
        self.files = found
            .into_iter()
            .map(|(_, path, size)| Spilled { path, size })
            .collect();
        self.bytes = self.files.iter().map(|f| f.size).sum();
        self.owned = true;
        Ok(true)
    }

    /// Whether this process held the lock when last asked (`own`).
    pub fn is_owned(&self) -> bool {
        self.owned
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
        if !self.own()? {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "another corestatsd process (the one taken over) still owns it",
            ));
        }
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

    /// The oldest file, taken out of the accounting until it is `remove`d or `put_back`; none
    /// while another process owns the directory.
    pub fn take_oldest(&mut self) -> Option<Spilled> {
        if !self.own().unwrap_or(false) {
            return None;
        }
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

    #[test]
    fn a_directory_another_owner_holds_is_left_alone_until_it_lets_go() {
        let dir =
            std::env::temp_dir().join(format!("corestatsd-spill-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let p = |points| Payload {
            path: "/x".into(),
            points,
            ..Payload::default()
        };
        // flock locks of two open files conflict within one process too.
        let mut first = SpillDir::open(&dir, 1 << 20).unwrap();
        first.write(&p(1)).unwrap();
        let mut second = SpillDir::open(&dir, 1 << 20).unwrap();
        assert!(!second.own().unwrap());
        assert_eq!((second.len(), second.bytes()), (0, 0));
        assert!(second.take_oldest().is_none());
        let refused = second.write(&p(2)).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::WouldBlock);
        first.write(&p(3)).unwrap();
        drop(first);
        // The owner gone: its files, in order, and the numbering goes on after them.
        let a = second.take_oldest().unwrap();
        assert_eq!(a.read().unwrap().points, 1);
        assert_eq!(second.len(), 1);
        second.write(&p(4)).unwrap();
        let names: Vec<_> = second.files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(names.len(), 2);
        assert!(names[0] < names[1]);
        assert_eq!(second.take_oldest().unwrap().read().unwrap().points, 3);
        a.remove();
        let _ = fs::remove_dir_all(&dir);
    }
}
