//! Evidence bundles: one tar file with everything needed to prove, on another machine, what
//! the audit log held for a time window (and one agent): `secops audit bundle` writes it,
//! `secops audit verify-bundle` checks it with no state directory and no daemon.
//!
//! Members (all listed in the manifest with their SHA-256 and size):
//!
//! | member | what |
//! |---|---|
//! | `manifest.json` | what the bundle claims: log, window, agent, seq range, members |
//! | `manifest.sig` | Ed25519 over [`MANIFEST_TAG`] + `manifest.json`, by the log's current key |
//! | `chain.bin` | the chain from `first_seq` to `last_seq`: segment headers, records, checkpoints |
//! | `public-key.hex` | the oldest key of the log the bundle knows |
//! | `keys.bin` | every signed key rotation of the log (old key hands over to new) |
//! | `records.jsonl` | the records carried in full, as `audit export --format jsonl` writes them |
//! | `ocsf.jsonl` | the same records as OCSF events |
//! | `policy/<sha256>.json` | each policy the records name as in force, file by file |
//!
//! A record the bundle may not show (another agent's, or one outside the window) is carried
//! as its head (seq, time, agent) and body digest only ([`chain::RedactedRecord`]): the chain
//! still links through it, and the verifier sees whose it was. The chain ends at a signed
//! checkpoint, so every record in it is proved by a signature; the signed manifest fixes where
//! it starts and ends, so nothing can be cut off either end.

pub mod build;
pub mod check;

use serde::{Deserialize, Serialize};

use super::chain::{self, RedactedRecord};
use super::frame::{Frame, FRAME_PREFIX};

pub use build::{build_bundle, BundleOptions, BundleSummary};
pub use check::{verify_bundle, BundleReport};

/// What `manifest.sig` signs, before the manifest's bytes.
pub const MANIFEST_TAG: &[u8] = b"secops-audit-bundle-manifest-v1";
/// The first bytes of `chain.bin` and `keys.bin`.
pub const CHAIN_MAGIC: &[u8; 8] = b"SCAUBDL1";
pub const FORMAT: &str = "secops-audit-bundle-v1";

/// Frame kind of a redacted record in `chain.bin` (never in a segment file).
const KIND_REDACTED: u8 = 0x80;

/// What the bundle claims; signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub log_id: String,
    /// The host that wrote the log (and the bundle).
    pub host: Option<String>,
    pub created_ns: i64,
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    pub agent: Option<String>,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The hash record `first_seq` links to.
    pub start_prev_hash: String,
    pub records_full: u64,
    pub records_redacted: u64,
    pub first_checkpoint: u64,
    pub last_checkpoint: u64,
    /// Hashes of the policies the records name as in force, oldest first.
    pub policies: Vec<String>,
    /// The key that signed this manifest (the newest of the log's key rotations).
    pub signing_key: String,
    pub notes: Vec<String>,
    pub members: Vec<Member>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

/// One entry of `chain.bin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainEntry {
    /// A segment header, record, checkpoint or rotation as the segment holds it.
    Frame(Frame),
    Redacted(RedactedRecord),
}

impl ChainEntry {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            ChainEntry::Frame(f) => f.encode_into(out),
            ChainEntry::Redacted(r) => {
                let start = super::frame::begin_frame(out, KIND_REDACTED);
                out.extend_from_slice(&r.body_digest);
                out.extend_from_slice(&r.head);
                super::frame::end_frame(out, start);
            }
        }
    }
}

/// Decodes `chain.bin` or `keys.bin`; an entry that does not decode is an error naming
/// its byte offset.
pub fn decode_entries(bytes: &[u8]) -> Result<Vec<ChainEntry>, String> {
    let rest = bytes
        .strip_prefix(CHAIN_MAGIC.as_slice())
        .ok_or("it does not start like a secops bundle chain")?;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < rest.len() {
        let offset = at + CHAIN_MAGIC.len();
        let prefix = rest
            .get(at..at + FRAME_PREFIX)
            .ok_or_else(|| format!("cut off at byte {offset}"))?;
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let kind = prefix[4];
        let payload = rest
            .get(at + FRAME_PREFIX..at + FRAME_PREFIX + len)
            .ok_or_else(|| format!("the entry at byte {offset} is cut off"))?;
        let entry = if kind == KIND_REDACTED {
            let (digest, head) = payload
                .split_at_checked(32)
                .ok_or_else(|| format!("the redacted record at byte {offset} is too short"))?;
            ChainEntry::Redacted(RedactedRecord {
                head: head.to_vec(),
                body_digest: digest.try_into().map_err(|_| "digest".to_owned())?,
            })
        } else {
            ChainEntry::Frame(
                Frame::decode(kind, payload)
                    .map_err(|e| format!("the entry at byte {offset}: {e}"))?,
            )
        };
        out.push(entry);
        at += FRAME_PREFIX + len;
    }
    Ok(out)
}

/// The bytes of `chain.bin` / `keys.bin` for these entries.
pub fn encode_entries<'a>(entries: impl Iterator<Item = &'a ChainEntry>) -> Vec<u8> {
    let mut out = CHAIN_MAGIC.to_vec();
    for e in entries {
        e.encode_into(&mut out);
    }
    out
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Whether a record of `agent` at `ts_ns` is one the bundle must show in full.
pub(crate) fn wanted(
    since: Option<i64>,
    until: Option<i64>,
    only: Option<&str>,
    ts_ns: i64,
    agent: Option<&str>,
) -> bool {
    in_window(since, until, ts_ns) && (only.is_none() || agent.is_none() || agent == only)
}

pub(crate) fn in_window(since: Option<i64>, until: Option<i64>, ts_ns: i64) -> bool {
    since.is_none_or(|s| ts_ns >= s) && until.is_none_or(|u| ts_ns <= u)
}

/// The record behind a full record frame, as the jsonl export shows it.
pub(crate) fn record_of(r: &super::frame::RecordFrame) -> Result<super::Record, String> {
    let (seq, body) = chain::decode_record(&r.encoding)?;
    Ok(super::Record {
        seq,
        body,
        prev_hash: r.prev,
        hash: r.hash,
    })
}

/// `records.jsonl` and `ocsf.jsonl` for the records carried in full.
pub(crate) fn render(
    records: &[super::Record],
    ctx: &super::ocsf::OcsfContext,
) -> Result<(Vec<u8>, Vec<u8>), std::io::Error> {
    let mut jsonl = Vec::new();
    let mut ocsf = Vec::new();
    for r in records {
        serde_json::to_writer(&mut jsonl, r)?;
        jsonl.push(b'\n');
        super::ocsf::write_ocsf_line(r, ctx, &mut ocsf)?;
    }
    Ok((jsonl, ocsf))
}
