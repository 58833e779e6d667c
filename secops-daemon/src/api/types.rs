//! The bodies of the HTTP API's requests and responses (`/v1/...`), shared by the daemon's
//! server, the blocking client and the OpenAPI document (`secops-daemon/api/openapi.yaml`).
//! Request bodies refuse unknown fields, so a misspelt field is a 400, not a silent no-op.

use std::path::PathBuf;

use std::collections::BTreeMap;

use secops_common::{RiskLevel, Verdict};
use serde::{Deserialize, Serialize};

use crate::scan::{Applied, Category};

/// `POST /v1/check`: one action an agent is about to take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The action type, `category:action` (e.g. `fs:delete`, `vcs:push`).
    pub action: String,
    /// What the action is on.
    #[serde(default)]
    pub object: ActionObject,
    /// The tool the agent is about to call, for the audit log.
    pub tool: Option<String>,
    /// A short summary of the tool's arguments, for the audit log (truncated to
    /// [`MAX_SUMMARY_CHARS`]).
    pub arguments: Option<String>,
    /// Ignored for identity: the caller's agent comes from its cgroup. A name that differs
    /// from the caller's agent is noted in the audit record.
    pub agent: Option<String>,
    /// Answer only once the audit record is committed (and say its seq). Without it the
    /// answer comes as soon as the record is queued, in order, for the next commit.
    #[serde(default)]
    pub durable: bool,
    /// When the check escalates: wait this long (e.g. `30s`, at most [`MAX_WAIT`]) for a
    /// human to decide the ticket, and answer with what the decision makes of the check.
    pub wait: Option<String>,
}

/// The longest a request may wait for a ticket's decision.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// The object of an action; which fields matter depends on the action type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionObject {
    /// An absolute path (`fs:*`, `secret:read`).
    pub path: Option<String>,
    /// An absolute path of an executable (`proc:exec`).
    pub binary: Option<String>,
    /// A destination IP address (`net:*`).
    pub addr: Option<std::net::IpAddr>,
    /// A destination host name.
    pub host: Option<String>,
    pub port: Option<u16>,
}

/// The longest tool-argument summary kept in an audit record.
pub const MAX_SUMMARY_CHARS: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResponse {
    pub verdict: Verdict,
    pub risk: RiskLevel,
    /// The rule that decided, if one did.
    pub rule_id: Option<String>,
    pub reason: String,
    /// The agent the decision was made for (from the caller's cgroup); `null` for a caller
    /// in the secops cgroup tree that belongs to no agent the daemon knows.
    pub agent: Option<String>,
    /// The approval ticket this escalation opened or joined.
    pub ticket: Option<u64>,
    /// The audit record's seq, when `durable` was asked for.
    pub audit_seq: Option<u64>,
}

/// `POST /v1/scan`: a tool's output, before the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    pub output: String,
    /// The tool that printed it, for the audit log.
    pub tool: Option<String>,
    /// Ignored for identity, as in [`CheckRequest::agent`].
    pub agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanResponse {
    /// What to hand back to the agent; `null` when the policy withholds the output.
    pub output: Option<String>,
    pub action: Applied,
    /// Findings per category (counts only).
    pub findings: BTreeMap<Category, usize>,
    pub agent: Option<String>,
}

/// `GET /v1/whoami`: what the daemon makes of the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
    pub role: Role,
    /// The agent, for callers inside an agent cgroup (`null` if the cgroup is under the
    /// secops root but belongs to no agent the daemon knows).
    pub agent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Inside an agent cgroup: may check and scan for itself, nothing else.
    Agent,
    /// Outside every agent cgroup and root or in the admin group.
    Admin,
    /// Outside every agent cgroup, not an admin: may only ask who it is.
    User,
}

/// `POST /v1/agents/{name}/register`: where the agent's cgroup is, and how `secops run`
/// must start it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub agent: String,
    pub cgroup: PathBuf,
    pub cgroup_id: u64,
    /// Its working directory.
    pub workspace: PathBuf,
    /// Make a missing workspace (owned by `run_as`); else a missing one is an error.
    pub create_workspace: bool,
    pub run_as: RunAs,
    /// False when the agent runs as root and no kernel layer keeps it in its cgroup (BPF
    /// LSM is not active): it could leave its cgroup and become an admin on the socket.
    pub identity_enforced: bool,
    /// The Landlock ruleset `secops run` applies before exec, as the daemon compiled it from
    /// the policy; `None` when this layer does not run for the agent (no Landlock in the
    /// kernel, or BPF LSM enforces its files).
    #[serde(default)]
    pub landlock: Option<LandlockPlan>,
}

/// An agent's policy as a Landlock ruleset. Access masks are the kernel's
/// `LANDLOCK_ACCESS_FS_*` / `LANDLOCK_SCOPE_*` bits (stable kernel ABI), so the plan means the
/// same to every launcher; the launcher applies it best-effort, feature by feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockPlan {
    /// The filesystem rights the ruleset handles: denied everywhere but beneath `paths`.
    pub handled_fs: u64,
    /// Hierarchies (or single files) and the handled rights granted beneath them.
    pub paths: Vec<LandlockPath>,
    /// TCP ports `connect` may reach; `None`: TCP connect is not handled (see `tcp_why`).
    pub tcp_connect: Option<Vec<u16>>,
    /// Why TCP is (not) handled.
    pub tcp_why: String,
    /// `LANDLOCK_SCOPE_*` bits: signals and abstract unix sockets stay inside the domain.
    pub scopes: u64,
    /// What the policy says that this ruleset cannot hold, one line each (rule and why).
    pub unexpressed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockPath {
    pub path: PathBuf,
    pub access: u64,
}

/// The account an agent runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    /// As the policy names it (a name, or `uid N`).
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one among them).
    pub groups: Vec<u32>,
    pub home: Option<PathBuf>,
}

/// `POST /v1/ask`: an agent process hands over the listener of its `--ask` seccomp filter.
/// Only the descriptor's number travels: the daemon takes the descriptor itself from the
/// caller (pidfd_getfd), whose identity comes from the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    pub fd: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskAccepted {
    pub agent: String,
}

/// `POST /v1/reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    pub policy_files: Vec<PathBuf>,
}

/// Every 4xx and 5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    pub policy_files: Vec<PathBuf>,
    /// Why the last reload was refused (the previous policy stayed in force), if it was.
    pub last_reload_error: Option<String>,
    pub state_dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub pin_dir: PathBuf,
    pub capabilities: Vec<CapabilityStatus>,
    pub agents: Vec<AgentStatus>,
    pub events: EventCounters,
    pub dns: DnsStatus,
    /// The audit log's writer: whether records are being written, and its witnesses.
    #[serde(default)]
    pub audit: Option<AuditLogStatus>,
}

/// The audit log as `secops status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLogStatus {
    /// `None` while records are written; why not while they cannot be (checks that must be
    /// recorded are then refused, never allowed unrecorded).
    pub failing: Option<String>,
    pub failing_since_ns: Option<i64>,
    pub committed_seq: u64,
    pub checkpoint_seq: u64,
    pub records_committed: u64,
    pub records_failed: u64,
    pub records_refused: u64,
    pub queued_records: usize,
    pub witnesses: Vec<AuditWitnessStatus>,
    pub index_error: Option<String>,
    /// Segments append-only while open and immutable once closed (inode flags).
    #[serde(default)]
    pub inode_protected: bool,
}

/// One witness the checkpoints are sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditWitnessStatus {
    pub witness: String,
    /// The newest checkpoint's seq it acknowledged (0: none yet).
    pub witnessed_seq: u64,
    pub pending: usize,
    pub dropped: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// The DNS layer: secops' resolver, which every agent's port-53 traffic is sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStatus {
    pub active: bool,
    /// What it does when active; why not when not.
    pub detail: String,
    pub agents: Vec<DnsAgentStatus>,
    pub cache_entries: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Addresses answers allowed, over every agent, not yet expired.
    pub resolved_addresses: u64,
    pub answered: u64,
    pub refused: u64,
    /// Messages that were not one question (answered FORMERR/NOTIMP, or dropped).
    pub unanswerable: u64,
    pub upstream_failures: u64,
}

/// One agent's listener and where its allowed names are resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsAgentStatus {
    pub agent: String,
    /// The listener's port on 127.0.0.1 and [::1]; `None` when it could not be made (the
    /// agent then has no DNS).
    pub port: Option<u16>,
    pub error: Option<String>,
    pub upstreams: Vec<String>,
}

/// One kernel-dependent layer and whether it is active on this kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityStatus {
    pub name: String,
    /// The layer's key as a policy's `require:` names it (`lsm`, `egress`, `events`, `dns`, `landlock`),
    /// or a part no policy can require (`ring-buffer`).
    #[serde(default)]
    pub key: String,
    pub active: bool,
    /// What it does when active; why not when not.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub name: String,
    pub cgroup: PathBuf,
    pub cgroup_id: u64,
    /// The autonomy the engine and the kernel decide with: an override if there is one, else
    /// the policy's.
    pub autonomy: String,
    /// What the policy file says (the same as `autonomy` unless overridden).
    pub policy_autonomy: String,
    /// The live override, if a person or repeated denials set one.
    pub autonomy_override: Option<AutonomyOverride>,
    pub egress_enforced: bool,
    pub processes: usize,
    /// The agent's cgroup is frozen (`secops agents freeze`, `secops stop-all`).
    pub frozen: bool,
    /// The account `secops run` starts it as, as the policy names it.
    pub user: Option<String>,
    /// Why its identity or confinement is weaker than it looks (root without BPF LSM).
    pub warning: Option<String>,
    /// The Landlock ruleset of its last `secops run`, summarized; `None` when none was
    /// compiled for it.
    #[serde(default)]
    pub landlock: Option<String>,
}

/// Who set an agent's autonomy away from the policy's, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutonomyOverride {
    pub set_by: String,
    pub set_at_ns: i64,
    pub reason: String,
}

/// `POST /v1/agents/{name}/autonomy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAutonomyRequest {
    /// `full`, `semi`, `supervised`, `locked`, or `policy` to drop the override and return to
    /// what the policy file says.
    pub level: String,
    /// Why, for the audit log.
    pub reason: Option<String>,
}

/// An autonomy change, as made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutonomyChange {
    pub agent: String,
    pub from: String,
    pub to: String,
    /// Whether `to` is an override (false: the policy's level is back in force).
    pub overridden: bool,
    /// Why, as audited.
    pub reason: String,
}

/// `POST /v1/agents/{name}/freeze|thaw|kill` and `POST /v1/stop-all`: an optional reason for
/// the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlRequest {
    pub reason: Option<String>,
}

/// `POST /v1/stop-all`: every agent, as it is after the freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopAll {
    pub agents: Vec<AgentStatus>,
    /// Agents that could not be frozen, with why.
    pub failed: Vec<String>,
}

impl AgentStatus {
    /// `semi`, or `locked (policy: semi)` when overridden.
    pub fn autonomy_text(&self) -> String {
        match &self.autonomy_override {
            Some(_) => format!("{} (policy: {})", self.autonomy, self.policy_autonomy),
            None => self.autonomy.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounters {
    pub received: u64,
    pub audited: u64,
    pub lost: u64,
    /// The kernel's counted denials and escalations against what the log accounts for.
    #[serde(default)]
    pub denials: KernelDenials,
}

/// The kernel's counts of its denials and escalations (`secops_decisions`, in every epoch
/// not yet settled), and what the audit log accounts for of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelDenials {
    /// Counted by the programs, in the epochs the kernel still holds.
    pub counted: u64,
    /// Committed as records, ever (in this counter map).
    pub committed: u64,
    /// Audited as lost in daemon crashes, ever (in this counter map).
    pub lost_in_crash: u64,
    /// Counted and not yet accounted for: on their way to the log (or, for an earlier
    /// daemon's epoch not yet settled, perhaps lost).
    pub pending: u64,
}

impl std::fmt::Display for StatusReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "secops {} (daemon pid {})", self.version, self.pid)?;
        let files: Vec<String> = self
            .policy_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        writeln!(f, "policy: {}", files.join(", "))?;
        if let Some(e) = &self.last_reload_error {
            writeln!(
                f,
                "last reload REFUSED (previous policy still in force): {e}"
            )?;
        }
        writeln!(
            f,
            "state: {}   cgroup root: {}   pins: {}",
            self.state_dir.display(),
            self.cgroup_root.display(),
            self.pin_dir.display()
        )?;
        if let Some(audit) = &self.audit {
            match &audit.failing {
                None => writeln!(
                    f,
                    "audit log: writing — committed up to seq {}, sealed up to {}; {} written, \
                     {} failed, {} refused since start; segments {}",
                    audit.committed_seq,
                    audit.checkpoint_seq,
                    audit.records_committed,
                    audit.records_failed,
                    audit.records_refused,
                    if audit.inode_protected {
                        "append-only/immutable (inode flags set)"
                    } else {
                        "NOT protected by inode flags (file system or capabilities lack them)"
                    }
                )?,
                Some(why) => writeln!(
                    f,
                    "audit log: FAILING ({why}) — checks that must be recorded are refused; \
                     committed up to seq {}",
                    audit.committed_seq
                )?,
            }
            for w in &audit.witnesses {
                writeln!(
                    f,
                    "  witness {}: up to seq {}, {} pending, {} dropped, {} failures{}",
                    w.witness,
                    w.witnessed_seq,
                    w.pending,
                    w.dropped,
                    w.failures,
                    w.last_error
                        .as_deref()
                        .map(|e| format!(" (last: {e})"))
                        .unwrap_or_default()
                )?;
            }
            if let Some(e) = &audit.index_error {
                writeln!(
                    f,
                    "  index: {e} (queries may lag; the log itself is intact)"
                )?;
            }
        }
        writeln!(f, "layers:")?;
        for c in &self.capabilities {
            writeln!(
                f,
                "  {:<22} {:<8} {}",
                c.name,
                if c.active { "active" } else { "INACTIVE" },
                c.detail
            )?;
        }
        let dns = &self.dns;
        writeln!(
            f,
            "dns: {} — {}",
            if dns.active { "active" } else { "INACTIVE" },
            dns.detail
        )?;
        writeln!(
            f,
            "  answered {}, refused {}, unanswerable {}, upstream failures {}; cache {} entries \
             ({} hits, {} misses); {} resolved addresses allowed",
            dns.answered,
            dns.refused,
            dns.unanswerable,
            dns.upstream_failures,
            dns.cache_entries,
            dns.cache_hits,
            dns.cache_misses,
            dns.resolved_addresses
        )?;
        for a in &dns.agents {
            match (a.port, &a.error) {
                (Some(port), _) => writeln!(
                    f,
                    "  {:<16} listener port {port}, upstreams {}",
                    a.agent,
                    if a.upstreams.is_empty() {
                        "none".to_owned()
                    } else {
                        a.upstreams.join(", ")
                    }
                )?,
                (None, e) => writeln!(
                    f,
                    "  {:<16} NO DNS: {}",
                    a.agent,
                    e.as_deref().unwrap_or("no listener")
                )?,
            }
        }
        writeln!(f, "agents:")?;
        for a in &self.agents {
            writeln!(
                f,
                "  {:<16} user {:<10} autonomy {:<22} egress {:<12} processes {:<4}{} cgroup {} (id {})",
                a.name,
                a.user.as_deref().unwrap_or("(none)"),
                a.autonomy_text(),
                if a.egress_enforced {
                    "enforced"
                } else {
                    "not judged"
                },
                a.processes,
                if a.frozen { " FROZEN" } else { "" },
                a.cgroup.display(),
                a.cgroup_id
            )?;
            if let Some(warning) = &a.warning {
                writeln!(f, "  {:<16} WARNING: {warning}", "")?;
            }
            if let Some(landlock) = &a.landlock {
                writeln!(f, "  {:<16} landlock: {landlock}", "")?;
            }
        }
        writeln!(
            f,
            "kernel events: {} received, {} audited, {} lost",
            self.events.received, self.events.audited, self.events.lost
        )?;
        let d = &self.events.denials;
        write!(
            f,
            "kernel denials: {} counted, {} committed, {} lost in crashes, {} pending",
            d.counted, d.committed, d.lost_in_crash, d.pending
        )
    }
}
