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

    #[error("{}: the audit log is failing, the record was not written: {why}", path.display())]
    Failing { path: PathBuf, why: String },

    #[error("{}: refusing this {what}: {why}", path.display())]
    UnsafeDir {
        path: PathBuf,
        what: &'static str,
        why: String,
    },

    #[error("{}: the audit head file cannot be read: {why}", path.display())]
    BadHeadFile { path: PathBuf, why: String },

    #[error(
        "{}: the audit log is not as this host left it: {finding}. Nothing was written to it. \
         If this is known and wanted (a log restored from a backup, a new log on purpose), \
         record it and go on with `secops audit accept-rewind --reason TEXT`",
        path.display()
    )]
    Rewound { path: PathBuf, finding: String },

    #[error("{}: nothing to accept: the audit log is where its head file and witnesses say", path.display())]
    NothingToAccept { path: PathBuf },

    #[error(
        "{}: an audit log of the old format (one SQLite file) is here; this secops keeps the log \
         in signed segment files under {}. Move the old file aside (keep it: the secops that \
         wrote it can still verify it) to start a new log",
        path.display(),
        audit_dir.display()
    )]
    LegacyLog { path: PathBuf, audit_dir: PathBuf },

    #[error("{}: the audit log cannot be written: {why}", path.display())]
    Unwritable { path: PathBuf, why: String },

    #[error("{}: the audit log is damaged: {why} (run `secops audit verify`)", path.display())]
    Damaged { path: PathBuf, why: String },
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
