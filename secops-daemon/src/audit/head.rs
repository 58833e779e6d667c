//! The log's head as last seen, kept outside the log: `<state>/audit.head`, rewritten after
//! every checkpoint. An appender that opens a log which is behind it, differs from it or is
//! another log altogether refuses to write to it until an operator accepts what was found
//! (`secops audit accept-rewind`), which is itself recorded in the log.
//!
//! The file sits beside the log, so whoever can replace the log can replace it too; that is
//! what witnesses off the host are for ([`super::witness`]). Here it catches a log restored
//! from a backup, a copied-over state directory and a log that lost its tail, on restart.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::chain::Hash;
use super::dir;
use super::error::AuditError;
use super::frame::CheckpointFrame;

/// What the head file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadFile {
    pub log_id: String,
    /// The newest checkpoint this host wrote.
    pub checkpoint_number: u64,
    pub checkpoint_seq: u64,
    pub checkpoint_hash: String,
    pub key_id: String,
    pub written_ns: i64,
}

impl HeadFile {
    pub fn new(log_id: &[u8; 16], cp: &CheckpointFrame, written_ns: i64) -> HeadFile {
        HeadFile {
            log_id: hex::encode(log_id),
            checkpoint_number: cp.number,
            checkpoint_seq: cp.seq,
            checkpoint_hash: hex::encode(cp.hash),
            key_id: hex::encode(cp.key_id),
            written_ns,
        }
    }

    /// Reads the head file; `None` if there is none.
    pub fn read(path: &Path) -> Result<Option<HeadFile>, AuditError> {
        let bytes = match dir::open_read(path) {
            Ok(f) => {
                use std::io::Read;
                let mut s = Vec::new();
                f.take(64 * 1024)
                    .read_to_end(&mut s)
                    .map_err(|e| AuditError::io(path, "reading the audit head file", e))?;
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AuditError::io(path, "opening the audit head file", e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AuditError::BadHeadFile {
                path: path.to_owned(),
                why: e.to_string(),
            })
    }

    pub fn write(&self, path: &Path) -> Result<(), AuditError> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        dir::write_atomic(path, &bytes, 0o600)
    }
}

/// The end of the log as an appender found it when it opened the log.
#[derive(Clone, Debug)]
pub struct FoundTip {
    pub log_id: [u8; 16],
    pub last_seq: u64,
    /// The newest checkpoint in the log.
    pub last_checkpoint: Option<CheckpointFrame>,
    /// Checkpoints of the newest segment, oldest first (to find the head's one).
    pub recent_checkpoints: Vec<CheckpointFrame>,
}

/// A checkpoint the log was expected to hold, and who said so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub source: String,
    pub log_id: String,
    pub number: u64,
    pub seq: u64,
    pub hash: Hash,
}

impl Expected {
    pub fn from_head(path: &Path, head: &HeadFile) -> Result<Expected, AuditError> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&head.checkpoint_hash, &mut hash).map_err(|e| {
            AuditError::BadHeadFile {
                path: path.to_owned(),
                why: format!("checkpoint_hash: {e}"),
            }
        })?;
        Ok(Expected {
            source: format!("the head file {}", path.display()),
            log_id: head.log_id.clone(),
            number: head.checkpoint_number,
            seq: head.checkpoint_seq,
            hash,
        })
    }
}

/// What was wrong with the log an appender opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rewind {
    /// The log exists but nothing outside it says where it was: the head file was removed.
    HeadMissing { head_file: String },
    /// The log has another id than the one expected: it was replaced by another log.
    OtherLog { expected: Expected, found: String },
    /// The log ends before the checkpoint expected: rolled back or truncated.
    Behind {
        expected: Expected,
        found_last_seq: u64,
        found_checkpoint: Option<(u64, u64)>,
    },
    /// The log holds the expected checkpoint's number with another seq or hash: rewritten.
    Differs {
        expected: Expected,
        found_seq: u64,
        found_hash: Hash,
    },
}

impl fmt::Display for Rewind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rewind::HeadMissing { head_file } => write!(
                f,
                "the log exists but its head file {head_file} is gone, so it cannot be told \
                 whether the log was rolled back"
            ),
            Rewind::OtherLog { expected, found } => write!(
                f,
                "this is another log (id {found}) than the one {} names (id {}): the log was \
                 replaced",
                expected.source, expected.log_id
            ),
            Rewind::Behind {
                expected,
                found_last_seq,
                found_checkpoint,
            } => {
                write!(
                    f,
                    "the log is behind {}: that saw checkpoint {} covering record {}, the log \
                     ends at record {found_last_seq}",
                    expected.source, expected.number, expected.seq
                )?;
                match found_checkpoint {
                    Some((n, s)) => write!(f, " with checkpoint {n} (record {s}) its newest"),
                    None => write!(f, " with no checkpoint"),
                }?;
                write!(
                    f,
                    "; records {}..={} are gone (rolled back or truncated)",
                    found_last_seq + 1,
                    expected.seq.max(found_last_seq + 1)
                )
            }
            Rewind::Differs {
                expected,
                found_seq,
                found_hash,
            } => write!(
                f,
                "checkpoint {} differs from what {} saw: record {} with hash {}, the log says \
                 record {found_seq} with hash {}: the log was rewritten",
                expected.number,
                expected.source,
                expected.seq,
                hex::encode(expected.hash),
                hex::encode(found_hash)
            ),
        }
    }
}

/// Compares the log as found with what was expected of it. The log may be ahead (other
/// appenders, or a checkpoint made just before a crash that the head file missed).
pub fn compare(found: &FoundTip, expected: &Expected) -> Option<Rewind> {
    let found_id = hex::encode(found.log_id);
    if found_id != expected.log_id {
        return Some(Rewind::OtherLog {
            expected: expected.clone(),
            found: found_id,
        });
    }
    let behind = || Rewind::Behind {
        expected: expected.clone(),
        found_last_seq: found.last_seq,
        found_checkpoint: found.last_checkpoint.map(|c| (c.number, c.seq)),
    };
    let Some(last) = found.last_checkpoint else {
        return Some(behind());
    };
    if last.number < expected.number || found.last_seq < expected.seq {
        return Some(behind());
    }
    let same = found
        .recent_checkpoints
        .iter()
        .chain(std::iter::once(&last))
        .find(|c| c.number == expected.number);
    match same {
        Some(c) if c.seq != expected.seq || c.hash != expected.hash => Some(Rewind::Differs {
            expected: expected.clone(),
            found_seq: c.seq,
            found_hash: c.hash,
        }),
        // Not in the newest segment: the log moved on past a segment boundary since; the
        // older segments are `verify`'s to check.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(number: u64, seq: u64, hash: u8) -> CheckpointFrame {
        CheckpointFrame {
            number,
            seq,
            hash: [hash; 32],
            ts_ns: 0,
            key_id: [0; 8],
            signature: [0; 64],
        }
    }

    fn expected(number: u64, seq: u64, hash: u8) -> Expected {
        Expected {
            source: "test".into(),
            log_id: hex::encode([1u8; 16]),
            number,
            seq,
            hash: [hash; 32],
        }
    }

    fn tip(last_seq: u64, cps: &[CheckpointFrame]) -> FoundTip {
        FoundTip {
            log_id: [1; 16],
            last_seq,
            last_checkpoint: cps.last().copied(),
            recent_checkpoints: cps.to_vec(),
        }
    }

    #[test]
    fn same_or_ahead_is_fine() {
        let cps = [cp(1, 10, 1), cp(2, 20, 2)];
        assert_eq!(compare(&tip(20, &cps), &expected(2, 20, 2)), None);
        assert_eq!(compare(&tip(25, &cps), &expected(1, 10, 1)), None);
    }

    #[test]
    fn behind_rewritten_and_replaced_are_found() {
        let cps = [cp(1, 10, 1)];
        let r = compare(&tip(12, &cps), &expected(2, 20, 2)).unwrap();
        assert!(
            matches!(
                r,
                Rewind::Behind {
                    found_last_seq: 12,
                    ..
                }
            ),
            "{r}"
        );
        assert!(r.to_string().contains("records 13..=20 are gone"), "{r}");
        let r = compare(&tip(12, &[cp(1, 10, 9)]), &expected(1, 10, 1)).unwrap();
        assert!(matches!(r, Rewind::Differs { .. }), "{r}");
        let mut other = tip(30, &cps);
        other.log_id = [2; 16];
        assert!(matches!(
            compare(&other, &expected(1, 10, 1)),
            Some(Rewind::OtherLog { .. })
        ));
        assert!(matches!(
            compare(&tip(30, &[]), &expected(1, 10, 1)),
            Some(Rewind::Behind { .. })
        ));
    }
}
