//! `secops check`: decide one action, audit the decision, exit with the verdict.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use secops_common::Verdict;

use super::action_args::{load_engine, ActionArgs};
use crate::audit::{AuditPaths, AuditStore, CheckpointPolicy};
use crate::daemon::{judge, Actor, Door, Request};
use crate::time::now_ns;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The policy to decide by.
    #[arg(long, env = "SECOPS_POLICY", default_value = "/etc/secops/policy.yaml")]
    pub policy: PathBuf,
    #[command(flatten)]
    pub action: ActionArgs,
    /// Print the decision as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn verdict_exit_code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Allow => 0,
        Verdict::Deny => 1,
        Verdict::Escalate => 2,
    }
}

/// Decides like `/v1/check` (the decision path's first and third steps: the engine, and the
/// same record), without a daemon: no approval queue, so an escalation opens no ticket.
pub fn run(args: CheckArgs, state_dir: &Path) -> anyhow::Result<u8> {
    let engine = load_engine(&args.policy)?;
    let action = args.action.resolve(&engine)?;
    let object = action.audit_object();
    let judged = judge(
        &engine,
        Request {
            door: Door::Api,
            at_ns: now_ns(),
            actor: Actor {
                agent: Some(args.action.agent.clone()),
                ..Actor::default()
            },
            action,
            object,
            inode: None,
            detail: String::new(),
            note: String::new(),
        },
    );
    let decision = &judged.decision;

    // The decision only counts once it is in the log: if it cannot be recorded, this is an
    // error (exit 3), never a verdict.
    let record = judged.record();
    let paths = AuditPaths::new(state_dir);
    let mut store = AuditStore::open(&paths, CheckpointPolicy::default())
        .with_context(|| format!("opening the audit log in {}", state_dir.display()))?;
    let seq = store
        .append(&record)
        .context("recording the decision in the audit log")?;
    // A short-lived writer has no timer to seal its tail later, so it seals before it exits.
    store.checkpoint_now().context("sealing the audit log")?;

    if args.json {
        let out = serde_json::json!({
            "verdict": decision.verdict,
            "risk": decision.risk,
            "rule_id": decision.rule_id.as_deref(),
            "reason": &*decision.reason,
            "audit_seq": seq,
        });
        println!("{out}");
    } else {
        println!(
            "{} (risk {}, rule {}): {}",
            decision.verdict,
            decision.risk,
            decision.rule_id.as_deref().unwrap_or("none"),
            decision.reason
        );
    }
    Ok(verdict_exit_code(decision.verdict))
}
