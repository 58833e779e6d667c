//! `secops audit verify-bundle`: checks a bundle with nothing but the bundle (and, best, a
//! pinned public key). Every problem found is reported, each naming what is wrong.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

use ed25519_dalek::{Signature, VerifyingKey};

use super::{decode_entries, in_window, record_of, render, sha256_hex, ChainEntry, Manifest};
use crate::audit::chain;
use crate::audit::frame::Frame;
use crate::audit::ocsf::OcsfContext;
use crate::audit::policy_copy::{self, PolicyCopy};

/// A bundle member larger than this is refused rather than read into memory.
const MAX_MEMBER_BYTES: u64 = 4 << 30;

/// What `verify-bundle` found.
#[derive(Clone, Debug, Default)]
pub struct BundleReport {
    pub log_id: String,
    pub agent: Option<String>,
    pub first_seq: u64,
    pub last_seq: u64,
    pub records_full: u64,
    pub records_redacted: u64,
    pub checkpoints: u64,
    pub key_ids: Vec<String>,
    pub key_pinned: bool,
    pub policies: Vec<String>,
    pub notes: Vec<String>,
    pub problems: Vec<String>,
}

impl BundleReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for BundleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "log id: {}", self.log_id)?;
        if let Some(a) = &self.agent {
            writeln!(f, "agent: {a}")?;
        }
        writeln!(
            f,
            "records {}..={}: {} in full, {} redacted; {} checkpoint(s)",
            self.first_seq,
            self.last_seq,
            self.records_full,
            self.records_redacted,
            self.checkpoints
        )?;
        writeln!(
            f,
            "signed by key(s): {}{}",
            self.key_ids.join(" -> "),
            if self.key_pinned { " (pinned)" } else { "" }
        )?;
        for p in &self.policies {
            writeln!(f, "policy in force: sha256 {p}")?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        if self.problems.is_empty() {
            return write!(f, "result: OK");
        }
        for p in &self.problems {
            writeln!(f, "problem: {p}")?;
        }
        write!(f, "result: PROBLEM ({} found)", self.problems.len())
    }
}

/// Reads every member of the tar file. Duplicate names and anything but plain files are
/// refused: a second copy of a member must not be able to stand in for the first.
fn read_members(path: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    use anyhow::{bail, Context};
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut out = BTreeMap::new();
    for entry in archive
        .entries()
        .with_context(|| format!("{} is not a tar file", path.display()))?
    {
        let mut entry = entry.with_context(|| format!("reading {}", path.display()))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if entry.header().entry_type() != tar::EntryType::Regular {
            bail!("{}: member {name} is not a plain file", path.display());
        }
        let size = entry.header().size()?;
        if size > MAX_MEMBER_BYTES {
            bail!(
                "{}: member {name} is {size} bytes, over the limit",
                path.display()
            );
        }
        let mut bytes = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut bytes)?;
        if out.insert(name.clone(), bytes).is_some() {
            bail!("{}: member {name} is there twice", path.display());
        }
    }
    Ok(out)
}

/// Verifies the bundle at `path`, holding its keys to `pinned` if given.
pub fn verify_bundle(path: &Path, pinned: Option<[u8; 32]>) -> anyhow::Result<BundleReport> {
    let mut members = read_members(path)?;
    let mut report = BundleReport {
        key_pinned: pinned.is_some(),
        ..BundleReport::default()
    };
    let problems = &mut report.problems;
    let manifest_bytes = members
        .remove("manifest.json")
        .ok_or_else(|| anyhow::anyhow!("{} has no manifest.json", path.display()))?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| anyhow::anyhow!("manifest.json does not parse: {e}"))?;
    if manifest.format != super::FORMAT {
        anyhow::bail!(
            "manifest.json: format {:?}, this secops reads {}",
            manifest.format,
            super::FORMAT
        );
    }
    report.log_id = manifest.log_id.clone();
    report.agent = manifest.agent.clone();
    report.first_seq = manifest.first_seq;
    report.last_seq = manifest.last_seq;
    report.policies = manifest.policies.clone();
    report.notes = manifest.notes.clone();

    // Members: exactly those the manifest lists, with their hashes.
    let signature = members.remove("manifest.sig");
    for m in &manifest.members {
        match members.get(&m.name) {
            None => problems.push(format!(
                "member {} is listed in the manifest but missing",
                m.name
            )),
            Some(b) if sha256_hex(b) != m.sha256 || b.len() as u64 != m.bytes => {
                problems.push(format!(
                    "member {}: its bytes are not the ones the manifest lists (sha256 {})",
                    m.name,
                    sha256_hex(b)
                ))
            }
            Some(_) => {}
        }
    }
    for name in members.keys() {
        if !manifest.members.iter().any(|m| &m.name == name) {
            problems.push(format!("member {name} is not listed in the manifest"));
        }
    }
    let empty = Vec::new();
    let member = |name: &str| members.get(name).unwrap_or(&empty);

    // Keys: the oldest, then each rotation signed by the key before it.
    let mut timeline: Vec<(u64, [u8; 32])> = Vec::new();
    match hex32(
        std::str::from_utf8(member("public-key.hex"))
            .unwrap_or("")
            .trim(),
    ) {
        Some(root) => timeline.push((0, root)),
        None => problems.push("public-key.hex does not hold an Ed25519 public key".into()),
    }
    let log_id: [u8; 16] = match hex::decode(&manifest.log_id)
        .ok()
        .and_then(|v| v.try_into().ok())
    {
        Some(id) => id,
        None => anyhow::bail!(
            "manifest.json: log_id {:?} is not a log id",
            manifest.log_id
        ),
    };
    match decode_entries(member("keys.bin")) {
        Err(e) => problems.push(format!("keys.bin: {e}")),
        Ok(entries) => {
            for e in entries {
                let ChainEntry::Frame(Frame::Rotation(r)) = e else {
                    problems.push("keys.bin holds something other than key rotations".into());
                    continue;
                };
                let Some(&(last_at, current)) = timeline.last() else {
                    break;
                };
                let msg =
                    chain::rotation_message(&log_id, r.at_seq, r.ts_ns, &r.old_key, &r.new_key);
                if r.old_key != current
                    || r.at_seq < last_at
                    || !signed_by(&r.old_key, &msg, &r.signature)
                {
                    problems.push(format!(
                        "keys.bin: the rotation after record {} to key {} is not signed by the key before it",
                        r.at_seq,
                        hex::encode(chain::key_id(&r.new_key))
                    ));
                    break;
                }
                timeline.push((r.at_seq, r.new_key));
            }
        }
    }
    report.key_ids = timeline
        .iter()
        .map(|(_, k)| hex::encode(chain::key_id(k)))
        .collect();
    // Checkpoints signed by keys before the pinned one are not trusted.
    let trusted_from = match pinned {
        None => {
            report.notes.push(
                "the key was not pinned (--public-key FILE): a bundle re-signed with a new key would pass".into(),
            );
            Some(0)
        }
        Some(p) => match timeline.iter().position(|(_, k)| *k == p) {
            Some(i) => Some(i),
            None => {
                problems.push(format!(
                    "the bundle is signed by key(s) {}, none of them the pinned key {}",
                    report.key_ids.join(", "),
                    hex::encode(chain::key_id(&p))
                ));
                None
            }
        },
    };
    match (timeline.last(), hex32(&manifest.signing_key)) {
        (Some((_, newest)), Some(signer)) if *newest == signer => {
            let mut msg = super::MANIFEST_TAG.to_vec();
            msg.extend_from_slice(&manifest_bytes);
            let sig = signature
                .as_deref()
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| hex::decode(s.trim()).ok())
                .and_then(|v| <[u8; 64]>::try_from(v).ok());
            if !sig.is_some_and(|s| signed_by(&signer, &msg, &s)) {
                problems.push(
                    "manifest.sig: the manifest's signature does not verify with the log's newest key (the manifest was changed, or signed by another key)".into(),
                );
            }
        }
        _ => problems.push(format!(
            "manifest.json: the signing key {} is not the newest key of the log's rotations",
            manifest.signing_key
        )),
    }

    // The chain.
    let full = match decode_entries(member("chain.bin")) {
        Err(e) => {
            problems.push(format!("chain.bin: {e}"));
            Vec::new()
        }
        Ok(entries) => walk_chain(
            &manifest,
            &log_id,
            &entries,
            &timeline,
            trusted_from,
            &mut report,
        ),
    };
    let problems = &mut report.problems;

    // Derived members must be exactly what the records give.
    let ctx = OcsfContext {
        hostname: manifest.host.clone(),
    };
    match render(&full, &ctx) {
        Ok((jsonl, ocsf)) => {
            if jsonl != *member("records.jsonl") {
                problems.push("records.jsonl is not what the chain's records say".into());
            }
            if ocsf != *member("ocsf.jsonl") {
                problems.push("ocsf.jsonl is not what the chain's records say".into());
            }
        }
        Err(e) => problems.push(format!("rendering the records: {e}")),
    }

    // Policies: every one the records name, with bytes that hash to the name.
    let named = named_policies(&full, &manifest);
    for (hash, seq) in &named {
        let name = format!("policy/{hash}.json");
        let Some(bytes) = members.get(&name) else {
            problems.push(format!(
                "policy sha256 {hash}, in force after record {seq}, is not in the bundle"
            ));
            continue;
        };
        match serde_json::from_slice::<PolicyCopy>(bytes) {
            Err(e) => problems.push(format!("{name} is not a policy copy: {e}")),
            Ok(copy) => {
                let computed = copy.computed_hash();
                if computed != *hash {
                    problems.push(format!(
                        "{name}: its files hash to sha256 {computed}, not the {hash} record {seq} names (a policy byte was changed)"
                    ));
                }
            }
        }
    }
    let named_hashes: Vec<String> = named.iter().map(|(h, _)| h.clone()).collect();
    if named_hashes != manifest.policies {
        problems.push(format!(
            "the manifest lists policies {:?}, the records name {:?}",
            manifest.policies, named_hashes
        ));
    }
    Ok(report)
}

/// Walks `chain.bin`; returns the records carried in full.
fn walk_chain(
    manifest: &Manifest,
    log_id: &[u8; 16],
    entries: &[ChainEntry],
    timeline: &[(u64, [u8; 32])],
    trusted_from: Option<usize>,
    report: &mut BundleReport,
) -> Vec<crate::audit::Record> {
    let problems = &mut report.problems;
    let mut full = Vec::new();
    let Some(mut link) = hex32(&manifest.start_prev_hash) else {
        problems.push("manifest.json: start_prev_hash is not a hash".into());
        return full;
    };
    let mut expected = manifest.first_seq;
    let mut sealed_upto = manifest.first_seq.saturating_sub(1);
    let mut next_number: Option<u64> = None;
    // Where the chain first went wrong: later checkpoints cannot vouch for anything.
    let mut broken = false;
    let (since, until, only) = (
        manifest.since_ns,
        manifest.until_ns,
        manifest.agent.as_deref(),
    );
    for entry in entries {
        let (seq, content, stored, body) = match entry {
            ChainEntry::Frame(Frame::Record(r)) => {
                let seq = chain::encoded_seq(&r.encoding).unwrap_or(0);
                match record_of(r) {
                    Ok(rec) => {
                        let b = rec.body.clone();
                        full.push(rec);
                        (
                            seq,
                            chain::content_hash(&r.encoding),
                            Some((r.prev, r.hash)),
                            Some(b),
                        )
                    }
                    Err(e) => {
                        problems.push(format!("record {seq}: it does not decode ({e})"));
                        broken = true;
                        (seq, chain::content_hash(&r.encoding), None, None)
                    }
                }
            }
            ChainEntry::Redacted(r) => match r.decode_head() {
                Ok((seq, ts, agent)) => {
                    let left_out = in_window(since, until, ts)
                        && (only.is_none() || agent.is_none() || agent.as_deref() == only);
                    if left_out {
                        problems.push(format!(
                            "record {seq} ({}, in the window) was left out: the bundle must show it",
                            agent.as_deref().map_or("no agent".to_owned(), |a| format!("agent {a}"))
                        ));
                    }
                    (seq, r.content_hash(), None, None)
                }
                Err(e) => {
                    problems.push(format!(
                        "a redacted record after {}: its head does not decode ({e})",
                        expected - 1
                    ));
                    broken = true;
                    continue;
                }
            },
            ChainEntry::Frame(Frame::Header(h)) => {
                if !broken
                    && (h.first_seq != expected || h.prev_hash != link || h.log_id != *log_id)
                {
                    problems.push(format!(
                        "the segment header before record {} does not continue the chain from record {}",
                        h.first_seq,
                        expected - 1
                    ));
                    broken = true;
                }
                link = h.link_hash();
                continue;
            }
            ChainEntry::Frame(Frame::Checkpoint(c)) => {
                // The key in force: after every rotation before the record it covers.
                let key_index = timeline
                    .iter()
                    .skip(1)
                    .filter(|(at, _)| *at < c.seq)
                    .count();
                let key = timeline.get(key_index).map(|(_, k)| *k).unwrap_or_default();
                let msg = chain::checkpoint_message(log_id, c.number, c.seq, &c.hash, c.ts_ns);
                report.checkpoints += 1;
                if !signed_by(&key, &msg, &c.signature) {
                    problems.push(format!(
                        "checkpoint {} (record {}): its signature does not verify with key {}",
                        c.number,
                        c.seq,
                        hex::encode(chain::key_id(&key))
                    ));
                } else if trusted_from.is_some_and(|t| key_index < t) {
                    problems.push(format!(
                        "checkpoint {} (record {}) is signed by key {}, from before the pinned key",
                        c.number,
                        c.seq,
                        hex::encode(chain::key_id(&key))
                    ));
                }
                match next_number {
                    Some(n) if c.number > n => problems.push(format!(
                        "checkpoint(s) {n}..={} are missing (between checkpoints {} and {})",
                        c.number - 1,
                        n - 1,
                        c.number
                    )),
                    Some(n) if c.number < n => problems.push(format!(
                        "checkpoint {} comes after checkpoint {}",
                        c.number,
                        n - 1
                    )),
                    None if c.number != manifest.first_checkpoint => problems.push(format!(
                        "the first checkpoint is {}, the manifest says {}",
                        c.number, manifest.first_checkpoint
                    )),
                    _ => {}
                }
                next_number = Some(c.number + 1);
                if c.seq != expected - 1 || c.hash != link {
                    if !broken {
                        problems.push(format!(
                            "checkpoint {} (record {}) does not match the chain: records {}..={} were altered, removed or inserted",
                            c.number,
                            c.seq,
                            sealed_upto + 1,
                            c.seq.max(expected - 1)
                        ));
                    }
                    broken = true;
                } else if !broken {
                    sealed_upto = c.seq;
                }
                continue;
            }
            ChainEntry::Frame(other) => {
                problems.push(format!(
                    "chain.bin holds a frame a bundle has no use for ({other:?})"
                ));
                continue;
            }
        };
        if seq != expected && !broken {
            if seq > expected {
                problems.push(format!("records {expected}..={} are missing", seq - 1));
            } else {
                problems.push(format!(
                    "record {seq} is out of place (record {expected} was due)"
                ));
            }
            broken = true;
        }
        let prev = link;
        link = chain::link_hash(&link, seq, &content);
        if let Some((stored_prev, stored_hash)) = stored {
            if !broken && (stored_prev != prev || stored_hash != link) {
                problems.push(format!(
                    "record {seq}: its content does not match its hash (the record was changed)"
                ));
                broken = true;
            }
        }
        if let (Some(b), Some(a)) = (&body, only) {
            if b.agent.as_deref().is_some_and(|x| x != a) {
                problems.push(format!(
                    "record {seq} is agent {}'s: a bundle for agent {a} must not show it",
                    b.agent.as_deref().unwrap_or_default()
                ));
            }
        }
        if stored.is_some() {
            report.records_full += 1;
        } else {
            report.records_redacted += 1;
        }
        expected = seq + 1;
    }
    let last = expected - 1;
    if last != manifest.last_seq {
        problems.push(format!(
            "the chain ends at record {last}, the manifest says {} (records cut off the end)",
            manifest.last_seq
        ));
    } else if sealed_upto != last && !broken {
        problems.push(format!(
            "records {}..={last} are not under a checkpoint (the last checkpoint was dropped)",
            sealed_upto + 1
        ));
    }
    if next_number.map(|n| n - 1) != Some(manifest.last_checkpoint) {
        problems.push(format!(
            "the last checkpoint is {:?}, the manifest says {}",
            next_number.map(|n| n - 1),
            manifest.last_checkpoint
        ));
    }
    if report.records_full != manifest.records_full
        || report.records_redacted != manifest.records_redacted
    {
        problems.push(format!(
            "the chain carries {} record(s) in full and {} redacted, the manifest says {} and {}",
            report.records_full,
            report.records_redacted,
            manifest.records_full,
            manifest.records_redacted
        ));
    }
    full
}

/// The policies the full records name as in force, with the record naming each first.
fn named_policies(full: &[crate::audit::Record], manifest: &Manifest) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for r in full {
        if r.body.agent.is_some() || r.seq < manifest.first_seq || r.seq > manifest.last_seq {
            continue;
        }
        if let Some(h) = policy_copy::in_force_after(&r.body) {
            if !out.iter().any(|(x, _)| *x == h) {
                out.push((h, r.seq));
            }
        }
    }
    out
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    hex::decode(s).ok()?.try_into().ok()
}

fn signed_by(key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
    VerifyingKey::from_bytes(key)
        .is_ok_and(|k| k.verify_strict(msg, &Signature::from_bytes(sig)).is_ok())
}
