//! The agent launcher (`secops run --agent NAME -- CMD ARGS`): the process puts itself into
//! the agent's cgroup, gives up what an agent must not have, and becomes CMD.
//!
//! Registration with the daemon (which creates the cgroup and says where it is) lives with the
//! daemon; this module starts from the cgroup's path.

pub mod account;
pub mod exec;
pub mod landlock;
pub mod privileges;
pub mod seccomp;

pub use account::{Account, AccountError};
pub use exec::{
    run_in_agent, run_in_agent_or_exit, AskHandoff, Launch, LaunchError, EXIT_CANNOT_EXECUTE,
    EXIT_LAUNCH_FAILED, EXIT_NOT_FOUND,
};
pub use privileges::{no_new_privs, set_no_new_privs, PrivilegeError};
pub use seccomp::{SeccompBaseline, SeccompError, ASKED_SYSCALLS, BLOCKED_SYSCALLS};
