//! The audit log: append-only, hash-chained records in SQLite with signed checkpoints.

pub mod ocsf;
pub mod record;

pub use record::{AuditObject, NewRecord, ObjectKind, Record, Source};
