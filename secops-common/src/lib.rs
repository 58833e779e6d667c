//! Types shared by every part of secops: the action taxonomy, risk levels, verdicts and
//! autonomy levels. Nothing here does I/O, so the kernel-facing code, the rule engine and the
//! audit log can all depend on it.

pub mod action;
pub mod decision;
pub mod kernel;

pub use action::{ActionId, ActionRegistry, ActionType, ActionTypeError, Category, CoreAction};
pub use decision::{AutonomyLevel, ParseLevelError, RiskLevel, Verdict};
