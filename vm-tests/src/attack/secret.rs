//! Attempts to read the secret (or to give it a name the agent controls). Success is
//! getting bytes (or the link); the bytes are counted, never printed.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::fixture::remove_leftover;
use super::judge::{judge, judge_call, Outcome, Target};
use super::sys;
use super::Ctx;

/// The secret must exist, or every read attempt would be an ENOENT (a broken test).
pub fn secret_exists(ctx: &Ctx) -> Result<(), Outcome> {
    match fs::symlink_metadata(&ctx.args.secret) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Outcome::error(format!(
            "the secret {} does not exist",
            ctx.args.secret.display()
        ))),
        _ => Ok(()),
    }
}

/// open(2) `path` O_RDONLY, then read(2); which of the two failed is in the verdict's op.
fn open_and_read(path: &Path, what: &str) -> Outcome {
    match sys::open(path, libc::O_RDONLY) {
        Err(e) => judge_call(&format!("open(2) {what} O_RDONLY (op 1)"), Err(e)),
        Ok(fd) => read_all(
            &fd,
            &format!("read(2) of {what} (op 2; the open succeeded)"),
        ),
    }
}

fn read_all(fd: &std::os::fd::OwnedFd, op: &str) -> Outcome {
    let mut buf = [0u8; 4096];
    let result = sys::read_fd(fd, &mut buf).map(|n| format!("read {n} bytes of it"));
    judge_call(op, result)
}

/// open(2) the secret O_RDONLY and read it.
pub fn secret_read(ctx: &Ctx) -> Outcome {
    if let Err(o) = secret_exists(ctx) {
        return o;
    }
    open_and_read(&ctx.args.secret, "secret")
}

/// Read through a hardlink made before the run, outside the agent: another name for the
/// same inode, so a path-based rule would miss it.
pub fn secret_hardlink_read(ctx: &Ctx) -> Outcome {
    if fs::symlink_metadata(&ctx.args.prelinked_secret).is_err() {
        return Outcome::error(format!(
            "the prelinked secret {} does not exist",
            ctx.args.prelinked_secret.display()
        ));
    }
    open_and_read(&ctx.args.prelinked_secret, "prelinked-secret (hardlink)")
}

/// link(2) the secret into the workspace: the agent making its own second name.
pub fn secret_link(ctx: &Ctx) -> Outcome {
    if let Err(o) = secret_exists(ctx) {
        return o;
    }
    let mylink = ctx.args.workspace.join("mylink");
    let _ = remove_leftover(&mylink);
    let result = sys::link(&ctx.args.secret, &mylink).map(|()| "made workspace/mylink".into());
    let target = if fs::symlink_metadata(&mylink).is_ok() {
        Target::Damaged("workspace/mylink names the secret".into())
    } else {
        Target::Intact
    };
    let outcome = match result {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Outcome::error(
            "link(2) secret -> workspace/mylink: EXDEV: the secret and the workspace are on \
             different filesystems (the caller must put them on one)",
        ),
        result => judge("link(2) secret -> workspace/mylink", result, target),
    };
    outcome.note(&remove_leftover(&mylink))
}

/// open(2) O_PATH (which runs no file-open check), then reopen /proc/self/fd/N O_RDONLY.
pub fn secret_proc_fd(ctx: &Ctx) -> Outcome {
    if let Err(o) = secret_exists(ctx) {
        return o;
    }
    let pathfd = match sys::open(&ctx.args.secret, libc::O_PATH) {
        Ok(fd) => fd,
        Err(e) => return judge_call("open(2) secret O_PATH (op 1)", Err(e)),
    };
    let magic = format!("/proc/self/fd/{}", pathfd.as_raw_fd());
    match sys::open(Path::new(&magic), libc::O_RDONLY) {
        Err(e) => judge_call(
            &format!("open(2) {magic} O_RDONLY (op 2; the O_PATH open succeeded)"),
            Err(e),
        ),
        Ok(fd) => read_all(
            &fd,
            &format!("read(2) of the secret reopened through {magic} (op 3)"),
        ),
    }
}
