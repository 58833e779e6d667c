//! Leaving the agent's cgroup: writing our own pid into another cgroup's cgroup.procs.
//! Whether we moved is read back from /proc/self/cgroup, not inferred from write(2).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::judge::{judge, Outcome, Target};
use super::sys::{self, describe};
use super::Ctx;

/// Our cgroup v2 path (the `0::` line of /proc/self/cgroup).
pub fn own_cgroup() -> io::Result<String> {
    let text = fs::read_to_string("/proc/self/cgroup")?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other("no cgroup v2 line in /proc/self/cgroup"))
}

/// Where the cgroup v2 hierarchy is mounted with its root at `/` (so /proc/self/cgroup
/// paths are relative to it), from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let fields: Vec<&str> = left.split_whitespace().collect();
        // Fields: id, parent, major:minor, root, mount point, ...
        match (fstype, fields.get(3), fields.get(4)) {
            ("cgroup2", Some(&"/"), Some(point)) => Some(PathBuf::from(point)),
            _ => None,
        }
    })
}

fn write_pid(procs: &Path, pid: libc::pid_t) -> io::Result<(&'static str, io::Result<usize>)> {
    let fd = sys::open(procs, libc::O_WRONLY)?;
    Ok((
        "write(2) of our pid (op 2; the open succeeded)",
        sys::write_fd(&fd, pid.to_string().as_bytes()),
    ))
}

/// open(2) the foreign cgroup.procs O_WRONLY and write(2) our pid into it.
pub fn cgroup_escape(ctx: &Ctx) -> Outcome {
    let procs = &ctx.args.foreign_procs;
    if let Err(e) = fs::symlink_metadata(procs) {
        return Outcome::error(format!("{}: {}", procs.display(), describe(&e)));
    }
    let before = match own_cgroup() {
        Ok(c) => c,
        Err(e) => return Outcome::error(format!("/proc/self/cgroup: {}", describe(&e))),
    };
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let (op, result) = match write_pid(procs, me) {
        Err(e) => ("open(2) foreign cgroup.procs O_WRONLY (op 1)", Err(e)),
        Ok((op, written)) => (op, written.map(|n| format!("wrote {n} bytes"))),
    };
    let target = match own_cgroup() {
        Ok(after) if after == before => Target::Intact,
        Ok(after) => Target::Damaged(format!("moved from {before} to {after}")),
        Err(e) => Target::Unverifiable(format!("/proc/self/cgroup: {}", describe(&e))),
    };
    let moved = matches!(target, Target::Damaged(_));
    let outcome = match (result, moved) {
        // The kernel took the write but we are where we were: not a block, not an escape.
        (Ok(done), false) => Outcome::error(format!(
            "{op}: {done}, yet /proc/self/cgroup still says {before}"
        )),
        (result, _) => judge(op, result, target),
    };
    if moved {
        return outcome.note(&move_back(&before, me));
    }
    outcome
}

/// Back into the cgroup the caller put us in, so the caller's bookkeeping (and cleanup of
/// the foreign cgroup) is not disturbed.
fn move_back(original: &str, me: libc::pid_t) -> String {
    let Some(mount) = cgroup2_mount() else {
        return "could not move back: no cgroup2 mount rooted at /".into();
    };
    let procs = mount
        .join(original.trim_start_matches('/'))
        .join("cgroup.procs");
    match write_pid(&procs, me).and_then(|(_, w)| w) {
        Ok(_) => format!("moved back to {original}"),
        Err(e) => format!("could not move back to {original}: {}", describe(&e)),
    }
}
