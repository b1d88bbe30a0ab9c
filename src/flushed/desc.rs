//! A context's description: type, name, host, origin blob and sorted tags. Encoded, it is
//! length-prefixed in one byte arena, plain `Send` data that crosses threads (a new context's
//! news, self-metric points, `|T` points); the sink's context table keeps the same fields
//! interned. `Desc` reads either.

use super::intern::{Interner, NO_SYM, Sym};
use crate::protocol::origin::magic_tag;
use crate::protocol::{MetricType, TagIter};

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
    push_head(arena, metric_type, name, host, origin);
    arena.extend_from_slice(&(tags.len() as u32).to_le_bytes());
    for tag in tags {
        push_field(arena, tag);
    }
    offset
}

/// A new context's description as a shard sends it (`NewContexts`): its final name, host and
/// origin, and its tags as the lists they came from (the client's, the mapper's, the extra
/// ones), each still comma-separated, with magic tags and duplicates in. The sink's context table
/// takes them apart (`NewDesc::tags`) once, on its own thread; the shard copies each list whole
/// (the field-by-field encoding was 520 instructions per 10-tag context under callgrind).
pub fn encode_new(
    arena: &mut Vec<u8>,
    metric_type: MetricType,
    name: &[u8],
    host: Option<&[u8]>,
    origin: Option<&[u8]>,
    lists: [&[u8]; 3],
) -> u32 {
    let offset = arena.len() as u32;
    let len = |b: Option<&[u8]>| 4 + b.map_or(0, <[u8]>::len);
    let total = 1
        + len(Some(name))
        + len(host)
        + len(origin)
        + lists.iter().map(|l| 4 + l.len()).sum::<usize>();
    arena.reserve(total);
    push_head(arena, metric_type, name, host, origin);
    for list in lists {
        push_field(arena, list);
    }
    offset
}

/// What `encode_new` wrote.
#[derive(Debug, Clone, Copy)]
pub struct NewDesc<'a> {
    pub metric_type: MetricType,
    pub name: &'a [u8],
    pub host: Option<&'a [u8]>,
    pub origin: Option<&'a [u8]>,
    /// The client's tags, the mapper's, the extra ones.
    lists: [&'a [u8]; 3],
}

impl<'a> NewDesc<'a> {
    /// Reads the description at `offset` (written by `encode_new`; see `Desc::decode`).
    pub fn decode(arena: &'a [u8], offset: u32) -> NewDesc<'a> {
        let mut at = offset as usize;
        let (metric_type, name, host, origin) = read_head(arena, &mut at);
        let mut lists = [&[][..]; 3];
        for list in &mut lists {
            *list = read_field(arena, &mut at).unwrap_or_default();
        }
        NewDesc {
            metric_type,
            name,
            host,
            origin,
            lists,
        }
    }

    /// The context's tags: every list split, the magic tags (`host:`, the internal ones) of the
    /// client's and the mapper's taken out, as the shard did when it keyed the context. Neither
    /// sorted nor deduplicated.
    pub fn tags(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let [client, mapped, extra] = self.lists;
        TagIter::new(client)
            .chain(TagIter::new(mapped))
            .filter(|t| magic_tag(t).is_none())
            .chain(TagIter::new(extra))
    }
}

/// The fields `encode` and `encode_new` both open with: type, name, host, origin.
fn push_head(
    arena: &mut Vec<u8>,
    metric_type: MetricType,
    name: &[u8],
    host: Option<&[u8]>,
    origin: Option<&[u8]>,
) {
    arena.push(metric_type.index());
    push_field(arena, name);
    push_optional(arena, host);
    push_optional(arena, origin);
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

/// A view of one description, encoded or interned.
#[derive(Debug, Clone, Copy)]
pub struct Desc<'a> {
    pub metric_type: MetricType,
    pub name: &'a [u8],
    pub host: Option<&'a [u8]>,
    /// The canonical origin blob (`protocol::origin::Origin::decode` reads it).
    pub origin: Option<&'a [u8]>,
    tags: Tags<'a>,
}

/// Where a description's tags are.
#[derive(Debug, Clone, Copy)]
enum Tags<'a> {
    /// `count` length-prefixed fields.
    Encoded { count: u32, bytes: &'a [u8] },
    /// Sorted `syms`, with `own` (unless `NO_SYM`) at index `own_at` among them.
    Interned {
        syms: &'a [Sym],
        own: Sym,
        own_at: usize,
        interner: &'a Interner,
    },
}

impl<'a> Desc<'a> {
    /// Reads the description at `offset`. The arena was written by `encode`, so lengths are
    /// in bounds; a corrupt arena would be a bug, and slicing would panic loudly rather than lie.
    pub fn decode(arena: &'a [u8], offset: u32) -> Desc<'a> {
        let mut at = offset as usize;
        let (metric_type, name, host, origin) = read_head(arena, &mut at);
        let count = read_u32(arena, &mut at);
        Desc {
            metric_type,
            name,
            host,
            origin,
            tags: Tags::Encoded {
                count,
                bytes: &arena[at..],
            },
        }
    }

    /// A description whose strings live in `interner`: `tags` sorted, and `own` (a context's
    /// tag of its own, `NO_SYM` for none) sorted in among them, at `own_at` when the caller
    /// knows where, as they are read.
    pub(crate) fn interned(
        metric_type: MetricType,
        interner: &'a Interner,
        [name, host, origin]: [Sym; 3],
        tags: &'a [Sym],
        own: Sym,
        own_at: Option<usize>,
    ) -> Desc<'a> {
        let own_at = match (interner.get_optional(own), own_at) {
            (None, _) => tags.len(),
            (Some(_), Some(at)) => at.min(tags.len()),
            (Some(o), None) => tags.partition_point(|&t| interner.get(t) < o),
        };
        Desc {
            metric_type,
            name: interner.get(name),
            host: interner.get_optional(host),
            origin: interner.get_optional(origin),
            tags: Tags::Interned {
                syms: tags,
                own,
                own_at,
                interner,
            },
        }
    }

    pub fn tags(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let (count, mut encoded, interned) = match self.tags {
            Tags::Encoded { count, bytes } => (count as usize, Some((bytes, 0)), None),
            Tags::Interned {
                syms,
                own,
                own_at,
                interner,
            } => {
                let count = syms.len() + usize::from(own != NO_SYM);
                (count, None, Some((syms, own, own_at, interner)))
            }
        };
        (0..count).map(move |i| match (&mut encoded, interned) {
            (Some((bytes, at)), _) => read_field(bytes, at).unwrap_or_default(),
            (None, Some((syms, own, own_at, interner))) => {
                // Without `own`, `own_at` is past the last index.
                let sym = match i.cmp(&own_at) {
                    std::cmp::Ordering::Less => syms[i],
                    std::cmp::Ordering::Equal => own,
                    std::cmp::Ordering::Greater => syms[i - 1],
                };
                interner.get(sym)
            }
            (None, None) => &[][..],
        })
    }
}

/// Type, name, host and origin, as `push_head` writes them.
type Head<'a> = (MetricType, &'a [u8], Option<&'a [u8]>, Option<&'a [u8]>);

/// Reads what `push_head` wrote, leaving `at` past it.
fn read_head<'a>(arena: &'a [u8], at: &mut usize) -> Head<'a> {
    let metric_type = TYPES[arena[*at] as usize];
    *at += 1;
    let name = read_field(arena, at).unwrap_or_default();
    let host = read_field(arena, at);
    let origin = read_field(arena, at);
    (metric_type, name, host, origin)
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
