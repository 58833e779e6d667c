//! Errors of the audit log. Every variant that involves a file names it, because the operator
//! reading the message has to know which file to look at.

use std::io;
use std::path::PathBuf;

/// Something went wrong opening, writing or reading the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("{}: no audit log here (nothing has been recorded yet, or wrong --state-dir)", path.display())]
    Missing { path: PathBuf },

    #[error("{}: not a secops audit log: {why}", path.display())]
    NotAnAuditLog { path: PathBuf, why: String },

    #[error(
        "{}: audit log schema version {found} is not supported (this secops understands version {supported})",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: String,
        supported: u32,
    },

    #[error(
        "{}: key file has mode {mode:04o}, it must not be accessible by group or others \
         (expected 0600; fix with `chmod 600` only if you are sure nobody copied it, otherwise \
         it is compromised)",
        path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },

    #[error(
        "{}: key directory has mode {mode:04o}, it must not be accessible by group or others (expected 0700)",
        path.display()
    )]
    KeyDirPermissions { path: PathBuf, mode: u32 },

    #[error("{}: key file is owned by uid {owner}, but secops runs as uid {euid}", path.display())]
    KeyOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },

    #[error("{}: not a usable Ed25519 key: {why}", path.display())]
    BadKey { path: PathBuf, why: String },

    #[error("{}: {why}", path.display())]
    KeyMismatch { path: PathBuf, why: String },

    #[error("{}: record {seq} cannot be read: {why} (run `secops audit verify`)", path.display())]
    Corrupt {
        path: PathBuf,
        seq: i64,
        why: String,
    },

    #[error("audit record rejected: {why}")]
    InvalidRecord { why: String },

    #[error("invalid audit query: {why}")]
    InvalidFilter { why: String },

    #[error("{}: audit commit failed: {reason}", path.display())]
    CommitFailed { path: PathBuf, reason: String },

    #[error("{}: the audit writer has stopped; the record was not written", path.display())]
    WriterGone { path: PathBuf },
}

impl AuditError {
    pub(crate) fn io(path: impl Into<PathBuf>, what: &'static str, source: io::Error) -> Self {
        AuditError::Io {
            path: path.into(),
            what,
            source,
        }
    }

    pub(crate) fn sqlite(path: impl Into<PathBuf>, source: rusqlite::Error) -> Self {
        AuditError::Sqlite {
            path: path.into(),
            source,
        }
    }
}
