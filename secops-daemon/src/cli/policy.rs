//! `secops policy validate|explain`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use super::action_args::{load_engine, ActionArgs};
use crate::policy::load_policy;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file and everything it includes. Prints each problem as
    /// `file:line:column: field: what is wrong` and exits 1 if there is any (3 if the file
    /// cannot be read at all).
    #[command(after_help = "Example:\n  secops policy validate /etc/secops/policy.yaml")]
    Validate {
        /// The top-level policy file.
        file: PathBuf,
    },
    /// Show how a policy decides one action, and why: which rules matched, what autonomy and
    /// risk gave. Records nothing.
    #[command(
        after_help = "Example:\n  secops policy explain /etc/secops/policy.yaml --agent coder --action net:connect --addr 1.1.1.1 --port 443"
    )]
    Explain {
        /// The top-level policy file.
        file: PathBuf,
        #[command(flatten)]
        action: ActionArgs,
    },
}

pub fn run(command: PolicyCommand) -> anyhow::Result<u8> {
    match command {
        PolicyCommand::Validate { file } => validate(&file),
        PolicyCommand::Explain { file, action } => {
            let engine = load_engine(&file)?;
            let resolved = action.resolve(&engine)?;
            let explanation = engine.explain(&resolved.request(action.agent_index(&engine)));
            let d = &explanation.decision;
            println!("decision: {} (risk {})", d.verdict, d.risk);
            println!("rule:     {}", d.rule_id.as_deref().unwrap_or("(none)"));
            println!("reason:   {}", d.reason);
            println!("because:");
            for step in &explanation.steps {
                println!("  - {step}");
            }
            if engine.agent_index(&action.agent).is_none() {
                println!("note: the policy defines no agent named {:?}", action.agent);
            }
            Ok(0)
        }
    }
}

/// Exits 0 valid, 1 invalid. A top-level file that cannot be read at all is an error (3), not
/// a verdict on a policy; an include that cannot be read makes the policy invalid.
fn validate(file: &Path) -> anyhow::Result<u8> {
    std::fs::File::open(file)
        .with_context(|| format!("cannot read policy file {}", file.display()))?;
    match load_policy(file) {
        Ok(policy) => {
            println!(
                "{}: valid ({} rules, {} agents, {} custom action types, {} files)",
                file.display(),
                policy.rules.len(),
                policy.agents.len(),
                policy.registry.len() - secops_common::CoreAction::ALL.len(),
                policy.files.len()
            );
            Ok(0)
        }
        Err(errors) => {
            for error in errors.iter() {
                eprintln!("{error}");
            }
            eprintln!(
                "{}: {} problem(s); the policy was not loaded",
                file.display(),
                errors.0.len()
            );
            Ok(1)
        }
    }
}
