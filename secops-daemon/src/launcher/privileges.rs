//! Privilege settings the launcher applies to itself before it becomes the agent's command.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("prctl(PR_SET_NO_NEW_PRIVS): {0}")]
    SetNoNewPrivs(#[source] io::Error),

    #[error("prctl(PR_GET_NO_NEW_PRIVS): {0}")]
    GetNoNewPrivs(#[source] io::Error),

    #[error("no_new_privs did not take effect (PR_GET_NO_NEW_PRIVS still returns 0)")]
    NotSet,
}

/// Sets no_new_privs on the calling thread and confirms the kernel reports it.
///
/// With it, execve can never grant privileges (setuid/setgid bits and file capabilities are
/// ignored, LSM transitions that would widen rights are refused), and it is what lets an
/// unprivileged process install a seccomp filter. It is inherited by every child and cannot be
/// unset, so everything the agent starts keeps it.
pub fn set_no_new_privs() -> Result<(), PrivilegeError> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(PrivilegeError::SetNoNewPrivs(io::Error::last_os_error()));
    }
    // A wrapper that swallowed the call (an old kernel returning 0 for an unknown option, a
    // seccomp filter faking success) must not leave us believing we are protected.
    if !no_new_privs()? {
        return Err(PrivilegeError::NotSet);
    }
    Ok(())
}

/// Whether no_new_privs is set on the calling thread.
pub fn no_new_privs() -> Result<bool, PrivilegeError> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    if rc < 0 {
        return Err(PrivilegeError::GetNoNewPrivs(io::Error::last_os_error()));
    }
    Ok(rc == 1)
}
