//! Changing what the daemon reads through the mount table or the names above its files: a
//! tmpfs over the protected tree, a bind mount over the policy's directory, unmounting the
//! bpffs with secops' pins, pivot_root, renaming the directory that holds the state
//! directory. An attack that got through is undone at once (umount, rename back).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::judge::{judge, Outcome, Target};
use super::sys::{self, check_int, cpath, describe};
use super::Ctx;

fn mount(
    source: &Path,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> std::io::Result<()> {
    let (s, t) = (cpath(source)?, cpath(target)?);
    let fstype = fstype.map(|f| std::ffi::CString::new(f).expect("no NUL in a literal"));
    // SAFETY: valid NUL-terminated strings (fstype may be NULL for a bind); no data.
    check_int(unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            std::ptr::null(),
        )
    })
    .map(drop)
}

/// Undoes a mount that got through.
fn unmount(target: &Path) -> String {
    let Ok(t) = cpath(target) else {
        return String::new();
    };
    // SAFETY: a valid NUL-terminated string; MNT_DETACH so a busy mount still goes.
    match check_int(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) }) {
        Ok(_) => format!("unmounted {}", target.display()),
        Err(e) => format!("could not unmount {}: {}", target.display(), describe(&e)),
    }
}

/// (dev, inode) of a path, following nothing.
fn identity(path: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// (dev, inode) of what an attack aims at; its absence makes the attack an ERROR.
fn identity_before(path: &Path) -> Result<(u64, u64), Outcome> {
    identity(path)
        .ok_or_else(|| Outcome::error(format!("{} is not there before the attack", path.display())))
}

/// The same file still at `path`.
fn same_at(path: &Path, before: (u64, u64), what: &str) -> Target {
    match identity(path) {
        Some(now) if now == before => Target::Intact,
        Some(_) => Target::Damaged(format!("{what} is another file now")),
        None => Target::Damaged(format!("{what} is gone")),
    }
}

/// mount(2) a tmpfs over the protected directory (hiding keep.txt behind an empty one).
pub fn mount_tmpfs(ctx: &Ctx) -> Outcome {
    let before = match ctx.prot.keep_before() {
        Ok(id) => id,
        Err(o) => return o,
    };
    let result = mount(Path::new("tmpfs"), &ctx.prot.dir, Some("tmpfs"), 0);
    let mounted = result.is_ok();
    let outcome = judge(
        "mount(2) tmpfs on protected/",
        result.map(|()| "mounted".into()),
        ctx.prot.keep_after(before),
    );
    if mounted {
        return outcome.note(&unmount(&ctx.prot.dir));
    }
    outcome
}

/// mount(2) MS_BIND of the workspace over the directory of the daemon's policy file.
pub fn bind_over_policy(ctx: &Ctx) -> Outcome {
    let policy = &ctx.args.policy_file;
    let Some(dir) = policy.parent() else {
        return Outcome::error(format!("{} has no directory", policy.display()));
    };
    let before = match identity_before(policy) {
        Ok(id) => id,
        Err(o) => return o,
    };
    let result = mount(&ctx.args.workspace, dir, None, libc::MS_BIND);
    let mounted = result.is_ok();
    let outcome = judge(
        &format!("mount(2) MS_BIND workspace on {}", dir.display()),
        result.map(|()| "bound".into()),
        same_at(policy, before, "the policy file"),
    );
    if mounted {
        return outcome.note(&unmount(dir));
    }
    outcome
}

/// The mount point `path` is on: up the tree while the device stays the same.
fn mount_point_of(path: &Path) -> Option<PathBuf> {
    let dev = fs::metadata(path).ok()?.dev();
    let mut point = path.to_path_buf();
    while let Some(parent) = point.parent() {
        if fs::metadata(parent).ok()?.dev() != dev {
            break;
        }
        point = parent.to_path_buf();
    }
    Some(point)
}

/// umount2(2) of the bpffs that holds the daemon's pins.
pub fn umount_pins(ctx: &Ctx) -> Outcome {
    let pin = &ctx.args.bpf_pin;
    let Some(point) = pin.parent().and_then(mount_point_of) else {
        return Outcome::error(format!("no mount point above {}", pin.display()));
    };
    let before = match identity_before(pin) {
        Ok(id) => id,
        Err(o) => return o,
    };
    let result = cpath(&point).and_then(|c| {
        // SAFETY: a valid NUL-terminated string; flags 0 (no force, no detach).
        check_int(unsafe { libc::umount2(c.as_ptr(), 0) }).map(drop)
    });
    judge(
        &format!("umount2(2) {}", point.display()),
        result.map(|()| "unmounted".into()),
        same_at(pin, before, "the pinned link"),
    )
}

/// pivot_root(2) in a new mount namespace of a child: the agent's view of `/` replaced. The
/// setup (a private propagation, the workspace bound onto itself) is tried but may itself
/// be refused: pivot_root is judged before it looks at any of that.
pub fn pivot_root(ctx: &Ctx) -> Outcome {
    let (Ok(new_root), Ok(root)) = (cpath(&ctx.args.workspace), cpath(Path::new("/"))) else {
        return Outcome::error("workspace path with a NUL");
    };
    let put_old = ctx.args.workspace.join("old-root");
    let _ = fs::create_dir(&put_old);
    let Ok(old) = cpath(&put_old) else {
        return Outcome::error("workspace path with a NUL");
    };
    // SAFETY: the child makes only raw syscalls with strings prepared before the fork, and
    // leaves with _exit: the errno of pivot_root, or 0.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe {
            // Never pivot the caller's own mount namespace: no new one, no pivot (and the
            // refusal of the namespace is the answer).
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                libc::_exit(*libc::__errno_location());
            }
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
            libc::mount(
                new_root.as_ptr(),
                new_root.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            );
            let ret = libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), old.as_ptr());
            libc::_exit(if ret == 0 {
                0
            } else {
                *libc::__errno_location()
            });
        }
    }
    let mut status = 0;
    // SAFETY: our own child, reaped by its pid.
    let waited = pid > 0 && unsafe { libc::waitpid(pid, &mut status, 0) } == pid;
    let _ = fs::remove_dir(&put_old);
    if !waited || !libc::WIFEXITED(status) {
        return Outcome::error(format!(
            "the pivot_root child did not run (fork {pid}, status {status:#x})"
        ));
    }
    let result = match libc::WEXITSTATUS(status) {
        0 => Ok("pivoted (in the child's own mount namespace)".to_owned()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    };
    judge(
        "pivot_root(2) workspace workspace/old-root",
        result,
        Target::Intact,
    )
}

/// rename(2) of the directory that holds the daemon's state directory (and, in the VM, its
/// policy and socket): the daemon's paths would lead nowhere, or to what the agent puts
/// there next.
pub fn rename_state_parent(ctx: &Ctx) -> Outcome {
    let state = &ctx.args.state_dir;
    let Some(parent) = state.parent() else {
        return Outcome::error(format!("{} has no parent", state.display()));
    };
    let before = match identity_before(parent) {
        Ok(id) => id,
        Err(o) => return o,
    };
    let moved = parent.with_extension("moved");
    let result = sys::rename(parent, &moved);
    let renamed = result.is_ok();
    let outcome = judge(
        &format!("rename(2) {} -> {}", parent.display(), moved.display()),
        result.map(|()| "moved".into()),
        same_at(parent, before, "the state directory's parent"),
    );
    if renamed {
        let back = match sys::rename(&moved, parent) {
            Ok(()) => "renamed back".to_owned(),
            Err(e) => format!("could not rename it back: {}", describe(&e)),
        };
        return outcome.note(&back);
    }
    outcome
}
