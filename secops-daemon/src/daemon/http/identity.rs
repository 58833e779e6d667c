//! Who is calling: the kernel's word (SO_PEERCRED), never the request's. The peer's pid leads
//! to its cgroup; a cgroup under the secops root is an agent, whatever the body says.
//!
//! The pid is read when the connection is accepted, before any request is read, so the
//! process that connected is (short of pid reuse within microseconds) the one placed. A
//! process that cannot be placed is treated as an agent the daemon does not know: it gets
//! the agent's narrow rights, never an admin's.

use std::path::{Path, PathBuf};

use crate::api::{Role, Whoami};
use crate::cgroups::process_cgroup;

use super::super::decide::Actor;
use super::super::state::{read, Shared};
use super::error::ApiError;

#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) pid: Option<i32>,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) role: Role,
    /// For agents: the agent's name, if its cgroup belongs to an agent the daemon knows.
    pub(crate) agent: Option<String>,
    pub(crate) agent_cgroup_id: Option<u64>,
    /// The process's name (`/proc/<pid>/comm`), for the audit log.
    pub(crate) comm: Option<String>,
}

impl Caller {
    pub(crate) fn describe(&self) -> String {
        let pid = self
            .pid
            .map_or_else(|| "unknown pid".to_owned(), |p| format!("pid {p}"));
        match (&self.role, &self.agent) {
            (Role::Agent, Some(agent)) => format!("{pid} uid {} (agent {agent})", self.uid),
            (Role::Agent, None) => format!("{pid} uid {} (in an agent cgroup)", self.uid),
            (Role::Admin, _) => format!("{pid} uid {} (admin)", self.uid),
            (Role::User, _) => format!("{pid} uid {}", self.uid),
        }
    }

    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Agent => Err(ApiError::forbidden(format!(
                "refused: the caller ({}) is inside an agent cgroup; only people and tools \
                 outside every agent may use this route",
                self.describe()
            ))),
            Role::User => Err(ApiError::forbidden(format!(
                "refused: the caller ({}) is neither root nor in the daemon's admin group",
                self.describe()
            ))),
        }
    }

    /// Agents check and scan for themselves only: a caller outside every agent cgroup has no
    /// agent to decide for.
    pub(crate) fn require_agent(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Agent => Ok(()),
            _ => Err(ApiError::forbidden(format!(
                "the caller ({}) is not in an agent cgroup: this route decides for the calling \
                 agent, whose identity comes from its cgroup (start agents with `secops run`; \
                 try a policy with `secops check`)",
                self.describe()
            ))),
        }
    }

    /// The caller as the decision path names who acted.
    pub(crate) fn actor(&self) -> Actor {
        Actor {
            agent: self.agent.clone(),
            cgroup_id: self.agent_cgroup_id,
            pid: self.pid.and_then(|p| u32::try_from(p).ok()),
            uid: Some(self.uid),
            comm: self.comm.clone(),
            ..Actor::default()
        }
    }

    pub(crate) fn whoami(&self) -> Whoami {
        Whoami {
            pid: self.pid,
            uid: self.uid,
            gid: self.gid,
            role: self.role,
            agent: self.agent.clone(),
        }
    }
}

/// Places the peer of an accepted connection.
pub(crate) fn identify(
    cred: Option<tokio::net::unix::UCred>,
    shared: &Shared,
    admin_gid: u32,
) -> Caller {
    let Some(cred) = cred else {
        return unplaced(None, u32::MAX, u32::MAX);
    };
    let pid = cred.pid();
    let (uid, gid) = (cred.uid(), cred.gid());
    let Some(pid_u32) = pid.and_then(|p| u32::try_from(p).ok()) else {
        return unplaced(pid, uid, gid);
    };
    let Ok(cgroup) = process_cgroup(pid_u32) else {
        return unplaced(pid, uid, gid);
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid_u32}/comm"))
        .ok()
        .map(|c| c.trim_end().to_owned());
    // /proc/<pid>/cgroup names the cgroup relative to the cgroup2 mount.
    let full = shared
        .root
        .mount()
        .join(cgroup.strip_prefix("/").unwrap_or(&cgroup));
    if let Ok(below_root) = full.strip_prefix(shared.root.path()) {
        let slot = below_root
            .components()
            .next()
            .map(|first| shared.root.path().join(first))
            .and_then(|agent_dir| agent_of(shared, &agent_dir));
        return Caller {
            pid,
            uid,
            gid,
            role: Role::Agent,
            agent_cgroup_id: slot.as_ref().map(|s| s.1),
            agent: slot.map(|s| s.0),
            comm,
        };
    }
    let admin = uid == 0 || gid == admin_gid || in_group(pid_u32, admin_gid);
    Caller {
        pid,
        uid,
        gid,
        role: if admin { Role::Admin } else { Role::User },
        agent: None,
        agent_cgroup_id: None,
        comm,
    }
}

fn unplaced(pid: Option<i32>, uid: u32, gid: u32) -> Caller {
    Caller {
        pid,
        uid,
        gid,
        role: Role::Agent,
        agent: None,
        agent_cgroup_id: None,
        comm: None,
    }
}

fn agent_of(shared: &Shared, agent_dir: &Path) -> Option<(String, u64)> {
    let agents = read(&shared.agents);
    let found = agents
        .slots()
        .find(|s| s.cgroup == agent_dir)
        .map(|s| (s.name.clone(), s.cgroup_id));
    found
}

/// Whether the process has `gid` among its supplementary groups.
fn in_group(pid: u32, gid: u32) -> bool {
    let status = PathBuf::from(format!("/proc/{pid}/status"));
    std::fs::read_to_string(status).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .is_some_and(|groups| {
                groups
                    .split_whitespace()
                    .any(|g| g.parse::<u32>() == Ok(gid))
            })
    })
}
