//! `secops audit verify`: walk every segment's chain, check every checkpoint and key rotation
//! signature, hold the log to its head file and to its witnesses, and name the first record
//! that was altered, deleted, inserted or reordered ([`super::classify`]), and what the
//! witnesses saw that the log no longer holds.
//!
//! From the file alone a verifier cannot see the newest records removed together with their
//! checkpoints, or the whole log replaced by an older copy or by a log re-signed with a new
//! key: that is what the head file (same host), the witnesses (elsewhere) and a pinned public
//! key are for. A log checked without any of them says so.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, VerifyingKey};

use super::chain::{self, Hash};
use super::classify::{Row, Rows};
use super::error::AuditError;
use super::frame::{CheckpointFrame, Frame, RecordFrame, SegmentHeader};
use super::head::HeadFile;
use super::keys;
use super::paths::AuditPaths;
pub use super::problem::{CheckpointFault, Problem};
use super::retention::ARCHIVE_RULE;
use super::segment::{self, FrameScanner, ScanError, SegmentRef};
use super::witness::WitnessedCheckpoint;

/// What to hold the log to besides itself.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Only this key (or keys it handed the log to) may have signed it.
    pub pinned_key: Option<[u8; 32]>,
    /// What witnesses hold, by witness name.
    pub witnesses: Vec<(String, Vec<WitnessedCheckpoint>)>,
    /// Directories holding archived (rotated-out) segments.
    pub archives: Vec<PathBuf>,
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub dir: PathBuf,
    pub log_id: String,
    pub segments: u64,
    pub records: u64,
    /// The first seq checked (above 1 when older segments were archived and not given).
    pub first_seq: u64,
    /// Highest seq present (0 if the log is empty).
    pub last_seq: u64,
    pub checkpoints: u64,
    pub last_checkpoint_seq: Option<u64>,
    /// Records after the last checkpoint: verified by the chain, not yet by a signature.
    pub unsealed: u64,
    /// Ids of the keys that signed, oldest first.
    pub key_ids: Vec<String>,
    pub key_pinned: bool,
    /// Witnessed checkpoints compared, per witness.
    pub witnessed: Vec<(String, u64)>,
    /// Things worth knowing that are not problems.
    pub notes: Vec<String>,
    /// Everything wrong, the chain's first break first.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The first problem, if any.
    pub fn problem(&self) -> Option<&Problem> {
        self.problems.first()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "audit log: {}", self.dir.display())?;
        writeln!(f, "log id: {}", self.log_id)?;
        writeln!(
            f,
            "records: {} in {} segment(s) (seq {}..={})",
            self.records, self.segments, self.first_seq, self.last_seq
        )?;
        match self.last_checkpoint_seq {
            Some(s) => writeln!(
                f,
                "checkpoints: {} (last covers record {s})",
                self.checkpoints
            )?,
            None => writeln!(f, "checkpoints: 0")?,
        }
        writeln!(
            f,
            "unsealed tail: {} record(s) after the last checkpoint",
            self.unsealed
        )?;
        writeln!(
            f,
            "signed by key(s): {}{}",
            self.key_ids.join(" -> "),
            if self.key_pinned { " (pinned)" } else { "" }
        )?;
        for (w, n) in &self.witnessed {
            writeln!(f, "witness {w}: {n} checkpoint(s) of this log compared")?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        if self.problems.is_empty() {
            return write!(
                f,
                "result: OK, every record verifies against the chain and every checkpoint signature holds"
            );
        }
        for p in &self.problems {
            writeln!(f, "problem: {p}")?;
        }
        write!(f, "result: PROBLEM ({} found)", self.problems.len())
    }
}

/// Verifies the log under `paths` read-only, with its head file and nothing else.
pub fn verify(paths: &AuditPaths) -> Result<VerifyReport, AuditError> {
    verify_with(paths, &VerifyOptions::default())
}

/// Everything the walk learns that the witness comparison needs afterwards.
#[derive(Default)]
struct Seen {
    /// Checkpoints as found in the files, by number (sound or not).
    checkpoints: BTreeMap<u64, (CheckpointFrame, [u8; 32])>,
    /// Hashes of the records witnesses name, by seq.
    wanted_hashes: HashMap<u64, Hash>,
    /// What the log's `audit.archive` records say was archived.
    archive_objects: Vec<String>,
}

/// Verifies the log under `paths` (and archives) read-only, using only public keys.
pub fn verify_with(
    paths: &AuditPaths,
    options: &VerifyOptions,
) -> Result<VerifyReport, AuditError> {
    let mut segments: Vec<SegmentRef> = Vec::new();
    for dir in &options.archives {
        segments.extend(segment::list_segments(dir)?);
    }
    let live = match segment::list_segments(&paths.audit_dir) {
        Ok(l) => l,
        Err(AuditError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            if paths.legacy_db().exists() {
                return Err(AuditError::LegacyLog {
                    path: paths.legacy_db(),
                    audit_dir: paths.audit_dir.clone(),
                });
            }
            return Err(AuditError::Missing {
                path: paths.audit_dir.clone(),
            });
        }
        Err(e) => return Err(e),
    };
    let live_last = live.last().map(|s| s.path.clone());
    segments.extend(live);
    segments.sort_by_key(|s| s.first_seq);
    segments.dedup_by_key(|s| s.first_seq);
    let first = segments.first().ok_or_else(|| AuditError::Missing {
        path: paths.audit_dir.clone(),
    })?;
    let first_header = match segment::read_header(&first.path) {
        Ok((h, _)) => h,
        Err(e @ (AuditError::NotAnAuditLog { .. } | AuditError::Damaged { .. })) => {
            return Ok(VerifyReport {
                dir: paths.audit_dir.clone(),
                log_id: String::new(),
                segments: segments.len() as u64,
                records: 0,
                first_seq: first.first_seq,
                last_seq: 0,
                checkpoints: 0,
                last_checkpoint_seq: None,
                unsealed: 0,
                key_ids: Vec::new(),
                key_pinned: options.pinned_key.is_some(),
                witnessed: Vec::new(),
                notes: Vec::new(),
                problems: vec![Problem::BadSegment {
                    path: first.path.clone(),
                    why: e.to_string(),
                }],
            })
        }
        Err(e) => return Err(e),
    };

    let mut witnessed_seqs: HashSet<u64> = HashSet::new();
    for (_, w) in &options.witnesses {
        witnessed_seqs.extend(w.iter().map(|c| c.seq));
    }
    let head_file = HeadFile::read(&paths.head_file).ok().flatten();
    if let Some(h) = &head_file {
        witnessed_seqs.insert(h.checkpoint_seq);
    }

    let mut walk = Walk {
        log_id: first_header.log_id,
        pinned: options.pinned_key,
        expected: first_header.first_seq,
        last_hash: first_header.prev_hash,
        key: first_header.public_key,
        key_ids: vec![hex::encode(chain::key_id(&first_header.public_key))],
        trusted_key: options
            .pinned_key
            .is_none_or(|p| p == first_header.public_key),
        next_number: None,
        sealed_upto: first_header.first_seq.saturating_sub(1),
        last_good_number: 0,
        records: 0,
        checkpoints: 0,
        broken: false,
        problems: Vec::new(),
        seen: Seen::default(),
        witnessed_seqs,
        ahead: Vec::new(),
    };
    let mut notes = Vec::new();
    if first_header.first_seq > 1 {
        notes.push(format!(
            "records 1..={} are in archived segments not given here (`--archive DIR` checks them too)",
            first_header.first_seq - 1
        ));
    } else if first_header.prev_hash != chain::genesis_hash(&first_header.log_id) {
        walk.problems.push(Problem::BadSegment {
            path: first.path.clone(),
            why: "the first segment does not start at the log's genesis".into(),
        });
    }
    for (i, seg) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        walk.segment(seg, is_last, &mut notes)?;
        check_protection(
            seg,
            is_last && Some(&seg.path) == live_last.as_ref(),
            &mut walk.problems,
        );
    }
    if !walk.broken {
        if let Some(c) = walk.ahead.first().copied() {
            walk.ahead.clear();
            walk.fail(Problem::BadCheckpoint {
                number: c.number,
                seq: c.seq,
                from: walk.sealed_upto + 1,
                why: CheckpointFault::NotIncreasing {
                    previous_seq: walk.sealed_upto,
                },
            });
        }
    }
    let last_seq = walk.expected - 1;
    if first_header.first_seq > 1 {
        // Every record before the first segment given must be one the log said it archived.
        let mut ranges = super::retention::archived_ranges(&walk.seen.archive_objects);
        ranges.sort_unstable();
        let mut covered = 0u64;
        for (a, b) in ranges {
            if a <= covered + 1 {
                covered = covered.max(b);
            }
        }
        if covered + 1 < first_header.first_seq {
            walk.problems.push(Problem::NotArchived {
                from: covered + 1,
                to: first_header.first_seq - 1,
            });
        }
    }

    // The public key file, if there is one, must be the key in force.
    if let Ok(public) = keys::load_verifying_key(paths) {
        if public.to_bytes() != walk.key {
            walk.problems.push(Problem::KeyFileDiffers {
                path: paths.public_key.clone(),
            });
        }
    }
    if options.pinned_key.is_none() {
        notes.push(
            "the key was not pinned: it was taken from the log itself, so a log re-signed with a \
             new key would pass (`--public-key FILE` or `--witness` rule that out)"
                .into(),
        );
    }

    let log_hex = hex::encode(walk.log_id);
    let mut witnessed = Vec::new();
    if let Some(h) = &head_file {
        if h.checkpoint_number > 0 {
            if let Ok(hash) = hex::decode(&h.checkpoint_hash) {
                let as_witness = WitnessedCheckpoint {
                    secops_checkpoint: 1,
                    log_id: h.log_id.clone(),
                    number: h.checkpoint_number,
                    seq: h.checkpoint_seq,
                    hash: hex::encode(hash),
                    ts_ns: 0,
                    key_id: h.key_id.clone(),
                    public_key: String::new(),
                    signature: String::new(),
                    host: None,
                };
                compare_witness(
                    &format!("the head file {}", paths.head_file.display()),
                    &[as_witness],
                    &log_hex,
                    last_seq,
                    &walk.seen,
                    false,
                    &mut walk.problems,
                );
            }
        }
    } else {
        notes.push(format!(
            "there is no head file {}: nothing on this host says where the log ended",
            paths.head_file.display()
        ));
    }
    for (name, checkpoints) in &options.witnesses {
        let n = compare_witness(
            name,
            checkpoints,
            &log_hex,
            last_seq,
            &walk.seen,
            true,
            &mut walk.problems,
        );
        witnessed.push((name.clone(), n));
    }
    let last_checkpoint_seq = (walk.checkpoints > 0).then_some(walk.sealed_upto);
    let report = VerifyReport {
        dir: paths.audit_dir.clone(),
        log_id: log_hex,
        segments: segments.len() as u64,
        records: walk.records,
        first_seq: first_header.first_seq,
        last_seq,
        checkpoints: walk.checkpoints,
        last_checkpoint_seq,
        unsealed: last_seq.saturating_sub(walk.sealed_upto),
        key_ids: walk.key_ids,
        key_pinned: options.pinned_key.is_some(),
        witnessed,
        notes,
        problems: walk.problems,
    };
    for p in &report.problems {
        tracing::warn!(dir = %paths.audit_dir.display(), problem = %p, "audit log verification failed");
    }
    Ok(report)
}

struct Walk {
    log_id: [u8; 16],
    pinned: Option<[u8; 32]>,
    /// The seq the next record must have.
    expected: u64,
    /// Hash of record `expected - 1`.
    last_hash: Hash,
    /// The key in force.
    key: [u8; 32],
    key_ids: Vec<String>,
    /// Whether the key in force is the pinned one or one it handed the log to.
    trusted_key: bool,
    next_number: Option<u64>,
    sealed_upto: u64,
    last_good_number: u64,
    records: u64,
    checkpoints: u64,
    /// The chain broke: later records and checkpoints are not judged any more.
    broken: bool,
    problems: Vec<Problem>,
    seen: Seen,
    witnessed_seqs: HashSet<u64>,
    /// Checkpoints found before the record they cover: judged when (if) it comes, so a gap
    /// before them is named as the deletion it is.
    ahead: Vec<CheckpointFrame>,
}

impl Walk {
    fn segment(
        &mut self,
        seg: &SegmentRef,
        is_last: bool,
        notes: &mut Vec<String>,
    ) -> Result<(), AuditError> {
        let bad = |why: String| Problem::BadSegment {
            path: seg.path.clone(),
            why,
        };
        let mut scanner = match FrameScanner::open(&seg.path) {
            Ok(s) => s,
            Err(e @ AuditError::NotAnAuditLog { .. }) => {
                self.fail(bad(e.to_string()));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let header: SegmentHeader = match scanner.next_frame() {
            Ok(Some(segment::Scanned {
                frame: Ok(Frame::Header(h)),
                ..
            })) => h,
            _ => {
                self.fail(bad("it does not start with a segment header".into()));
                return Ok(());
            }
        };
        if !self.broken {
            if header.version != super::frame::SEGMENT_VERSION {
                self.fail(bad(format!(
                    "its format version is {}; this secops reads version {}",
                    header.version,
                    super::frame::SEGMENT_VERSION
                )));
            } else if header.log_id != self.log_id {
                self.fail(bad(format!(
                    "it belongs to another log ({})",
                    hex::encode(header.log_id)
                )));
            } else if header.first_seq > self.expected {
                self.fail(Problem::Deleted {
                    from: self.expected,
                    to: header.first_seq - 1,
                });
            } else if header.first_seq < self.expected {
                self.fail(bad(format!(
                    "it starts at record {}, which an earlier segment already holds",
                    header.first_seq
                )));
            } else if header.prev_hash != self.last_hash {
                self.fail(bad(format!(
                    "it does not continue from record {} (its header links elsewhere)",
                    self.expected - 1
                )));
            } else if header.public_key != self.key {
                self.fail(bad(format!(
                    "its header names key {} without a signed rotation from key {}",
                    hex::encode(chain::key_id(&header.public_key)),
                    hex::encode(chain::key_id(&self.key))
                )));
            }
        }
        let mut link = header.link_hash();
        let mut rows: Vec<RecordFrame> = Vec::new();
        let mut segment_checkpoints: Vec<CheckpointFrame> = Vec::new();
        let mut ended = false;
        let mut break_at: Option<(usize, u64, Hash)> = None;
        loop {
            let scanned = match scanner.next_frame() {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(ScanError::Torn { offset, file_len }) => {
                    if is_last {
                        notes.push(format!(
                            "{}: an incomplete write of {} bytes at its end (a crash while \
                             writing: it was never acknowledged, and the next appender removes it)",
                            seg.path.display(),
                            file_len - offset
                        ));
                    } else {
                        self.fail(bad(format!("cut off inside the frame at byte {offset}")));
                    }
                    break;
                }
                Err(ScanError::BadLength { offset, len }) => {
                    self.fail(bad(format!(
                        "the frame at byte {offset} claims {len} bytes: the file was damaged there"
                    )));
                    break;
                }
                Err(ScanError::Io(e)) => return Err(e),
            };
            let frame = match scanned.frame {
                Ok(f) => f,
                Err(why) => {
                    self.fail(bad(format!("the frame at byte {}: {why}", scanned.offset)));
                    continue;
                }
            };
            if ended {
                self.fail(bad(format!(
                    "a frame at byte {} follows its end frame",
                    scanned.offset
                )));
            }
            match frame {
                Frame::Record(r) => {
                    let e = self.expected;
                    if !self.broken {
                        let intact = chain::encoded_seq(&r.encoding) == Some(e)
                            && r.prev == link
                            && chain::link_hash(&r.prev, e, &chain::content_hash(&r.encoding))
                                == r.hash;
                        if intact {
                            self.records += 1;
                            self.expected += 1;
                            self.last_hash = r.hash;
                            link = r.hash;
                            if self.witnessed_seqs.contains(&e) {
                                self.seen.wanted_hashes.insert(e, r.hash);
                            }
                            if memchr::memmem::find(&r.encoding, ARCHIVE_RULE.as_bytes()).is_some()
                            {
                                if let Ok((_, b)) = chain::decode_record(&r.encoding) {
                                    if b.rule_id.as_deref() == Some(ARCHIVE_RULE) {
                                        if let Some(o) = b.object {
                                            self.seen.archive_objects.push(o.value);
                                        }
                                    }
                                }
                            }
                            let due: Vec<CheckpointFrame> =
                                self.ahead.iter().filter(|c| c.seq <= e).copied().collect();
                            self.ahead.retain(|c| c.seq > e);
                            for c in due {
                                self.checkpoint(&c);
                            }
                        } else {
                            break_at = Some((rows.len(), e, link));
                            self.broken = true;
                        }
                    }
                    rows.push(r);
                }
                Frame::Checkpoint(c) => {
                    self.seen
                        .checkpoints
                        .entry(c.number)
                        .or_insert((c, self.key));
                    segment_checkpoints.push(c);
                    if !self.broken {
                        self.checkpoint(&c);
                    }
                }
                Frame::Rotation(r) => {
                    if !self.broken {
                        self.rotation(&r);
                    }
                }
                Frame::End { next_seq } => {
                    ended = true;
                    if !self.broken && next_seq != self.expected {
                        self.fail(bad(format!(
                            "its end frame names record {next_seq} as next, but it ends at record {}",
                            self.expected - 1
                        )));
                    }
                }
                Frame::Header(_) => {
                    self.fail(bad(format!("a second header at byte {}", scanned.offset)))
                }
            }
        }
        if let Some((i, e, pred)) = break_at {
            let rows: Vec<Row> = rows.iter().map(Row::new).collect();
            let classified = Rows::new(
                rows,
                header.link_hash(),
                &segment_checkpoints,
                self.sealed_upto,
            )
            .classify(i, e, pred);
            self.problems.insert(0, classified);
        } else if !ended && !is_last && !self.broken {
            self.fail(bad(format!(
                "it ends at record {} without its end frame: its tail was cut off",
                self.expected - 1
            )));
        }
        Ok(())
    }

    fn fail(&mut self, p: Problem) {
        self.broken = true;
        self.problems.push(p);
    }

    fn checkpoint(&mut self, c: &CheckpointFrame) {
        if c.seq >= self.expected && self.ahead.len() < 1024 {
            self.ahead.push(*c);
            return;
        }
        self.checkpoints += 1;
        let msg = chain::checkpoint_message(&self.log_id, c.number, c.seq, &c.hash, c.ts_ns);
        let signed = VerifyingKey::from_bytes(&self.key).is_ok_and(|k| {
            k.verify_strict(&msg, &Signature::from_bytes(&c.signature))
                .is_ok()
        });
        let expected_number = self.next_number.unwrap_or(c.number);
        let fault = if !signed {
            Some(CheckpointFault::BadSignature)
        } else if c.number != expected_number {
            Some(CheckpointFault::Missing {
                previous: expected_number - 1,
            })
        } else if c.seq != self.expected - 1 || c.seq < self.sealed_upto {
            Some(CheckpointFault::NotIncreasing {
                previous_seq: self.sealed_upto,
            })
        } else if c.hash != self.last_hash {
            Some(CheckpointFault::HashMismatch)
        } else {
            None
        };
        if let Some(why) = fault {
            let from = self.sealed_upto + 1;
            self.fail(Problem::BadCheckpoint {
                number: c.number,
                seq: c.seq,
                from,
                why,
            });
            return;
        }
        if !self.trusted_key {
            if let Some(pinned) = self.pinned {
                self.fail(Problem::WrongKey {
                    key_id: hex::encode(chain::key_id(&self.key)),
                    pinned_id: hex::encode(chain::key_id(&pinned)),
                    first_number: c.number,
                });
                return;
            }
        }
        self.next_number = Some(c.number + 1);
        self.sealed_upto = c.seq;
        self.last_good_number = c.number;
    }

    fn rotation(&mut self, r: &super::frame::RotationFrame) {
        let at_seq = self.expected - 1;
        let msg = chain::rotation_message(&self.log_id, r.at_seq, r.ts_ns, &r.old_key, &r.new_key);
        let why = if r.old_key != self.key {
            Some("it is not signed by the key in force".to_owned())
        } else if r.at_seq != at_seq {
            Some(format!("it names record {}, not {at_seq}", r.at_seq))
        } else if !VerifyingKey::from_bytes(&r.old_key).is_ok_and(|k| {
            k.verify_strict(&msg, &Signature::from_bytes(&r.signature))
                .is_ok()
        }) {
            Some("its signature does not verify".to_owned())
        } else if VerifyingKey::from_bytes(&r.new_key).is_err() {
            Some("the new key is not an Ed25519 key".to_owned())
        } else {
            None
        };
        if let Some(why) = why {
            self.fail(Problem::BadRotation { at_seq, why });
            return;
        }
        self.key = r.new_key;
        self.key_ids.push(hex::encode(chain::key_id(&r.new_key)));
        if self.pinned == Some(r.new_key) {
            self.trusted_key = true;
        }
    }
}

/// Compares what one witness saw with the log. Returns how many of its checkpoints are of
/// this log.
fn compare_witness(
    name: &str,
    witnessed: &[WitnessedCheckpoint],
    log_hex: &str,
    last_seq: u64,
    seen: &Seen,
    signed: bool,
    problems: &mut Vec<Problem>,
) -> u64 {
    let mut ours: Vec<&WitnessedCheckpoint> =
        witnessed.iter().filter(|w| w.log_id == log_hex).collect();
    if ours.is_empty() {
        let mut others: Vec<String> = witnessed.iter().map(|w| w.log_id.clone()).collect();
        others.sort();
        others.dedup();
        if !others.is_empty() {
            problems.push(Problem::WitnessKnowsOtherLog {
                witness: name.to_owned(),
                logs: others,
            });
        }
        return 0;
    }
    ours.sort_by_key(|w| w.number);
    ours.dedup_by_key(|w| w.number);
    let mut behind: Vec<&WitnessedCheckpoint> = Vec::new();
    let mut gone: Vec<u64> = Vec::new();
    let (mut differs, mut key_differs) = (false, false);
    for w in &ours {
        if signed && !w.signature_holds() {
            problems.push(Problem::WitnessDiffers {
                witness: name.to_owned(),
                number: w.number,
                seq: w.seq,
                why: "the witness's copy has no valid signature (the witness itself was tampered with)"
                    .into(),
            });
            continue;
        }
        let hash = w.hash_bytes().unwrap_or_default();
        match seen.checkpoints.get(&w.number) {
            Some((c, key)) => {
                // The first of each: a rewritten or re-signed chain differs everywhere after.
                let log_key = hex::encode(chain::key_id(key));
                if signed && log_key != w.key_id && !key_differs {
                    key_differs = true;
                    problems.push(Problem::WitnessKeyDiffers {
                        witness: name.to_owned(),
                        number: w.number,
                        witnessed_key: w.key_id.clone(),
                        log_key,
                    });
                }
                if (c.seq != w.seq || c.hash != hash) && !differs {
                    differs = true;
                    problems.push(Problem::WitnessDiffers {
                        witness: name.to_owned(),
                        number: w.number,
                        seq: w.seq,
                        why: format!(
                            "the log's checkpoint {} covers record {} with hash {}",
                            c.number,
                            c.seq,
                            hex::encode(c.hash)
                        ),
                    });
                }
            }
            None if w.seq > last_seq => behind.push(w),
            None => match seen.wanted_hashes.get(&w.seq) {
                Some(h) if *h == hash => gone.push(w.number),
                Some(h) => {
                    if !differs {
                        differs = true;
                        problems.push(Problem::WitnessDiffers {
                            witness: name.to_owned(),
                            number: w.number,
                            seq: w.seq,
                            why: format!("the log's record {} has hash {}", w.seq, hex::encode(h)),
                        });
                    }
                }
                // The record is there but was not verified (after a break in the chain).
                None => gone.push(w.number),
            },
        }
    }
    if let Some(last) = behind.iter().max_by_key(|w| w.number) {
        problems.push(Problem::BehindWitness {
            witness: name.to_owned(),
            last_present: last_seq,
            witnessed_number: last.number,
            witnessed_seq: last.seq,
            missing_checkpoints: behind.len() as u64,
        });
    }
    if !gone.is_empty() {
        problems.push(Problem::WitnessedCheckpointsGone {
            witness: name.to_owned(),
            numbers: gone,
        });
    }
    ours.len() as u64
}

/// A segment whose header says it is protected must still carry its inode flag.
fn check_protection(seg: &SegmentRef, is_open: bool, problems: &mut Vec<Problem>) {
    let Ok((header, _)) = segment::read_header(&seg.path) else {
        return;
    };
    if !header.inode_protected() {
        return;
    }
    let Ok(flags) = segment::inode_flags(&seg.path) else {
        return;
    };
    use rustix::fs::IFlags;
    let ok = if is_open {
        flags.intersects(IFlags::APPEND | IFlags::IMMUTABLE)
    } else {
        flags.contains(IFlags::IMMUTABLE)
    };
    if !ok {
        problems.push(Problem::ProtectionRemoved {
            path: seg.path.clone(),
            expected: if is_open { "append-only" } else { "immutable" },
        });
    }
}

/// Reads a pinned public key: a file with the key as hex (like `keys/audit-signing.pub`).
pub fn read_pinned_key(path: &Path) -> Result<[u8; 32], AuditError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AuditError::io(path, "reading the pinned public key", e))?;
    Ok(keys::parse_public_key(path, text.trim())?.to_bytes())
}
