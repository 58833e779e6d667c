//! The audit log: append-only, hash-chained records in SQLite with signed checkpoints.

pub mod chain;
pub mod error;
pub mod keys;
pub mod ocsf;
pub mod query;
pub mod record;
pub mod store;
pub mod verify;
pub mod writer;

pub use error::AuditError;
pub use query::{AuditReader, QueryFilter, RecordIter};
pub use record::{AuditObject, NewRecord, ObjectKind, Record, Source};
pub use store::{AuditPaths, AuditStore, Checkpoint, CheckpointPolicy};
pub use verify::{verify, CheckpointFault, Problem, VerifyReport};
pub use writer::{AuditWriter, CommitTicket, WriterOptions};
