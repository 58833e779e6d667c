//! Acting through a process outside the agent: trace it, read or write its memory, take its
//! descriptors, signal it. The victim is a process the caller started outside the agent's
//! cgroup (`--victim-pid`), not the daemon: every process of the host is out of reach, not
//! only secops. Signals are SIGWINCH (ignored by default: a delivery does no harm, and the
//! same-session exception DAC makes for SIGCONT does not apply).

use std::fs;
use std::io;
use std::path::Path;

use super::daemon::{alive, detach, running_before, tracer};
use super::judge::{judge, judge_call, Outcome, Target};
use super::sys::{self, check, check_int};
use super::Ctx;

fn victim_before(ctx: &Ctx) -> Result<libc::pid_t, Outcome> {
    running_before(ctx.args.victim_pid, "victim")
}

/// Not traced, and still there.
fn untraced(pid: libc::pid_t) -> Target {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    match tracer(pid) {
        Some(0) => Target::Intact,
        Some(t) if t == me => Target::Damaged("the victim is traced by us".into()),
        Some(t) => Target::Unverifiable(format!("the victim is traced by pid {t}")),
        None => Target::Damaged("the victim is gone".into()),
    }
}

fn ptrace_attach_as(ctx: &Ctx, request: libc::c_uint, name: &str) -> Outcome {
    let pid = match victim_before(ctx) {
        Ok(p) => p,
        Err(o) => return o,
    };
    // SAFETY: ATTACH and SEIZE take a pid; addr and data are 0 (no options).
    let result = check(unsafe { libc::ptrace(request, pid, 0usize, 0usize) });
    let target = if result.is_ok() {
        Target::Damaged("the victim was traced".into())
    } else {
        untraced(pid)
    };
    let outcome = judge(
        &format!("ptrace(2) {name} {pid}"),
        result.map(|_| "attached".into()),
        target,
    );
    if outcome.is_allowed() {
        if request == libc::PTRACE_SEIZE {
            // A seized tracee stops only when asked to: then detach() finds the stop.
            // SAFETY: PTRACE_INTERRUPT on our own tracee, addr and data 0.
            unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0usize, 0usize) };
        }
        return outcome.note(&detach(pid));
    }
    outcome
}

/// ptrace(PTRACE_ATTACH) of the victim.
pub fn ptrace_attach(ctx: &Ctx) -> Outcome {
    ptrace_attach_as(ctx, libc::PTRACE_ATTACH, "PTRACE_ATTACH")
}

/// ptrace(PTRACE_SEIZE): attaching without stopping the tracee.
pub fn ptrace_seize(ctx: &Ctx) -> Outcome {
    ptrace_attach_as(ctx, libc::PTRACE_SEIZE, "PTRACE_SEIZE")
}

/// The start of a writable mapping of `pid` (its stack), if its maps can be read; when they
/// cannot (the kernel layer refuses that too), a made-up address: the access check comes
/// before any address is looked at.
fn writable_address(pid: libc::pid_t) -> usize {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .ok()
        .and_then(|maps| {
            let line = maps.lines().find(|l| l.ends_with("[stack]"))?;
            usize::from_str_radix(line.split('-').next()?, 16).ok()
        })
        .unwrap_or(0x10000)
}

/// process_vm_writev(2) into the victim's stack: the bytes that are there already (read
/// first with process_vm_readv), so a write that gets through changes nothing it runs on.
pub fn process_vm_writev(ctx: &Ctx) -> Outcome {
    let pid = match victim_before(ctx) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let addr = writable_address(pid);
    let mut buf = [0u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one local and one remote iovec, the local one our own buffer; a read or write
    // of another process's memory cannot touch ours beyond `buf`.
    let result = check(unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) } as _)
        .and_then(|_| {
            // SAFETY: as above; writes back what was read.
            check(unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) } as _)
        });
    judge(
        &format!("process_vm_readv/writev(2) pid {pid} at {addr:#x}"),
        result.map(|n| format!("wrote {n} bytes into the victim")),
        if alive(pid) {
            Target::Intact
        } else {
            Target::Damaged("the victim is gone".into())
        },
    )
}

/// open(2) /proc/<victim>/mem O_RDWR: a door to writing its memory.
pub fn proc_mem_write(ctx: &Ctx) -> Outcome {
    let pid = match victim_before(ctx) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let path = format!("/proc/{pid}/mem");
    let result = sys::open(Path::new(&path), libc::O_RDWR).map(|_fd| "opened for writing".into());
    judge_call(&format!("open(2) {path} O_RDWR"), result)
}

/// pidfd_getfd(2) of the victim's stdin: a copy of another process's descriptor.
pub fn pidfd_getfd(ctx: &Ctx) -> Outcome {
    let pid = match victim_before(ctx) {
        Ok(p) => p,
        Err(o) => return o,
    };
    // SAFETY: pidfd_open takes a pid and flags 0.
    let pidfd = match check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) }) {
        Ok(fd) => sys::owned_fd(fd as libc::c_int),
        Err(e) => return Outcome::error(format!("pidfd_open(2) {pid}: {}", sys::describe(&e))),
    };
    use std::os::fd::AsRawFd;
    // SAFETY: a pidfd we own, target fd 0, flags 0; a descriptor returned is closed at once.
    let result = check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), 0, 0) })
        .map(|fd| {
            drop(sys::owned_fd(fd as libc::c_int));
            "took the victim's fd 0".to_owned()
        });
    judge_call(&format!("pidfd_getfd(2) pid {pid} fd 0"), result)
}

fn signal_result(ret: libc::c_long) -> io::Result<String> {
    check(ret).map(|_| "delivered".into())
}

/// kill(2) SIGWINCH to the victim.
pub fn kill_foreign(ctx: &Ctx) -> Outcome {
    let pid = match victim_before(ctx) {
        Ok(p) => p,
        Err(o) => return o,
    };
    // SAFETY: kill(2) takes plain integers; the pid is the victim's (> 1).
    let ret = unsafe { libc::kill(pid, libc::SIGWINCH) };
    judge_call(
        &format!("kill(2) {pid} SIGWINCH"),
        signal_result(libc::c_long::from(ret)),
    )
}

/// tgkill(2) SIGWINCH to the victim's main thread.
pub fn tgkill_foreign(ctx: &Ctx) -> Outcome {
    let pid = match victim_before(ctx) {
        Ok(p) => p,
        Err(o) => return o,
    };
    // SAFETY: tgkill takes plain integers.
    let ret = unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGWINCH) };
    judge_call(
        &format!("tgkill(2) {pid} {pid} SIGWINCH"),
        signal_result(ret),
    )
}

/// rt_sigqueueinfo(2) (sigqueue(3)) SIGWINCH with a value to the victim.
pub fn sigqueue_foreign(ctx: &Ctx) -> Outcome {
    let pid = match victim_before(ctx) {
        Ok(p) => p,
        Err(o) => return o,
    };
    // SAFETY: an all-zero siginfo is valid; the fields set are the ones sigqueue(3) sets.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    info.si_signo = libc::SIGWINCH;
    info.si_code = -1; // SI_QUEUE: from user space, which is what the kernel requires
                       // SAFETY: info is a valid siginfo_t that outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_rt_sigqueueinfo,
            pid,
            libc::SIGWINCH,
            &info as *const libc::siginfo_t,
        )
    };
    judge_call(
        &format!("rt_sigqueueinfo(2) {pid} SIGWINCH"),
        signal_result(ret),
    )
}

/// A child of our own (in our cgroup): what the benign operations act on.
struct OwnChild(libc::pid_t);

impl OwnChild {
    fn spawn() -> Result<OwnChild, String> {
        // SAFETY: the child only pauses until a signal ends it (async-signal-safe calls).
        match unsafe { libc::fork() } {
            -1 => Err(format!(
                "fork: {}",
                sys::describe(&io::Error::last_os_error())
            )),
            0 => loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            },
            pid => Ok(OwnChild(pid)),
        }
    }
}

impl Drop for OwnChild {
    fn drop(&mut self) {
        // SAFETY: our own child, killed and reaped by its pid.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), libc::__WALL);
        }
    }
}

/// Benign: a signal to a child of our own.
pub fn signal_own_child(_: &Ctx) -> Result<(), String> {
    let child = OwnChild::spawn()?;
    // SAFETY: kill(2) of our own child.
    check_int(unsafe { libc::kill(child.0, libc::SIGWINCH) })
        .map(drop)
        .map_err(|e| format!("kill(2) own child SIGWINCH: {}", sys::describe(&e)))
}

/// Benign: tracing a child of our own (a debugger's or strace's work), then letting go.
pub fn ptrace_own_child(_: &Ctx) -> Result<(), String> {
    let child = OwnChild::spawn()?;
    // SAFETY: PTRACE_ATTACH of our own child.
    check(unsafe { libc::ptrace(libc::PTRACE_ATTACH, child.0, 0usize, 0usize) })
        .map_err(|e| format!("ptrace(2) PTRACE_ATTACH own child: {}", sys::describe(&e)))?;
    let note = detach(child.0);
    if note == "detached" {
        Ok(())
    } else {
        Err(note)
    }
}
