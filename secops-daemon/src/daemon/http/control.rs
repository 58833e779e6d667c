//! The kill switch and live autonomy routes: admins only. A refused caller (an agent, or a
//! user who is not an admin) is audited before the refusal is answered, like a refused
//! approval: an agent trying to thaw itself or raise its own autonomy is worth knowing about.
//! Every change is audited, with who made it, before it is answered.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use secops_common::{AutonomyLevel, CoreAction, RiskLevel, Verdict};

use super::super::control::{ControlError, KillSwitch};
use super::super::decide::autonomy_object;
use super::body::{read_json, read_json_or_empty};
use super::error::ApiError;
use super::identity::Caller;
use super::records::{api_record, audit_record, truncate};
use super::ApiState;
use crate::api::{
    AgentStatus, AutonomyChange, ControlRequest, SetAutonomyRequest, StopAll, MAX_SUMMARY_CHARS,
};
use crate::audit::{AuditObject, NewRecord, ObjectKind};

type ApiResult<T> = Result<Json<T>, ApiError>;
type Api = State<Arc<ApiState>>;
type Who = Extension<Arc<Caller>>;

fn control_error(e: ControlError) -> ApiError {
    match e {
        ControlError::UnknownAgent { .. } => ApiError::not_found(e.to_string()),
        ControlError::NotInPolicy { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        ControlError::Failed { .. } => ApiError::internal(e.to_string()),
    }
}

/// Refuses (and audits the refusal of) anyone but an admin. `what` is what was attempted,
/// e.g. `freeze agent "coder"`.
async fn require_admin(
    state: &ApiState,
    caller: &Caller,
    action: CoreAction,
    what: &str,
) -> Result<(), ApiError> {
    let Err(refusal) = caller.require_admin() else {
        return Ok(());
    };
    let record = api_record(
        caller,
        action.as_str(),
        Verdict::Deny,
        RiskLevel::Critical,
        format!(
            "refused to let {} {what}: {}",
            caller.describe(),
            refusal.message
        ),
    );
    audit_record(state, record, true).await?;
    Err(refusal)
}

fn with_reason(text: String, reason: Option<&str>) -> String {
    match reason {
        Some(r) => format!("{text}: {}", truncate(r, MAX_SUMMARY_CHARS)),
        None => text,
    }
}

/// The record of a kill switch action on one agent, done or failed.
fn kill_switch_record(
    caller: &Caller,
    agent: &str,
    status: Option<&AgentStatus>,
    text: String,
    failed: bool,
) -> NewRecord {
    NewRecord {
        agent: Some(agent.to_owned()),
        cgroup_id: status.map(|s| s.cgroup_id),
        object: status.map(|s| AuditObject {
            kind: ObjectKind::Path,
            value: s.cgroup.display().to_string(),
        }),
        ..api_record(
            caller,
            CoreAction::SysCgroup.as_str(),
            Verdict::Allow,
            if failed {
                RiskLevel::Critical
            } else {
                RiskLevel::High
            },
            text,
        )
    }
}

pub(super) async fn freeze(
    state: Api,
    caller: Who,
    name: Path<String>,
    body: Body,
) -> ApiResult<AgentStatus> {
    kill_switch(state, caller, name, body, KillSwitch::Freeze).await
}

pub(super) async fn thaw(
    state: Api,
    caller: Who,
    name: Path<String>,
    body: Body,
) -> ApiResult<AgentStatus> {
    kill_switch(state, caller, name, body, KillSwitch::Thaw).await
}

pub(super) async fn kill(
    state: Api,
    caller: Who,
    name: Path<String>,
    body: Body,
) -> ApiResult<AgentStatus> {
    kill_switch(state, caller, name, body, KillSwitch::Kill).await
}

async fn kill_switch(
    State(state): Api,
    Extension(caller): Who,
    Path(name): Path<String>,
    body: Body,
    what: KillSwitch,
) -> ApiResult<AgentStatus> {
    require_admin(
        &state,
        &caller,
        CoreAction::SysCgroup,
        &format!("{} agent {:?}", what.as_str(), truncate(&name, 64)),
    )
    .await?;
    let request: ControlRequest = read_json_or_empty(body, state.limits.max_body_bytes).await?;
    let shared = state.shared.clone();
    let target = name.clone();
    let result = tokio::task::spawn_blocking(move || shared.kill_switch(&target, what)).await?;
    let by = caller.describe();
    match result {
        Ok(status) => {
            let text = with_reason(
                format!("agent {} by {by}", what.past()),
                request.reason.as_deref(),
            );
            let record = kill_switch_record(&caller, &name, Some(&status), text, false);
            audit_record(&state, record, true).await?;
            Ok(Json(status))
        }
        Err(e @ ControlError::UnknownAgent { .. }) => Err(control_error(e)),
        Err(e) => {
            // A kill switch that did not work is the one thing the operator must not miss.
            let status = state.shared.agent_status_of(&name).ok();
            let text = format!("{} requested by {by} FAILED: {e}", what.as_str());
            let record = kill_switch_record(&caller, &name, status.as_ref(), text, true);
            audit_record(&state, record, true).await?;
            Err(control_error(e))
        }
    }
}

/// Freezes every agent at once (each in its own thread, so a slow one does not hold up the
/// others) and audits each.
pub(super) async fn stop_all(
    State(state): Api,
    Extension(caller): Who,
    body: Body,
) -> ApiResult<StopAll> {
    require_admin(&state, &caller, CoreAction::SysCgroup, "stop every agent").await?;
    let request: ControlRequest = read_json_or_empty(body, state.limits.max_body_bytes).await?;
    let shared = state.shared.clone();
    let results = tokio::task::spawn_blocking(move || {
        let names = shared.agent_names();
        std::thread::scope(|scope| {
            let running: Vec<_> = names
                .iter()
                .map(|name| {
                    let shared = &shared;
                    scope.spawn(move || shared.kill_switch(name, KillSwitch::Freeze))
                })
                .collect();
            names
                .iter()
                .zip(running)
                .map(|(name, t)| {
                    let result = t.join().unwrap_or_else(|_| {
                        Err(ControlError::Failed {
                            what: "freeze",
                            agent: name.clone(),
                            source: anyhow::anyhow!("the freezing thread panicked"),
                        })
                    });
                    (name.clone(), result)
                })
                .collect::<Vec<_>>()
        })
    })
    .await?;
    let by = caller.describe();
    let mut answer = StopAll {
        agents: Vec::new(),
        failed: Vec::new(),
    };
    for (name, result) in results {
        let (status, text, failed) = match result {
            Ok(status) => (
                Some(status),
                with_reason(
                    format!("stop-all: agent frozen by {by}"),
                    request.reason.as_deref(),
                ),
                false,
            ),
            Err(e) => {
                answer.failed.push(e.to_string());
                (
                    state.shared.agent_status_of(&name).ok(),
                    format!("stop-all by {by}: freeze FAILED: {e}"),
                    true,
                )
            }
        };
        let record = kill_switch_record(&caller, &name, status.as_ref(), text, failed);
        audit_record(&state, record, true).await?;
        answer.agents.extend(status);
    }
    Ok(Json(answer))
}

pub(super) async fn set_autonomy(
    State(state): Api,
    Extension(caller): Who,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<AutonomyChange> {
    require_admin(
        &state,
        &caller,
        CoreAction::SysAutonomy,
        &format!("change the autonomy of agent {:?}", truncate(&name, 64)),
    )
    .await?;
    let request: SetAutonomyRequest = read_json(body, state.limits.max_body_bytes).await?;
    let level = match request.level.as_str() {
        "policy" => None,
        other => Some(other.parse::<AutonomyLevel>().map_err(|_| {
            ApiError::bad_request(format!(
                "field `level`: {:?} is not an autonomy level (full, semi, supervised, locked, or \
                 policy to return to the policy's)",
                truncate(other, 32)
            ))
        })?),
    };
    let by = caller.describe();
    let reason = request
        .reason
        .as_deref()
        .map(|r| truncate(r, MAX_SUMMARY_CHARS))
        .unwrap_or_else(|| "no reason given".to_owned());
    let shared = state.shared.clone();
    let (target, set_by, why) = (name.clone(), by.clone(), reason.clone());
    let change =
        tokio::task::spawn_blocking(move || shared.set_autonomy(&target, level, &set_by, &why))
            .await?
            .map_err(control_error)?;
    let cgroup_id = state.shared.agent_slot(&name).map(|s| s.cgroup_id);
    let record = NewRecord {
        agent: Some(name.clone()),
        cgroup_id,
        object: Some(autonomy_object()),
        ..api_record(
            &caller,
            CoreAction::SysAutonomy.as_str(),
            Verdict::Allow,
            RiskLevel::High,
            format!(
                "autonomy {} -> {}{}, set by {by}: {reason}",
                change.from,
                change.to,
                if change.overridden {
                    ""
                } else {
                    " (the policy's level, override dropped)"
                }
            ),
        )
    };
    audit_record(&state, record, true).await?;
    Ok(Json(change))
}
