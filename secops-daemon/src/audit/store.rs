//! The write side of the log: chained records and signed checkpoints appended to segment
//! files under `<state>/audit/`, one `write` and one `fdatasync` per batch.
//!
//! Several `AuditStore`s (in one or several processes: the daemon and `secops check`) may
//! append to one log: each batch is written under an exclusive `flock` on `audit/lock`, after
//! reading whatever the others appended since, so their records interleave into one chain.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer, SigningKey};
use rand_core::{OsRng, RngCore};
use secops_common::{CoreAction, RiskLevel, Verdict};

use super::chain::{self, Hash, KEY_ID_LEN, LOG_ID_LEN};
use super::dir;
use super::error::AuditError;
use super::frame::{self, CheckpointFrame, Frame, RecordFrame, SegmentHeader, SEGMENT_VERSION};
use super::head::{self, Expected, FoundTip, HeadFile, Rewind};
use super::keys;
use super::paths::AuditPaths;
use super::record::{NewRecord, Source};
use super::segment::{self, AppendFailure, FrameScanner, LiveSegment, ScanError};

pub use super::frame::CheckpointFrame as Checkpoint;

/// When to seal the chain with a signed checkpoint: after this many records, or when the
/// oldest unsealed record is this old, whichever comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    pub every_records: u64,
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    /// Every second or every 8,192 records: at 1,000 records/s at most a second of records is
    /// unsealed (DESIGN-NOTES has the cost).
    fn default() -> Self {
        CheckpointPolicy {
            every_records: 8192,
            every: Duration::from_secs(1),
        }
    }
}

/// What to do when the log is not where its head file says.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum RewindPolicy {
    /// Refuse to write to it ([`AuditError::Rewound`]).
    #[default]
    Refuse,
    /// An operator accepted it: record what was found, and who accepted it why, then go on.
    Accept { by: String, reason: String },
}

/// How an [`AuditStore`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    pub checkpoints: CheckpointPolicy,
    /// A segment that reached this size is closed and the log goes on in a new one.
    pub segment_bytes: u64,
    /// Make the open segment append-only and closed ones immutable (needs root with
    /// `CAP_LINUX_IMMUTABLE`; silently not done where the file system has no such flags).
    pub inode_flags: bool,
    /// Refuse to open (and report failing) with less free space than this.
    pub min_free_bytes: u64,
    pub rewind: RewindPolicy,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            checkpoints: CheckpointPolicy::default(),
            segment_bytes: 16 << 20,
            inode_flags: false,
            min_free_bytes: 1 << 20,
            rewind: RewindPolicy::Refuse,
        }
    }
}

/// What opening the log found and did before anything else was appended (each of these is
/// also an audit record).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Bytes of an incomplete write at the end of the newest segment, removed.
    pub torn_bytes_removed: Option<u64>,
    /// What an operator accepted (`secops audit accept-rewind`).
    pub rewind_accepted: Option<String>,
    /// The log was created by this open.
    pub created: bool,
}

/// The end of the chain as this store knows it.
#[derive(Clone, Copy, Debug)]
struct Head {
    seq: u64,
    /// Hash of record `seq` (genesis when the log is empty).
    last_hash: Hash,
    /// What the next record links to: `last_hash`, or the open segment's header hash when the
    /// segment holds no record yet.
    link: Hash,
    checkpoint: Option<CheckpointFrame>,
    /// When the newest checkpoint was made (or the log created): the age of the unsealed tail.
    sealed_ns: i64,
}

/// The write side of the log: the open segment, the lock and the signing key.
pub struct AuditStore {
    paths: AuditPaths,
    options: StoreOptions,
    key: SigningKey,
    public: [u8; 32],
    key_id: [u8; KEY_ID_LEN],
    log_id: [u8; LOG_ID_LEN],
    log_created_ns: i64,
    lock: Arc<File>,
    live: LiveSegment,
    head: Head,
    buf: Vec<u8>,
    /// Checkpoints made since the last [`AuditStore::take_checkpoints`].
    new_checkpoints: Vec<Checkpoint>,
    /// Whether the head file is written at each checkpoint here (else the caller does it).
    write_head_inline: bool,
    /// A write or sync failed such that the file's tail is unknown: read it again first.
    reread_needed: bool,
    report: OpenReport,
}

/// Holds the appenders' lock until dropped.
struct Locked<'a>(&'a File);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.0.as_fd(), rustix::fs::FlockOperation::Unlock);
    }
}

fn lock<'a>(file: &'a File, path: &Path) -> Result<Locked<'a>, AuditError> {
    rustix::fs::flock(file.as_fd(), rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| AuditError::io(path, "locking the audit log", e.into()))?;
    Ok(Locked(file))
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One segment read from start to end (or to where it is torn).
#[derive(Clone, Debug)]
pub(crate) struct SegScan {
    pub header: SegmentHeader,
    pub records: u64,
    /// Seq and hash of the last record (the header's predecessor values if none).
    pub last_seq: u64,
    pub last_hash: Hash,
    /// What a record appended next would link to.
    pub link: Hash,
    pub checkpoints: Vec<CheckpointFrame>,
    /// The signing key in force at the end (after rotations).
    pub key: [u8; 32],
    /// `Some(next seq)` if the segment was closed.
    pub end: Option<u64>,
    /// Bytes of whole frames.
    pub good_len: u64,
    /// The file's length, if a torn frame follows `good_len`.
    pub torn_len: Option<u64>,
}

/// Reads a segment. `strict` recomputes every record hash; otherwise only links and seqs are
/// followed (for frames another appender just wrote, or the daemon's start on a huge tail).
pub(crate) fn scan_segment(path: &Path, strict: bool) -> Result<SegScan, AuditError> {
    let mut scanner = FrameScanner::open(path)?;
    let damaged = |why: String| AuditError::Damaged {
        path: path.to_owned(),
        why,
    };
    let header = match scanner.next_frame() {
        Ok(Some(segment::Scanned {
            frame: Ok(Frame::Header(h)),
            ..
        })) => h,
        Ok(_) | Err(_) => return Err(damaged("the segment does not start with a header".into())),
    };
    if header.version != SEGMENT_VERSION {
        return Err(AuditError::UnsupportedVersion {
            path: path.to_owned(),
            found: header.version.to_string(),
            supported: u32::from(SEGMENT_VERSION),
        });
    }
    let mut s = SegScan {
        records: 0,
        last_seq: header.first_seq.saturating_sub(1),
        last_hash: header.prev_hash,
        link: header.link_hash(),
        checkpoints: Vec::new(),
        key: header.public_key,
        end: None,
        good_len: scanner.offset(),
        torn_len: None,
        header,
    };
    continue_scan(&mut s, &mut scanner, strict, path)?;
    Ok(s)
}

/// Reads on from `s.good_len` to the end of the file.
fn continue_scan(
    s: &mut SegScan,
    scanner: &mut FrameScanner,
    strict: bool,
    path: &Path,
) -> Result<(), AuditError> {
    let damaged = |why: String| AuditError::Damaged {
        path: path.to_owned(),
        why,
    };
    loop {
        let scanned = match scanner.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(ScanError::Torn { file_len, .. }) => {
                s.torn_len = Some(file_len);
                break;
            }
            Err(ScanError::BadLength { offset, len }) => {
                return Err(damaged(format!(
                    "the frame at byte {offset} claims {len} bytes"
                )))
            }
            Err(ScanError::Io(e)) => return Err(e),
        };
        if s.end.is_some() {
            return Err(damaged(format!(
                "a frame at byte {} follows the segment's end frame",
                scanned.offset
            )));
        }
        let frame = scanned
            .frame
            .map_err(|why| damaged(format!("the frame at byte {}: {why}", scanned.offset)))?;
        match frame {
            Frame::Record(r) => {
                let seq = s.last_seq + 1;
                let claimed = chain::encoded_seq(&r.encoding);
                if claimed != Some(seq) || r.prev != s.link {
                    return Err(damaged(format!(
                        "record {seq} (byte {}) does not follow record {}",
                        scanned.offset, s.last_seq
                    )));
                }
                if strict
                    && chain::link_hash(&r.prev, seq, &chain::content_hash(&r.encoding)) != r.hash
                {
                    return Err(damaged(format!(
                        "record {seq} (byte {}) does not match its hash",
                        scanned.offset
                    )));
                }
                s.records += 1;
                s.last_seq = seq;
                s.last_hash = r.hash;
                s.link = r.hash;
            }
            Frame::Checkpoint(c) => s.checkpoints.push(c),
            Frame::Rotation(r) => s.key = r.new_key,
            Frame::End { next_seq } => s.end = Some(next_seq),
            Frame::Header(_) => {
                return Err(damaged(format!(
                    "a second header at byte {}",
                    scanned.offset
                )))
            }
        }
        s.good_len = scanner.offset();
    }
    Ok(())
}

impl AuditStore {
    /// Opens (creating on first use) the log and its signing key.
    pub fn open(paths: &AuditPaths, policy: CheckpointPolicy) -> Result<AuditStore, AuditError> {
        AuditStore::open_with(
            paths,
            StoreOptions {
                checkpoints: policy,
                ..StoreOptions::default()
            },
        )
    }

    /// Opens the log for appending. Refuses a state directory others control, a log it cannot
    /// write, a damaged newest segment, and a log behind or other than its head file says
    /// (unless `options.rewind` accepts it).
    pub fn open_with(paths: &AuditPaths, options: StoreOptions) -> Result<AuditStore, AuditError> {
        dir::ensure_private_dir(&paths.state_dir, "state directory")?;
        let legacy = paths.legacy_db();
        if std::fs::symlink_metadata(&legacy).is_ok() {
            return Err(AuditError::LegacyLog {
                path: legacy,
                audit_dir: paths.audit_dir.clone(),
            });
        }
        dir::ensure_private_dir(&paths.audit_dir, "audit directory")?;
        let (free, read_only) = segment::free_space(&paths.audit_dir)?;
        if read_only {
            return Err(AuditError::Unwritable {
                path: paths.audit_dir.clone(),
                why: "its file system is mounted read-only".into(),
            });
        }
        if free < options.min_free_bytes {
            return Err(AuditError::Unwritable {
                path: paths.audit_dir.clone(),
                why: format!(
                    "only {free} bytes are free, less than the {} the log needs to go on",
                    options.min_free_bytes
                ),
            });
        }
        let lock_file = Arc::new(open_lock(&paths.lock)?);
        let guard = lock(&lock_file, &paths.lock)?;
        let segments = segment::list_segments(&paths.audit_dir)?;
        let head_file = HeadFile::read(&paths.head_file)?;
        let mut report = OpenReport::default();
        let (key, live, scan, log_created_ns) = match segments.last() {
            None => {
                if head_file.is_some() && options.rewind == RewindPolicy::Refuse {
                    return Err(AuditError::Rewound {
                        path: paths.audit_dir.clone(),
                        finding: format!(
                            "the log is gone: {} names log {} but {} holds no segment",
                            paths.head_file.display(),
                            head_file.as_ref().map_or("", |h| h.log_id.as_str()),
                            paths.audit_dir.display()
                        ),
                    });
                }
                let key = keys::load_or_create_signing_key(paths)?;
                let mut log_id = [0u8; LOG_ID_LEN];
                OsRng.fill_bytes(&mut log_id);
                let created = now_ns();
                let header = SegmentHeader {
                    version: SEGMENT_VERSION,
                    log_id,
                    first_seq: 1,
                    prev_hash: chain::genesis_hash(&log_id),
                    log_created_ns: created,
                    created_ns: created,
                    public_key: key.verifying_key().to_bytes(),
                    flags: 0,
                };
                let live = LiveSegment::create(&paths.audit_dir, header, options.inode_flags)?;
                // Under the lock, so no other appender ever sees the log without its head.
                let empty = CheckpointFrame {
                    number: 0,
                    seq: 0,
                    hash: chain::genesis_hash(&log_id),
                    ts_ns: created,
                    key_id: chain::key_id(&key.verifying_key().to_bytes()),
                    signature: [0; 64],
                };
                HeadFile::new(&log_id, &empty, created).write(&paths.head_file)?;
                tracing::info!(dir = %paths.audit_dir.display(), log_id = %hex::encode(log_id), "created audit log");
                report.created = true;
                let scan = scan_segment(&live.path, true)?;
                (key, live, scan, created)
            }
            Some(last) => {
                let key =
                    keys::load_signing_key(paths)?.ok_or_else(|| AuditError::KeyMismatch {
                        path: paths.signing_key.clone(),
                        why: format!(
                            "the signing key of the existing audit log {} is missing; restore it \
                         (or move the log aside to start a new one)",
                            paths.audit_dir.display()
                        ),
                    })?;
                let mut scan = scan_segment(&last.path, true)?;
                let mut live = LiveSegment::open(&last.path, scan.header.clone(), scan.good_len)?;
                if let Some(file_len) = scan.torn_len {
                    live.truncate_to(scan.good_len)
                        .map_err(|e| AuditError::io(&last.path, "removing a torn write", e))?;
                    report.torn_bytes_removed = Some(file_len - scan.good_len);
                    scan.torn_len = None;
                }
                if let Some(next_seq) = scan.end {
                    // Closed, and the crash came before the next segment was made.
                    let header = next_header(&scan, next_seq, now_ns());
                    live = LiveSegment::create(&paths.audit_dir, header, options.inode_flags)?;
                    let first = scan_segment(&live.path, true)?;
                    scan = SegScan {
                        checkpoints: scan.checkpoints,
                        ..first
                    };
                }
                if scan.checkpoints.is_empty() && segments.len() > 1 {
                    // The newest checkpoint closed the segment before this one.
                    let before = &segments[segments.len() - 2];
                    if before.path != live.path {
                        scan.checkpoints = scan_segment(&before.path, false)?.checkpoints;
                    }
                }
                let created = scan.header.log_created_ns;
                (key, live, scan, created)
            }
        };
        let mut key = key;
        if key.verifying_key().to_bytes() != scan.key {
            // A rotation whose frame is in the log but whose key was not installed yet.
            if let Some(next) = keys::read_next_key(paths)? {
                if next.verifying_key().to_bytes() == scan.key {
                    key = keys::promote_next_key(paths)?;
                }
            }
        }
        let public = key.verifying_key().to_bytes();
        if public != scan.key {
            return Err(AuditError::KeyMismatch {
                path: paths.signing_key.clone(),
                why: format!(
                    "this key (id {}) is not the one the log is signed with (id {}); the log \
                     must be handed to a new key by the old one (`secops audit rotate-key`)",
                    hex::encode(chain::key_id(&public)),
                    hex::encode(chain::key_id(&scan.key))
                ),
            });
        }
        let log_id = scan.header.log_id;
        let last_checkpoint = scan.checkpoints.last().copied();
        let head = Head {
            seq: scan.last_seq,
            last_hash: scan.last_hash,
            link: scan.link,
            checkpoint: last_checkpoint,
            sealed_ns: last_checkpoint.map_or(log_created_ns, |c| c.ts_ns),
        };
        let mut store = AuditStore {
            paths: paths.clone(),
            key_id: chain::key_id(&public),
            public,
            key,
            log_id,
            log_created_ns,
            live,
            head,
            buf: Vec::with_capacity(1 << 20),
            new_checkpoints: Vec::new(),
            write_head_inline: true,
            reread_needed: false,
            report: OpenReport::default(),
            options,
            lock: Arc::clone(&lock_file),
        };
        drop(guard);
        let found = FoundTip {
            log_id,
            last_seq: store.head.seq,
            last_checkpoint,
            recent_checkpoints: scan.checkpoints,
        };
        let finding = store.rewind_finding(&found, head_file.as_ref(), report.created)?;
        store.settle_open(finding, report)?;
        Ok(store)
    }

    fn rewind_finding(
        &self,
        found: &FoundTip,
        head_file: Option<&HeadFile>,
        created: bool,
    ) -> Result<Option<Rewind>, AuditError> {
        let path = &self.paths.head_file;
        match head_file {
            None if created => Ok(None),
            None => Ok(Some(Rewind::HeadMissing {
                head_file: path.display().to_string(),
            })),
            Some(h) => {
                let expected = Expected::from_head(path, h)?;
                if created {
                    // A new log where the head file names another: the old one was deleted.
                    return Ok(Some(Rewind::OtherLog {
                        expected,
                        found: hex::encode(found.log_id),
                    }));
                }
                if expected.number == 0 && expected.log_id == hex::encode(found.log_id) {
                    return Ok(None);
                }
                Ok(head::compare(found, &expected))
            }
        }
    }

    /// Writes what opening found into the log (torn write removed, rewind accepted) and
    /// brings the head file up to date.
    fn settle_open(
        &mut self,
        finding: Option<Rewind>,
        mut report: OpenReport,
    ) -> Result<(), AuditError> {
        let mut notes: Vec<NewRecord> = Vec::new();
        if let Some(bytes) = report.torn_bytes_removed {
            notes.push(audit_note(
                RiskLevel::Medium,
                format!(
                    "an incomplete write of {bytes} bytes at the end of {} was removed when the \
                     log was opened: a crash while writing (records in it were never \
                     acknowledged)",
                    self.live.path.display()
                ),
            ));
        }
        match (finding, &self.options.rewind) {
            (None, RewindPolicy::Refuse) => {}
            (Some(f), RewindPolicy::Refuse) => {
                return Err(AuditError::Rewound {
                    path: self.paths.audit_dir.clone(),
                    finding: f.to_string(),
                })
            }
            (None, RewindPolicy::Accept { .. }) => {
                return Err(AuditError::NothingToAccept {
                    path: self.paths.audit_dir.clone(),
                })
            }
            (Some(f), RewindPolicy::Accept { by, reason }) => {
                let text = format!("{f}; accepted by {by}: {reason}");
                tracing::warn!("audit log rewind accepted: {text}");
                notes.push(audit_note(
                    RiskLevel::Critical,
                    format!("{}: {text}", super::witness::at_start::ACCEPTED_PREFIX),
                ));
                report.rewind_accepted = Some(text);
            }
        }
        if !notes.is_empty() {
            self.append_batch(&notes)?;
            self.checkpoint_now()?;
        }
        self.report = report;
        Ok(())
    }

    pub fn paths(&self) -> &AuditPaths {
        &self.paths
    }

    pub fn policy(&self) -> CheckpointPolicy {
        self.options.checkpoints
    }

    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// The random id that binds this log's chain and checkpoints to it.
    pub fn log_id(&self) -> [u8; LOG_ID_LEN] {
        self.log_id
    }

    /// The public key checkpoints are signed with now, and its id.
    pub fn public_key(&self) -> ([u8; 32], [u8; KEY_ID_LEN]) {
        (self.public, self.key_id)
    }

    /// What opening found and recorded.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// Highest seq committed, as of this store's last batch.
    pub fn last_seq(&self) -> u64 {
        self.head.seq
    }

    /// The newest checkpoint, as of this store's last batch.
    pub fn last_checkpoint(&self) -> Option<Checkpoint> {
        self.head.checkpoint
    }

    /// Leaves writing the head file to the caller (the writer does it off its commit path,
    /// with the witnesses), who takes checkpoints with [`AuditStore::take_checkpoints`].
    pub fn defer_head_file(&mut self) {
        self.write_head_inline = false;
    }

    /// Checkpoints made since the last call, oldest first.
    pub fn take_checkpoints(&mut self) -> Vec<Checkpoint> {
        std::mem::take(&mut self.new_checkpoints)
    }

    /// Appends one record; see [`AuditStore::append_batch`].
    pub fn append(&mut self, record: &NewRecord) -> Result<u64, AuditError> {
        let seqs = self.append_batch(std::slice::from_ref(record))?;
        seqs.first()
            .copied()
            .ok_or_else(|| AuditError::CommitFailed {
                path: self.paths.audit_dir.clone(),
                reason: "no sequence number assigned".into(),
            })
    }

    /// Appends records with one write and one sync and returns their sequence numbers. When
    /// this returns `Ok`, the records are durable. Adds a signed checkpoint in the same write
    /// when the policy says one is due.
    pub fn append_batch(&mut self, records: &[NewRecord]) -> Result<Vec<u64>, AuditError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        for r in records {
            chain::validate(r).map_err(|why| AuditError::InvalidRecord { why })?;
        }
        let lock_file = self.lock_handle()?;
        let _guard = lock(&lock_file, &self.paths.lock)?;
        self.catch_up()?;
        if self.live.len >= self.options.segment_bytes {
            self.roll_segment()?;
        }
        let mut head = self.head;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut seqs = Vec::with_capacity(records.len());
        for r in records {
            seqs.push(push_record(&mut buf, &mut head, r));
        }
        let now = now_ns();
        let made = checkpoint_due(&self.options.checkpoints, &head, now)
            .then(|| self.push_checkpoint(&mut buf, &mut head, now));
        let result = self.commit(&buf, head, made);
        self.buf = buf;
        result.map(|()| seqs)
    }

    /// Seals everything appended so far with a signed checkpoint, unless it already is.
    /// Returns the new checkpoint, if one was needed.
    pub fn checkpoint_now(&mut self) -> Result<Option<Checkpoint>, AuditError> {
        let lock_file = self.lock_handle()?;
        let _guard = lock(&lock_file, &self.paths.lock)?;
        self.catch_up()?;
        if self.head.checkpoint.map_or(0, |c| c.seq) >= self.head.seq {
            return Ok(None);
        }
        let mut head = self.head;
        let mut buf = Vec::new();
        let cp = self.push_checkpoint(&mut buf, &mut head, now_ns());
        self.commit(&buf, head, Some(cp))?;
        Ok(Some(cp))
    }

    /// Closes the open segment (checkpoint and end frame) and starts a new one, if the open
    /// one holds any record. Returns the closed segment's path.
    pub fn close_segment(&mut self) -> Result<Option<PathBuf>, AuditError> {
        let lock_file = self.lock_handle()?;
        let _guard = lock(&lock_file, &self.paths.lock)?;
        self.catch_up()?;
        if self.head.seq < self.live.header.first_seq {
            return Ok(None);
        }
        let closed = self.live.path.clone();
        self.roll_segment()?;
        Ok(Some(closed))
    }

    /// Hands the log to a new signing key: everything so far is sealed with the old key, then
    /// a rotation frame signed by the old key names the new one, which signs from then on.
    /// Returns the old and new key ids.
    pub fn rotate_key(&mut self) -> Result<([u8; KEY_ID_LEN], [u8; KEY_ID_LEN]), AuditError> {
        let new = SigningKey::generate(&mut OsRng);
        keys::stage_next_key(&self.paths, &new)?;
        let lock_file = self.lock_handle()?;
        let _guard = lock(&lock_file, &self.paths.lock)?;
        self.catch_up()?;
        let mut head = self.head;
        let mut buf = Vec::new();
        let now = now_ns();
        let made = (head.checkpoint.map_or(0, |c| c.seq) < head.seq)
            .then(|| self.push_checkpoint(&mut buf, &mut head, now));
        let new_public = new.verifying_key().to_bytes();
        let signature = self
            .key
            .sign(&chain::rotation_message(
                &self.log_id,
                head.seq,
                now,
                &self.public,
                &new_public,
            ))
            .to_bytes();
        Frame::Rotation(frame::RotationFrame {
            at_seq: head.seq,
            ts_ns: now,
            old_key: self.public,
            new_key: new_public,
            signature,
        })
        .encode_into(&mut buf);
        self.commit(&buf, head, made)?;
        let old_id = self.key_id;
        self.key = keys::promote_next_key(&self.paths)?;
        self.public = new_public;
        self.key_id = chain::key_id(&new_public);
        tracing::warn!(old = %hex::encode(old_id), new = %hex::encode(self.key_id), "audit signing key rotated");
        Ok((old_id, self.key_id))
    }

    /// How long until unsealed records are due for a checkpoint (zero if overdue), or `None`
    /// if everything is sealed. As of this store's last batch.
    pub fn seal_due_in(&self) -> Option<Duration> {
        if self.unsealed() == 0 {
            return None;
        }
        let age = now_ns().saturating_sub(self.head.sealed_ns).max(0) as u64;
        Some(
            self.options
                .checkpoints
                .every
                .saturating_sub(Duration::from_nanos(age)),
        )
    }

    /// Whether the next segment gets inode flags: if this store was asked to, or the log
    /// already protects its open segment (so another appender rolling the segment, `secops
    /// check` or the retention timer, never drops the protection the daemon put on).
    fn protect_next(&self) -> bool {
        self.options.inode_flags || self.live.header.inode_protected()
    }

    /// Whether the open segment carries inode flags (its header says so only where they were
    /// set).
    pub fn inode_protected(&self) -> bool {
        self.live.header.inode_protected()
    }

    /// Records after the last checkpoint, as of this store's last batch.
    pub fn unsealed(&self) -> u64 {
        self.head
            .seq
            .saturating_sub(self.head.checkpoint.map_or(0, |c| c.seq))
    }

    /// Writes the head file for the newest checkpoint (or the empty log).
    pub fn write_head_file(&self, cp: Option<&Checkpoint>) -> Result<(), AuditError> {
        let cp = cp
            .copied()
            .or(self.head.checkpoint)
            .unwrap_or(CheckpointFrame {
                number: 0,
                seq: 0,
                hash: chain::genesis_hash(&self.log_id),
                ts_ns: self.log_created_ns,
                key_id: self.key_id,
                signature: [0; 64],
            });
        HeadFile::new(&self.log_id, &cp, now_ns()).write(&self.paths.head_file)
    }

    fn lock_handle(&self) -> Result<Arc<File>, AuditError> {
        Ok(Arc::clone(&self.lock))
    }

    fn push_checkpoint(&self, buf: &mut Vec<u8>, head: &mut Head, ts_ns: i64) -> Checkpoint {
        let number = head.checkpoint.map_or(0, |c| c.number) + 1;
        let signature = self
            .key
            .sign(&chain::checkpoint_message(
                &self.log_id,
                number,
                head.seq,
                &head.last_hash,
                ts_ns,
            ))
            .to_bytes();
        let cp = CheckpointFrame {
            number,
            seq: head.seq,
            hash: head.last_hash,
            ts_ns,
            key_id: self.key_id,
            signature,
        };
        Frame::Checkpoint(cp).encode_into(buf);
        head.checkpoint = Some(cp);
        head.sealed_ns = ts_ns;
        cp
    }

    /// Writes `buf` (whole frames leading from `self.head` to `head`) and makes `head` ours.
    fn commit(
        &mut self,
        buf: &[u8],
        head: Head,
        made: Option<Checkpoint>,
    ) -> Result<(), AuditError> {
        match self.live.append(buf) {
            Ok(()) => {}
            Err(AppendFailure::NotWritten(e)) => {
                return Err(AuditError::io(
                    &self.live.path,
                    "appending to the audit log",
                    e,
                ))
            }
            Err(AppendFailure::Unknown(e)) => {
                self.reread_needed = true;
                return Err(AuditError::io(
                    &self.live.path,
                    "appending to the audit log",
                    e,
                ));
            }
        }
        self.head = head;
        if let Some(cp) = made {
            // Also written to the daemon's log: a copy of every checkpoint outside the state
            // directory even with no witness configured.
            tracing::info!(
                checkpoint = cp.number,
                seq = cp.seq,
                hash = %hex::encode(cp.hash),
                key_id = %hex::encode(cp.key_id),
                signature = %hex::encode(cp.signature),
                "audit checkpoint"
            );
            self.new_checkpoints.push(cp);
            if self.write_head_inline {
                if let Err(e) = self.write_head_file(Some(&cp)) {
                    tracing::error!("audit head file not updated: {e}");
                }
            }
        }
        Ok(())
    }

    /// Under the lock: reads what other appenders wrote since this store's last batch (and
    /// what a failed write may have left), so the next record links to the true end.
    fn catch_up(&mut self) -> Result<(), AuditError> {
        let len = self
            .live
            .current_len()
            .map_err(|e| AuditError::io(&self.live.path, "inspecting the open segment", e))?;
        if len == self.live.len && !self.reread_needed {
            return Ok(());
        }
        if len < self.live.len {
            return Err(AuditError::Damaged {
                path: self.live.path.clone(),
                why: format!(
                    "the open segment shrank from {} to {len} bytes while this appender had it open",
                    self.live.len
                ),
            });
        }
        loop {
            let mut s = SegScan {
                header: self.live.header.clone(),
                records: 0,
                last_seq: self.head.seq,
                last_hash: self.head.last_hash,
                link: self.head.link,
                checkpoints: Vec::new(),
                key: self.public,
                end: None,
                good_len: self.live.len,
                torn_len: None,
            };
            let mut scanner = FrameScanner::open_at(&self.live.path, self.live.len)?;
            continue_scan(&mut s, &mut scanner, false, &self.live.path)?;
            if s.torn_len.is_some() {
                self.live
                    .truncate_to(s.good_len)
                    .map_err(|e| AuditError::io(&self.live.path, "removing a torn write", e))?;
            }
            self.live.len = s.good_len;
            self.head.seq = s.last_seq;
            self.head.last_hash = s.last_hash;
            self.head.link = s.link;
            if let Some(cp) = s.checkpoints.last() {
                self.head.checkpoint = Some(*cp);
                self.head.sealed_ns = cp.ts_ns;
            }
            if s.key != self.public {
                return Err(AuditError::KeyMismatch {
                    path: self.paths.signing_key.clone(),
                    why: "another process handed the log to a new key; open it again".into(),
                });
            }
            let Some(next_seq) = s.end else { break };
            let path = self
                .paths
                .audit_dir
                .join(segment::segment_file_name(next_seq));
            let next = match scan_segment(&path, false) {
                Ok(n) => n,
                Err(AuditError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    // The other appender closed the segment and died before the next.
                    let header = next_header(&s, next_seq, now_ns());
                    let protect = self.protect_next();
                    self.live = LiveSegment::create(&self.paths.audit_dir, header, protect)?;
                    self.head.link = self.live.header.link_hash();
                    break;
                }
                Err(e) => return Err(e),
            };
            // Read on in the next segment from its first record.
            self.live = LiveSegment::open(&path, next.header.clone(), next.header_len())?;
            self.head.link = self.live.header.link_hash();
        }
        self.reread_needed = false;
        Ok(())
    }

    /// Under the lock: closes the open segment with a checkpoint and an end frame, and starts
    /// the next one.
    fn roll_segment(&mut self) -> Result<(), AuditError> {
        let mut head = self.head;
        let mut buf = Vec::new();
        let made = (head.checkpoint.map_or(0, |c| c.seq) < head.seq)
            .then(|| self.push_checkpoint(&mut buf, &mut head, now_ns()));
        Frame::End {
            next_seq: head.seq + 1,
        }
        .encode_into(&mut buf);
        self.commit(&buf, head, made)?;
        let header = SegmentHeader {
            version: SEGMENT_VERSION,
            log_id: self.log_id,
            first_seq: self.head.seq + 1,
            prev_hash: self.head.last_hash,
            log_created_ns: self.log_created_ns,
            created_ns: now_ns(),
            public_key: self.public,
            flags: 0,
        };
        let next = LiveSegment::create(&self.paths.audit_dir, header, self.protect_next())?;
        let closed = std::mem::replace(&mut self.live, next);
        closed.close()?;
        self.head.link = self.live.header.link_hash();
        Ok(())
    }
}

impl SegScan {
    /// Bytes of magic and header: where records start.
    fn header_len(&self) -> u64 {
        (frame::MAGIC.len() + Frame::Header(self.header.clone()).to_bytes().len()) as u64
    }
}

fn next_header(prev: &SegScan, next_seq: u64, now: i64) -> SegmentHeader {
    SegmentHeader {
        version: SEGMENT_VERSION,
        log_id: prev.header.log_id,
        first_seq: next_seq,
        prev_hash: prev.last_hash,
        log_created_ns: prev.header.log_created_ns,
        created_ns: now,
        public_key: prev.key,
        flags: 0,
    }
}

fn open_lock(path: &Path) -> Result<File, AuditError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| AuditError::io(path, "opening the audit lock file", e))
}

/// Encodes one record frame in place: links, canonical encoding, hashes.
fn push_record(buf: &mut Vec<u8>, head: &mut Head, r: &NewRecord) -> u64 {
    let seq = head.seq + 1;
    let start = frame::begin_frame(buf, frame::RECORD_KIND);
    buf.extend_from_slice(&head.link);
    let hash_at = buf.len();
    buf.extend_from_slice(&[0u8; 32]);
    let encoding_at = buf.len();
    chain::encode_record_into(seq, r, buf);
    let hash = chain::link_hash(&head.link, seq, &chain::content_hash(&buf[encoding_at..]));
    buf[hash_at..hash_at + 32].copy_from_slice(&hash);
    frame::end_frame(buf, start);
    head.seq = seq;
    head.last_hash = hash;
    head.link = hash;
    seq
}

fn checkpoint_due(policy: &CheckpointPolicy, head: &Head, now: i64) -> bool {
    let pending = head
        .seq
        .saturating_sub(head.checkpoint.map_or(0, |c| c.seq));
    if pending == 0 {
        return false;
    }
    let age = now.saturating_sub(head.sealed_ns).max(0) as u64;
    pending >= policy.every_records.max(1) || Duration::from_nanos(age) >= policy.every
}

/// A record the log writes about itself (`sys:audit`).
pub fn audit_note(risk: RiskLevel, reason: String) -> NewRecord {
    NewRecord {
        rule_id: Some("audit.log".into()),
        uid: Some(dir::euid()),
        pid: Some(std::process::id()),
        ..NewRecord::new(
            now_ns(),
            CoreAction::SysAudit.as_str(),
            Verdict::Allow,
            risk,
            reason,
            Source::Api,
        )
    }
}

/// A record frame decoded for readers.
pub(crate) fn decode_record_frame(
    r: &RecordFrame,
    path: &Path,
) -> Result<super::record::Record, AuditError> {
    let (seq, body) = chain::decode_record(&r.encoding).map_err(|why| AuditError::Corrupt {
        path: path.to_owned(),
        seq: chain::encoded_seq(&r.encoding).map_or(-1, |s| s as i64),
        why,
    })?;
    Ok(super::record::Record {
        seq,
        body,
        prev_hash: r.prev,
        hash: r.hash,
    })
}
