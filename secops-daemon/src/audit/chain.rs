//! The hash chain: the canonical encoding of a record, the record hash, the genesis value and
//! the bytes a checkpoint signature covers.
//!
//! # Record hash (version 3)
//!
//! A record's hash is `SHA-256(RECORD_TAG || prev_hash || seq || content)`, with
//! `content = SHA-256(CONTENT_TAG || u32 len(head) || head || SHA-256(BODY_TAG || body))`,
//! where `head` is the start of the encoding (seq, ts_ns, agent) and `body` the rest. The
//! chain links *content hashes*, and a content hash opens to whose record it is and when
//! without the rest: an evidence bundle for one agent carries other agents' records as their
//! head and body digest only ([`RedactedRecord`]), and a verifier still checks the chain
//! through them and sees that they are not that agent's, while every record that is included
//! is checked down to its bytes.
//!
//! # Canonical encoding
//!
//! `encoding` is the fields below in this fixed order. Every field has a fixed type, so a
//! decoder never has to guess where one field ends and the next begins, and no two different
//! records can encode to the same bytes:
//!
//! | field      | type        |
//! |------------|-------------|
//! | seq        | u64         |
//! | ts_ns      | i64         |
//! | agent      | option str  |
//! | cgroup_id  | option u64  |
//! | pid        | option u32  |
//! | tgid       | option u32  |
//! | uid        | option u32  |
//! | comm       | option str  |
//! | exe        | option str  |
//! | action     | str         |
//! | object     | option (str kind, str value) |
//! | verdict    | str         |
//! | risk       | str         |
//! | rule_id    | option str  |
//! | reason     | str         |
//! | source     | str         |
//!
//! - integers (u64, i64, u32): 8 bytes big-endian (i64 as its two's-complement bit pattern,
//!   u32 widened), so an integer never changes width with its type;
//! - str: u32 big-endian byte length, then the UTF-8 bytes;
//! - option T: one byte `0` (absent) or `1` followed by T;
//! - enums (object kind, verdict, risk, source) are encoded as their stable lowercase names,
//!   so renumbering an enum cannot change old hashes.
//!
//! The encoding is also what a segment file stores ([`super::frame`]), so what is hashed is
//! byte for byte what is on disk. The domain tags differ and none is a prefix of another, so a
//! record hash, a content hash, the genesis value, a checkpoint message and a key rotation can
//! never be confused with each other.

use sha2::{Digest, Sha256};

use super::record::{AuditObject, NewRecord};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// Length of a log id: random, chosen when the log is created.
pub const LOG_ID_LEN: usize = 16;

pub const RECORD_TAG: &[u8] = b"secops-audit-record-v3";
pub const CONTENT_TAG: &[u8] = b"secops-audit-content-v3";
pub const BODY_TAG: &[u8] = b"secops-audit-body-v3";
pub const GENESIS_TAG: &[u8] = b"secops-audit-genesis-v1";
pub const CHECKPOINT_TAG: &[u8] = b"secops-audit-checkpoint-v2";
pub const ROTATION_TAG: &[u8] = b"secops-audit-key-rotation-v1";

/// Length of a key id: the first bytes of the SHA-256 of the Ed25519 public key.
pub const KEY_ID_LEN: usize = 8;

/// Longest string field accepted on append. SQLite's own limit is below `u32::MAX`, so every
/// stored string fits the u32 length prefix; this keeps producers well inside it.
pub const MAX_FIELD_BYTES: usize = 1 << 20;

/// The `prev_hash` of record 1. Binding it to the log id means records cannot be moved from
/// one log into another without breaking the chain.
pub fn genesis_hash(log_id: &[u8; LOG_ID_LEN]) -> Hash {
    let mut h = Sha256::new();
    h.update(GENESIS_TAG);
    h.update(log_id);
    h.finalize().into()
}

/// The hash of record `seq` whose predecessor's hash is `prev`.
pub fn record_hash(prev: &Hash, seq: u64, body: &NewRecord) -> Hash {
    link_hash(prev, seq, &content_hash(&encode_record(seq, body)))
}

/// The content hash of a record's canonical encoding (which starts with its seq).
pub fn content_hash(encoding: &[u8]) -> Hash {
    let (head, body) = encoding.split_at(head_len(encoding));
    content_hash_of_parts(head, &body_digest(body))
}

/// The content hash from a record's head and the digest of its body: all a bundle keeps of a
/// record it leaves out.
pub fn content_hash_of_parts(head: &[u8], body_digest: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(CONTENT_TAG);
    h.update((head.len() as u32).to_be_bytes());
    h.update(head);
    h.update(body_digest);
    h.finalize().into()
}

/// The digest of the part of an encoding after its head.
pub fn body_digest(body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(BODY_TAG);
    h.update(body);
    h.finalize().into()
}

/// Where the head (seq, ts_ns, agent) of an encoding ends. A malformed encoding still splits
/// somewhere definite (and fails to decode elsewhere), so hashing stays total.
pub fn head_len(encoding: &[u8]) -> usize {
    let fixed = 16;
    let len = match encoding.get(fixed) {
        Some(1) => encoding
            .get(fixed + 1..fixed + 5)
            .map(|b| fixed + 5 + u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .unwrap_or(encoding.len()),
        Some(_) => fixed + 1,
        None => encoding.len(),
    };
    len.min(encoding.len())
}

/// What a bundle keeps of a record it leaves out: enough to link the chain through it and to
/// see whose it was and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedactedRecord {
    /// The encoding's head: seq, ts_ns, agent.
    pub head: Vec<u8>,
    pub body_digest: Hash,
}

impl RedactedRecord {
    pub fn of(encoding: &[u8]) -> RedactedRecord {
        let (head, body) = encoding.split_at(head_len(encoding));
        RedactedRecord {
            head: head.to_vec(),
            body_digest: body_digest(body),
        }
    }

    pub fn content_hash(&self) -> Hash {
        content_hash_of_parts(&self.head, &self.body_digest)
    }

    /// seq, ts_ns and agent, if the head is well-formed (and nothing more).
    pub fn decode_head(&self) -> Result<(u64, i64, Option<String>), String> {
        let mut d = Decoder {
            bytes: &self.head,
            at: 0,
        };
        let seq = d.u64("seq")?;
        let ts = d.u64("ts_ns")? as i64;
        let agent = d.opt_str("agent")?;
        if d.at != self.head.len() {
            return Err("bytes after the agent".into());
        }
        Ok((seq, ts, agent))
    }
}

/// The chain step: the hash of record `seq` with content hash `content` after `prev`.
pub fn link_hash(prev: &Hash, seq: u64, content: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(RECORD_TAG);
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(content);
    h.finalize().into()
}

/// The canonical encoding of a record (without tag and `prev_hash`), for tests and tooling
/// that want to see the exact bytes that are hashed.
pub fn encode_record(seq: u64, body: &NewRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode(seq, body, &mut out);
    out
}

/// Appends the canonical encoding of a record to `out` (the segment writer's hot path).
pub fn encode_record_into(seq: u64, body: &NewRecord, out: &mut Vec<u8>) {
    encode(seq, body, out);
}

/// The first 8 bytes of SHA-256 over the public key: how witnesses, checkpoints and the
/// operator name a key.
pub fn key_id(public_key: &[u8; 32]) -> [u8; KEY_ID_LEN] {
    let digest: Hash = Sha256::digest(public_key).into();
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    id
}

/// The bytes a checkpoint signature covers. `number` counts the log's checkpoints from 1,
/// so a checkpoint removed from between two others is a gap nobody can renumber away.
pub fn checkpoint_message(
    log_id: &[u8; LOG_ID_LEN],
    number: u64,
    seq: u64,
    hash: &Hash,
    ts_ns: i64,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_TAG.len() + LOG_ID_LEN + 8 + 8 + 32 + 8);
    m.extend_from_slice(CHECKPOINT_TAG);
    m.extend_from_slice(log_id);
    m.extend_from_slice(&number.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m.extend_from_slice(&ts_ns.to_be_bytes());
    m
}

/// The bytes the old key signs when it hands the log over to a new one after record
/// `at_seq`.
pub fn rotation_message(
    log_id: &[u8; LOG_ID_LEN],
    at_seq: u64,
    ts_ns: i64,
    old_key: &[u8; 32],
    new_key: &[u8; 32],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(ROTATION_TAG.len() + LOG_ID_LEN + 16 + 64);
    m.extend_from_slice(ROTATION_TAG);
    m.extend_from_slice(log_id);
    m.extend_from_slice(&at_seq.to_be_bytes());
    m.extend_from_slice(&ts_ns.to_be_bytes());
    m.extend_from_slice(old_key);
    m.extend_from_slice(new_key);
    m
}

/// Decodes a canonical encoding back into its seq and record. Every byte must be used.
pub fn decode_record(bytes: &[u8]) -> Result<(u64, NewRecord), String> {
    let mut d = Decoder { bytes, at: 0 };
    let seq = d.u64("seq")?;
    let ts_ns = d.u64("ts_ns")? as i64;
    let agent = d.opt_str("agent")?;
    let cgroup_id = d.opt_u64("cgroup_id")?;
    let pid = d.opt_u32("pid")?;
    let tgid = d.opt_u32("tgid")?;
    let uid = d.opt_u32("uid")?;
    let comm = d.opt_str("comm")?;
    let exe = d.opt_str("exe")?;
    let action = d.str("action")?;
    let object = match d.byte("object")? {
        0 => None,
        1 => {
            let kind = d.str("object kind")?;
            let value = d.str("object")?;
            Some(AuditObject {
                kind: kind.parse().map_err(|e| format!("object kind: {e}"))?,
                value,
            })
        }
        b => return Err(format!("object: option tag {b} is neither 0 nor 1")),
    };
    let verdict = d.str("verdict")?;
    let risk = d.str("risk")?;
    let rule_id = d.opt_str("rule_id")?;
    let reason = d.str("reason")?;
    let source = d.str("source")?;
    if d.at != bytes.len() {
        return Err(format!(
            "{} byte(s) after the last field",
            bytes.len() - d.at
        ));
    }
    Ok((
        seq,
        NewRecord {
            ts_ns,
            agent,
            cgroup_id,
            pid,
            tgid,
            uid,
            comm,
            exe,
            action,
            object,
            verdict: verdict.parse().map_err(|e| format!("verdict: {e}"))?,
            risk: risk.parse().map_err(|e| format!("risk: {e}"))?,
            rule_id,
            reason,
            source: source.parse().map_err(|e| format!("source: {e}"))?,
        },
    ))
}

/// The seq an encoding claims, without decoding the rest.
pub fn encoded_seq(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

struct Decoder<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Decoder<'_> {
    fn take(&mut self, n: usize, field: &str) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("{field}: the encoding ends early"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn byte(&mut self, field: &str) -> Result<u8, String> {
        Ok(self.take(1, field)?[0])
    }

    fn u64(&mut self, field: &str) -> Result<u64, String> {
        let b = self.take(8, field)?;
        Ok(u64::from_be_bytes(
            b.try_into().map_err(|_| field.to_owned())?,
        ))
    }

    fn str(&mut self, field: &str) -> Result<String, String> {
        let len = self.take(4, field)?;
        let len = u32::from_be_bytes(len.try_into().map_err(|_| field.to_owned())?) as usize;
        if len > MAX_FIELD_BYTES {
            return Err(format!("{field}: {len} bytes is over the limit"));
        }
        let b = self.take(len, field)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("{field} is not UTF-8"))
    }

    fn opt<T>(
        &mut self,
        field: &str,
        f: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.byte(field)? {
            0 => Ok(None),
            1 => f(self).map(Some),
            b => Err(format!("{field}: option tag {b} is neither 0 nor 1")),
        }
    }

    fn opt_str(&mut self, field: &str) -> Result<Option<String>, String> {
        self.opt(field, |d| d.str(field))
    }

    fn opt_u64(&mut self, field: &str) -> Result<Option<u64>, String> {
        self.opt(field, |d| d.u64(field))
    }

    fn opt_u32(&mut self, field: &str) -> Result<Option<u32>, String> {
        self.opt(field, |d| d.u64(field))?
            .map(|v| u32::try_from(v).map_err(|_| format!("{field} {v} is out of range")))
            .transpose()
    }
}

/// Checks that a record can be encoded unambiguously; called before anything is written.
pub fn validate(body: &NewRecord) -> Result<(), String> {
    let strings = [
        ("agent", body.agent.as_deref()),
        ("comm", body.comm.as_deref()),
        ("exe", body.exe.as_deref()),
        ("action", Some(body.action.as_str())),
        ("object", body.object.as_ref().map(|o| o.value.as_str())),
        ("rule_id", body.rule_id.as_deref()),
        ("reason", Some(body.reason.as_str())),
    ];
    for (name, value) in strings {
        if let Some(v) = value {
            if v.len() > MAX_FIELD_BYTES {
                return Err(format!(
                    "field {name} is {} bytes, the limit is {MAX_FIELD_BYTES}",
                    v.len()
                ));
            }
        }
    }
    if body.action.is_empty() {
        return Err("action type is empty".into());
    }
    Ok(())
}

/// Where encoded bytes go: straight into the hasher on the hot path (no allocation), or into
/// a buffer for inspection.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

fn put_u64(s: &mut impl Sink, v: u64) {
    s.put(&v.to_be_bytes());
}

fn put_str(s: &mut impl Sink, v: &str) {
    // Lengths above u32::MAX cannot occur: appends are capped by `validate` and SQLite cannot
    // hold such a string. Saturating keeps this total without a panic path.
    let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
    s.put(&len.to_be_bytes());
    s.put(v.as_bytes());
}

fn encode(seq: u64, r: &NewRecord, s: &mut impl Sink) {
    put_u64(s, seq);
    put_u64(s, r.ts_ns as u64);
    opt_str(s, r.agent.as_deref());
    opt_u64(s, r.cgroup_id);
    opt_u64(s, r.pid.map(u64::from));
    opt_u64(s, r.tgid.map(u64::from));
    opt_u64(s, r.uid.map(u64::from));
    opt_str(s, r.comm.as_deref());
    opt_str(s, r.exe.as_deref());
    put_str(s, &r.action);
    match &r.object {
        None => s.put(&[0]),
        Some(o) => {
            s.put(&[1]);
            put_str(s, o.kind.as_str());
            put_str(s, &o.value);
        }
    }
    put_str(s, r.verdict.as_str());
    put_str(s, r.risk.as_str());
    opt_str(s, r.rule_id.as_deref());
    put_str(s, &r.reason);
    put_str(s, r.source.as_str());
}

fn opt_str(s: &mut impl Sink, v: Option<&str>) {
    match v {
        None => s.put(&[0]),
        Some(v) => {
            s.put(&[1]);
            put_str(s, v);
        }
    }
}

fn opt_u64(s: &mut impl Sink, v: Option<u64>) {
    match v {
        None => s.put(&[0]),
        Some(v) => {
            s.put(&[1]);
            put_u64(s, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{ObjectKind, Source};
    use secops_common::{RiskLevel, Verdict};

    fn sample() -> NewRecord {
        NewRecord {
            ts_ns: 1_700_000_000_123_456_789,
            agent: Some("builder".into()),
            cgroup_id: Some(u64::MAX),
            pid: Some(4242),
            tgid: Some(4240),
            uid: Some(1000),
            comm: Some("rm".into()),
            exe: Some("/usr/bin/rm".into()),
            action: "fs:delete".into(),
            object: Some(AuditObject {
                kind: ObjectKind::Path,
                value: "/home/u/project/notes.txt".into(),
            }),
            verdict: Verdict::Deny,
            risk: RiskLevel::High,
            rule_id: Some("no-delete-outside-workspace".into()),
            reason: "outside workspace".into(),
            source: Source::Kernel,
        }
    }

    #[test]
    fn moving_a_byte_between_adjacent_fields_changes_the_hash() {
        let prev = [7u8; 32];
        let a = sample();
        // "rm" + "/usr/bin/rm"  vs  "rm/" + "usr/bin/rm": the concatenation is identical, only
        // the boundary moved. A naive concatenation would hash both the same.
        let mut b = a.clone();
        b.comm = Some("rm/".into());
        b.exe = Some("usr/bin/rm".into());
        assert_eq!(
            format!(
                "{}{}",
                a.comm.as_deref().unwrap(),
                a.exe.as_deref().unwrap()
            ),
            format!(
                "{}{}",
                b.comm.as_deref().unwrap(),
                b.exe.as_deref().unwrap()
            )
        );
        assert_ne!(encode_record(1, &a), encode_record(1, &b));
        assert_ne!(record_hash(&prev, 1, &a), record_hash(&prev, 1, &b));

        // The same across an option/string boundary: the first byte of the reason moves to
        // the end of the rule id.
        let mut c = a.clone();
        c.rule_id = Some("no-delete-outside-workspaceo".into());
        c.reason = "utside workspace".into();
        assert_ne!(record_hash(&prev, 1, &a), record_hash(&prev, 1, &c));
    }

    #[test]
    fn absent_and_empty_differ() {
        let prev = [0u8; 32];
        let mut a = sample();
        a.agent = None;
        let mut b = sample();
        b.agent = Some(String::new());
        assert_ne!(record_hash(&prev, 1, &a), record_hash(&prev, 1, &b));
    }

    #[test]
    fn every_field_is_covered() {
        let prev = [1u8; 32];
        let base = record_hash(&prev, 5, &sample());
        assert_ne!(base, record_hash(&prev, 6, &sample()), "seq");
        assert_ne!(base, record_hash(&[2u8; 32], 5, &sample()), "prev");
        let mutations: Vec<fn(&mut NewRecord)> = vec![
            |r| r.ts_ns += 1,
            |r| r.agent = Some("other".into()),
            |r| r.cgroup_id = Some(1),
            |r| r.pid = None,
            |r| r.tgid = Some(1),
            |r| r.uid = Some(0),
            |r| r.comm = None,
            |r| r.exe = None,
            |r| r.action = "fs:rename".into(),
            |r| r.object.as_mut().unwrap().kind = ObjectKind::Target,
            |r| r.object.as_mut().unwrap().value.push('x'),
            |r| r.object = None,
            |r| r.verdict = Verdict::Allow,
            |r| r.risk = RiskLevel::Low,
            |r| r.rule_id = None,
            |r| r.reason.clear(),
            |r| r.source = Source::Api,
        ];
        for (i, m) in mutations.iter().enumerate() {
            let mut r = sample();
            m(&mut r);
            assert_ne!(base, record_hash(&prev, 5, &r), "mutation {i} not covered");
        }
    }

    #[test]
    fn encoding_layout_is_stable() {
        let r = NewRecord {
            ts_ns: -1,
            agent: None,
            cgroup_id: Some(2),
            pid: None,
            tgid: None,
            uid: None,
            comm: None,
            exe: None,
            action: "a:b".into(),
            object: None,
            verdict: Verdict::Allow,
            risk: RiskLevel::Low,
            rule_id: None,
            reason: String::new(),
            source: Source::Api,
        };
        let mut want = Vec::new();
        want.extend_from_slice(&3u64.to_be_bytes());
        want.extend_from_slice(&[0xff; 8]);
        want.push(0);
        want.push(1);
        want.extend_from_slice(&2u64.to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 0, 0]);
        want.extend_from_slice(&3u32.to_be_bytes());
        want.extend_from_slice(b"a:b");
        want.push(0);
        want.extend_from_slice(&5u32.to_be_bytes());
        want.extend_from_slice(b"allow");
        want.extend_from_slice(&3u32.to_be_bytes());
        want.extend_from_slice(b"low");
        want.push(0);
        want.extend_from_slice(&0u32.to_be_bytes());
        want.extend_from_slice(&3u32.to_be_bytes());
        want.extend_from_slice(b"api");
        assert_eq!(encode_record(3, &r), want);
    }

    #[test]
    fn genesis_depends_on_log_id() {
        assert_ne!(genesis_hash(&[0; 16]), genesis_hash(&[1; 16]));
    }

    #[test]
    fn decode_inverts_encode() {
        let r = sample();
        let bytes = encode_record(42, &r);
        assert_eq!(decode_record(&bytes).unwrap(), (42, r.clone()));
        assert_eq!(encoded_seq(&bytes), Some(42));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_record(&longer)
            .unwrap_err()
            .contains("after the last field"));
        for cut in [0, 7, 20, bytes.len() - 1] {
            assert!(decode_record(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn record_hash_is_the_link_of_the_content_hash() {
        let r = sample();
        let prev = [3u8; 32];
        let content = content_hash(&encode_record(9, &r));
        assert_eq!(record_hash(&prev, 9, &r), link_hash(&prev, 9, &content));
        assert_ne!(
            link_hash(&prev, 9, &content),
            link_hash(&prev, 10, &content)
        );
    }

    #[test]
    fn a_redacted_record_has_the_same_content_hash_and_shows_only_its_head() {
        let r = sample();
        let encoding = encode_record(9, &r);
        let redacted = RedactedRecord::of(&encoding);
        assert_eq!(redacted.content_hash(), content_hash(&encoding));
        assert_eq!(
            redacted.decode_head().unwrap(),
            (9, r.ts_ns, Some("builder".into()))
        );
        assert!(!redacted.head.windows(2).any(|w| w == b"rm"));
        let mut none = r.clone();
        none.agent = None;
        let e = encode_record(9, &none);
        assert_eq!(head_len(&e), 17);
        assert_eq!(RedactedRecord::of(&e).decode_head().unwrap().2, None);
        // Moving bytes between head and body changes the hash.
        let mut other = r.clone();
        other.agent = Some("builde".into());
        other.cgroup_id = None;
        assert_ne!(
            content_hash(&encode_record(9, &other)),
            content_hash(&encoding)
        );
        for cut in [0, 3, 16, 18, 25] {
            let _ = content_hash(&encoding[..cut]);
        }
    }
}
