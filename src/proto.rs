//! The protobuf wire format, write side only: just what the Datadog and Prometheus payloads and
//! the traffic capture need (varints, zigzag, doubles, length-delimited fields, packed repeats). Messages are written
//! straight from the flushed form, field by field, with the public field numbers; no schema
//! compiler, no intermediate structs.

/// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

/// An `int64`/`uint32`/enum field; zero is the default and is not written.
pub fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(out, field, VARINT);
        varint(out, v);
    }
}

/// An `int64` field (negative values take ten bytes, as protobuf specifies).
pub fn int64(out: &mut Vec<u8>, field: u32, v: i64) {
    uint(out, field, v as u64);
}

/// A `double` field; 0.0 is the default and is not written.
pub fn double(out: &mut Vec<u8>, field: u32, v: f64) {
    if v.to_bits() != 0 {
        key(out, field, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A `string` or `bytes` field, written even when empty (repeated strings must keep empties).
pub fn bytes(out: &mut Vec<u8>, field: u32, v: &[u8]) {
    key(out, field, LEN);
    varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

/// Writes a nested message: `body` appends its fields, then the length goes in front. One byte
/// is reserved (most nested messages are under 128 bytes); a longer body is moved up in place.
pub fn message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    key(out, field, LEN);
    let at = out.len();
    out.push(0);
    body(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
        return;
    }
    let mut prefix = [0u8; 10];
    let mut n = 0;
    let mut v = len as u64;
    while v >= 0x80 {
        prefix[n] = v as u8 | 0x80;
        v >>= 7;
        n += 1;
    }
    prefix[n] = v as u8;
    n += 1;
    out.resize(out.len() + n - 1, 0);
    out.copy_within(at + 1..at + 1 + len, at + n);
    out[at..at + n].copy_from_slice(&prefix[..n]);
}

/// A packed `repeated sint32` field (zigzag varints).
pub fn packed_sint32(out: &mut Vec<u8>, field: u32, vs: impl Iterator<Item = i32>) {
    message(out, field, |o| {
        for v in vs {
            varint(o, u64::from(((v << 1) ^ (v >> 31)) as u32));
        }
    });
}

/// A packed `repeated uint32` field.
pub fn packed_uint32(out: &mut Vec<u8>, field: u32, vs: impl Iterator<Item = u32>) {
    message(out, field, |o| {
        for v in vs {
            varint(o, u64::from(v));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_protobuf_spec_examples() {
        // From the encoding guide: field 1 = 150 is 08 96 01; field 2 = "testing".
        let mut out = Vec::new();
        uint(&mut out, 1, 150);
        assert_eq!(out, [0x08, 0x96, 0x01]);
        out.clear();
        bytes(&mut out, 2, b"testing");
        assert_eq!(out, [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']);
        out.clear();
        // Field 3 = message { field 1 = 150 }: 1a 03 08 96 01.
        message(&mut out, 3, |o| uint(o, 1, 150));
        assert_eq!(out, [0x1a, 0x03, 0x08, 0x96, 0x01]);
        out.clear();
        packed_sint32(&mut out, 7, [0, -1, 1, -2].into_iter());
        assert_eq!(out, [0x3a, 0x04, 0, 1, 2, 3]);
    }

    #[test]
    fn long_nested_message_gets_a_multibyte_length() {
        let mut out = Vec::new();
        message(&mut out, 1, |o| bytes(o, 1, &[7; 300]));
        // 300 + 3 bytes of inner key and length = 303 = ac 02.
        assert_eq!(&out[..3], [0x0a, 0xaf, 0x02]);
        assert_eq!(out.len(), 3 + 303);
        assert_eq!(
            &out[3..6],
            [0x0a, 0xac, 0x02],
            "the inner field moved intact"
        );
        assert!(out[6..].iter().all(|&b| b == 7));
        double(&mut out, 1, 0.0);
        int64(&mut out, 1, 0);
        assert_eq!(out.len(), 3 + 303, "defaults are not written");
    }
}
