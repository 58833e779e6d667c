//! One audit record: what was decided about which action, by whom, and why.
//!
//! These are the types every producer (kernel events, the API, approvals) hands to the audit
//! log and every consumer (verify, query, export) reads back.

use secops_common::{RiskLevel, Verdict};
use serde::{Deserialize, Serialize};

/// Where a decision came from: the door it came through (`daemon/decide.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// An event reported by the BPF programs.
    Kernel,
    /// A request through the daemon's API or the `secops check` command.
    Api,
    /// A syscall of a `secops run --ask` agent, held by its seccomp filter until the daemon
    /// answered.
    Parked,
    /// A decision on an approval ticket: a human's, or the timeout policy's.
    Approval,
    /// The daemon itself, for what no caller asked: a policy reloaded because its file
    /// changed or on SIGHUP.
    Daemon,
}

/// What kind of thing an action was done to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// A file system path (`fs:*`, `secret:read`).
    Path,
    /// A network endpoint, `ip:port` or `[ipv6]:port` (`net:*`).
    Endpoint,
    /// An executable (`proc:exec`).
    Binary,
    /// Anything an in-process action names: a branch, a table, a tool.
    Target,
}

/// The object of an action, as it is shown in the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditObject {
    pub kind: ObjectKind,
    pub value: String,
}

/// A record as a producer hands it to the log, before it has a place in the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewRecord {
    /// UTC time of the decision, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    pub agent: Option<String>,
    pub cgroup_id: Option<u64>,
    pub pid: Option<u32>,
    pub tgid: Option<u32>,
    pub uid: Option<u32>,
    pub comm: Option<String>,
    pub exe: Option<String>,
    /// The `category:action` type.
    pub action: String,
    pub object: Option<AuditObject>,
    pub verdict: Verdict,
    pub risk: RiskLevel,
    pub rule_id: Option<String>,
    pub reason: String,
    pub source: Source,
}

impl NewRecord {
    /// A record of a decision with nothing yet known about who made it or on what; producers
    /// fill in what they know with struct update syntax.
    pub fn new(
        ts_ns: i64,
        action: &str,
        verdict: Verdict,
        risk: RiskLevel,
        reason: String,
        source: Source,
    ) -> NewRecord {
        NewRecord {
            ts_ns,
            agent: None,
            cgroup_id: None,
            pid: None,
            tgid: None,
            uid: None,
            comm: None,
            exe: None,
            action: action.to_owned(),
            object: None,
            verdict,
            risk,
            rule_id: None,
            reason,
            source,
        }
    }
}

/// A record as stored: its place in the chain and the hashes that link it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Record {
    /// 1-based, contiguous.
    pub seq: u64,
    #[serde(flatten)]
    pub body: NewRecord,
    #[serde(serialize_with = "hex_bytes")]
    pub prev_hash: [u8; 32],
    #[serde(serialize_with = "hex_bytes")]
    pub hash: [u8; 32],
}

fn hex_bytes<S: serde::Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

secops_common::named_enum!(Source, "source", Kernel => "kernel", Api => "api", Parked => "parked", Approval => "approval", Daemon => "daemon");
secops_common::named_enum!(ObjectKind, "object kind", Path => "path", Endpoint => "endpoint", Binary => "binary", Target => "target");
