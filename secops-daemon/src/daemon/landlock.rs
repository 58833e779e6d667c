//! The Landlock door of `POST /v1/agents/{name}/register`: the agent's plan compiled
//! (`enforce::landlock`) where this layer runs, and kept per agent for `secops status` and
//! for reading the file tracepoints' records (what the plan denies was blocked).

use std::path::Path;

use secops_common::CoreAction;

use super::decide::{Door, KernelCheck, LandlockSeen, Request};
use super::landlock_plans::LandlockPlans;
use super::state::Shared;
use crate::api::LandlockPlan;
use crate::enforce::landlock::{compile, plan_denies, Fixed};
use crate::policy::Layer;

/// A file tracepoint's record for a call the agent's Landlock ruleset refuses becomes
/// Landlock's denial (the tracepoint sees the call's entry; the ruleset decides its result).
/// A rename is refused when its source or its target is (`target`: where it goes).
///
/// Where the kernel's Landlock records are read, such a call is not recorded here: it waits
/// for the kernel's record of the refusal (returns true), which tells whether the kernel
/// really refused it (a call that failed before Landlock's check, as a rename that must not
/// replace an existing file, leaves none) and is recorded once, with this whole path.
pub(crate) fn judge_by_plan(
    plans: &LandlockPlans,
    request: &mut Request,
    target: Option<&str>,
) -> bool {
    let Door::Kernel { verdict, check } = &mut request.door else {
        return false;
    };
    if !matches!(check, KernelCheck::Tracepoint) {
        return false;
    }
    let (Some(agent), Some(path)) = (request.actor.agent.as_deref(), request.action.path.as_ref())
    else {
        return false;
    };
    // The calls the file tracepoints see on entry (the exec tracepoint fires only after an
    // exec succeeded, so an exec Landlock refused leaves no event at all).
    let Some(core) = [CoreAction::FsDelete, CoreAction::FsRename]
        .into_iter()
        .find(|c| secops_common::ActionId(*c as u16) == request.action.action)
    else {
        return false;
    };
    let target = target
        .filter(|_| core == CoreAction::FsRename)
        .map(Path::new);
    if !(plans.denies(agent, core, Path::new(&path.to_string()))
        || target.is_some_and(|t| plans.denies(agent, core, t)))
    {
        return false;
    }
    *verdict = secops_common::Verdict::Deny;
    *check = KernelCheck::Landlock(LandlockSeen::AtEntry);
    plans.await_kernel_record(core, target.map(Path::to_path_buf), request)
}

/// Whether `plan` keeps the agent off the cgroup files (no write under the cgroup2 mount),
/// so even as root it cannot move itself out of its cgroup.
pub(crate) fn holds_cgroup_files(plan: &LandlockPlan) -> bool {
    crate::kernel::fs::cgroup2_mount().is_ok_and(|mount| {
        plan_denies(plan, CoreAction::FsWrite, &mount.join("cgroup.procs"))
            && plan_denies(plan, CoreAction::FsCreate, &mount.join("escape"))
    })
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
    if let Some(plan) = shared.landlock.compiled_for(agent, &engine) {
        shared.landlock.remember(agent, plan.clone());
        return Some(plan);
    }
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
    shared.landlock.keep_compiled(agent, &engine, &plan);
    shared.landlock.remember(agent, plan.clone());
    Some(plan)
}
