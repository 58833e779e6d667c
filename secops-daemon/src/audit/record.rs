//! One audit record: what was decided about which action, by whom, and why.
//!
//! These are the types every producer (kernel events, the API, approvals) hands to the audit
//! log and every consumer (verify, query, export) reads back.

use std::fmt;
use std::str::FromStr;

use secops_common::{RiskLevel, Verdict};
use serde::Serialize;

/// Where a decision came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// An event reported by the BPF programs.
    Kernel,
    /// A request through the daemon's API or the `secops check` command.
    Api,
    /// A human's decision on an approval ticket.
    Approval,
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

macro_rules! db_names {
    ($ty:ident, $($variant:ident => $name:literal),+) => {
        impl $ty {
            pub const fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    other => Err(format!(concat!("unknown ", stringify!($ty), " {:?}"), other)),
                }
            }
        }
    };
}

db_names!(Source, Kernel => "kernel", Api => "api", Approval => "approval");
db_names!(ObjectKind, Path => "path", Endpoint => "endpoint", Binary => "binary", Target => "target");
