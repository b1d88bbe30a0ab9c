//! Where a message came from: the `|c:` local data, `|e:` external data and `|card:` cardinality
//! fields, the Agent's internal tags `dd.internal.entity_id:` and `dd.internal.card:`, and the
//! container the socket's credentials named (origin detection). Validated here and folded into
//! one canonical `Origin` blob: plain bytes that a context, event or service check carries and a
//! sink decodes. No I/O here; resolving a pid to a container belongs to `listen`.
//!
//! Malformed fields are reported (`Malformed`) and left out; the message is kept with whatever
//! did parse, as the Agent does.

/// The origin inputs of one message, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OriginFields<'a> {
    /// `|c:` local data: `ci-<id>`, `in-<inode>`, both comma separated, `cid-<id>` or a bare id.
    pub local: Option<&'a [u8]>,
    /// `|e:` external data: comma separated `it-<bool>`, `cn-<name>`, `pu-<pod uid>`.
    pub external: Option<&'a [u8]>,
    /// `|card:` none, low, orchestrator or high.
    pub cardinality: Option<&'a [u8]>,
    /// The container the sending process runs in, from the socket's credentials.
    pub socket_container: Option<&'a [u8]>,
}

impl OriginFields<'_> {
    /// True when the message carries no origin field at all (the common case).
    pub fn is_empty(&self) -> bool {
        self.local.is_none()
            && self.external.is_none()
            && self.cardinality.is_none()
            && self.socket_container.is_none()
    }

    /// Which in-band fields are malformed.
    pub fn check(&self) -> Malformed {
        let mut bad = Malformed::default();
        if let Some(raw) = self.local {
            bad.local = parse_local_data(raw).1;
        }
        if let Some(raw) = self.external {
            bad.external = parse_external_data(raw).1;
        }
        if let Some(raw) = self.cardinality {
            bad.cardinality = Cardinality::parse(raw).is_none();
        }
        bad
    }
}

/// Malformed origin fields of one message (each is left out; the message is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Malformed {
    pub local: bool,
    pub external: bool,
    pub cardinality: bool,
}

crate::label::labels! {
    /// An origin field as the wire names it.
    pub enum OriginField: "field" {
        /// `|c:`, local data.
        Local => "c",
        /// `|e:`, external data.
        External => "e",
        /// `|card:`.
        Cardinality => "card",
    }
}

impl Malformed {
    /// The fields that were malformed.
    pub fn fields(self) -> impl Iterator<Item = OriginField> {
        [
            (OriginField::Local, self.local),
            (OriginField::External, self.external),
            (OriginField::Cardinality, self.cardinality),
        ]
        .into_iter()
        .filter_map(|(f, bad)| bad.then_some(f))
    }
}

/// Which container id wins when a message has both `|c:` and socket credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precedence {
    /// The client's `|c:` (the default).
    #[default]
    Client,
    /// The socket's credentials.
    Socket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    None,
    Low,
    Orchestrator,
    High,
}

impl Cardinality {
    pub fn parse(raw: &[u8]) -> Option<Cardinality> {
        Some(match raw {
            b"none" => Cardinality::None,
            b"low" => Cardinality::Low,
            b"orchestrator" => Cardinality::Orchestrator,
            b"high" => Cardinality::High,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cardinality::None => "none",
            Cardinality::Low => "low",
            Cardinality::Orchestrator => "orchestrator",
            Cardinality::High => "high",
        }
    }

    fn from_code(b: u8) -> Option<Cardinality> {
        [
            Cardinality::None,
            Cardinality::Low,
            Cardinality::Orchestrator,
            Cardinality::High,
        ]
        .get(usize::from(b))
        .copied()
    }
}

/// The `|c:` field, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalData<'a> {
    pub container_id: Option<&'a [u8]>,
    pub cgroup_inode: Option<u64>,
}

/// Decodes `|c:` as the Agent's `ParseLocalData` does: `cid-<id>` (legacy), a comma-separated
/// list of `ci-<id>` / `in-<inode>` items, or a bare container id. Returns what parsed and
/// whether anything was malformed (an empty id, an inode that is not a number, an unknown item).
pub fn parse_local_data(raw: &[u8]) -> (LocalData<'_>, bool) {
    let mut out = LocalData::default();
    if raw.is_empty() {
        return (out, true);
    }
    if let Some(id) = raw.strip_prefix(b"cid-") {
        out.container_id = (!id.is_empty()).then_some(id);
        return (out, id.is_empty());
    }
    let is_list = raw.contains(&b',') || raw.starts_with(b"ci-") || raw.starts_with(b"in-");
    if !is_list {
        out.container_id = Some(raw);
        return (out, false);
    }
    let mut bad = false;
    for item in raw.split(|&b| b == b',') {
        if let Some(id) = item.strip_prefix(b"ci-") {
            match id {
                [] => bad = true,
                id => out.container_id = Some(id),
            }
        } else if let Some(inode) = item.strip_prefix(b"in-") {
            match std::str::from_utf8(inode).ok().and_then(|s| s.parse().ok()) {
                Some(n) => out.cgroup_inode = Some(n),
                None => bad = true,
            }
        } else {
            bad = true;
        }
    }
    (out, bad)
}

/// The `|e:` field, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExternalData<'a> {
    /// `it-`: the sender is an init container.
    pub init: Option<bool>,
    /// `cn-`: the container's name.
    pub container_name: Option<&'a [u8]>,
    /// `pu-`: the pod's uid.
    pub pod_uid: Option<&'a [u8]>,
}

impl ExternalData<'_> {
    pub fn is_empty(&self) -> bool {
        self.init.is_none() && self.container_name.is_none() && self.pod_uid.is_none()
    }
}

/// Decodes `|e:`: unknown items are ignored (newer admission controllers may add some); a bad
/// `it-` boolean or an empty `cn-`/`pu-` value is malformed and left out.
pub fn parse_external_data(raw: &[u8]) -> (ExternalData<'_>, bool) {
    let mut out = ExternalData::default();
    let mut bad = raw.is_empty();
    for item in raw.split(|&b| b == b',').filter(|i| !i.is_empty()) {
        if let Some(v) = item.strip_prefix(b"it-") {
            // Go's strconv.ParseBool, which the Agent uses.
            match v {
                b"1" | b"t" | b"T" | b"true" | b"TRUE" | b"True" => out.init = Some(true),
                b"0" | b"f" | b"F" | b"false" | b"FALSE" | b"False" => out.init = Some(false),
                _ => bad = true,
            }
        } else if let Some(v) = item.strip_prefix(b"cn-") {
            match v {
                [] => bad = true,
                v => out.container_name = Some(v),
            }
        } else if let Some(v) = item.strip_prefix(b"pu-") {
            match v {
                [] => bad = true,
                v => out.pod_uid = Some(v),
            }
        }
    }
    (out, bad)
}

/// A tag with a meaning of its own, taken out of the tag list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MagicTag<'a> {
    /// `host:<h>`: the message's host (empty means none).
    Host(&'a [u8]),
    /// `dd.internal.entity_id:<id>`: the sender's pod uid.
    EntityId(&'a [u8]),
    /// `dd.internal.card:<c>`: the cardinality, unless `|card:` set one.
    Card(&'a [u8]),
}

/// Classifies one tag; `None` for an ordinary tag: one byte compare for most tags.
#[inline]
pub fn magic_tag(tag: &[u8]) -> Option<MagicTag<'_>> {
    if !matches!(tag.first(), Some(b'h' | b'd')) {
        return None;
    }
    if let Some(h) = tag.strip_prefix(b"host:") {
        return Some(MagicTag::Host(h));
    }
    let rest = tag.strip_prefix(b"dd.internal.")?;
    if let Some(id) = rest.strip_prefix(b"entity_id:") {
        Some(MagicTag::EntityId(id))
    } else {
        rest.strip_prefix(b"card:").map(MagicTag::Card)
    }
}

/// The internal tags of one message, as found in its tag list (last copy wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InternalTags<'a> {
    pub entity_id: Option<&'a [u8]>,
    pub card: Option<&'a [u8]>,
}

/// Record codes of the canonical blob, in the order they are written.
const CONTAINER_ID: u8 = 1;
const CGROUP_INODE: u8 = 2;
const EXT_INIT: u8 = 3;
const EXT_CONTAINER_NAME: u8 = 4;
const EXT_POD_UID: u8 = 5;
const CARDINALITY: u8 = 6;
const POD_UID: u8 = 7;

/// Writes the canonical origin of a message into `out` (cleared first): the valid parts of its
/// fields, the socket's container by `precedence`, and its internal tags. Leaves `out` empty
/// when there is no origin. Equal origins give equal bytes, so the blob can be hashed and
/// compared as part of a context.
pub fn encode(
    out: &mut Vec<u8>,
    fields: &OriginFields<'_>,
    internal: InternalTags<'_>,
    precedence: Precedence,
) {
    out.clear();
    let local = fields
        .local
        .map(|raw| parse_local_data(raw).0)
        .unwrap_or_default();
    let container = match precedence {
        Precedence::Client => local.container_id.or(fields.socket_container),
        Precedence::Socket => fields.socket_container.or(local.container_id),
    };
    if let Some(id) = container {
        record(out, CONTAINER_ID, id);
    }
    if let Some(inode) = local.cgroup_inode {
        record(out, CGROUP_INODE, &inode.to_le_bytes());
    }
    if let Some(raw) = fields.external {
        let ext = parse_external_data(raw).0;
        if let Some(init) = ext.init {
            record(out, EXT_INIT, &[u8::from(init)]);
        }
        if let Some(name) = ext.container_name {
            record(out, EXT_CONTAINER_NAME, name);
        }
        if let Some(uid) = ext.pod_uid {
            record(out, EXT_POD_UID, uid);
        }
    }
    let card = fields
        .cardinality
        .and_then(Cardinality::parse)
        .or_else(|| internal.card.and_then(Cardinality::parse));
    if let Some(c) = card {
        record(out, CARDINALITY, &[c as u8]);
    }
    if let Some(uid) = internal.entity_id {
        record(out, POD_UID, uid);
    }
}

fn record(out: &mut Vec<u8>, code: u8, bytes: &[u8]) {
    out.push(code);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A decoded canonical origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Origin<'a> {
    pub container_id: Option<&'a [u8]>,
    pub cgroup_inode: Option<u64>,
    pub external: ExternalData<'a>,
    pub cardinality: Option<Cardinality>,
    pub pod_uid: Option<&'a [u8]>,
}

impl<'a> Origin<'a> {
    /// Reads a blob written by `encode`. A record it does not know (none exist) is skipped.
    pub fn decode(mut blob: &'a [u8]) -> Origin<'a> {
        let mut o = Origin::default();
        while blob.len() >= 5 {
            let code = blob[0];
            let len = u32::from_le_bytes([blob[1], blob[2], blob[3], blob[4]]) as usize;
            let Some(bytes) = blob.get(5..5 + len) else {
                break;
            };
            blob = &blob[5 + len..];
            match code {
                CONTAINER_ID => o.container_id = Some(bytes),
                CGROUP_INODE => {
                    o.cgroup_inode = bytes.try_into().ok().map(u64::from_le_bytes);
                }
                EXT_INIT => o.external.init = bytes.first().map(|&b| b != 0),
                EXT_CONTAINER_NAME => o.external.container_name = Some(bytes),
                EXT_POD_UID => o.external.pod_uid = Some(bytes),
                CARDINALITY => {
                    o.cardinality = bytes.first().and_then(|&b| Cardinality::from_code(b))
                }
                POD_UID => o.pod_uid = Some(bytes),
                _ => {}
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(fields: OriginFields<'_>, internal: InternalTags<'_>, p: Precedence) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, &fields, internal, p);
        out
    }

    #[test]
    fn local_data_forms() {
        let ok = |raw: &[u8], cid: Option<&[u8]>, inode: Option<u64>| {
            let (l, bad) = parse_local_data(raw);
            assert!(!bad, "{}", String::from_utf8_lossy(raw));
            assert_eq!((l.container_id, l.cgroup_inode), (cid, inode));
        };
        ok(b"ci-abc123", Some(b"abc123"), None);
        ok(b"in-4242", None, Some(4242));
        ok(b"ci-abc,in-7", Some(b"abc"), Some(7));
        ok(b"in-7,ci-abc", Some(b"abc"), Some(7));
        ok(b"cid-legacy", Some(b"legacy"), None);
        ok(b"0123456789abcdef", Some(b"0123456789abcdef"), None);
        for bad in [
            &b""[..],
            b"ci-",
            b"in-x",
            b"in-",
            b"cid-",
            b"ci-a,zz-1",
            b"in--1",
        ] {
            assert!(parse_local_data(bad).1, "{}", String::from_utf8_lossy(bad));
        }
        // What parsed is kept.
        let (l, bad) = parse_local_data(b"ci-abc,in-nope");
        assert!(bad);
        assert_eq!(l.container_id, Some(&b"abc"[..]));
    }

    #[test]
    fn external_data_items() {
        let (e, bad) = parse_external_data(b"it-false,cn-web,pu-1234-5678,xx-future");
        assert!(!bad, "unknown items are ignored");
        assert_eq!(e.init, Some(false));
        assert_eq!(e.container_name, Some(&b"web"[..]));
        assert_eq!(e.pod_uid, Some(&b"1234-5678"[..]));
        assert_eq!(parse_external_data(b"it-T").0.init, Some(true));
        for bad in [&b"it-maybe"[..], b"cn-", b"pu-,cn-x", b""] {
            assert!(
                parse_external_data(bad).1,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let (e, _) = parse_external_data(b"it-maybe,cn-x");
        assert_eq!((e.init, e.container_name), (None, Some(&b"x"[..])));
    }

    #[test]
    fn cardinality_values() {
        for c in ["none", "low", "orchestrator", "high"] {
            assert_eq!(Cardinality::parse(c.as_bytes()).unwrap().as_str(), c);
        }
        assert_eq!(Cardinality::parse(b"HIGH"), None);
        assert_eq!(Cardinality::parse(b""), None);
    }

    #[test]
    fn check_reports_each_malformed_field() {
        let f = OriginFields {
            local: Some(b"in-x"),
            external: Some(b"it-false"),
            cardinality: Some(b"extreme"),
            socket_container: None,
        };
        assert_eq!(
            f.check(),
            Malformed {
                local: true,
                external: false,
                cardinality: true
            }
        );
        assert_eq!(OriginFields::default().check(), Malformed::default());
    }

    #[test]
    fn magic_tags() {
        assert_eq!(magic_tag(b"host:a"), Some(MagicTag::Host(b"a")));
        assert_eq!(
            magic_tag(b"dd.internal.entity_id:pod-1"),
            Some(MagicTag::EntityId(b"pod-1"))
        );
        assert_eq!(
            magic_tag(b"dd.internal.card:high"),
            Some(MagicTag::Card(b"high"))
        );
        assert_eq!(magic_tag(b"dd.internal.jmx_check_name:x"), None);
        assert_eq!(magic_tag(b"env:prod"), None);
    }

    #[test]
    fn encode_round_trips_and_leaves_out_what_is_malformed() {
        let fields = OriginFields {
            local: Some(b"ci-abc,in-9"),
            external: Some(b"it-true,cn-web,pu-p1"),
            cardinality: Some(b"orchestrator"),
            socket_container: None,
        };
        let internal = InternalTags {
            entity_id: Some(b"pod-uid"),
            card: Some(b"low"),
        };
        let blob = encoded(fields, internal, Precedence::Client);
        let o = Origin::decode(&blob);
        assert_eq!(o.container_id, Some(&b"abc"[..]));
        assert_eq!(o.cgroup_inode, Some(9));
        assert_eq!(o.external.init, Some(true));
        assert_eq!(o.external.container_name, Some(&b"web"[..]));
        assert_eq!(o.external.pod_uid, Some(&b"p1"[..]));
        assert_eq!(
            o.cardinality,
            Some(Cardinality::Orchestrator),
            "|card: wins"
        );
        assert_eq!(o.pod_uid, Some(&b"pod-uid"[..]));

        let only_tag = encoded(
            OriginFields {
                cardinality: Some(b"bogus"),
                ..OriginFields::default()
            },
            internal,
            Precedence::Client,
        );
        assert_eq!(
            Origin::decode(&only_tag).cardinality,
            Some(Cardinality::Low),
            "a malformed |card: leaves the internal tag's"
        );
        assert!(
            encoded(
                OriginFields::default(),
                InternalTags::default(),
                Precedence::Client
            )
            .is_empty()
        );
        assert!(
            encoded(
                OriginFields {
                    local: Some(b"ci-"),
                    ..OriginFields::default()
                },
                InternalTags::default(),
                Precedence::Client
            )
            .is_empty()
        );
    }

    #[test]
    fn precedence_picks_client_or_socket_container() {
        let fields = OriginFields {
            local: Some(b"ci-client"),
            socket_container: Some(b"socket"),
            ..OriginFields::default()
        };
        let cid = |p| {
            Origin::decode(&encoded(fields, InternalTags::default(), p))
                .container_id
                .map(<[u8]>::to_vec)
        };
        assert_eq!(cid(Precedence::Client), Some(b"client".to_vec()));
        assert_eq!(cid(Precedence::Socket), Some(b"socket".to_vec()));
        let socket_only = OriginFields {
            socket_container: Some(b"socket"),
            ..OriginFields::default()
        };
        let o = encoded(socket_only, InternalTags::default(), Precedence::Client);
        assert_eq!(Origin::decode(&o).container_id, Some(&b"socket"[..]));
    }
}
