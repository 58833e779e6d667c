//! The audit log: hash-chained records and signed checkpoints in append-only segment files,
//! an SQLite index built behind them, and witnesses that keep every checkpoint elsewhere.

pub mod bundle;
pub mod chain;
mod classify;
pub mod daemon_log;
pub mod dir;
pub mod error;
pub mod frame;
pub mod head;
pub mod index;
pub mod keys;
pub mod ocsf;
pub mod paths;
pub mod policy_copy;
mod problem;
pub mod query;
pub mod record;
pub mod retention;
pub mod segment;
pub mod store;
pub mod verify;
pub mod witness;
pub mod writer;

pub use error::AuditError;
pub use paths::AuditPaths;
pub use query::{AuditReader, QueryFilter, RecordIter};
pub use record::{AuditObject, NewRecord, ObjectKind, Record, Source};
pub use store::{AuditStore, Checkpoint, CheckpointPolicy, OpenReport, RewindPolicy, StoreOptions};
pub use verify::{verify, verify_with, CheckpointFault, Problem, VerifyOptions, VerifyReport};
pub use writer::{AuditHealth, AuditWriter, CommitTicket, WriterOptions};
