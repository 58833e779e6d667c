//! The secops daemon library: policy loading and validation, the rule engine, the audit log,
//! and the command-line interface that wires them together.

pub mod api;
pub mod approvals;
pub mod audit;
pub mod cgroups;
pub mod cli;
pub mod daemon;
pub(crate) mod dns;
pub(crate) mod enforce;
pub mod engine;
pub mod kernel;
pub mod launcher;
pub mod notify;
pub mod policy;
pub mod scan;
pub mod time;
