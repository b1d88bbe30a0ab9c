//! `--replay FILE`: the packets of a traffic capture in the Datadog Agent's format (`.dog`,
//! version 2 with second time stamps or 3 with nanoseconds; plain or zstd-compressed), as the
//! Agent's `dogstatsd-capture` and `corestatsd capture` write it, sent again at the recorded
//! pace times `--replay-speed`.
//!
//! The file: 8 header bytes (`D4 74 D0 60`, then `F0 | version`, `FF 00 00`); records of a u32
//! little-endian length and a protobuf `UnixDogstatsdMsg` (1: timestamp, 3: payload; the rest
//! skipped); a u32 zero; the tagger state and its u32 size. Anything else is refused with the
//! offset at fault, never a panic.

use super::workload::{Counts, Packet, TYPES};

const MAGIC: [u8; 4] = [0xD4, 0x74, 0xD0, 0x60];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// A decompressed capture larger than this is refused.
const MAX_BYTES: u64 = 8 << 30;

/// One recorded packet: when (ns from the first), and what.
#[derive(Debug)]
pub struct Recorded {
    pub at_ns: u64,
    pub packet: Packet,
}

/// Reads and checks a whole capture file.
pub fn read(path: &str) -> Result<Vec<Recorded>, String> {
    let raw = std::fs::read(path).map_err(|e| format!("--replay {path}: {e}"))?;
    parse(&raw).map_err(|e| format!("--replay {path}: {e}"))
}

fn decompress(raw: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(raw)
        .map_err(|e| format!("not a valid zstd stream: {e}"))?
        .take(MAX_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            format!(
                "zstd stream broken after {} decompressed bytes: {e}",
                out.len()
            )
        })?;
    if out.len() as u64 > MAX_BYTES {
        return Err(format!("decompresses to more than {MAX_BYTES} bytes"));
    }
    Ok(out)
}

pub fn parse(raw: &[u8]) -> Result<Vec<Recorded>, String> {
    let owned;
    let b = if raw.starts_with(&ZSTD_MAGIC) {
        owned = decompress(raw)?;
        &owned[..]
    } else {
        raw
    };
    if b.len() < 8 || b[..4] != MAGIC || b[4] & 0xF0 != 0xF0 {
        return Err("offset 0: not a DogStatsD capture (no D4 74 D0 60 header)".into());
    }
    let version = b[4] & 0x0F;
    if !(2..=3).contains(&version) {
        return Err(format!(
            "offset 4: capture version {version}; versions 2 and 3 are read"
        ));
    }
    let ns_per_tick: u64 = if version >= 3 { 1 } else { 1_000_000_000 };
    let mut out = Vec::new();
    let mut at = 8;
    let mut first: Option<i64> = None;
    loop {
        let len = u32_at(b, at).ok_or_else(|| {
            format!("offset {at}: truncated: a record length or the end marker was expected")
        })? as usize;
        if len == 0 {
            break;
        }
        let start = at + 4;
        let body = b.get(start..start + len).ok_or_else(|| {
            format!(
                "offset {at}: truncated: a record of {len} bytes, {} left",
                b.len().saturating_sub(start)
            )
        })?;
        let (ts, payload) = message(body).map_err(|e| format!("offset {start}: {e}"))?;
        let base = *first.get_or_insert(ts);
        let ticks = ts.saturating_sub(base).max(0) as u64;
        out.push(Recorded {
            at_ns: ticks.saturating_mul(ns_per_tick),
            packet: packet(payload),
        });
        at = start + len;
    }
    // The tagger state: its size is the file's last 4 bytes, and it sits right after the marker.
    let after_marker = at + 4;
    let state = u32_at(b, b.len().saturating_sub(4))
        .filter(|_| b.len() >= after_marker + 4)
        .ok_or_else(|| format!("offset {after_marker}: truncated: no tagger state size"))?;
    if after_marker + state as usize + 4 != b.len() {
        return Err(format!(
            "offset {after_marker}: the tagger state of {state} bytes does not end the file \
             ({} bytes follow the end marker)",
            b.len() - after_marker
        ));
    }
    Ok(out)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn varint(b: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or("a varint runs past the record")?;
        *at += 1;
        v |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a varint longer than 10 bytes".into())
}

/// A `UnixDogstatsdMsg`: (timestamp, payload).
fn message(b: &[u8]) -> Result<(i64, &[u8]), String> {
    let (mut at, mut ts, mut payload) = (0, 0i64, None);
    while at < b.len() {
        let key = varint(b, &mut at)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = varint(b, &mut at)?;
                if field == 1 {
                    ts = v as i64;
                }
            }
            2 => {
                let len = varint(b, &mut at)? as usize;
                let v = at
                    .checked_add(len)
                    .and_then(|end| b.get(at..end))
                    .ok_or("a field runs past the record")?;
                at += len;
                if field == 3 {
                    payload = Some(v);
                }
            }
            1 => at += 8,
            5 => at += 4,
            w => {
                return Err(format!(
                    "field {field} has wire type {w}, which no capture uses"
                ));
            }
        }
    }
    if at > b.len() {
        return Err("a fixed-size field runs past the record".into());
    }
    Ok((ts, payload.ok_or("a record without a payload (field 3)")?))
}

/// The payload as a packet, with what it holds counted like a generated one.
fn packet(payload: &[u8]) -> Packet {
    let mut counts = Counts {
        packets: 1,
        bytes: payload.len() as u64,
        ..Counts::default()
    };
    for line in payload.split(|&c| c == b'\n') {
        if line.is_empty() || line.starts_with(b"_e{") || line.starts_with(b"_sc|") {
            continue;
        }
        let mut fields = line.split(|&c| c == b'|');
        let (Some(head), Some(kind)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(t) = TYPES.iter().position(|t| t.as_bytes() == kind) else {
            continue;
        };
        counts.metrics += 1;
        // `name:v1:v2`: every value is a sample.
        let values = head.iter().filter(|&&c| c == b':').count() as u64;
        counts.samples[t] += values;
    }
    Packet {
        bytes: payload.to_vec(),
        counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v3 file built byte by byte from the format.
    fn file(records: &[(u64, &[u8])], version: u8) -> Vec<u8> {
        let mut f = vec![0xD4, 0x74, 0xD0, 0x60, 0xF0 | version, 0xFF, 0, 0];
        for &(ts, payload) in records {
            let mut m = vec![0x08];
            let mut v = ts;
            while v >= 0x80 {
                m.push(v as u8 | 0x80);
                v >>= 7;
            }
            m.push(v as u8);
            m.extend([0x10, payload.len() as u8, 0x1A, payload.len() as u8]);
            m.extend_from_slice(payload);
            m.extend([0x20, 0x07]);
            f.extend((m.len() as u32).to_le_bytes());
            f.extend(m);
        }
        f.extend([0, 0, 0, 0]);
        f.extend([0, 0, 0, 0]);
        f
    }

    #[test]
    fn a_file_built_from_the_format_reads_back_with_its_pace_and_counts() {
        let f = file(
            &[
                (5_000_000_000, b"a:1|c\nb:2:3|d"),
                (5_250_000_000, b"_e{1,1}:t|x"),
            ],
            3,
        );
        let r = parse(&f).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].at_ns, r[1].at_ns), (0, 250_000_000));
        assert_eq!(r[0].packet.bytes, b"a:1|c\nb:2:3|d");
        assert_eq!(
            (
                r[0].packet.counts.metrics,
                r[0].packet.counts.total_samples()
            ),
            (2, 3)
        );
        assert_eq!(r[1].packet.counts.metrics, 0);
        // Version 2 counts seconds.
        let r = parse(&file(&[(10, b"a:1|c"), (12, b"a:1|c")], 2)).unwrap();
        assert_eq!(r[1].at_ns, 2_000_000_000);
        // The same, compressed.
        let z = zstd::encode_all(&f[..], 1).unwrap();
        assert_eq!(parse(&z).unwrap().len(), 2);
    }

    #[test]
    fn corrupt_and_truncated_files_are_refused_with_the_offset() {
        let f = file(&[(1, b"a:1|c"), (2, b"b:1|c")], 3);
        for cut in [0, 4, 9, 20, f.len() - 9, f.len() - 5, f.len() - 1] {
            let e = parse(&f[..cut])
                .err()
                .unwrap_or_else(|| panic!("cut at {cut} accepted"));
            assert!(e.starts_with("offset "), "{e}");
        }
        let mut bad = f.clone();
        bad[0] = 0;
        assert!(parse(&bad).unwrap_err().contains("not a DogStatsD capture"));
        let mut v9 = f.clone();
        v9[4] = 0xF9;
        assert!(parse(&v9).unwrap_err().contains("version 9"));
        // A record length past the end.
        let mut long = f.clone();
        long[8] = 0xFF;
        assert!(parse(&long).unwrap_err().contains("truncated"));
        // Every single-byte corruption is refused or read, never a panic.
        for i in 0..f.len() {
            for x in [0x00, 0x7F, 0x80, 0xFF] {
                let mut c = f.clone();
                c[i] = x;
                let _ = parse(&c);
            }
        }
    }
}
