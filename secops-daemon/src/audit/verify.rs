//! `secops audit verify`: walk the chain, check every checkpoint signature, and name the first
//! record that was altered, deleted, inserted or reordered.
//!
//! The walk stops at the first row that does not verify; everything before it is known good
//! (contiguous seqs from 1, every row's hash matches its contents, every row links to the one
//! before, every checkpoint up to there matches and is signed). The row where it stopped is
//! then classified by looking at how the rows around it link to each other, which tells the
//! naive SQL edits apart:
//!
//! - `UPDATE` of a column: the row's contents no longer match its hash, but it still links to
//!   its predecessor and its successor links to it → altered.
//! - `UPDATE` plus a recomputed hash for that row only: the row verifies, but its successor
//!   links to a hash that no longer exists → the predecessor of the first broken link was
//!   altered.
//! - `DELETE` without renumbering: a seq gap → deleted (exact range).
//! - `DELETE` and renumbering the rest: the next row links to a hash that no longer exists,
//!   and its contents verify only under a larger seq → deleted (exact range).
//! - `INSERT` with later rows renumbered: a later row links straight to the row before the
//!   foreign one(s) → inserted.
//! - swapping or moving rows: a row links to another record that still exists, and its
//!   contents verify under a different seq → reordered. Swapping only the content columns is
//!   recognised by the contents matching the other row's hash.
//! - deleting the newest rows: a signed checkpoint names a seq that no longer exists →
//!   truncated.
//! - rewriting a record and recomputing every hash after it: the chain is consistent again, but
//!   the next signed checkpoint does not match → bad checkpoint, with the range between the
//!   last good checkpoint and that one (the exact record cannot be known without the key).
//! - a break after the last checkpoint that never recovers: a torn or forged tail.
//!
//! What no verifier can detect from the file alone: the newest unsealed records being removed,
//! or the newest records removed together with their checkpoints. The daemon logs every
//! checkpoint (seq, hash, signature) through `tracing` so that an outside copy exists.

use std::fmt;
use std::path::PathBuf;

use ed25519_dalek::{Signature, VerifyingKey};
use rusqlite::{Connection, OptionalExtension};

use super::chain::{self, Hash};
use super::error::AuditError;
use super::keys;
use super::store::{self, sql_err, AuditPaths, RawCheckpoint, RawRow, RECORD_COLUMNS, TRIGGERS};

/// How far around a displaced row to look for the seq its contents really belong to.
const SEQ_SEARCH_WINDOW: u64 = 4096;
/// How many renumbered-away records to consider when explaining a deletion.
const MAX_SHIFT: u64 = 1 << 16;

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub db: PathBuf,
    pub log_id: String,
    pub records: u64,
    /// Highest seq present (0 if the log is empty).
    pub last_seq: u64,
    pub checkpoints: u64,
    pub last_checkpoint_seq: Option<u64>,
    /// Records after the last checkpoint: verified by the chain, not yet by a signature.
    pub unsealed: u64,
    /// Append-only triggers that are gone (someone dropped them; expect tampering).
    pub missing_triggers: Vec<String>,
    /// The first problem found, if any.
    pub problem: Option<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// The first thing wrong with the log, at the exact record where it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The record's contents no longer match its hash (its links are fine).
    Altered { seq: u64 },
    /// Records `from..=to` are gone (a gap, or the later ones were renumbered).
    Deleted { from: u64, to: u64 },
    /// A foreign record sits at `seq`: the genuine record after it links past it.
    Inserted { seq: u64 },
    /// The record at `seq` belongs elsewhere in the chain.
    Reordered { seq: u64 },
    /// A signed checkpoint covers `checkpoint_seq`, but the log ends at `last_present`.
    Truncated {
        last_present: u64,
        checkpoint_seq: u64,
    },
    /// The chain breaks at `from` after the last checkpoint and never recovers up to `to`:
    /// a crash while writing, or a forged tail.
    TornTail { from: u64, to: u64 },
    /// Checkpoint `id` (covering `seq`) does not hold; records `from..=seq` cannot be trusted.
    BadCheckpoint {
        id: u64,
        seq: u64,
        from: u64,
        why: CheckpointFault,
    },
    /// A record with a seq below 1, which the log never writes.
    BadSeq { found: i64 },
}

/// Why a checkpoint does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointFault {
    /// The signature does not verify with the log's public key.
    BadSignature,
    /// The record at the checkpoint's seq has a different hash: the chain was recomputed.
    HashMismatch,
    /// Checkpoints between `previous_id` and this one were deleted.
    Missing { previous_id: u64 },
    /// Its seq is not after the previous checkpoint's.
    NotIncreasing { previous_seq: u64 },
    /// A column is missing or has the wrong type or size.
    Malformed,
}

impl fmt::Display for CheckpointFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointFault::BadSignature => f.write_str("its signature does not verify"),
            CheckpointFault::HashMismatch => f.write_str(
                "the record it covers has a different hash (the chain was rewritten and recomputed)",
            ),
            CheckpointFault::Missing { previous_id } => {
                write!(f, "checkpoints after id {previous_id} before it were deleted")
            }
            CheckpointFault::NotIncreasing { previous_seq } => {
                write!(f, "its seq is not after the previous checkpoint's ({previous_seq})")
            }
            CheckpointFault::Malformed => f.write_str("it is malformed"),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Altered { seq } => write!(
                f,
                "record {seq} was altered: its contents no longer match its hash"
            ),
            Problem::Deleted { from, to } if from == to => {
                write!(f, "record {from} was deleted")
            }
            Problem::Deleted { from, to } => write!(f, "records {from}..={to} were deleted"),
            Problem::Inserted { seq } => write!(
                f,
                "record {seq} was inserted: it is not part of the chain (the next genuine record links to {})",
                seq.saturating_sub(1)
            ),
            Problem::Reordered { seq } => write!(
                f,
                "record {seq} was reordered: it belongs elsewhere in the chain"
            ),
            Problem::Truncated {
                last_present,
                checkpoint_seq,
            } => write!(
                f,
                "the log was truncated: it ends at record {last_present}, but a signed checkpoint covers record {checkpoint_seq}"
            ),
            Problem::TornTail { from, to } => write!(
                f,
                "torn tail: the chain breaks at record {from} after the last checkpoint and never recovers \
                 (records {from}..={to}): a crash while writing, or a forged tail"
            ),
            Problem::BadCheckpoint { id, seq, from, why } => write!(
                f,
                "checkpoint {id} (record {seq}) is bad: {why}; records {from}..={seq} cannot be trusted"
            ),
            Problem::BadSeq { found } => {
                write!(f, "a record has seq {found}, which the log never writes (inserted)")
            }
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "audit log: {}", self.db.display())?;
        writeln!(f, "log id: {}", self.log_id)?;
        writeln!(f, "records: {} (last seq {})", self.records, self.last_seq)?;
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
        if !self.missing_triggers.is_empty() {
            writeln!(
                f,
                "warning: append-only triggers dropped: {}",
                self.missing_triggers.join(", ")
            )?;
        }
        match &self.problem {
            None => write!(
                f,
                "result: OK, every record verifies against the chain and every checkpoint signature holds"
            ),
            Some(p) => write!(f, "result: PROBLEM: {p}"),
        }
    }
}

/// Verifies the log under `paths` read-only, using only the public key.
pub fn verify(paths: &AuditPaths) -> Result<VerifyReport, AuditError> {
    let (mut conn, meta) = store::open_read_only(paths)?;
    let public = keys::load_verifying_key(paths)?;
    if hex::encode(public.as_bytes()) != meta.public_key_hex {
        return Err(AuditError::KeyMismatch {
            path: paths.public_key.clone(),
            why: format!(
                "this public key is not the one {} was created with (the log says {})",
                paths.db.display(),
                meta.public_key_hex
            ),
        });
    }
    let path = paths.db.clone();
    let err = sql_err(&path);
    // One read transaction: a writer appending meanwhile cannot make rows appear between the
    // walk and the lookups that classify a problem.
    let tx = conn.transaction().map_err(&err)?;
    let (records, last_seq): (i64, Option<i64>) = tx
        .query_row("SELECT count(*), max(seq) FROM records", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(&err)?;
    let checkpoints = store::read_checkpoints(&tx, &path)?;
    let mut missing_triggers = Vec::new();
    for name in TRIGGERS {
        let present = tx
            .query_row(
                "SELECT 1 FROM sqlite_schema WHERE type = 'trigger' AND name = ?1",
                [name],
                |_| Ok(()),
            )
            .optional()
            .map_err(&err)?
            .is_some();
        if !present {
            missing_triggers.push(name.to_string());
        }
    }

    let last_seq = last_seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
    let judged = judge_checkpoints(checkpoints, &meta.log_id, &public);
    let last_checkpoint_seq = judged
        .iter()
        .filter(|c| c.fault.is_none())
        .map(|c| c.seq)
        .max();
    let walker = Walker {
        conn: &tx,
        path: &path,
        genesis: chain::genesis_hash(&meta.log_id),
        checkpoints: &judged,
        sealed_upto: last_checkpoint_seq.unwrap_or(0),
        last_seq,
    };
    let problem = walker.walk()?;
    drop(tx);
    if let Some(p) = &problem {
        tracing::warn!(db = %path.display(), problem = %p, "audit log verification failed");
    }
    Ok(VerifyReport {
        db: paths.db.clone(),
        log_id: hex::encode(meta.log_id),
        records: u64::try_from(records).unwrap_or(0),
        last_seq,
        checkpoints: judged.len() as u64,
        last_checkpoint_seq,
        unsealed: last_seq.saturating_sub(last_checkpoint_seq.unwrap_or(0)),
        missing_triggers,
        problem,
    })
}

/// A checkpoint with everything that can be judged without the records: signature, order,
/// contiguous ids.
struct Judged {
    id: u64,
    /// 0 for a checkpoint whose seq is unusable (reported as malformed).
    seq: u64,
    hash: Option<Hash>,
    fault: Option<CheckpointFault>,
}

fn judge_checkpoints(
    raw: Vec<RawCheckpoint>,
    log_id: &[u8; 16],
    key: &VerifyingKey,
) -> Vec<Judged> {
    let mut out: Vec<Judged> = Vec::with_capacity(raw.len());
    let mut prev: Option<(u64, u64)> = None;
    for c in raw {
        let id = u64::try_from(c.id).unwrap_or(0);
        let raw_hash = c.hash;
        let raw_seq = u64::try_from(c.seq).unwrap_or(0);
        let fault = match c.into_checkpoint() {
            None => Some(CheckpointFault::Malformed),
            Some(cp) if cp.seq == 0 => Some(CheckpointFault::Malformed),
            Some(cp) => {
                let msg = chain::checkpoint_message(log_id, cp.seq, &cp.hash, cp.ts_ns);
                let sig = Signature::from_bytes(&cp.signature);
                let expected_id = prev.map(|(pid, _)| pid + 1).unwrap_or(1);
                if key.verify_strict(&msg, &sig).is_err() {
                    Some(CheckpointFault::BadSignature)
                } else if cp.id != expected_id {
                    Some(CheckpointFault::Missing {
                        previous_id: expected_id - 1,
                    })
                } else {
                    match prev {
                        Some((_, pseq)) if cp.seq <= pseq => {
                            Some(CheckpointFault::NotIncreasing { previous_seq: pseq })
                        }
                        _ => None,
                    }
                }
            }
        };
        prev = Some((id, raw_seq));
        out.push(Judged {
            id,
            seq: raw_seq,
            hash: raw_hash,
            fault,
        });
    }
    out
}

struct Walker<'a> {
    conn: &'a Connection,
    path: &'a std::path::Path,
    genesis: Hash,
    checkpoints: &'a [Judged],
    /// Highest seq covered by a sound checkpoint.
    sealed_upto: u64,
    last_seq: u64,
}

impl Walker<'_> {
    fn walk(&self) -> Result<Option<Problem>, AuditError> {
        let err = sql_err(self.path);
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM records ORDER BY seq"
            ))
            .map_err(&err)?;
        let mut rows = stmt.query([]).map_err(&err)?;
        let mut expected: u64 = 1;
        let mut pred = self.genesis;
        let mut cp = 0usize;
        let mut last_good_cp = 0u64;
        while let Some(row) = rows.next().map_err(&err)? {
            let r = RawRow::read(row).map_err(&err)?;
            let intact =
                r.seq == expected as i64 && r.prev == Some(pred) && r.content_ok_as(expected);
            if !intact {
                drop(rows);
                return self.classify(expected, pred, r).map(Some);
            }
            let hash = r.hash.unwrap_or_default();
            while let Some(c) = self.checkpoints.get(cp) {
                if c.seq > expected {
                    break;
                }
                let fault = c.fault.clone().or_else(|| {
                    (c.seq == expected && c.hash != Some(hash))
                        .then_some(CheckpointFault::HashMismatch)
                });
                if let Some(why) = fault {
                    return Ok(Some(Problem::BadCheckpoint {
                        id: c.id,
                        seq: c.seq,
                        from: last_good_cp + 1,
                        why,
                    }));
                }
                last_good_cp = c.seq;
                cp += 1;
            }
            pred = hash;
            expected += 1;
        }
        // Every row verified. Checkpoints beyond the end either are bad or prove records were
        // cut off.
        let last_present = expected - 1;
        if let Some(c) = self.checkpoints.get(cp) {
            return Ok(Some(match &c.fault {
                Some(why) => Problem::BadCheckpoint {
                    id: c.id,
                    seq: c.seq,
                    from: last_good_cp + 1,
                    why: why.clone(),
                },
                None => Problem::Truncated {
                    last_present,
                    checkpoint_seq: c.seq,
                },
            }));
        }
        Ok(None)
    }

    /// Explains why row `r`, found where record `e` belongs, does not verify (all rows before
    /// it did; `pred` is the hash of record `e - 1`).
    fn classify(&self, e: u64, pred: Hash, r: RawRow) -> Result<Problem, AuditError> {
        if r.seq < e as i64 {
            return Ok(Problem::BadSeq { found: r.seq });
        }
        if r.seq > e as i64 {
            return Ok(Problem::Deleted {
                from: e,
                to: r.seq as u64 - 1,
            });
        }
        let link_ok = r.prev == Some(pred);
        let dup = match r.hash {
            Some(h) => self.seqs_with_hash(&h, e)?.is_some(),
            None => false,
        };
        // Where the record this row links to sits now (0 = genesis).
        let linked_to: Option<u64> = match r.prev {
            _ if link_ok => Some(e - 1),
            Some(p) if p == self.genesis => Some(0),
            Some(p) => self.seqs_with_hash(&p, e)?,
            None => None,
        };

        // A genuine record from later in the chain (its contents verify under another seq)
        // that sits here.
        if let Some(q) = linked_to {
            if !link_ok && q >= e && !dup && self.authentic_elsewhere(&r, e, q) {
                return Ok(Problem::Reordered { seq: e });
            }
        }
        // The genuine record e (renumbered) still links to e - 1: whatever is at e came in
        // between.
        if self.first_linking_to(&pred, e)?.is_some() {
            return Ok(Problem::Inserted { seq: e });
        }
        if let Some(q) = linked_to {
            // This genuine row links to q, skipping rows that verified: those were inserted.
            if !link_ok && q + 1 < e && !dup {
                return Ok(Problem::Inserted { seq: q + 1 });
            }
        }
        if link_ok {
            // Contents changed under an intact link.
            if self.contents_swapped(&r, e)? {
                return Ok(Problem::Reordered { seq: e });
            }
            return Ok(Problem::Altered { seq: e });
        }
        if linked_to.is_none() && r.prev.is_some() {
            if r.content_ok_as(e) {
                // This row is genuine but links to a hash that is gone: record e - 1 was
                // rewritten with a freshly computed hash. Unless this row's own link was
                // rewritten (with its hash recomputed), in which case its successor no longer
                // links to it.
                let next_links_here = match self.row_after(e as i64)? {
                    None => true,
                    Some(n) => n.prev == r.hash,
                };
                if e > 1 && next_links_here {
                    return Ok(Problem::Altered { seq: e - 1 });
                }
                return Ok(Problem::Altered { seq: e });
            }
            if let Some(d) = self.deleted_before(&r, e)? {
                return Ok(Problem::Deleted {
                    from: e,
                    to: e + d - 1,
                });
            }
        }
        if e > self.sealed_upto && !self.recovers_after(e)? {
            return Ok(Problem::TornTail {
                from: e,
                to: self.last_seq.max(e),
            });
        }
        Ok(Problem::Altered { seq: e })
    }

    fn row_after(&self, seq: i64) -> Result<Option<RawRow>, AuditError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE seq > ?1 ORDER BY seq LIMIT 1"
            ))
            .and_then(|mut s| s.query_row([seq], RawRow::read).optional())
            .map_err(sql_err(self.path))
    }

    /// A seq other than `not` holding a row with this hash.
    fn seqs_with_hash(&self, hash: &Hash, not: u64) -> Result<Option<u64>, AuditError> {
        self.conn
            .prepare_cached(
                "SELECT seq FROM records WHERE hash = ?1 AND seq != ?2 ORDER BY seq LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(rusqlite::params![&hash[..], not as i64], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()
            })
            .map(|s| s.and_then(|s| u64::try_from(s).ok()))
            .map_err(sql_err(self.path))
    }

    fn first_linking_to(&self, hash: &Hash, after: u64) -> Result<Option<i64>, AuditError> {
        self.conn
            .prepare_cached(
                "SELECT seq FROM records WHERE prev_hash = ?1 AND seq > ?2 ORDER BY seq LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(rusqlite::params![&hash[..], after as i64], |r| r.get(0))
                    .optional()
            })
            .map_err(sql_err(self.path))
    }

    /// True if the row's contents verify under some seq near where it was found or near the
    /// record it links to: a genuine record that was moved.
    fn authentic_elsewhere(&self, r: &RawRow, e: u64, linked_to: u64) -> bool {
        let near = |c: u64| {
            c.saturating_sub(SEQ_SEARCH_WINDOW).max(1)..=c.saturating_add(SEQ_SEARCH_WINDOW)
        };
        [linked_to + 1, linked_to]
            .into_iter()
            .chain(near(e))
            .chain(near(linked_to))
            .any(|s| s != e && r.content_ok_as(s))
    }

    /// The contents of row `e` are exactly what another row's hash was computed over, and that
    /// row no longer holds them: two rows swapped contents but kept their hashes.
    fn contents_swapped(&self, r: &RawRow, e: u64) -> Result<bool, AuditError> {
        let Ok(body) = &r.body else { return Ok(false) };
        let err = sql_err(self.path);
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE seq > ?1 ORDER BY seq"
            ))
            .map_err(&err)?;
        let mut rows = stmt.query([e as i64]).map_err(&err)?;
        while let Some(row) = rows.next().map_err(&err)? {
            let other = RawRow::read(row).map_err(&err)?;
            let (Some(prev), Some(hash), Ok(seq)) =
                (other.prev, other.hash, u64::try_from(other.seq))
            else {
                continue;
            };
            if chain::record_hash(&prev, seq, body) == hash && !other.content_ok_as(seq) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// If the row's contents verify as record `e + d` for some d >= 1, records e..e+d-1 were
    /// deleted and the rest renumbered down. Returns d.
    fn deleted_before(&self, r: &RawRow, e: u64) -> Result<Option<u64>, AuditError> {
        // Checkpoints pin down the shift directly: a checkpoint for seq s whose hash now sits at
        // a lower seq moved down by the number of deleted records.
        // One lookup only: each is a scan of the table.
        if let Some(c) = self
            .checkpoints
            .iter()
            .find(|c| c.seq > e && c.hash.is_some())
        {
            let h = c.hash.unwrap_or_default();
            if let Some(now_at) = self.seqs_with_hash(&h, 0)? {
                if now_at >= e && c.seq > now_at && r.content_ok_as(e + (c.seq - now_at)) {
                    return Ok(Some(c.seq - now_at));
                }
            }
        }
        Ok((1..=MAX_SHIFT).find(|d| r.content_ok_as(e + d)))
    }

    /// True if some row after `e` is intact again (verifies and links to its predecessor).
    fn recovers_after(&self, e: u64) -> Result<bool, AuditError> {
        let err = sql_err(self.path);
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE seq >= ?1 ORDER BY seq"
            ))
            .map_err(&err)?;
        let mut rows = stmt.query([e as i64]).map_err(&err)?;
        let mut prev: Option<Hash> = None;
        while let Some(row) = rows.next().map_err(&err)? {
            let r = RawRow::read(row).map_err(&err)?;
            if r.seq > e as i64 {
                if let Ok(seq) = u64::try_from(r.seq) {
                    if prev.is_some() && r.prev == prev && r.content_ok_as(seq) {
                        return Ok(true);
                    }
                }
            }
            prev = r.hash;
        }
        Ok(false)
    }
}
