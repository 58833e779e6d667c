//! `secops run`: become the agent's command, inside the agent's cgroup, under the baseline.

use std::convert::Infallible;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::account::{become_account, identity_env, Account, AccountError};
use super::landlock::{LandlockError, Prepared};
use super::privileges::{set_no_new_privs, PrivilegeError};
use super::seccomp::{SeccompBaseline, SeccompError};
use crate::api::LandlockPlan;
use crate::cgroups::{self, CgroupDir, CgroupError};

/// Exit status when the launcher itself failed before the command ran (as env(1), chroot(1)
/// and timeout(1) do), so it cannot be mistaken for the shell's 126/127.
pub const EXIT_LAUNCH_FAILED: i32 = 125;
/// Exit status when the command exists but cannot be executed (as a shell).
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit status when the command does not exist (as a shell).
pub const EXIT_NOT_FOUND: i32 = 127;

/// Why launching failed; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("argument {index} contains a NUL byte")]
    NulInArgument { index: usize },

    #[error("agent cgroup: {0}")]
    Cgroup(#[from] CgroupError),

    #[error(
        "agent cgroup: wrote to {}/cgroup.procs but /proc/self/cgroup says {}",
        expected.display(),
        actual.display()
    )]
    NotMoved { expected: PathBuf, actual: PathBuf },

    #[error("no_new_privs: {0}")]
    Privileges(#[from] PrivilegeError),

    #[error("becoming {user}: {source}")]
    Account {
        user: String,
        #[source]
        source: AccountError,
    },

    #[error("workspace {path}: {why}")]
    Workspace { path: PathBuf, why: String },

    #[error("seccomp baseline: {0}")]
    Seccomp(#[from] SeccompError),

    #[error("landlock: {0}")]
    Landlock(#[from] LandlockError),

    #[error("--ask: {0}")]
    Ask(String),

    #[error("command not found: {cmd}")]
    CommandNotFound { cmd: String },

    #[error("{cmd}: cannot execute: {why}")]
    CannotExecute { cmd: String, why: String },
}

impl LaunchError {
    /// The exit status `secops run` should end with: 127 / 126 when the command could not be
    /// found / executed, like a shell, and 125 when the launcher failed before that.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::CommandNotFound { .. } => EXIT_NOT_FOUND,
            Self::CannotExecute { .. } => EXIT_CANNOT_EXECUTE,
            _ => EXIT_LAUNCH_FAILED,
        }
    }
}

/// Hands the listener of an `--ask` filter to whoever answers the asked calls (the daemon).
pub trait AskHandoff {
    /// Runs in the agent cgroup before the filter loads: connect(2) is an asked call, so any
    /// connection the hand-over needs is made here.
    fn prepare(&mut self) -> Result<(), String>;
    /// Runs right after the filter loaded; returns once the listener is being served.
    fn hand_over(&mut self, listener: OwnedFd) -> Result<(), String>;
}

/// Where and as whom an agent's command starts.
#[derive(Clone, Debug)]
pub struct Launch<'a> {
    /// The agent's cgroup.
    pub cgroup: &'a Path,
    /// Become this account, with no capabilities left. `None`: stay who the caller is
    /// (for tests of the other layers).
    pub account: Option<&'a Account>,
    /// The working directory (the agent's workspace); `None`: stay where the caller is.
    pub workspace: Option<&'a Path>,
    /// A missing workspace is made, owned by the account; else it is an error.
    pub create_workspace: bool,
    /// The Landlock ruleset to restrict the command to, as the daemon compiled it.
    pub landlock: Option<&'a LandlockPlan>,
}

impl<'a> Launch<'a> {
    /// Into `cgroup`, as the caller, where the caller is.
    pub fn in_cgroup(cgroup: &'a Path) -> Launch<'a> {
        Launch {
            cgroup,
            account: None,
            workspace: None,
            create_workspace: false,
            landlock: None,
        }
    }
}

/// Moves the calling process into the agent cgroup, confirms the kernel agrees, becomes the
/// agent's account (groups, gid, uid; no capabilities), enters its workspace, sets
/// no_new_privs, applies the seccomp baseline, restricts itself to the Landlock ruleset and
/// execs `cmd` with `args` (searching `PATH` when `cmd` has no `/`). On success it never returns: the process *is* the command,
/// so its exit status is the command's, and everything it starts inherits the cgroup (children,
/// double forks and setsid cannot leave it) and the filter.
///
/// Everything that can fail for a reason unrelated to the agent (bad arguments, libseccomp) is
/// done before the process changes cgroup.
///
/// With `ask`, the filter also sends the asked calls (see
/// [`ASKED_SYSCALLS`](super::ASKED_SYSCALLS)) to the daemon, and the command is not started
/// unless the daemon took the listener.
pub fn run_in_agent(
    launch: &Launch<'_>,
    cmd: &OsStr,
    args: &[OsString],
    ask: Option<&mut dyn AskHandoff>,
) -> Result<Infallible, LaunchError> {
    let argv = std::iter::once(cmd)
        .chain(args.iter().map(OsString::as_os_str))
        .enumerate()
        .map(|(index, arg)| {
            CString::new(arg.as_bytes()).map_err(|_| LaunchError::NulInArgument { index })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut baseline = SeccompBaseline::new()?;
    if ask.is_some() {
        baseline = baseline.with_asked_calls()?;
    }
    if let Some(workspace) = launch.workspace {
        ensure_workspace(workspace, launch.create_workspace, launch.account)?;
    }
    // Built while the launcher is root and can open every rule's path; restricted last.
    let landlock = launch.landlock.map(Prepared::build).transpose()?;
    let dir = CgroupDir::open_path(launch.cgroup)?;

    dir.add_self()?;
    verify_in_cgroup(&dir)?;
    // The connection an --ask hand-over needs is made while the launcher may still reach
    // the socket as itself.
    let mut ask = ask;
    if let Some(handoff) = ask.as_mut() {
        handoff.prepare().map_err(LaunchError::Ask)?;
    }
    if let Some(account) = launch.account {
        become_account(account).map_err(|source| LaunchError::Account {
            user: account.name.clone(),
            source,
        })?;
        for (key, value) in identity_env(account) {
            std::env::set_var(key, value);
        }
    }
    if let Some(workspace) = launch.workspace {
        std::env::set_current_dir(workspace).map_err(|e| LaunchError::Workspace {
            path: workspace.to_path_buf(),
            why: format!("cannot enter it as the agent's user: {e}"),
        })?;
        std::env::set_var("PWD", workspace);
    }
    set_no_new_privs()?;
    restore_sigpipe();
    match ask {
        Some(handoff) => {
            baseline.apply()?;
            handoff
                .hand_over(baseline.notify_fd()?)
                .map_err(LaunchError::Ask)?;
        }
        None => baseline.apply()?,
    }
    if let Some(landlock) = landlock {
        let described = landlock.describe();
        landlock.restrict()?;
        eprintln!("secops run: {described}");
    }

    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: argv[0] and every entry of ptrs point into `argv`, which outlives the call, and
    // ptrs is NULL-terminated.
    unsafe { libc::execvp(argv[0].as_ptr(), ptrs.as_ptr()) };
    Err(exec_error(cmd, io::Error::last_os_error()))
}

/// A workspace that is missing is made (owned by the account, mode 0750) when the policy
/// says so, else it is an error: an agent must not start somewhere else than it was meant to.
fn ensure_workspace(
    path: &Path,
    create: bool,
    account: Option<&Account>,
) -> Result<(), LaunchError> {
    let failed = |why: String| LaunchError::Workspace {
        path: path.to_path_buf(),
        why,
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => return Err(failed("exists but is not a directory".into())),
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(failed(e.to_string())),
        Err(_) if !create => {
            return Err(failed(
                "does not exist; make it (owned by the agent's user), or set \
                 `create_workspace: true` for the agent in the policy"
                    .into(),
            ))
        }
        Err(_) => {}
    }
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    // Directories above it stay as any new directory is (traversable); the workspace
    // itself is the agent's: 0750, owned by its account.
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| failed(format!("creating {}: {e}", parent.display())))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o750)
        .create(path)
        .map_err(|e| failed(format!("creating it: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o750))
        .map_err(|e| failed(format!("chmod 0750: {e}")))?;
    if let Some(account) = account {
        std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
            .map_err(|e| failed(format!("chown to {}: {e}", account.name)))?;
    }
    Ok(())
}

/// For the `secops run` command: [`run_in_agent`], and on failure print why and exit with
/// [`LaunchError::exit_code`].
pub fn run_in_agent_or_exit(
    launch: &Launch<'_>,
    cmd: &OsStr,
    args: &[OsString],
    ask: Option<&mut dyn AskHandoff>,
) -> ! {
    match run_in_agent(launch, cmd, args, ask) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("secops run: {e}");
            std::process::exit(e.exit_code())
        }
    }
}

/// Compares directories by identity (device and inode), not by spelling, so a symlinked or
/// differently written path to the same cgroup still verifies.
fn verify_in_cgroup(dir: &CgroupDir) -> Result<(), LaunchError> {
    let actual = cgroups::self_cgroup()?;
    let not_moved = || LaunchError::NotMoved {
        expected: dir.path().to_path_buf(),
        actual: actual.clone(),
    };
    let rel = actual.strip_prefix("/").map_err(|_| not_moved())?;
    let seen = std::fs::metadata(dir.mount().join(rel)).map_err(|_| not_moved())?;
    let wanted = std::fs::metadata(dir.path()).map_err(|e| CgroupError::Io {
        path: dir.path().to_path_buf(),
        what: "stat",
        source: e,
    })?;
    if (seen.dev(), seen.ino()) != (wanted.dev(), wanted.ino()) {
        return Err(not_moved());
    }
    Ok(())
}

/// The Rust runtime ignores SIGPIPE, and an ignored disposition survives exec: the command
/// would then see EPIPE instead of dying quietly, so `agent-tool | head` misbehaves. Other
/// dispositions and the signal mask are the caller's and are passed on untouched (nohup-style
/// wrappers rely on that).
fn restore_sigpipe() {
    // SAFETY: installing the default disposition for a signal has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn exec_error(cmd: &OsStr, err: io::Error) -> LaunchError {
    let name = cmd.to_string_lossy().into_owned();
    let has_slash = cmd.as_bytes().contains(&b'/');
    match err.raw_os_error() {
        Some(libc::ENOENT) if !has_slash => LaunchError::CommandNotFound { cmd: name },
        Some(libc::ENOENT) if Path::new(cmd).symlink_metadata().is_ok() => {
            // The file is there, so what is missing is what it names: a #! interpreter or the
            // ELF dynamic loader.
            LaunchError::CannotExecute {
                cmd: name,
                why: "its interpreter or dynamic loader was not found".to_string(),
            }
        }
        Some(libc::ENOENT) => LaunchError::CommandNotFound { cmd: name },
        _ => LaunchError::CannotExecute {
            cmd: name,
            why: err.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_errors_map_like_a_shell() {
        let e = exec_error(
            OsStr::new("foo"),
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert_eq!(e.to_string(), "command not found: foo");
        assert_eq!(e.exit_code(), 127);

        let e = exec_error(
            OsStr::new("/nonexistent/secops/foo"),
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert_eq!(e.exit_code(), 127);

        let e = exec_error(
            OsStr::new("/etc/hostname"),
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert_eq!(e.exit_code(), 126);
        assert!(e.to_string().contains("interpreter"), "{e}");

        let e = exec_error(
            OsStr::new("./x"),
            io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(e.exit_code(), 126);
        assert!(e.to_string().starts_with("./x: cannot execute: "), "{e}");
    }

    #[test]
    fn nul_in_argument_fails_before_anything_changes() {
        let r = run_in_agent(
            &Launch::in_cgroup(Path::new("/nonexistent")),
            OsStr::new("true"),
            &[OsString::from("a\0b")],
            None,
        );
        assert!(matches!(r, Err(LaunchError::NulInArgument { index: 1 })));
    }
}
