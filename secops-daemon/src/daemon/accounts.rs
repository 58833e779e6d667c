//! The account `secops run` starts an agent as: the policy's `user:` looked up now (an
//! account made after the policy loaded is found), with its primary and supplementary groups
//! and its home.

use std::ffi::CString;

use nix::unistd::{getgrouplist, Gid, Uid, User};

use crate::api::RunAs;
use crate::policy::AgentUser;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AccountError {
    #[error("agent {agent:?} has no `user:` in the policy (set it for the agent, or `defaults.user`); secops run does not start an agent as root unless the policy says `user: root`")]
    NoUser { agent: String },
    #[error("agent {agent:?}: the policy's user {user} does not exist on this host")]
    Unknown { agent: String, user: String },
    #[error("agent {agent:?}: looking up user {user}: {why}")]
    Lookup {
        agent: String,
        user: String,
        why: String,
    },
}

/// Looks up the account `user` names for `agent`.
pub(crate) fn run_as(agent: &str, user: Option<&AgentUser>) -> Result<RunAs, AccountError> {
    let user = user.ok_or_else(|| AccountError::NoUser {
        agent: agent.to_owned(),
    })?;
    let lookup_failed = |why: String| AccountError::Lookup {
        agent: agent.to_owned(),
        user: user.to_string(),
        why,
    };
    let found = match user {
        AgentUser::Name(name) => User::from_name(name),
        AgentUser::Id(uid) => User::from_uid(Uid::from_raw(*uid)),
    };
    // getpwnam(3): "not found" may be reported as any of these (a host without
    // /etc/passwd says ENOENT).
    let found = match found {
        Ok(found) => found,
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ESRCH | nix::errno::Errno::EBADF) => {
            None
        }
        Err(e) => return Err(lookup_failed(e.to_string())),
    };
    let Some(found) = found else {
        // A bare uid with no passwd entry is still an identity: its own group, no others.
        if let AgentUser::Id(uid) = user {
            return Ok(RunAs {
                user: user.to_string(),
                uid: *uid,
                gid: *uid,
                groups: vec![*uid],
                home: None,
            });
        }
        return Err(AccountError::Unknown {
            agent: agent.to_owned(),
            user: user.to_string(),
        });
    };
    let name = CString::new(found.name.as_str()).map_err(|e| lookup_failed(e.to_string()))?;
    let mut groups: Vec<u32> = getgrouplist(&name, found.gid)
        .map_err(|e| lookup_failed(format!("its groups: {e}")))?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    Ok(RunAs {
        user: found.name,
        uid: found.uid.as_raw(),
        gid: found.gid.as_raw(),
        groups,
        home: Some(found.dir).filter(|h| h.is_absolute()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_found_by_name_or_number_and_none_is_an_error() {
        let root = run_as("a", Some(&AgentUser::Name("root".into()))).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(root.home.as_deref(), Some(std::path::Path::new("/root")));
        let nobody = run_as("a", Some(&AgentUser::Id(65534))).unwrap();
        assert_eq!(nobody.user, "nobody");
        assert!(nobody.groups.contains(&nobody.gid));
        let bare = run_as("a", Some(&AgentUser::Id(4_000_123))).unwrap();
        assert_eq!(
            (bare.uid, bare.gid, bare.groups.as_slice()),
            (4_000_123, 4_000_123, &[4_000_123][..])
        );
        assert!(matches!(
            run_as("a", Some(&AgentUser::Name("no-such-user-here".into()))),
            Err(AccountError::Unknown { .. })
        ));
        let none = run_as("coder", None).unwrap_err().to_string();
        assert!(none.contains("`user: root`"), "{none}");
    }
}
