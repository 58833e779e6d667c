//! Retention: closed segments move out of the live log into an archive directory, whole, in
//! order, and only after their copy is synced, read back and found identical, and after the
//! live log says so in a signed `sys:audit` record. A segment verifies on its own (its header
//! is in its chain and it ends with a checkpoint of its last record), and the next one's header
//! names its last hash, so `verify --archive DIR` checks the log across archives and live
//! segments as one chain. Nothing here deletes a record that is not archived.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secops_common::RiskLevel;
use sha2::{Digest, Sha256};

use super::dir;
use super::error::AuditError;
use super::frame::Frame;
use super::index::Index;
use super::segment::{self, SegmentRef};
use super::store::{audit_note, scan_segment, AuditStore};

/// The rule id of the records that say a segment was archived.
pub const ARCHIVE_RULE: &str = "audit.archive";

/// Which closed segments to move out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub archive_dir: PathBuf,
    /// Keep segments whose newest record is younger than this (None: archive regardless of age).
    pub keep_age: Option<Duration>,
    /// Keep at most this many bytes of segments live, the newest ones (None: no size limit).
    pub keep_bytes: Option<u64>,
}

/// One segment moved out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archived {
    pub first_seq: u64,
    pub last_seq: u64,
    pub path: PathBuf,
    pub sha256: String,
}

/// Moves closed segments out per `policy`, oldest first. With neither limit set, every closed
/// segment is moved. The open segment never is.
pub fn archive(
    store: &mut AuditStore,
    policy: &RetentionPolicy,
    now_ns: i64,
) -> Result<Vec<Archived>, AuditError> {
    let paths = store.paths().clone();
    dir::ensure_private_dir(&policy.archive_dir, "archive directory")?;
    let segments = segment::list_segments(&paths.audit_dir)?;
    let Some((_open, closed)) = segments.split_last() else {
        return Ok(Vec::new());
    };
    let mut sizes: Vec<u64> = Vec::with_capacity(segments.len());
    for s in &segments {
        sizes.push(
            fs::metadata(&s.path)
                .map_err(|e| AuditError::io(&s.path, "inspecting", e))?
                .len(),
        );
    }
    let mut live_bytes: u64 = sizes.iter().sum();
    let mut out = Vec::new();
    for (i, seg) in closed.iter().enumerate() {
        let scan = scan_segment(&seg.path, true)?;
        let too_big = policy.keep_bytes.is_some_and(|max| live_bytes > max);
        let too_old = policy.keep_age.is_some_and(|age| {
            newest_ts(&seg.path).is_ok_and(|t| {
                t < now_ns.saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX))
            })
        });
        let no_limits = policy.keep_bytes.is_none() && policy.keep_age.is_none();
        if !(too_big || too_old || no_limits) {
            // Segments are archived in order: the chain in the archive never has a hole.
            break;
        }
        if scan.end.is_none() || scan.checkpoints.last().map(|c| c.seq) != Some(scan.last_seq) {
            return Err(AuditError::Damaged {
                path: seg.path.clone(),
                why: "a closed segment must end with a checkpoint of its last record and an end \
                      frame; it is not archived"
                    .into(),
            });
        }
        let archived = copy_verified(seg, &policy.archive_dir)?;
        store.append(&super::record::NewRecord {
            rule_id: Some(ARCHIVE_RULE.into()),
            object: Some(super::record::AuditObject {
                kind: super::record::ObjectKind::Target,
                value: format!(
                    "{}..={} {}",
                    scan.header.first_seq,
                    scan.last_seq,
                    archived.display()
                ),
            }),
            ..audit_note(
                RiskLevel::Low,
                format!(
                    "records {}..={} archived: segment {} moved to {} (sha256 {})",
                    scan.header.first_seq,
                    scan.last_seq,
                    seg.path.display(),
                    archived.display(),
                    file_sha256(&archived)?
                ),
            )
        })?;
        store.checkpoint_now()?;
        let _ = segment::clear_protection(&seg.path);
        fs::remove_file(&seg.path)
            .map_err(|e| AuditError::io(&seg.path, "removing the archived segment", e))?;
        dir::sync_dir(&paths.audit_dir)?;
        if let Ok(mut ix) = Index::open_rw(&paths, &hex::encode(store.log_id())) {
            let _ = ix.forget_segment(seg.first_seq);
        }
        live_bytes = live_bytes.saturating_sub(sizes[i]);
        out.push(Archived {
            first_seq: scan.header.first_seq,
            last_seq: scan.last_seq,
            sha256: file_sha256(&archived)?,
            path: archived,
        });
    }
    Ok(out)
}

/// The ranges of records the log says it archived (from its `audit.archive` records).
pub fn archived_ranges(objects: &[String]) -> Vec<(u64, u64)> {
    objects
        .iter()
        .filter_map(|o| {
            let range = o.split_whitespace().next()?;
            let (a, b) = range.split_once("..=")?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

/// Copies a segment into `archive`: under a temporary name, synced, read back and compared,
/// then given its name. An identical copy already there is accepted; a different one is not.
fn copy_verified(seg: &SegmentRef, archive: &Path) -> Result<PathBuf, AuditError> {
    let name = seg
        .path
        .file_name()
        .map(|n| n.to_owned())
        .unwrap_or_default();
    let dest = archive.join(&name);
    let want = file_sha256(&seg.path)?;
    if dest.exists() {
        if file_sha256(&dest)? == want {
            return Ok(dest);
        }
        return Err(AuditError::Damaged {
            path: dest,
            why: "an archived segment of that name exists and differs from the live one".into(),
        });
    }
    let tmp = archive.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    {
        let mut src =
            dir::open_read(&seg.path).map_err(|e| AuditError::io(&seg.path, "reading", e))?;
        let mut dst =
            dir::create_new(&tmp, 0o400).map_err(|e| AuditError::io(&tmp, "creating", e))?;
        std::io::copy(&mut src, &mut dst).map_err(|e| AuditError::io(&tmp, "copying", e))?;
        dst.sync_all()
            .map_err(|e| AuditError::io(&tmp, "syncing", e))?;
    }
    if file_sha256(&tmp)? != want {
        let _ = fs::remove_file(&tmp);
        return Err(AuditError::Damaged {
            path: tmp,
            why: "the archived copy reads back different from the live segment".into(),
        });
    }
    fs::hard_link(&tmp, &dest)
        .map_err(|e| AuditError::io(&dest, "naming the archived segment", e))?;
    let _ = fs::remove_file(&tmp);
    dir::sync_dir(archive)?;
    if let Ok((h, _)) = segment::read_header(&dest) {
        if h.inode_protected() {
            let _ = segment::protect_closed(&dest);
        }
    }
    Ok(dest)
}

fn file_sha256(path: &Path) -> Result<String, AuditError> {
    let mut f = dir::open_read(path).map_err(|e| AuditError::io(path, "reading", e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| AuditError::io(path, "reading", e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The time of the newest record in a segment.
fn newest_ts(path: &Path) -> Result<i64, AuditError> {
    let (frames, _) = segment::read_frames(path)?;
    Ok(frames
        .iter()
        .filter_map(|f| match &f.frame {
            Ok(Frame::Record(r)) => super::chain::decode_record(&r.encoding)
                .ok()
                .map(|(_, b)| b.ts_ns),
            _ => None,
        })
        .max()
        .unwrap_or(i64::MIN))
}
