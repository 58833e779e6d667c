//! The routes. Every handler states who may call it first: agents check and scan for
//! themselves; admins (root or the admin group, outside every agent cgroup) reach the rest.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use secops_common::{RiskLevel, Verdict};
use serde::{Deserialize, Serialize};

use super::super::accounts;
use super::super::approvals::{DecideError, Decider};
use super::super::decide::{decide_async, Door, NoAnswer, Request};
use super::super::enforcement::{reload_in_time, ReloadTrigger};
use super::super::metrics::{AgentSnapshot, Exposition, Snapshot};
use super::super::state::{lock, Shared};
use super::body::{read_json, read_json_or_empty};
use super::control;
use super::error::ApiError;
use super::identity::Caller;
use super::records::{api_record, audit_record, truncate};
use super::ApiState;
use crate::api::action::{ResolvedAction, API_FIELDS};
use crate::api::{
    AskAccepted, AskRequest, CheckRequest, CheckResponse, Registered, Reloaded, ScanRequest,
    ScanResponse, MAX_SUMMARY_CHARS, MAX_WAIT,
};
use crate::approvals::{self, Decided, Ticket, TicketError, TicketStatus, TicketStore};
use crate::audit::{
    AuditObject, AuditPaths, AuditReader, NewRecord, ObjectKind, QueryFilter, Record, Source,
};
use crate::daemon::layers::{describe_missing, missing_layers};
use crate::scan::{Applied, ResponsePolicy};
use crate::time::now_ns;

type ApiResult<T> = Result<Json<T>, ApiError>;
type Api = State<Arc<ApiState>>;
type Who = Extension<Arc<Caller>>;

/// Every route, as the OpenAPI document must list them.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/whoami"),
    ("POST", "/v1/check"),
    ("POST", "/v1/scan"),
    ("POST", "/v1/ask"),
    ("GET", "/v1/status"),
    ("POST", "/v1/reload"),
    ("GET", "/v1/agents"),
    ("POST", "/v1/agents/{name}/register"),
    ("POST", "/v1/agents/{name}/freeze"),
    ("POST", "/v1/agents/{name}/thaw"),
    ("POST", "/v1/agents/{name}/kill"),
    ("POST", "/v1/agents/{name}/autonomy"),
    ("POST", "/v1/stop-all"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/approvals"),
    ("GET", "/v1/approvals/{id}"),
    ("GET", "/v1/tickets/{id}"),
    ("POST", "/v1/approvals/{id}/approve"),
    ("POST", "/v1/approvals/{id}/deny"),
    ("GET", "/metrics"),
];

pub(crate) fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/check", post(check))
        .route("/v1/scan", post(scan))
        .route("/v1/ask", post(ask))
        .route("/v1/status", get(status))
        .route("/v1/reload", post(reload))
        .route("/v1/agents", get(agents))
        .route("/v1/agents/{name}/register", post(register))
        .route("/v1/agents/{name}/freeze", post(control::freeze))
        .route("/v1/agents/{name}/thaw", post(control::thaw))
        .route("/v1/agents/{name}/kill", post(control::kill))
        .route("/v1/agents/{name}/autonomy", post(control::set_autonomy))
        .route("/v1/stop-all", post(control::stop_all))
        .route("/v1/audit", get(audit))
        .route("/v1/approvals", get(approvals_list))
        .route("/v1/approvals/{id}", get(approvals_show))
        .route("/v1/tickets/{id}", get(ticket_wait))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/deny", post(deny))
        .route("/metrics", get(metrics_admin))
        .fallback(not_found)
        .with_state(state)
}

pub(crate) fn metrics_router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(request: axum::http::Request<Body>) -> ApiError {
    ApiError::not_found(format!(
        "no route {} {} (the API is described in secops-daemon/api/openapi.yaml)",
        request.method(),
        request.uri().path()
    ))
}

/// Runs `work` on the approval queue in a blocking task: SQLite never runs on the API thread,
/// and the lock is never held across an await.
async fn with_tickets<T: Send + 'static>(
    shared: &Arc<Shared>,
    work: impl FnOnce(&mut TicketStore) -> Result<T, TicketError> + Send + 'static,
) -> Result<Result<T, TicketError>, ApiError> {
    let shared = shared.clone();
    Ok(tokio::task::spawn_blocking(move || work(&mut lock(&shared.tickets))).await?)
}

async fn whoami(Extension(caller): Who) -> Json<crate::api::Whoami> {
    Json(caller.whoami())
}

/// What the record says beyond the engine's reason: the tool, its arguments, and a body that
/// claimed to be someone else.
fn context_note(
    tool: Option<&str>,
    arguments: Option<&str>,
    claimed: Option<&str>,
    agent: Option<&str>,
) -> String {
    let mut note = String::new();
    if let Some(tool) = tool {
        note.push_str(&format!("; tool {:?}", truncate(tool, 128)));
    }
    if let Some(arguments) = arguments {
        note.push_str(&format!(
            "; arguments {:?}",
            truncate(arguments, MAX_SUMMARY_CHARS)
        ));
    }
    if let Some(claimed) = claimed {
        if Some(claimed) != agent {
            note.push_str(&format!(
                "; the request named agent {:?}, ignored: identity comes from the caller's cgroup",
                truncate(claimed, 64)
            ));
        }
    }
    note
}

async fn check(State(state): Api, Extension(caller): Who, body: Body) -> ApiResult<CheckResponse> {
    caller.require_agent()?;
    // This route's time limit leaves room for a wait; its body still has the usual one.
    let request: CheckRequest = tokio::time::timeout(
        state.limits.request_timeout,
        read_json(body, state.limits.max_body_bytes),
    )
    .await
    .map_err(|_| body_timeout(state.limits.request_timeout))??;
    let wait = request.wait.as_deref().map(wait_time).transpose()?;
    let engine = state.shared.engine();
    let action = ResolvedAction::new(&engine, &request.action, &request.object, &API_FIELDS)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    drop(engine);
    let object = action.audit_object().or_else(|| {
        request.tool.as_ref().map(|t| AuditObject {
            kind: ObjectKind::Target,
            value: truncate(t, 128),
        })
    });
    let note = context_note(
        request.tool.as_deref(),
        request.arguments.as_deref(),
        request.agent.as_deref(),
        caller.agent.as_deref(),
    );
    let decision_request = Request {
        door: Door::Api,
        at_ns: now_ns(),
        actor: caller.actor(),
        action,
        object,
        inode: None,
        detail: String::new(),
        note,
    };
    let durable = request.durable;
    let decided = |request| decide_async(&state.shared, &state.writer, request, durable);
    let (outcome, mut audit_seq) = decided(decision_request.clone()).await.map_err(no_answer)?;
    let mut judged = outcome.judged;
    if let (Some(wait), Some(ticket)) = (wait, judged.ticket) {
        match state.shared.decided.wait_async(ticket, wait).await {
            // Decided with what the approval makes of the check (its grant), and recorded.
            Some(TicketStatus::Approved) => {
                let again = Request {
                    at_ns: now_ns(),
                    ..decision_request
                };
                let (again, seq) = decided(again).await.map_err(no_answer)?;
                judged = again.judged;
                audit_seq = seq;
            }
            // The human's denial, already in the log through the ticket's decision.
            Some(TicketStatus::Denied) => {
                judged.verdict = Verdict::Deny;
                judged.reason = format!(
                    "ticket #{ticket} was denied by a human (the policy says escalate: {})",
                    judged.reason
                );
            }
            Some(TicketStatus::Open) | None => {}
        }
    }
    Ok(Json(CheckResponse {
        verdict: judged.verdict,
        risk: judged.decision.risk,
        rule_id: judged.rule_id,
        reason: judged.reason,
        agent: caller.agent.clone(),
        ticket: judged.ticket,
        audit_seq,
    }))
}

fn no_answer(e: NoAnswer) -> ApiError {
    match e {
        NoAnswer::Join(_) => ApiError::internal(e.to_string()),
        _ => ApiError::unavailable(e.to_string()),
    }
}

fn body_timeout(limit: std::time::Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request was not complete within {} ms",
            limit.as_millis()
        ),
    )
}

/// A `wait` of a check or a ticket: a duration up to [`MAX_WAIT`].
fn wait_time(text: &str) -> Result<std::time::Duration, ApiError> {
    let wait = humantime::parse_duration(text)
        .map_err(|e| ApiError::bad_request(format!("field `wait`: {text:?}: {e}")))?;
    if wait > MAX_WAIT {
        return Err(ApiError::bad_request(format!(
            "field `wait`: at most {}",
            humantime::format_duration(MAX_WAIT)
        )));
    }
    Ok(wait)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketQuery {
    wait: Option<String>,
}

/// A ticket, for the agent it belongs to (or an admin); with `?wait=30s`, answered once it is
/// decided or the wait is over, whichever comes first.
async fn ticket_wait(
    State(state): Api,
    Extension(caller): Who,
    Path(id): Path<String>,
    query: Result<Query<TicketQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Ticket> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))?;
    let id = ticket_id(&id)?;
    let wait = q.wait.as_deref().map(wait_time).transpose()?;
    let read = || with_tickets(&state.shared, move |store| store.get(id));
    let ticket = read().await?.map_err(ticket_error)?;
    // An agent sees its own tickets only; another's is as good as missing.
    let admin = caller.require_admin().is_ok();
    if !admin && caller.agent.as_deref() != Some(ticket.agent.as_str()) {
        return Err(ApiError::not_found(format!("no ticket #{id}")));
    }
    match wait {
        Some(wait) if ticket.status == TicketStatus::Open => {
            state.shared.decided.wait_async(id, wait).await;
            Ok(Json(read().await?.map_err(ticket_error)?))
        }
        _ => Ok(Json(ticket)),
    }
}

async fn scan(State(state): Api, Extension(caller): Who, body: Body) -> ApiResult<ScanResponse> {
    caller.require_agent()?;
    let request: ScanRequest = read_json(body, state.limits.max_scan_bytes).await?;
    let engine = state.shared.engine();
    // An agent the policy does not know gets the strictest treatment.
    let (policy, autonomy) = caller
        .agent
        .as_deref()
        .and_then(|name| engine.policy().agents.iter().find(|a| a.name == name))
        .map_or(
            (
                ResponsePolicy::Withhold,
                secops_common::AutonomyLevel::Locked,
            ),
            |a| (a.output_scan.clone(), a.autonomy),
        );
    let text = request.output;
    let worker = state.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        worker.shared.scanner.respond(&text, &policy, autonomy)
    })
    .await?;
    state.shared.metrics.scanned(
        caller.agent.as_deref().unwrap_or(""),
        outcome.action,
        &outcome.findings,
    );
    if outcome.action != Applied::Clean {
        let counts: Vec<String> = outcome
            .findings
            .iter()
            .map(|(c, n)| format!("{n} {c}"))
            .collect();
        let (verdict, did) = match outcome.action {
            Applied::Withheld => (Verdict::Deny, "withheld"),
            Applied::Redacted => (Verdict::Allow, "redacted"),
            _ => (Verdict::Allow, "passed unchanged (log-only)"),
        };
        let note = context_note(
            request.tool.as_deref(),
            None,
            request.agent.as_deref(),
            caller.agent.as_deref(),
        );
        let record = NewRecord {
            object: request.tool.as_ref().map(|t| AuditObject {
                kind: ObjectKind::Target,
                value: truncate(t, 128),
            }),
            ..api_record(
                &caller,
                "tool:output",
                verdict,
                RiskLevel::High,
                format!("output scan found {}; {did}{note}", counts.join(", ")),
            )
        };
        // Scans are answered once the record is queued, as checks are by default.
        audit_record(&state, record, false).await?;
    }
    Ok(Json(ScanResponse {
        output: outcome.text,
        action: outcome.action,
        findings: outcome.findings,
        agent: caller.agent.clone(),
    }))
}

/// `secops run --ask`: the calling agent process hands over its seccomp listener. The
/// descriptor is taken from the caller itself (the peer the kernel names), so a request can
/// only ever add scrutiny to the agent that sends it.
async fn ask(State(state): Api, Extension(caller): Who, body: Body) -> ApiResult<AskAccepted> {
    caller.require_agent()?;
    let request: AskRequest = read_json(body, state.limits.max_body_bytes).await?;
    let (Some(agent), Some(pid)) = (caller.agent.clone(), caller.pid) else {
        return Err(ApiError::forbidden(format!(
            "the caller ({}) belongs to no agent the policy defines",
            caller.describe()
        )));
    };
    let pid = u32::try_from(pid)
        .map_err(|_| ApiError::bad_request(format!("the caller's pid {pid} is not valid")))?;
    let listener =
        tokio::task::spawn_blocking(move || super::super::parked::take_listener(pid, request.fd))
            .await?
            .map_err(|e| ApiError::bad_request(format!("field `fd`: {e}")))?;
    super::super::parked::serve(
        state.shared.clone(),
        state.writer.clone(),
        agent.clone(),
        listener,
    )
    .map_err(|e| ApiError::internal(format!("serving the listener: {e}")))?;
    tracing::info!(%agent, pid, "serving the --ask listener of a launched agent");
    Ok(Json(AskAccepted { agent }))
}

async fn status(State(state): Api, Extension(caller): Who) -> ApiResult<crate::api::StatusReport> {
    caller.require_admin()?;
    let mut report = state.shared.status();
    report.audit = Some(audit_status(&state.writer.health()));
    Ok(Json(report))
}

/// The writer's health as the API reports it.
fn audit_status(health: &crate::audit::AuditHealth) -> crate::api::AuditLogStatus {
    crate::api::AuditLogStatus {
        failing: health.failing.clone(),
        failing_since_ns: health.failing_since_ns,
        committed_seq: health.committed_seq,
        checkpoint_seq: health.checkpoint_seq,
        records_committed: health.records_committed,
        records_failed: health.records_failed,
        records_refused: health.records_refused,
        queued_records: health.queued_records,
        inode_protected: health.inode_protected,
        witnesses: health
            .witnesses
            .iter()
            .map(|w| crate::api::AuditWitnessStatus {
                witness: w.witness.clone(),
                witnessed_seq: w.witnessed_seq,
                pending: w.pending,
                dropped: w.dropped,
                failures: w.failures,
                last_error: w.last_error.clone(),
            })
            .collect(),
        index_error: health.index_error.clone(),
    }
}

async fn agents(
    State(state): Api,
    Extension(caller): Who,
) -> ApiResult<Vec<crate::api::AgentStatus>> {
    caller.require_admin()?;
    Ok(Json(state.shared.status().agents))
}

async fn reload(State(state): Api, Extension(caller): Who) -> ApiResult<Reloaded> {
    caller.require_admin()?;
    let trigger = ReloadTrigger::Api(caller.actor(), caller.describe());
    let files = reload_in_time(&state.shared, &state.writer, trigger)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
    Ok(Json(Reloaded {
        policy_files: files,
    }))
}

/// Makes sure the agent's cgroup exists and is known to the kernel programs, and says where
/// it is, so the launcher can move itself into it.
async fn register(
    State(state): Api,
    Extension(caller): Who,
    Path(agent): Path<String>,
) -> ApiResult<Registered> {
    if caller.require_admin().is_err() {
        tracing::warn!(caller = %caller.describe(), %agent, "refused: a caller that is not an admin asked to start an agent");
        return Err(ApiError::forbidden(format!(
            "refused: processes inside an agent cgroup, and callers that are not admins, cannot start agents (caller: {})",
            caller.describe()
        )));
    }
    let shared = &state.shared;
    match shared.agent_slot(&agent) {
        Some(slot) if slot.in_policy => {
            if !slot.cgroup.exists() {
                // Someone removed it since the last sync: make it (and its map entry) again.
                let s = shared.clone();
                tokio::task::spawn_blocking(move || s.resync())
                    .await?
                    .map_err(|e| {
                        ApiError::internal(format!("recreating the cgroup of agent {agent}: {e:#}"))
                    })?;
            }
            let slot = shared.agent_slot(&agent).ok_or_else(|| {
                ApiError::internal(format!("agent {agent} vanished during registration"))
            })?;
            let engine = shared.engine();
            let spec = engine.policy().agent(&agent).ok_or_else(|| {
                ApiError::not_found(format!("the policy defines no agent named {agent:?}"))
            })?;
            let missing = missing_layers(&shared.capabilities, &spec.require);
            if !missing.is_empty() {
                let why = format!(
                    "refused: agent {agent} requires layers that are not active on this kernel: {}",
                    describe_missing(&missing)
                );
                tracing::warn!(%agent, "{why}");
                return Err(ApiError::new(StatusCode::CONFLICT, why));
            }
            let (name, user) = (agent.clone(), spec.user.clone());
            let run_as =
                tokio::task::spawn_blocking(move || accounts::run_as(&name, user.as_ref()))
                    .await?
                    .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?;
            let identity_enforced = run_as.uid != 0 || shared.bpf_lsm_enforcing();
            if !identity_enforced {
                tracing::warn!(%agent, "agent starts as root without BPF LSM: its identity is not enforceable (it could leave its cgroup)");
            }
            let (s, name) = (shared.clone(), agent.clone());
            let landlock =
                tokio::task::spawn_blocking(move || super::super::landlock::plan_for(&s, &name))
                    .await?;
            Ok(Json(Registered {
                landlock,
                agent,
                cgroup: slot.cgroup,
                cgroup_id: slot.cgroup_id,
                workspace: PathBuf::from(&spec.workspace),
                create_workspace: spec.create_workspace,
                run_as,
                identity_enforced,
            }))
        }
        _ => Err(ApiError::not_found(format!(
            "the policy defines no agent named {agent:?}"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    agent: Option<String>,
    action: Option<String>,
    verdict: Option<Verdict>,
    after_seq: Option<u64>,
    limit: Option<usize>,
}

const MAX_AUDIT_LIMIT: usize = 10_000;

#[derive(Serialize)]
struct AuditPage {
    records: Vec<Record>,
}

async fn audit(
    State(state): Api,
    Extension(caller): Who,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<AuditPage> {
    caller.require_admin()?;
    let Query(q) =
        query.map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_AUDIT_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_AUDIT_LIMIT}"
        )));
    }
    let filter = QueryFilter {
        agent: q.agent,
        verdict: q.verdict,
        action: q.action,
        after_seq: q.after_seq,
        limit: Some(limit),
        ..QueryFilter::default()
    };
    let paths = AuditPaths::new(&state.shared.options.state_dir);
    let records = tokio::task::spawn_blocking(move || AuditReader::open(&paths)?.query(&filter))
        .await?
        .map_err(|e| match e {
            crate::audit::AuditError::InvalidFilter { why } => ApiError::bad_request(why),
            other => ApiError::unavailable(other.to_string()),
        })?;
    Ok(Json(AuditPage { records }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalsQuery {
    status: Option<TicketStatus>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct TicketList {
    tickets: Vec<Ticket>,
}

async fn approvals_list(
    State(state): Api,
    Extension(caller): Who,
    query: Result<Query<ApprovalsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<TicketList> {
    caller.require_admin()?;
    let Query(q) =
        query.map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_AUDIT_LIMIT);
    let tickets = with_tickets(&state.shared, move |store| store.list(q.status, limit))
        .await?
        .map_err(ticket_error)?;
    Ok(Json(TicketList { tickets }))
}

fn ticket_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("ticket id {raw:?} is not a number")))
}

fn ticket_error(e: TicketError) -> ApiError {
    match e {
        TicketError::NotFound(_) => ApiError::not_found(e.to_string()),
        TicketError::NotOpen { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        other => ApiError::unavailable(other.to_string()),
    }
}

async fn approvals_show(
    State(state): Api,
    Extension(caller): Who,
    Path(id): Path<String>,
) -> ApiResult<Ticket> {
    caller.require_admin()?;
    let id = ticket_id(&id)?;
    let ticket = with_tickets(&state.shared, move |store| store.get(id))
        .await?
        .map_err(ticket_error)?;
    Ok(Json(ticket))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    /// How long an approval lasts, e.g. `10m` (approve only).
    #[serde(rename = "for")]
    grant_for: Option<String>,
    /// The approval is spent by its first use (approve only).
    #[serde(default)]
    once: bool,
    reason: Option<String>,
}

async fn approve(
    State(state): Api,
    Extension(caller): Who,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Ticket> {
    decide(state, caller, id, body, true).await
}

async fn deny(
    State(state): Api,
    Extension(caller): Who,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Ticket> {
    decide(state, caller, id, body, false).await
}

/// A human's decision on a ticket. A caller that may not decide is refused, and the refusal
/// is audited: an agent trying to approve its own ticket is worth knowing about.
async fn decide(
    state: Arc<ApiState>,
    caller: Arc<Caller>,
    id: String,
    body: Body,
    approve: bool,
) -> ApiResult<Ticket> {
    let id = ticket_id(&id)?;
    let word = if approve { "approve" } else { "deny" };
    if let Err(refusal) = caller.require_admin() {
        let record = api_record(
            &caller,
            "sys:approval",
            Verdict::Deny,
            RiskLevel::Critical,
            format!(
                "refused to let {} {word} ticket #{id}: {}",
                caller.describe(),
                refusal.message
            ),
        );
        let record = NewRecord {
            source: Source::Approval,
            ..record
        };
        audit_record(&state, record, true).await?;
        return Err(refusal);
    }
    let body: DecisionBody = read_json_or_empty(body, state.limits.max_body_bytes).await?;
    let decision = if approve {
        let grant = match body.grant_for.as_deref() {
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| ApiError::bad_request(format!("field `for`: {text:?}: {e}")))?,
            None => approvals::DEFAULT_GRANT,
        };
        if grant.is_zero() || grant > approvals::MAX_GRANT {
            return Err(ApiError::bad_request(format!(
                "field `for`: an approval lasts more than 0 s and at most {}",
                humantime::format_duration(approvals::MAX_GRANT)
            )));
        }
        Decided::Approve {
            grant,
            once: body.once,
        }
    } else {
        if body.grant_for.is_some() {
            return Err(ApiError::bad_request(
                "field `for`: only an approval has a duration",
            ));
        }
        if body.once {
            return Err(ApiError::bad_request(
                "field `once`: only an approval can be one-shot",
            ));
        }
        Decided::Deny
    };
    let reason = body.reason.map(|r| truncate(&r, MAX_SUMMARY_CHARS));
    let shared = state.shared.clone();
    let writer = state.writer.clone();
    let by = decider(&caller);
    let ticket = tokio::task::spawn_blocking(move || {
        shared.decide_ticket(&writer, id, decision, &by, reason.as_deref())
    })
    .await?
    .map_err(|e| match e {
        DecideError::Ticket(e) => ticket_error(e),
        other => ApiError::unavailable(other.to_string()),
    })?;
    Ok(Json(ticket))
}

/// A human deciding through the API, as the ticket and the audit record name them.
fn decider(caller: &Caller) -> Decider {
    Decider {
        name: caller.describe(),
        pid: caller.pid.and_then(|p| u32::try_from(p).ok()),
        uid: Some(caller.uid),
        comm: caller.comm.clone(),
    }
}

async fn metrics_admin(
    state: Api,
    Extension(caller): Who,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Err(e) = caller.require_admin() {
        return e.into_response();
    }
    metrics(state, headers).await
}

async fn metrics(State(state): Api, headers: axum::http::HeaderMap) -> Response {
    let format = Exposition::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    // A queue that cannot be read keeps the gauges' last values rather than reporting it
    // empty.
    let tickets = match with_tickets(&state.shared, |store| store.count_by_status()).await {
        Ok(Ok(counts)) => Some(counts),
        Ok(Err(e)) => {
            tracing::warn!("metrics: counting tickets: {e}");
            None
        }
        Err(e) => {
            tracing::warn!("metrics: counting tickets: {}", e.message);
            None
        }
    };
    // The agents' cgroup files are read on the blocking pool, like the queue.
    let shared = state.shared.clone();
    let (agents, dns, kernel_denials) =
        match tokio::task::spawn_blocking(move || shared.status()).await {
            Ok(status) => (status.agents, Some(status.dns), Some(status.events.denials)),
            Err(_) => (Vec::new(), None, None),
        };
    let counters = &state.shared.counters;
    let snapshot = Snapshot {
        events_received: counters.received.load(std::sync::atomic::Ordering::Relaxed),
        events_lost: counters.lost.load(std::sync::atomic::Ordering::Relaxed),
        tickets,
        layers: state
            .shared
            .capabilities
            .iter()
            .map(|c| (c.name.clone(), c.active))
            .collect(),
        agents: agents
            .into_iter()
            .map(|a| AgentSnapshot {
                autonomy: a
                    .autonomy
                    .parse()
                    .unwrap_or(secops_common::AutonomyLevel::Locked),
                name: a.name,
                frozen: a.frozen,
                processes: a.processes,
            })
            .collect(),
        notifications: state.shared.notifier.delivery.counts().to_vec(),
        dns,
        audit: Some(audit_status(&state.writer.health())),
        kernel_denials,
    };
    (
        [(header::CONTENT_TYPE, format.content_type())],
        state.shared.metrics.encode(&snapshot, format),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_notes_the_tool_its_arguments_and_a_claimed_identity() {
        let note = context_note(Some("shell"), Some("rm -rf /"), Some("root"), Some("coder"));
        assert_eq!(
            note,
            "; tool \"shell\"; arguments \"rm -rf /\"; the request named agent \"root\", \
             ignored: identity comes from the caller's cgroup"
        );
        assert_eq!(context_note(None, None, Some("coder"), Some("coder")), "");
        let long = "a".repeat(2 * MAX_SUMMARY_CHARS);
        let cut = context_note(None, Some(&long), None, None);
        assert!(
            cut.chars().count() < MAX_SUMMARY_CHARS + 32,
            "arguments are cut"
        );
        assert!(cut.ends_with("…\""));
    }
}
