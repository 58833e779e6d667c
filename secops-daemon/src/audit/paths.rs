//! Where the audit log keeps its files: one place for every part that opens them (store,
//! keys, index, query, verify).

use std::path::{Path, PathBuf};

/// Where the audit log keeps its files under the state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditPaths {
    pub state_dir: PathBuf,
    /// `<state>/audit`, mode 0700: the segments, the index and the lock.
    pub audit_dir: PathBuf,
    /// `<state>/audit/lock`: appenders take it exclusively for each batch.
    pub lock: PathBuf,
    /// `<state>/audit/index.db`: SQLite, derived from the segments (rebuilt if lost).
    pub index: PathBuf,
    /// `<state>/audit.head`: the newest checkpoint this host wrote, outside the log.
    pub head_file: PathBuf,
    /// `<state>/keys`, mode 0700.
    pub keys_dir: PathBuf,
    /// `<state>/keys/audit-signing.key`, mode 0600: the Ed25519 seed as hex.
    pub signing_key: PathBuf,
    /// `<state>/keys/audit-signing.pub`: the public key as hex.
    pub public_key: PathBuf,
}

impl AuditPaths {
    pub fn new(state_dir: impl AsRef<Path>) -> AuditPaths {
        let state_dir = state_dir.as_ref().to_path_buf();
        let keys_dir = state_dir.join("keys");
        let audit_dir = state_dir.join("audit");
        AuditPaths {
            lock: audit_dir.join("lock"),
            index: audit_dir.join("index.db"),
            head_file: state_dir.join("audit.head"),
            signing_key: keys_dir.join("audit-signing.key"),
            public_key: keys_dir.join("audit-signing.pub"),
            keys_dir,
            audit_dir,
            state_dir,
        }
    }

    /// The single-file SQLite log of earlier versions.
    pub fn legacy_db(&self) -> PathBuf {
        self.state_dir.join("audit.db")
    }
}
