//! What `verify` can find wrong with a log, each at the exact record, checkpoint or file.

use std::fmt;
use std::path::PathBuf;

/// Something wrong with the log, at the exact record (or checkpoint, or file) where it was
/// found.
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
    /// The chain breaks at `from` after the last checkpoint and never recovers up to `to`.
    BrokenTail { from: u64, to: u64 },
    /// Checkpoint `number` (covering `seq`) does not hold; records `from..=seq` cannot be
    /// trusted.
    BadCheckpoint {
        number: u64,
        seq: u64,
        from: u64,
        why: CheckpointFault,
    },
    /// A record with a seq below 1, which the log never writes.
    BadSeq { found: i64 },
    /// A segment file is not what the log's chain needs at that place.
    BadSegment { path: PathBuf, why: String },
    /// A key rotation does not hold: signed by another key, or malformed.
    BadRotation { at_seq: u64, why: String },
    /// Checkpoints are signed by a key the pinned key never handed the log to.
    WrongKey {
        key_id: String,
        pinned_id: String,
        first_number: u64,
    },
    /// The log ends (or its checkpoints end) before what a witness saw: truncated or rolled
    /// back. `witnessed_seq` is the last witnessed seq that is missing.
    BehindWitness {
        witness: String,
        last_present: u64,
        witnessed_number: u64,
        witnessed_seq: u64,
        missing_checkpoints: u64,
    },
    /// The log holds the records a witness saw checkpointed, but not the checkpoints.
    WitnessedCheckpointsGone { witness: String, numbers: Vec<u64> },
    /// What a witness saw differs from what the log holds at that place: rewritten.
    WitnessDiffers {
        witness: String,
        number: u64,
        seq: u64,
        why: String,
    },
    /// A witness holds checkpoints signed by another key than the log's at that place.
    WitnessKeyDiffers {
        witness: String,
        number: u64,
        witnessed_key: String,
        log_key: String,
    },
    /// A witness knows other logs of this host but not this one: the log was replaced.
    WitnessKnowsOtherLog { witness: String, logs: Vec<String> },
    /// A segment that its header says is kept append-only (or immutable) lost that flag.
    ProtectionRemoved {
        path: PathBuf,
        expected: &'static str,
    },
    /// The public key file beside the log is not the log's key.
    KeyFileDiffers { path: PathBuf },
    /// Records before the first live segment that the log never said it archived.
    NotArchived { from: u64, to: u64 },
}

/// Why a checkpoint does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointFault {
    /// The signature does not verify with the key in force.
    BadSignature,
    /// The record at the checkpoint's seq has a different hash: the chain was recomputed.
    HashMismatch,
    /// Checkpoints after `previous` before it were deleted.
    Missing { previous: u64 },
    /// Its seq is not after the previous checkpoint's.
    NotIncreasing { previous_seq: u64 },
}

impl fmt::Display for CheckpointFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointFault::BadSignature => f.write_str("its signature does not verify"),
            CheckpointFault::HashMismatch => f.write_str(
                "the record it covers has a different hash (the chain was rewritten and recomputed)",
            ),
            CheckpointFault::Missing { previous } => {
                write!(f, "checkpoints after number {previous} before it were deleted")
            }
            CheckpointFault::NotIncreasing { previous_seq } => {
                write!(f, "its seq is not after the previous checkpoint's ({previous_seq})")
            }
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
            Problem::Deleted { from, to } if from == to => write!(f, "record {from} was deleted"),
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
            Problem::BrokenTail { from, to } => write!(
                f,
                "the chain breaks at record {from} after the last checkpoint and never recovers \
                 (records {from}..={to}): a forged or damaged tail"
            ),
            Problem::BadCheckpoint {
                number,
                seq,
                from,
                why,
            } => write!(
                f,
                "checkpoint {number} (record {seq}) is bad: {why}; records {from}..={seq} cannot be trusted"
            ),
            Problem::BadSeq { found } => {
                write!(f, "a record has seq {found}, which the log never writes (inserted)")
            }
            Problem::BadSegment { path, why } => write!(f, "{}: {why}", path.display()),
            Problem::BadRotation { at_seq, why } => {
                write!(f, "the key rotation after record {at_seq} does not hold: {why}")
            }
            Problem::WrongKey {
                key_id,
                pinned_id,
                first_number,
            } => write!(
                f,
                "checkpoints from number {first_number} on are signed by key {key_id}, which the \
                 pinned key {pinned_id} never handed the log to: the log was re-signed"
            ),
            Problem::BehindWitness {
                witness,
                last_present,
                witnessed_number,
                witnessed_seq,
                missing_checkpoints,
            } => write!(
                f,
                "{witness} saw checkpoint {witnessed_number} covering record {witnessed_seq}, but \
                 the log ends at record {last_present}: records {}..={witnessed_seq} and \
                 {missing_checkpoints} witnessed checkpoint(s) are gone (truncated or rolled back)",
                last_present + 1
            ),
            Problem::WitnessedCheckpointsGone { witness, numbers } => write!(
                f,
                "{witness} saw checkpoint(s) {} that the log no longer holds (deleted; their \
                 records are still there)",
                ranges(numbers)
            ),
            Problem::WitnessDiffers {
                witness,
                number,
                seq,
                why,
            } => write!(
                f,
                "{witness} saw checkpoint {number} covering record {seq}, and the log differs: {why} \
                 (rewritten)"
            ),
            Problem::WitnessKeyDiffers {
                witness,
                number,
                witnessed_key,
                log_key,
            } => write!(
                f,
                "{witness} saw checkpoint {number} signed by key {witnessed_key}, the log has it \
                 signed by key {log_key}: the log was re-signed with another key"
            ),
            Problem::WitnessKnowsOtherLog { witness, logs } => write!(
                f,
                "{witness} holds checkpoints of log(s) {} and none of this one: the log was replaced",
                logs.join(", ")
            ),
            Problem::ProtectionRemoved { path, expected } => write!(
                f,
                "{}: its header says it is kept {expected}, but that inode flag was taken off",
                path.display()
            ),
            Problem::NotArchived { from, to } => write!(
                f,
                "records {from}..={to} are not in the log, and the log never said it archived \
                 them: deleted"
            ),
            Problem::KeyFileDiffers { path } => write!(
                f,
                "{}: this public key is not the one the log is signed with",
                path.display()
            ),
        }
    }
}

/// `1..=3, 7` for a sorted list of numbers.
fn ranges(numbers: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < numbers.len() {
        let start = numbers[i];
        let mut end = start;
        while i + 1 < numbers.len() && numbers[i + 1] == end + 1 {
            i += 1;
            end = numbers[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}..={end}")
        });
        i += 1;
    }
    out.join(", ")
}
