//! The policy language: YAML files with agents, rules, egress allowlists, defaults and
//! includes, validated into a [`Policy`] with `file:line:column: field: message` errors.

pub mod auto_lower;
mod error;
pub mod glob;
mod load;
mod location;
pub mod model;
pub mod path;
pub mod pattern;
pub mod response;
pub mod retention;
mod schema;
mod source;
mod structure;
mod validate;

pub use auto_lower::AutoLower;
pub use error::{PolicyError, PolicyErrors};
pub use load::{load_policy, parse_policy_str, set_max_file_mib, DEFAULT_MAX_FILE_MIB};
pub use model::{
    Agent, AgentUser, Approvals, DnsRefusal, Egress, EgressDefault, EgressEntry, EgressTarget,
    Layer, OnTimeout, Policy, Rule, Selectors, Unlisted,
};
pub use pattern::compile_glob;
pub use validate::{builtin_default_risk, policy_hash, DEFAULT_AUTONOMY, DEFAULT_HOMES};

#[cfg(test)]
mod tests;
