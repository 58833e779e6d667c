//! The Landlock door of `POST /v1/agents/{name}/register`: the agent's plan compiled
//! (`enforce::landlock`) where this layer runs, and kept per agent for `secops status` and
//! for reading the file tracepoints' records (what the plan denies was blocked).

use std::path::Path;

use secops_common::CoreAction;

use super::decide::{Door, KernelCheck, Request};
use super::landlock_plans::LandlockPlans;
use super::state::Shared;
use crate::api::LandlockPlan;
use crate::enforce::landlock::{compile, Fixed};
use crate::policy::Layer;

/// A file tracepoint's record for a call the agent's Landlock ruleset refuses becomes
/// Landlock's denial (the tracepoint sees the call's entry; the ruleset decides its result).
pub(crate) fn judge_by_plan(plans: &LandlockPlans, request: &mut Request) {
    let Door::Kernel { verdict, check } = &mut request.door else {
        return;
    };
    if !matches!(check, KernelCheck::Tracepoint) {
        return;
    }
    let (Some(agent), Some(path)) = (request.actor.agent.as_deref(), request.action.path.as_ref())
    else {
        return;
    };
    // The calls the file tracepoints see on entry (the exec tracepoint fires only after an
    // exec succeeded, so an exec Landlock refused leaves no event at all).
    let Some(core) = [CoreAction::FsDelete, CoreAction::FsRename]
        .into_iter()
        .find(|c| secops_common::ActionId(*c as u16) == request.action.action)
    else {
        return;
    };
    if plans.denies(agent, core, Path::new(&path.to_string())) {
        *verdict = secops_common::Verdict::Deny;
        *check = KernelCheck::Landlock;
    }
}

/// The agent's plan, when this layer runs here (Landlock in the kernel, BPF LSM not
/// enforcing files): its rules and secops' own files (state, pins, policy, socket; the
/// cgroup filesystem read-only).
pub(crate) fn plan_for(shared: &Shared, agent: &str) -> Option<LandlockPlan> {
    if !shared.layer_active(Layer::Landlock) {
        return None;
    }
    let engine = shared.engine();
    let index = engine.agent_index(agent)?;
    let options = &shared.options;
    let mut fixed: Vec<Fixed> = [&options.state_dir, &options.pin_dir, &options.socket]
        .into_iter()
        .chain(&engine.policy().files)
        .map(|p| Fixed::everything(p.clone()))
        .collect();
    if let Ok(cgroupfs) = crate::kernel::fs::cgroup2_mount() {
        fixed.push(Fixed::read_only(cgroupfs));
    }
    let mut plan = compile(&engine, index, &fixed);
    if plan.tcp_connect.is_some() && shared.layer_active(Layer::Egress) {
        // Landlock's connect hook runs before the cgroup programs': it would refuse first,
        // with EACCES and without an audit record, what they refuse and audit.
        plan.tcp_connect = None;
        plan.tcp_why = "not handled: the cgroup egress programs enforce and audit the \
                        allowlist here (Landlock's check would come first and leave no record)"
            .to_owned();
    }
    if !plan.unexpressed.is_empty() {
        tracing::info!(
            %agent,
            "landlock: {} policy item(s) this layer cannot hold: {}",
            plan.unexpressed.len(),
            plan.unexpressed.join("; ")
        );
    }
    shared.landlock.remember(agent, plan.clone());
    Some(plan)
}
