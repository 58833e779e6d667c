//! The seccomp baseline every agent runs under: everything is allowed except the system calls
//! that would let an agent reach into the kernel layer secops relies on, into other processes,
//! or out of its mount view. They fail with EPERM, which programs already handle (it is what an
//! unprivileged caller gets), rather than killing the process.
//!
//! Decisions on the calls that are *not* blocked:
//!
//! - `unshare`/`setns`/`clone*` with `CLONE_NEWCGROUP`: a cgroup namespace only changes how the
//!   hierarchy is *shown* (`/proc/self/cgroup` becomes relative); the process stays in the same
//!   cgroup, and `bpf_get_current_cgroup_id()`, which the kernel side keys everything on, is
//!   unchanged. Leaving the agent's cgroup means writing to some `cgroup.procs`, a plain
//!   write(2) that seccomp cannot judge by path; the LSM layer (issue 4) guards that.
//!   User and other namespaces stay allowed too: sandboxes that agents commonly run
//!   (Chromium's, bubblewrap) need them, and a filter is inherited into every namespace, so a
//!   process that becomes "root" in a new user namespace still cannot call `mount`, `bpf` etc.
//!   A flag-based rule would also be hollow: `clone3` passes its flags in memory, which a
//!   seccomp filter cannot read.
//! - `name_to_handle_at`: only produces a handle; opening one is `open_by_handle_at` (blocked).
//! - `seccomp`: stacking another filter can only narrow what a process may do.
//! - `userfaultfd`, `keyctl` and similar attack-surface reducers are outside this baseline's
//!   purpose (keeping the agent in its cgroup and away from the kernel layer); they belong in a
//!   policy-driven profile.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};

use libseccomp::{ScmpAction, ScmpArch, ScmpFilterContext, ScmpSyscall};

/// Every system call the baseline makes fail with EPERM, and why.
pub const BLOCKED_SYSCALLS: &[(&str, &str)] = &[
    // The issue's list.
    (
        "bpf",
        "loading or detaching BPF programs and maps would disable the kernel side",
    ),
    (
        "ptrace",
        "attaching to other processes (the daemon, other agents) or hiding from audit",
    ),
    (
        "process_vm_readv",
        "reading another process's memory without ptrace",
    ),
    (
        "process_vm_writev",
        "writing another process's memory without ptrace",
    ),
    (
        "perf_event_open",
        "kernel tracing and attaching BPF to tracepoints/kprobes",
    ),
    ("kexec_load", "replacing the running kernel"),
    ("kexec_file_load", "replacing the running kernel"),
    ("init_module", "loading kernel code"),
    ("finit_module", "loading kernel code"),
    (
        "delete_module",
        "unloading kernel code (e.g. a module secops depends on)",
    ),
    (
        "mount",
        "remounting or covering paths the policy is written against",
    ),
    (
        "umount2",
        "uncovering or detaching mounts (bpffs pins, cgroupfs)",
    ),
    (
        "umount",
        "the i386 ABI's older umount(2), reachable because 32-bit syscalls stay allowed",
    ),
    (
        "pivot_root",
        "swapping the root filesystem out from under the policy",
    ),
    // The new mount API (Linux 5.2+) does everything mount(2) does through other calls;
    // blocking mount alone would be a paper wall.
    ("fsopen", "new mount API: creating a filesystem context"),
    (
        "fsconfig",
        "new mount API: configuring a filesystem context",
    ),
    ("fsmount", "new mount API: turning a context into a mount"),
    ("fspick", "new mount API: reconfiguring an existing mount"),
    (
        "move_mount",
        "new mount API: attaching a mount anywhere in the tree",
    ),
    (
        "open_tree",
        "new mount API: cloning a subtree into a detached mount",
    ),
    (
        "mount_setattr",
        "new mount API: changing mount flags (e.g. dropping read-only)",
    ),
    // Escape and bypass routes.
    (
        "open_by_handle_at",
        "opens files by handle, bypassing path lookup and mount/chroot confinement \
         (the 'shocker' container escape)",
    ),
    (
        "pidfd_getfd",
        "steals file descriptors from another process (ptrace-class access)",
    ),
    (
        "iopl",
        "raw I/O port access bypasses the kernel entirely (with CAP_SYS_RAWIO)",
    ),
    ("ioperm", "raw I/O port access, as iopl"),
    // io_uring: operations submitted through a ring are executed by the kernel without passing
    // the syscall entry, so neither this filter nor syscall tracepoints see them, and io_uring
    // has been a steady source of kernel privilege escalations. With no ring there is nothing
    // to bypass with. Programs handle EPERM here because it is exactly what the kernel returns
    // when the kernel.io_uring_disabled sysctl is set, and what Docker's default profile
    // returns: libuv (Node.js), liburing users, QEMU and fio all fall back to ordinary calls.
    // The LSM layer (issue 4) covers io_uring operations for any ring that exists anyway.
    (
        "io_uring_setup",
        "io_uring operations bypass seccomp and syscall tracing",
    ),
    (
        "io_uring_enter",
        "submitting to a ring obtained some other way (inherited, passed over a socket)",
    ),
    (
        "io_uring_register",
        "registering resources with such a ring",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("libseccomp does not know the system call {name:?} (libseccomp too old?)")]
    UnknownSyscall {
        name: &'static str,
        #[source]
        source: libseccomp::error::SeccompError,
    },

    #[error("adding the rule for {name}: {source}")]
    AddRule {
        name: &'static str,
        #[source]
        source: libseccomp::error::SeccompError,
    },

    #[error("{what}: {source}")]
    Build {
        what: &'static str,
        #[source]
        source: libseccomp::error::SeccompError,
    },

    #[error("exporting the filter: {what}: {source}")]
    Export {
        what: &'static str,
        #[source]
        source: io::Error,
    },

    #[error(
        "loading the filter (needs no_new_privs or CAP_SYS_ADMIN, and a kernel with seccomp): {source}"
    )]
    Load {
        #[source]
        source: libseccomp::error::SeccompError,
    },
}

/// 32-bit ABIs the kernel accepts next to the native one on this architecture. Each gets the
/// same rules (libseccomp translates the syscall numbers), so a 32-bit program keeps working
/// but cannot reach a blocked call through `int 0x80` or the x32 numbers. Any other ABI gets
/// the bad-architecture action: the process is killed (fail closed).
#[cfg(target_arch = "x86_64")]
const COMPAT_ARCHES: &[ScmpArch] = &[ScmpArch::X86, ScmpArch::X32];
#[cfg(target_arch = "aarch64")]
const COMPAT_ARCHES: &[ScmpArch] = &[ScmpArch::Arm];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const COMPAT_ARCHES: &[ScmpArch] = &[];

/// The calls `secops run --ask` hands to the daemon (seccomp user notification) before the
/// kernel runs them: destruction, program starts and outbound connections. The older
/// single-path forms are here too, or they would be a way around the newer ones.
pub const ASKED_SYSCALLS: &[&str] = &[
    "unlinkat",
    "unlink",
    "rmdir",
    "renameat2",
    "renameat",
    "rename",
    "execve",
    "execveat",
    "connect",
];

/// The compiled baseline filter, ready to load.
pub struct SeccompBaseline {
    filter: ScmpFilterContext,
}

impl std::fmt::Debug for SeccompBaseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeccompBaseline")
            .field("blocked", &BLOCKED_SYSCALLS.len())
            .finish()
    }
}

impl SeccompBaseline {
    /// Builds the filter. Fails if libseccomp cannot resolve any of the calls: a baseline with a
    /// silent hole is worse than a launcher that refuses to start.
    pub fn new() -> Result<Self, SeccompError> {
        let build = |what| move |source| SeccompError::Build { what, source };
        let mut filter =
            ScmpFilterContext::new(ScmpAction::Allow).map_err(build("seccomp_init"))?;
        for &arch in COMPAT_ARCHES {
            filter
                .add_arch(arch)
                .map_err(build("adding a compat architecture"))?;
        }
        filter
            .set_act_badarch(ScmpAction::KillProcess)
            .map_err(build("setting the bad-architecture action"))?;
        // The caller sets no_new_privs itself and checks it took; libseccomp doing it silently
        // as a side effect of loading would hide a missing step.
        filter
            .set_ctl_nnp(false)
            .map_err(build("clearing the implicit no_new_privs"))?;
        // Cover every thread of the process, not just the caller, in case one runs code
        // between loading and exec.
        filter
            .set_ctl_tsync(true)
            .map_err(build("enabling thread synchronisation"))?;
        for &(name, _) in BLOCKED_SYSCALLS {
            let syscall = ScmpSyscall::from_name(name)
                .map_err(|source| SeccompError::UnknownSyscall { name, source })?;
            // add_rule (not _exact) lets libseccomp map the call onto each ABI, and skip ABIs
            // that do not have it (kexec_file_load on i386, umount on x86_64).
            filter
                .add_rule(ScmpAction::Errno(libc::EPERM), syscall)
                .map_err(|source| SeccompError::AddRule { name, source })?;
        }
        Ok(Self { filter })
    }

    /// Adds the `--ask` rules: [`ASKED_SYSCALLS`] wait for the daemon's answer. The filter
    /// then gets a listener fd when loaded ([`notify_fd`](Self::notify_fd)). Thread sync is
    /// turned off: the kernel refuses it together with a listener (unless the caller can
    /// handle ESRCH), and the launcher is single-threaded when it loads the filter.
    pub fn with_asked_calls(mut self) -> Result<Self, SeccompError> {
        let build = |what| move |source| SeccompError::Build { what, source };
        self.filter
            .set_ctl_tsync(false)
            .map_err(build("disabling thread synchronisation"))?;
        for &name in ASKED_SYSCALLS {
            let syscall = ScmpSyscall::from_name(name)
                .map_err(|source| SeccompError::UnknownSyscall { name, source })?;
            self.filter
                .add_rule(ScmpAction::Notify, syscall)
                .map_err(|source| SeccompError::AddRule { name, source })?;
        }
        Ok(self)
    }

    /// The listener of a loaded filter with `--ask` rules: whoever holds it answers the
    /// asked calls of every process under the filter.
    pub fn notify_fd(&self) -> Result<OwnedFd, SeccompError> {
        let fd = self
            .filter
            .get_notify_fd()
            .map_err(|source| SeccompError::Build {
                what: "getting the notification fd",
                source,
            })?;
        // SAFETY: libseccomp hands out the listener the kernel created for this process at
        // load; nothing else in the launcher owns or closes it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Names of the blocked calls.
    pub fn blocked() -> impl Iterator<Item = &'static str> {
        BLOCKED_SYSCALLS.iter().map(|&(name, _)| name)
    }

    /// Loads the filter into the calling process (every thread). It cannot be removed again
    /// and is inherited across fork and exec. Requires no_new_privs (see
    /// [`set_no_new_privs`](super::privileges::set_no_new_privs)) or CAP_SYS_ADMIN.
    pub fn apply(&self) -> Result<(), SeccompError> {
        self.filter
            .load()
            .map_err(|source| SeccompError::Load { source })
    }

    /// The compiled classic-BPF program, for inspection. (libseccomp 2.5 can only export to a
    /// file descriptor, hence the memfd.)
    pub fn to_bpf(&self) -> Result<Vec<u8>, SeccompError> {
        let export = |what| move |e: io::Error| SeccompError::Export { what, source: e };
        // SAFETY: the name is a valid NUL-terminated string; flags are plain integers.
        let fd = unsafe { libc::memfd_create(c"secops-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(export("memfd_create")(io::Error::last_os_error()));
        }
        // SAFETY: memfd_create returned a new descriptor nobody else owns.
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        self.filter
            .export_bpf(&file)
            .map_err(|source| SeccompError::Build {
                what: "exporting the BPF program",
                source,
            })?;
        let mut out = Vec::new();
        file.seek(SeekFrom::Start(0))
            .map_err(export("rewinding the memfd"))?;
        file.read_to_end(&mut out)
            .map_err(export("reading the memfd"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_blocked_call_resolves_and_the_filter_builds() {
        let baseline = SeccompBaseline::new();
        assert!(baseline.is_ok(), "{baseline:?}");
        let Ok(baseline) = baseline else { return };
        let bpf = baseline.to_bpf();
        assert!(matches!(&bpf, Ok(b) if !b.is_empty()), "{bpf:?}");
    }

    #[test]
    fn the_asked_calls_resolve_and_the_filter_builds() {
        let asked = SeccompBaseline::new().and_then(SeccompBaseline::with_asked_calls);
        assert!(asked.is_ok(), "{asked:?}");
    }

    #[test]
    fn list_has_no_duplicates_and_covers_the_issue() {
        let mut names: Vec<_> = SeccompBaseline::blocked().collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        for required in [
            "bpf",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "perf_event_open",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "mount",
            "umount2",
            "pivot_root",
        ] {
            assert!(names.contains(&required), "{required} missing");
        }
    }
}
