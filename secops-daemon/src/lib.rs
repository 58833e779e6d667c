//! The secops daemon library: policy loading and validation, the rule engine, the audit log,
//! and the command-line interface that wires them together.

pub mod audit;
pub mod cli;
pub mod engine;
pub mod kernel;
pub mod policy;
pub mod cgroups;
pub mod launcher;
