//! Attacks on the protected directory through plain syscalls: delete, rename, link,
//! truncate, write. Each one checks its fixture first, judges on the fixture's state
//! afterwards, and puts the fixture back when it got through.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;

use super::fixture::remove_leftover;
use super::judge::{judge, Outcome, Target};
use super::sys::{self, check_int, cpath, describe};
use super::Ctx;

/// unlink(2) of protected/keep.txt.
pub fn unlink(ctx: &Ctx) -> Outcome {
    let before = match ctx.prot.keep_before() {
        Ok(id) => id,
        Err(o) => return o,
    };
    let result = sys::unlink(&ctx.prot.keep).map(|()| "removed keep.txt".to_owned());
    let outcome = judge(
        "unlink(2) protected/keep.txt",
        result,
        ctx.prot.keep_after(before),
    );
    outcome.note(&ctx.prot.restore_keep())
}

/// unlinkat(2) relative to a descriptor of the protected directory (no path through it).
pub fn unlinkat_dirfd(ctx: &Ctx) -> Outcome {
    let before = match ctx.prot.keep_before() {
        Ok(id) => id,
        Err(o) => return o,
    };
    let dir = match sys::open(&ctx.prot.dir, libc::O_RDONLY | libc::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e) => {
            return Outcome::error(format!(
                "open(2) protected dir O_DIRECTORY: {}",
                describe(&e)
            ))
        }
    };
    // SAFETY: dir is an open descriptor; the name is a NUL-terminated literal.
    let ret = unsafe { libc::unlinkat(dir.as_raw_fd(), c"keep.txt".as_ptr(), 0) };
    let result = check_int(ret).map(|_| "removed keep.txt".to_owned());
    judge(
        "unlinkat(2) dirfd=protected \"keep.txt\"",
        result,
        ctx.prot.keep_after(before),
    )
    .note(&ctx.prot.restore_keep())
}

/// rmdir(2) of protected/subdir (empty, so only a policy can stop it).
pub fn rmdir(ctx: &Ctx) -> Outcome {
    let before = match ctx.prot.subdir_before() {
        Ok(id) => id,
        Err(o) => return o,
    };
    let result = cpath(&ctx.prot.subdir).and_then(|c| {
        // SAFETY: c is a valid NUL-terminated string.
        check_int(unsafe { libc::rmdir(c.as_ptr()) }).map(|_| "removed subdir".to_owned())
    });
    judge(
        "rmdir(2) protected/subdir",
        result,
        ctx.prot.subdir_after(before),
    )
    .note(&ctx.prot.restore_subdir())
}

/// renameat2(2) of a workspace file onto protected/keep.txt (replacing it).
pub fn rename_over(ctx: &Ctx) -> Outcome {
    let before = match ctx.prot.keep_before() {
        Ok(id) => id,
        Err(o) => return o,
    };
    let over = ctx.args.workspace.join("over.txt");
    if let Err(e) = fs::write(&over, b"over\n") {
        return Outcome::error(format!("create workspace/over.txt: {}", describe(&e)));
    }
    let result = cpath(&over).and_then(|from| {
        let to = cpath(&ctx.prot.keep)?;
        // SAFETY: both are valid NUL-terminated strings; flags 0 is a plain rename.
        let ret = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                0,
            )
        };
        check_int(ret).map(|_| "replaced keep.txt".to_owned())
    });
    judge(
        "renameat2(2) workspace/over.txt -> protected/keep.txt",
        result,
        ctx.prot.keep_after(before),
    )
    .note(&ctx.prot.restore_keep())
    .note(&remove_leftover(&over))
}

/// rename(2) of protected/keep.txt out into the workspace.
pub fn rename_away(ctx: &Ctx) -> Outcome {
    let before = match ctx.prot.keep_before() {
        Ok(id) => id,
        Err(o) => return o,
    };
    let stolen = ctx.args.workspace.join("stolen.txt");
    let result = sys::rename(&ctx.prot.keep, &stolen).map(|()| "moved keep.txt out".to_owned());
    let outcome = judge(
        "rename(2) protected/keep.txt -> workspace/stolen.txt",
        result,
        ctx.prot.keep_after(before),
    );
    outcome.note(&put_back(ctx, &stolen))
}

/// After a rename away got through: move the same inode back (keeps a policy keyed on it
/// meaningful); failing that, a fresh keep.txt.
pub(super) fn put_back(ctx: &Ctx, moved: &std::path::Path) -> String {
    if fs::symlink_metadata(moved).is_err() {
        return String::new();
    }
    if ctx.prot.keep.exists() {
        return remove_leftover(moved);
    }
    match sys::rename(moved, &ctx.prot.keep) {
        Ok(()) => "moved keep.txt back".into(),
        Err(e) => format!(
            "could not move keep.txt back ({}); {}; {}",
            describe(&e),
            ctx.prot.restore_keep(),
            remove_leftover(moved)
        ),
    }
}

/// link(2) protected/keep.txt into the workspace, then write through the new name.
pub fn hardlink_write(ctx: &Ctx) -> Outcome {
    let before = match ctx.prot.keep_before() {
        Ok(id) => id,
        Err(o) => return o,
    };
    let hl = ctx.args.workspace.join("hl.txt");
    let linked = sys::link(&ctx.prot.keep, &hl);
    let result = linked.map(|()| {
        let write = sys::open(&hl, libc::O_WRONLY | libc::O_APPEND)
            .and_then(|fd| sys::write_fd(&fd, b"pwned\n"));
        match write {
            Ok(n) => format!("made workspace/hl.txt; wrote {n} bytes through it (op 2 write(2))"),
            Err(e) => format!(
                "made workspace/hl.txt; writing through it failed: {} (op 2)",
                describe(&e)
            ),
        }
    });
    let target = match ctx.prot.keep_after(before) {
        // The link itself is the damage: it is a second name for the protected inode
        // outside the protected directory.
        Target::Intact if fs::symlink_metadata(&hl).is_ok() => {
            Target::Damaged("workspace/hl.txt names the protected inode".into())
        }
        t => t,
    };
    judge(
        "link(2) protected/keep.txt -> workspace/hl.txt (op 1)",
        result,
        target,
    )
    .note(&remove_leftover(&hl))
    .note(&ctx.prot.restore_keep())
}

/// truncate(2) of protected/keep.txt to 0 bytes.
pub fn truncate(ctx: &Ctx) -> Outcome {
    let before = match ctx.prot.keep_before() {
        Ok(id) => id,
        Err(o) => return o,
    };
    let result = cpath(&ctx.prot.keep).and_then(|c| {
        // SAFETY: c is a valid NUL-terminated string.
        check_int(unsafe { libc::truncate(c.as_ptr(), 0) }).map(|_| "truncated".to_owned())
    });
    judge(
        "truncate(2) protected/keep.txt",
        result,
        ctx.prot.keep_after(before),
    )
    .note(&ctx.prot.restore_keep())
}

/// open(2) of protected/keep.txt with O_WRONLY|O_TRUNC (truncation at open).
pub fn open_trunc(ctx: &Ctx) -> Outcome {
    let before = match ctx.prot.keep_before() {
        Ok(id) => id,
        Err(o) => return o,
    };
    let result = sys::open(&ctx.prot.keep, libc::O_WRONLY | libc::O_TRUNC)
        .map(|_fd| "opened for writing and truncated".to_owned());
    judge(
        "open(2) protected/keep.txt O_WRONLY|O_TRUNC",
        result,
        ctx.prot.keep_after(before),
    )
    .note(&ctx.prot.restore_keep())
}

/// open(2) of protected/keep.txt with O_WRONLY|O_APPEND, then write(2).
pub fn open_write(ctx: &Ctx) -> Outcome {
    let before = match ctx.prot.keep_before() {
        Ok(id) => id,
        Err(o) => return o,
    };
    let (op, result): (&str, io::Result<String>) = match sys::open(
        &ctx.prot.keep,
        libc::O_WRONLY | libc::O_APPEND,
    ) {
        Err(e) => (
            "open(2) protected/keep.txt O_WRONLY|O_APPEND (op 1)",
            Err(e),
        ),
        Ok(fd) => (
            "write(2) to protected/keep.txt opened O_WRONLY|O_APPEND (op 2; the open succeeded)",
            sys::write_fd(&fd, b"pwned\n").map(|n| format!("appended {n} bytes")),
        ),
    };
    judge(op, result, ctx.prot.keep_after(before)).note(&ctx.prot.restore_keep())
}

/// A symlink in the workspace pointing at the protected directory, and unlink(2) through it.
pub fn symlink_delete(ctx: &Ctx) -> Outcome {
    let before = match ctx.prot.keep_before() {
        Ok(id) => id,
        Err(o) => return o,
    };
    let via = ctx.args.workspace.join("via");
    let _ = remove_leftover(&via);
    if let Err(e) = std::os::unix::fs::symlink(&ctx.prot.dir, &via) {
        return Outcome::error(format!(
            "symlink(2) workspace/via -> protected: {}",
            describe(&e)
        ));
    }
    let result = sys::unlink(&via.join("keep.txt")).map(|()| "removed keep.txt".to_owned());
    judge(
        "unlink(2) workspace/via/keep.txt (via -> protected)",
        result,
        ctx.prot.keep_after(before),
    )
    .note(&ctx.prot.restore_keep())
    .note(&remove_leftover(&via))
}

/// The mode and owner of keep.txt, the same inode: what a chmod attack changes.
fn keep_meta_after(
    ctx: &Ctx,
    before: super::fixture::Identity,
    mode: u32,
    owner: (u32, u32),
) -> Target {
    use std::os::unix::fs::MetadataExt;
    match ctx.prot.keep_after(before) {
        Target::Intact => match fs::symlink_metadata(&ctx.prot.keep) {
            Ok(m) if m.mode() & 0o7777 != mode => {
                Target::Damaged(format!("keep.txt's mode is {:o} now", m.mode() & 0o7777))
            }
            Ok(m) if (m.uid(), m.gid()) != owner => {
                Target::Damaged(format!("keep.txt belongs to {}:{} now", m.uid(), m.gid()))
            }
            Ok(_) => Target::Intact,
            Err(e) => Target::Unverifiable(format!("stat keep.txt: {}", describe(&e))),
        },
        other => other,
    }
}

fn keep_mode_owner(ctx: &Ctx) -> Option<(u32, (u32, u32))> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(&ctx.prot.keep).ok()?;
    Some((m.mode() & 0o7777, (m.uid(), m.gid())))
}

/// chmod(2) of protected/keep.txt to 0666; put back if it got through.
pub fn chmod(ctx: &Ctx) -> Outcome {
    let before = match ctx.prot.keep_before() {
        Ok(id) => id,
        Err(o) => return o,
    };
    let Some((mode, owner)) = keep_mode_owner(ctx) else {
        return Outcome::error("stat keep.txt before the attack failed");
    };
    let wanted = if mode == 0o666 { 0o600 } else { 0o666 };
    let result = cpath(&ctx.prot.keep).and_then(|c| {
        // SAFETY: c is a valid NUL-terminated string.
        check_int(unsafe { libc::chmod(c.as_ptr(), wanted) }).map(|_| format!("mode {wanted:o}"))
    });
    let outcome = judge(
        &format!("chmod(2) protected/keep.txt {wanted:o}"),
        result,
        keep_meta_after(ctx, before, mode, owner),
    );
    if outcome.is_allowed() {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(&ctx.prot.keep, fs::Permissions::from_mode(mode));
    }
    outcome
}

/// A new name in the protected directory: made (damage) or not.
fn new_name_outcome(op: &str, path: &std::path::Path, result: io::Result<()>) -> Outcome {
    let exists = fs::symlink_metadata(path).is_ok();
    let target = if exists {
        Target::Damaged(format!("{} exists", path.display()))
    } else {
        Target::Intact
    };
    let outcome = judge(op, result.map(|()| "created".into()), target);
    if exists {
        let undo = fs::remove_dir(path).or_else(|_| fs::remove_file(path));
        return outcome.note(&match undo {
            Ok(()) => "removed it".to_owned(),
            Err(e) => format!("could not remove it: {}", describe(&e)),
        });
    }
    outcome
}

/// mkdir(2) inside the protected directory.
pub fn mkdir(ctx: &Ctx) -> Outcome {
    let path = ctx.prot.dir.join("planted-dir");
    let result = cpath(&path).and_then(|c| {
        // SAFETY: c is a valid NUL-terminated string.
        check_int(unsafe { libc::mkdir(c.as_ptr(), 0o755) }).map(drop)
    });
    new_name_outcome("mkdir(2) protected/planted-dir", &path, result)
}

/// symlink(2) inside the protected directory (a name pointing anywhere).
pub fn symlink(ctx: &Ctx) -> Outcome {
    let path = ctx.prot.dir.join("planted-link");
    let result = std::os::unix::fs::symlink(&ctx.args.workspace, &path);
    new_name_outcome("symlink(2) protected/planted-link", &path, result)
}
