//! The self-contained description of a context that crosses cores: type, name, host, origin
//! blob and sorted tags, length-prefixed in one byte arena. Nothing in it refers to a per-core
//! interner, so a batch full of them is plain `Send` data.

use crate::protocol::MetricType;

const TYPES: [MetricType; 6] = [
    MetricType::Counter,
    MetricType::Gauge,
    MetricType::Histogram,
    MetricType::Timer,
    MetricType::Set,
    MetricType::Distribution,
];

/// Appends one description to `arena` and returns its offset.
pub fn encode<'t>(
    arena: &mut Vec<u8>,
    metric_type: MetricType,
    name: &[u8],
    host: Option<&[u8]>,
    origin: Option<&[u8]>,
    tags: impl ExactSizeIterator<Item = &'t [u8]>,
) -> u32 {
    let offset = arena.len() as u32;
    arena.push(metric_type.index());
    push_field(arena, name);
    push_optional(arena, host);
    push_optional(arena, origin);
    arena.extend_from_slice(&(tags.len() as u32).to_le_bytes());
    for tag in tags {
        push_field(arena, tag);
    }
    offset
}

fn push_field(arena: &mut Vec<u8>, bytes: &[u8]) {
    arena.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    arena.extend_from_slice(bytes);
}

/// `None` is written as length `u32::MAX` so an empty host stays distinct from no host.
fn push_optional(arena: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => push_field(arena, b),
        None => arena.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

/// A decoded view of one description.
#[derive(Debug, Clone, Copy)]
pub struct Desc<'a> {
    pub metric_type: MetricType,
    pub name: &'a [u8],
    pub host: Option<&'a [u8]>,
    /// The canonical origin blob (`protocol::origin::Origin::decode` reads it).
    pub origin: Option<&'a [u8]>,
    tag_count: u32,
    tags: &'a [u8],
}

impl<'a> Desc<'a> {
    /// Reads the description at `offset`. The arena was written by `encode`, so lengths are
    /// in bounds; a corrupt arena would be a bug, and slicing would panic loudly rather than lie.
    pub fn decode(arena: &'a [u8], offset: u32) -> Desc<'a> {
        let mut at = offset as usize;
        let metric_type = TYPES[arena[at] as usize];
        at += 1;
        let name = read_field(arena, &mut at).unwrap_or_default();
        let host = read_field(arena, &mut at);
        let origin = read_field(arena, &mut at);
        let tag_count = read_u32(arena, &mut at);
        Desc {
            metric_type,
            name,
            host,
            origin,
            tag_count,
            tags: &arena[at..],
        }
    }

    pub fn tags(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let mut at = 0;
        let tags = self.tags;
        (0..self.tag_count as usize).map(move |_| read_field(tags, &mut at).unwrap_or_default())
    }
}

fn read_u32(arena: &[u8], at: &mut usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&arena[*at..*at + 4]);
    *at += 4;
    u32::from_le_bytes(b)
}

fn read_field<'a>(arena: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let len = read_u32(arena, at);
    if len == u32::MAX {
        return None;
    }
    let bytes = &arena[*at..*at + len as usize];
    *at += len as usize;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        let mut arena = vec![7u8];
        let tags: [&[u8]; 2] = [b"a:1", b"b"];
        let off = encode(
            &mut arena,
            MetricType::Set,
            b"users",
            Some(b""),
            None,
            tags.into_iter(),
        );
        let second = encode(
            &mut arena,
            MetricType::Timer,
            b"t",
            None,
            Some(b"ci-1"),
            [].into_iter(),
        );
        let d = Desc::decode(&arena, off);
        assert_eq!(d.metric_type, MetricType::Set);
        assert_eq!(d.name, b"users");
        assert_eq!(d.host, Some(&b""[..]));
        assert_eq!(d.origin, None);
        assert_eq!(d.tags().collect::<Vec<_>>(), tags.to_vec());
        let d = Desc::decode(&arena, second);
        assert_eq!(
            (d.metric_type, d.name, d.host),
            (MetricType::Timer, &b"t"[..], None)
        );
        assert_eq!(d.origin, Some(&b"ci-1"[..]));
        assert_eq!(d.tags().count(), 0);
    }
}
