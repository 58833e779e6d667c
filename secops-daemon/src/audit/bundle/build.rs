//! `secops audit bundle`: reads the segments twice (once to find the range, once to copy it)
//! and writes the bundle as a tar file.
//!
//! The range starts at the first record to show, or earlier at the newest `sys:policy`
//! record before it (so the policy in force at the window's start is proved too), and ends at
//! the first checkpoint at or after the last record to show (so every record is under a
//! signature). Records in the range that are not to be shown are redacted.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use ed25519_dalek::Signer;

use super::{encode_entries, render, sha256_hex, wanted, ChainEntry, Manifest, Member, FORMAT};
use crate::audit::chain::{self, RedactedRecord};
use crate::audit::frame::{Frame, RotationFrame};
use crate::audit::ocsf::OcsfContext;
use crate::audit::policy_copy::{self, PolicyCopy};
use crate::audit::segment::{self, FrameScanner, ScanError, SegmentRef};
use crate::audit::{keys, AuditPaths};

/// What to put in a bundle.
#[derive(Clone, Debug, Default)]
pub struct BundleOptions {
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    pub agent: Option<String>,
    /// Archive directories whose segments count as part of the log.
    pub archives: Vec<PathBuf>,
    /// A policy file to take a policy's bytes from when no copy of it was kept (its hash
    /// must be the one the records name).
    pub policy_file: Option<PathBuf>,
    pub host: Option<String>,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct BundleSummary {
    pub manifest: Manifest,
    pub bytes: u64,
}

/// Facts from the first pass.
#[derive(Default)]
struct Survey {
    log_id: Option<[u8; 16]>,
    root_key: Option<[u8; 32]>,
    rotations: Vec<RotationFrame>,
    first_wanted: Option<u64>,
    last_wanted: Option<u64>,
    /// `sys:policy` records: seq and the policy in force after them.
    policy_records: Vec<(u64, String)>,
    checkpoint_seqs: Vec<u64>,
}

/// Writes the bundle for `options` to `out` (created; never overwritten).
pub fn build_bundle(
    paths: &AuditPaths,
    options: &BundleOptions,
    out: &Path,
) -> anyhow::Result<BundleSummary> {
    let signing = keys::load_signing_key(paths)?.ok_or_else(|| {
        anyhow!(
            "no signing key in {}: the bundle's manifest is signed with the log's key",
            paths.keys_dir.display()
        )
    })?;
    let segments = all_segments(paths, &options.archives)?;
    let survey = survey(&segments, options)?;
    let (first_wanted, last_wanted) = match (survey.first_wanted, survey.last_wanted) {
        (Some(a), Some(b)) => (a, b),
        _ => bail!("the log holds no record in that window"),
    };
    let policy_start = survey
        .policy_records
        .iter()
        .rev()
        .find(|(s, _)| *s < first_wanted)
        .map(|(s, _)| *s);
    let first_seq = policy_start.map_or(first_wanted, |p| p.min(first_wanted));
    let mut notes = Vec::new();
    let last_seq = match survey.checkpoint_seqs.iter().find(|&&c| c >= last_wanted) {
        Some(&c) => c,
        None => match survey.checkpoint_seqs.last() {
            Some(&c) if c >= first_wanted => {
                notes.push(format!(
                    "records after {c} were not sealed by a checkpoint yet and are not in the bundle"
                ));
                c
            }
            _ => bail!(
                "the records in that window are not sealed by a checkpoint yet (the daemon \
                 seals every second): try again in a moment"
            ),
        },
    };
    if policy_start.is_none() {
        notes.push(
            "no sys:policy record before the window names the policy in force at its start".into(),
        );
    }
    let log_id = survey
        .log_id
        .ok_or_else(|| anyhow!("the log has no segment"))?;
    let root_key = survey.root_key.unwrap_or_default();
    let current_key = survey.rotations.last().map_or(root_key, |r| r.new_key);
    if signing.verifying_key().to_bytes() != current_key {
        bail!(
            "the signing key in {} is not the log's current key (key {}): refusing to sign a \
             bundle with it",
            paths.signing_key.display(),
            hex::encode(chain::key_id(&current_key))
        );
    }

    let copied = copy_range(&segments, options, first_seq, last_seq)?;
    let mut policies: Vec<String> = Vec::new();
    for (seq, hash) in &survey.policy_records {
        if *seq >= first_seq && *seq <= last_seq && !policies.contains(hash) {
            policies.push(hash.clone());
        }
    }
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    for hash in &policies {
        let copy = find_policy(paths, options, hash)?;
        members.push((
            format!("policy/{hash}.json"),
            serde_json::to_vec_pretty(&copy)?,
        ));
    }
    let ctx = OcsfContext {
        hostname: options.host.clone(),
    };
    let (jsonl, ocsf) = render(&copied.full, &ctx)?;
    let rotations: Vec<ChainEntry> = survey
        .rotations
        .iter()
        .map(|r| ChainEntry::Frame(Frame::Rotation(*r)))
        .collect();
    members.push(("chain.bin".into(), encode_entries(copied.entries.iter())));
    members.push(("keys.bin".into(), encode_entries(rotations.iter())));
    members.push((
        "public-key.hex".into(),
        format!("{}\n", hex::encode(root_key)).into_bytes(),
    ));
    members.push(("records.jsonl".into(), jsonl));
    members.push(("ocsf.jsonl".into(), ocsf));
    members.sort_by(|a, b| a.0.cmp(&b.0));

    let created_ns = crate::time::now_ns();
    let manifest = Manifest {
        format: FORMAT.into(),
        log_id: hex::encode(log_id),
        host: options.host.clone(),
        created_ns,
        since_ns: options.since_ns,
        until_ns: options.until_ns,
        agent: options.agent.clone(),
        first_seq,
        last_seq,
        start_prev_hash: hex::encode(copied.start_prev),
        records_full: copied.full.len() as u64,
        records_redacted: copied.redacted,
        first_checkpoint: copied.first_checkpoint,
        last_checkpoint: copied.last_checkpoint,
        policies,
        signing_key: hex::encode(current_key),
        notes,
        members: members
            .iter()
            .map(|(name, bytes)| Member {
                name: name.clone(),
                sha256: sha256_hex(bytes),
                bytes: bytes.len() as u64,
            })
            .collect(),
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
    let mut signed = super::MANIFEST_TAG.to_vec();
    signed.extend_from_slice(&manifest_bytes);
    let signature = hex::encode(signing.sign(&signed).to_bytes());

    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("creating {} (it must not exist yet)", out.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let mtime = u64::try_from(created_ns / 1_000_000_000).unwrap_or(0);
    let mut put = |name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes)
            .with_context(|| format!("writing {name} into {}", out.display()))
    };
    put("manifest.json", &manifest_bytes)?;
    put("manifest.sig", format!("{signature}\n").as_bytes())?;
    for (name, bytes) in &members {
        put(name, bytes)?;
    }
    let mut w = tar.into_inner().context("finishing the bundle")?;
    w.flush()?;
    let file = w
        .into_inner()
        .map_err(|e| anyhow!("writing the bundle: {e}"))?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    Ok(BundleSummary { manifest, bytes })
}

fn all_segments(paths: &AuditPaths, archives: &[PathBuf]) -> anyhow::Result<Vec<SegmentRef>> {
    let mut segments = Vec::new();
    for dir in archives {
        segments.extend(segment::list_segments(dir)?);
    }
    segments.extend(
        segment::list_segments(&paths.audit_dir)
            .with_context(|| format!("reading the audit log in {}", paths.audit_dir.display()))?,
    );
    segments.sort_by_key(|s| s.first_seq);
    segments.dedup_by_key(|s| s.first_seq);
    Ok(segments)
}

/// Calls `f` with each frame of every segment and the seq of the last record before it.
fn each_frame(
    segments: &[SegmentRef],
    mut f: impl FnMut(&Frame, u64) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    for seg in segments {
        let mut scanner = FrameScanner::open(&seg.path)?;
        let mut seq = 0u64;
        loop {
            let scanned = match scanner.next_frame() {
                Ok(Some(s)) => s,
                Ok(None) | Err(ScanError::Torn { .. }) => break,
                Err(e) => bail!("{}: {e} (run `secops audit verify`)", seg.path.display()),
            };
            let frame = scanned.frame.map_err(|why| {
                anyhow!(
                    "{}: the frame at byte {}: {why} (run `secops audit verify`)",
                    seg.path.display(),
                    scanned.offset
                )
            })?;
            match &frame {
                Frame::Header(h) => seq = h.first_seq.saturating_sub(1),
                Frame::Record(r) => seq = chain::encoded_seq(&r.encoding).unwrap_or(seq + 1),
                _ => {}
            }
            if !f(&frame, seq)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn survey(segments: &[SegmentRef], options: &BundleOptions) -> anyhow::Result<Survey> {
    let mut s = Survey::default();
    each_frame(segments, |frame, seq| {
        match frame {
            Frame::Header(h) => {
                s.log_id.get_or_insert(h.log_id);
                s.root_key.get_or_insert(h.public_key);
            }
            Frame::Record(r) => {
                let (_, ts, agent) = RedactedRecord::of(&r.encoding)
                    .decode_head()
                    .map_err(|e| anyhow!("record {seq}: {e} (run `secops audit verify`)"))?;
                if wanted(
                    options.since_ns,
                    options.until_ns,
                    options.agent.as_deref(),
                    ts,
                    agent.as_deref(),
                ) {
                    s.first_wanted.get_or_insert(seq);
                    s.last_wanted = Some(seq);
                }
                if agent.is_none() && memchr::memmem::find(&r.encoding, b"sys:policy").is_some() {
                    if let Ok((_, body)) = chain::decode_record(&r.encoding) {
                        if let Some(hash) = policy_copy::in_force_after(&body) {
                            s.policy_records.push((seq, hash));
                        }
                    }
                }
            }
            Frame::Checkpoint(c) => s.checkpoint_seqs.push(c.seq),
            Frame::Rotation(r) => s.rotations.push(*r),
            Frame::End { .. } => {}
        }
        Ok(true)
    })?;
    Ok(s)
}

struct Copied {
    entries: Vec<ChainEntry>,
    full: Vec<crate::audit::Record>,
    redacted: u64,
    start_prev: chain::Hash,
    first_checkpoint: u64,
    last_checkpoint: u64,
}

fn copy_range(
    segments: &[SegmentRef],
    options: &BundleOptions,
    first_seq: u64,
    last_seq: u64,
) -> anyhow::Result<Copied> {
    let mut c = Copied {
        entries: Vec::new(),
        full: Vec::new(),
        redacted: 0,
        start_prev: [0; 32],
        first_checkpoint: 0,
        last_checkpoint: 0,
    };
    each_frame(segments, |frame, seq| {
        match frame {
            Frame::Header(h) if h.first_seq > first_seq && h.first_seq <= last_seq => {
                c.entries.push(ChainEntry::Frame(frame.clone()));
            }
            Frame::Record(r) if seq >= first_seq && seq <= last_seq => {
                if seq == first_seq {
                    c.start_prev = r.prev;
                }
                let (_, body) = chain::decode_record(&r.encoding)
                    .map_err(|e| anyhow!("record {seq}: {e} (run `secops audit verify`)"))?;
                let show = wanted(
                    options.since_ns,
                    options.until_ns,
                    options.agent.as_deref(),
                    body.ts_ns,
                    body.agent.as_deref(),
                ) || (body.agent.is_none()
                    && policy_copy::in_force_after(&body).is_some());
                if show {
                    c.full
                        .push(super::record_of(r).map_err(|e| anyhow!("record {seq}: {e}"))?);
                    c.entries.push(ChainEntry::Frame(frame.clone()));
                } else {
                    c.redacted += 1;
                    c.entries
                        .push(ChainEntry::Redacted(RedactedRecord::of(&r.encoding)));
                }
            }
            Frame::Checkpoint(cp) if cp.seq >= first_seq && seq <= last_seq => {
                if c.first_checkpoint == 0 {
                    c.first_checkpoint = cp.number;
                }
                c.last_checkpoint = cp.number;
                c.entries.push(ChainEntry::Frame(frame.clone()));
                if cp.seq == last_seq {
                    return Ok(false);
                }
            }
            _ => {}
        }
        Ok(true)
    })?;
    Ok(c)
}

fn find_policy(
    paths: &AuditPaths,
    options: &BundleOptions,
    hash: &str,
) -> anyhow::Result<PolicyCopy> {
    if let Some(copy) = policy_copy::load(&paths.state_dir, hash)? {
        return Ok(copy);
    }
    if let Some(file) = &options.policy_file {
        let policy = crate::policy::load_policy(file)
            .map_err(|errors| anyhow!("--policy {} is not valid:\n{errors}", file.display()))?;
        if policy.content_hash == hash {
            if let Some(copy) = PolicyCopy::of(&policy)? {
                return Ok(copy);
            }
        }
    }
    bail!(
        "the records name policy sha256 {hash} as in force, and no copy of it is kept in {} \
         (give its file with --policy FILE)",
        policy_copy::policies_dir(&paths.state_dir).display()
    )
}
