//! Messages on the control socket.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Make sure the agent's cgroup exists and is known to the kernel programs, and say
    /// where it is, so the launcher can move itself into it.
    Register { agent: String },
    /// What the daemon enforces, on this kernel, now.
    Status,
    /// Reload the policy (as SIGHUP does) and say whether the new one is in force.
    Reload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    Registered {
        agent: String,
        cgroup: PathBuf,
        cgroup_id: u64,
    },
    Status(StatusReport),
    Reloaded {
        policy_files: Vec<PathBuf>,
    },
    Error {
        message: String,
    },
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
}

/// One kernel-dependent layer and whether it is active on this kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityStatus {
    pub name: String,
    pub active: bool,
    /// What it does when active; why not when not.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub name: String,
    pub cgroup: PathBuf,
    pub cgroup_id: u64,
    pub autonomy: String,
    pub egress_enforced: bool,
    pub processes: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounters {
    pub received: u64,
    pub audited: u64,
    pub lost: u64,
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
        writeln!(f, "agents:")?;
        for a in &self.agents {
            writeln!(
                f,
                "  {:<16} autonomy {:<10} egress {:<12} processes {:<4} cgroup {} (id {})",
                a.name,
                a.autonomy,
                if a.egress_enforced {
                    "enforced"
                } else {
                    "not judged"
                },
                a.processes,
                a.cgroup.display(),
                a.cgroup_id
            )?;
        }
        write!(
            f,
            "kernel events: {} received, {} audited, {} lost",
            self.events.received, self.events.audited, self.events.lost
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json_and_unknown_fields_are_refused() {
        let r: Request = serde_json::from_str(r#"{"op":"register","agent":"coder"}"#).unwrap();
        assert_eq!(
            r,
            Request::Register {
                agent: "coder".into()
            }
        );
        assert!(
            serde_json::from_str::<Request>(r#"{"op":"register","agent":"a","as":"root"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
        let line = serde_json::to_string(&Response::Error {
            message: "no".into(),
        })
        .unwrap();
        assert_eq!(line, r#"{"result":"error","message":"no"}"#);
    }
}
