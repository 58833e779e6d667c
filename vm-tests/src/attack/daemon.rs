//! Attacks on the daemon process: stop it, trace it, read its memory, kill it. The order in
//! the table puts the kill last, so an allowed kill leaves the others something to attack.
//! Whether the daemon is alive, stopped or traced is read from /proc (kill(pid, 0) would
//! itself be a signal a policy may refuse).

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::judge::{judge, Outcome, Target};
use super::sys::{self, check, check_int};
use super::Ctx;

/// The state letter of /proc/<pid>/stat (R, S, D, T, t, Z, X...), None if there is no such
/// process. The command name can hold spaces and parentheses, so the state is read after the
/// last `)`.
fn state(pid: libc::pid_t) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

pub(super) fn alive(pid: libc::pid_t) -> bool {
    !matches!(state(pid), None | Some('Z' | 'X'))
}

pub(super) fn tracer(pid: libc::pid_t) -> Option<libc::pid_t> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))?
        .trim()
        .parse()
        .ok()
}

/// `pid`, if the process (`what`) runs: an attack on a process that is already gone is an
/// ERROR, not a block.
pub(super) fn running_before(pid: libc::pid_t, what: &str) -> Result<libc::pid_t, Outcome> {
    if alive(pid) {
        Ok(pid)
    } else {
        Err(Outcome::error(format!(
            "the {what} (pid {pid}) is not running before the attack"
        )))
    }
}

fn daemon_before(ctx: &Ctx) -> Result<libc::pid_t, Outcome> {
    running_before(ctx.args.daemon_pid, "daemon")
}

fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers; pid was checked to be > 1 and not ours.
    check_int(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// kill(pid, SIGSTOP); if it got through, SIGCONT at once.
pub fn stop_daemon(ctx: &Ctx) -> Outcome {
    let pid = match daemon_before(ctx) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let result = kill(pid, libc::SIGSTOP);
    let target = if result.is_ok() || state(pid) == Some('T') {
        Target::Damaged("the daemon was stopped".into())
    } else if alive(pid) {
        Target::Intact
    } else {
        Target::Damaged("the daemon is gone".into())
    };
    let outcome = judge(
        &format!("kill(2) {pid} SIGSTOP"),
        result.map(|()| "delivered".into()),
        target,
    );
    if outcome.is_allowed() {
        let cont = match kill(pid, libc::SIGCONT) {
            Ok(()) => "sent SIGCONT".to_owned(),
            Err(e) => format!("SIGCONT failed: {}", sys::describe(&e)),
        };
        return outcome.note(&cont);
    }
    outcome
}

/// ptrace(PTRACE_ATTACH, pid); if it got through, wait for the attach stop and detach.
pub fn ptrace_daemon(ctx: &Ctx) -> Outcome {
    let pid = match daemon_before(ctx) {
        Ok(p) => p,
        Err(o) => return o,
    };
    // SAFETY: PTRACE_ATTACH takes a pid and ignores addr and data.
    let ret = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0usize, 0usize) };
    let result = check(ret);
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let target = match tracer(pid) {
        _ if result.is_ok() => Target::Damaged("the daemon was traced".into()),
        Some(0) => Target::Intact,
        Some(t) if t == me => Target::Damaged("the daemon is traced by us".into()),
        Some(t) => Target::Unverifiable(format!("the daemon is traced by pid {t}")),
        None => Target::Damaged("the daemon is gone".into()),
    };
    let outcome = judge(
        &format!("ptrace(2) PTRACE_ATTACH {pid}"),
        result.map(|_| "attached".into()),
        target,
    );
    if outcome.is_allowed() {
        return outcome.note(&detach(pid));
    }
    outcome
}

/// PTRACE_DETACH needs the tracee in a ptrace stop: wait (bounded) for the stop the attach
/// caused, then detach without a signal, so the SIGSTOP is swallowed.
pub(super) fn detach(pid: libc::pid_t) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out-pointer; a tracee is waitable by its tracer.
        let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
        if got == pid || got < 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: PTRACE_DETACH with data 0: no signal injected.
    let ret = unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize) };
    match check(ret) {
        Ok(_) => "detached".into(),
        Err(e) => format!("PTRACE_DETACH failed: {}", sys::describe(&e)),
    }
}

/// open(2) /proc/<pid>/mem O_RDONLY: the door to reading the daemon's memory.
pub fn daemon_mem(ctx: &Ctx) -> Outcome {
    let pid = match daemon_before(ctx) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let path = format!("/proc/{pid}/mem");
    let result = sys::open(Path::new(&path), libc::O_RDONLY).map(|_fd| "opened".into());
    let target = if alive(pid) {
        Target::Intact
    } else {
        Target::Unverifiable("the daemon is gone".into())
    };
    judge(&format!("open(2) {path} O_RDONLY"), result, target)
}

/// kill(pid, SIGKILL). Blocked only if refused and the daemon still runs.
pub fn kill_daemon(ctx: &Ctx) -> Outcome {
    let pid = match daemon_before(ctx) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let result = kill(pid, libc::SIGKILL);
    let target = if alive(pid) || result.is_ok() {
        Target::Intact
    } else {
        Target::Damaged("the daemon is gone".into())
    };
    judge(
        &format!("kill(2) {pid} SIGKILL"),
        result.map(|()| "delivered".into()),
        target,
    )
}
