//! What the agent must still be able to do under enforcement: ordinary work inside its
//! workspace, through the same syscalls (and io_uring) the attacks use, plus the allowed
//! exec and connections. Each operation makes its own files, so `--only` can pick any one,
//! and removes them.

use std::fs;
use std::path::{Path, PathBuf};

use super::sys::{self, cpath, describe};
use super::uring;
use super::Ctx;

type Step = Result<(), String>;

fn at(what: &str, e: std::io::Error) -> String {
    format!("{what}: {}", describe(&e))
}

fn ws(ctx: &Ctx, name: &str) -> PathBuf {
    ctx.args.workspace.join(name)
}

fn create(path: &Path, content: &[u8]) -> Step {
    let fd = sys::open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)
        .map_err(|e| at("open(2) O_CREAT", e))?;
    let n = sys::write_fd(&fd, content).map_err(|e| at("write(2)", e))?;
    if n != content.len() {
        return Err(format!("short write: {n} of {}", content.len()));
    }
    Ok(())
}

fn expect_content(path: &Path, want: &[u8]) -> Step {
    let fd = sys::open(path, libc::O_RDONLY).map_err(|e| at("open(2) O_RDONLY", e))?;
    let mut buf = [0u8; 256];
    let n = sys::read_fd(&fd, &mut buf).map_err(|e| at("read(2)", e))?;
    if &buf[..n] != want {
        return Err(format!(
            "{} holds {:?}, expected {:?}",
            path.display(),
            String::from_utf8_lossy(&buf[..n]),
            String::from_utf8_lossy(want)
        ));
    }
    Ok(())
}

fn cleanup(paths: &[&Path]) {
    for p in paths {
        let _ = fs::remove_file(p);
    }
}

/// Runs `body`, then removes `paths` whatever happened.
fn with_cleanup(paths: &[&Path], body: impl FnOnce() -> Step) -> Step {
    cleanup(paths);
    let r = body();
    cleanup(paths);
    r
}

pub fn create_write_read(ctx: &Ctx) -> Step {
    let f = ws(ctx, "benign-create.txt");
    with_cleanup(&[&f], || {
        create(&f, b"hello\n")?;
        expect_content(&f, b"hello\n")
    })
}

pub fn append(ctx: &Ctx) -> Step {
    let f = ws(ctx, "benign-append.txt");
    with_cleanup(&[&f], || {
        create(&f, b"hello\n")?;
        let fd = sys::open(&f, libc::O_WRONLY | libc::O_APPEND)
            .map_err(|e| at("open(2) O_APPEND", e))?;
        sys::write_fd(&fd, b"more\n").map_err(|e| at("write(2)", e))?;
        expect_content(&f, b"hello\nmore\n")
    })
}

pub fn rename(ctx: &Ctx) -> Step {
    let (a, b) = (
        ws(ctx, "benign-rename-a.txt"),
        ws(ctx, "benign-rename-b.txt"),
    );
    with_cleanup(&[&a, &b], || {
        create(&a, b"r\n")?;
        sys::rename(&a, &b).map_err(|e| at("rename(2)", e))?;
        expect_content(&b, b"r\n")
    })
}

pub fn hardlink(ctx: &Ctx) -> Step {
    let (a, b) = (ws(ctx, "benign-link-a.txt"), ws(ctx, "benign-link-b.txt"));
    with_cleanup(&[&a, &b], || {
        create(&a, b"l\n")?;
        sys::link(&a, &b).map_err(|e| at("link(2)", e))?;
        expect_content(&b, b"l\n")
    })
}

pub fn truncate(ctx: &Ctx) -> Step {
    let f = ws(ctx, "benign-truncate.txt");
    with_cleanup(&[&f], || {
        create(&f, b"truncate me\n")?;
        let c = cpath(&f).map_err(|e| at("path", e))?;
        // SAFETY: c is a valid NUL-terminated string.
        sys::check_int(unsafe { libc::truncate(c.as_ptr(), 0) })
            .map_err(|e| at("truncate(2)", e))?;
        expect_content(&f, b"")
    })
}

pub fn open_trunc(ctx: &Ctx) -> Step {
    let f = ws(ctx, "benign-otrunc.txt");
    with_cleanup(&[&f], || {
        create(&f, b"truncate me\n")?;
        drop(sys::open(&f, libc::O_WRONLY | libc::O_TRUNC).map_err(|e| at("open(2) O_TRUNC", e))?);
        expect_content(&f, b"")
    })
}

pub fn unlink(ctx: &Ctx) -> Step {
    let f = ws(ctx, "benign-unlink.txt");
    with_cleanup(&[&f], || {
        create(&f, b"u\n")?;
        sys::unlink(&f).map_err(|e| at("unlink(2)", e))?;
        if f.exists() {
            return Err("unlink(2) returned 0 but the file is still there".into());
        }
        Ok(())
    })
}

pub fn mkdir_rmdir(ctx: &Ctx) -> Step {
    let d = ws(ctx, "benign-dir");
    let _ = fs::remove_dir(&d);
    let c = cpath(&d).map_err(|e| at("path", e))?;
    // SAFETY: c is a valid NUL-terminated string.
    sys::check_int(unsafe { libc::mkdir(c.as_ptr(), 0o755) }).map_err(|e| at("mkdir(2)", e))?;
    // SAFETY: as above.
    sys::check_int(unsafe { libc::rmdir(c.as_ptr()) }).map_err(|e| at("rmdir(2)", e))?;
    Ok(())
}

pub fn symlink_unlink(ctx: &Ctx) -> Step {
    let dir = ws(ctx, "benign-symlink-target");
    let via = ws(ctx, "benign-via");
    let file = dir.join("f.txt");
    let _ = fs::create_dir(&dir);
    let r = with_cleanup(&[&file, &via], || {
        create(&file, b"s\n")?;
        std::os::unix::fs::symlink(&dir, &via).map_err(|e| at("symlink(2)", e))?;
        sys::unlink(&via.join("f.txt")).map_err(|e| at("unlink(2) through the symlink", e))
    });
    let _ = fs::remove_dir(&dir);
    r
}

pub fn uring_openat(ctx: &Ctx) -> Step {
    let f = ws(ctx, "benign-uring-open.txt");
    with_cleanup(&[&f], || {
        let c = cpath(&f).map_err(|e| at("path", e))?;
        let fd = match uring::openat(&c, libc::O_WRONLY | libc::O_CREAT, 0o644) {
            Ok(fd) => fd,
            Err(uring::Failure::Setup(e)) => return Err(at("io_uring_setup(2)/submit", e)),
            Err(uring::Failure::Op(e)) => return Err(at("IORING_OP_OPENAT O_CREAT", e)),
        };
        sys::write_fd(&fd, b"u\n").map_err(|e| at("write(2)", e))?;
        drop(fd);
        expect_content(&f, b"u\n")
    })
}

pub fn uring_unlinkat(ctx: &Ctx) -> Step {
    let f = ws(ctx, "benign-uring-unlink.txt");
    with_cleanup(&[&f], || {
        create(&f, b"u\n")?;
        let c = cpath(&f).map_err(|e| at("path", e))?;
        match uring::unlinkat(&c) {
            Ok(_) => {}
            Err(uring::Failure::Setup(e)) => return Err(at("io_uring_setup(2)/submit", e)),
            Err(uring::Failure::Op(e)) => return Err(at("IORING_OP_UNLINKAT", e)),
        }
        if f.exists() {
            return Err("IORING_OP_UNLINKAT returned 0 but the file is still there".into());
        }
        Ok(())
    })
}

/// World-readable files every system has: /proc/self/status always, and the /etc ones
/// where they exist (a minimal initramfs may have none).
pub fn read_system_file(_: &Ctx) -> Step {
    for path in ["/proc/self/status", "/etc/hostname", "/etc/passwd"] {
        let p = Path::new(path);
        if path.starts_with("/etc") && !p.exists() {
            continue;
        }
        let fd = sys::open(p, libc::O_RDONLY).map_err(|e| at(&format!("open(2) {path}"), e))?;
        let mut buf = [0u8; 512];
        sys::read_fd(&fd, &mut buf).map_err(|e| at(&format!("read(2) {path}"), e))?;
    }
    Ok(())
}

/// chmod and chown of a workspace file, and a directory made and removed there.
pub fn chmod_in_workspace(ctx: &Ctx) -> Step {
    let f = ws(ctx, "benign-mode.txt");
    let d = ws(ctx, "benign-mode-dir");
    let _ = fs::remove_dir(&d);
    let r = with_cleanup(&[&f], || {
        create(&f, b"m\n")?;
        let c = cpath(&f).map_err(|e| at("path", e))?;
        // SAFETY: c is a valid NUL-terminated string.
        sys::check_int(unsafe { libc::chmod(c.as_ptr(), 0o600) }).map_err(|e| at("chmod(2)", e))?;
        // SAFETY: as above; our own uid and gid, so nothing changes hands.
        sys::check_int(unsafe { libc::chown(c.as_ptr(), libc::getuid(), libc::getgid()) })
            .map_err(|e| at("chown(2)", e))?;
        let dc = cpath(&d).map_err(|e| at("path", e))?;
        // SAFETY: dc is a valid NUL-terminated string.
        sys::check_int(unsafe { libc::mkdir(dc.as_ptr(), 0o700) })
            .map_err(|e| at("mkdir(2)", e))?;
        // SAFETY: as above.
        sys::check_int(unsafe { libc::chmod(dc.as_ptr(), 0o755) })
            .map_err(|e| at("chmod(2) of the new directory", e))?;
        Ok(())
    });
    let _ = fs::remove_dir(&d);
    r
}
