//! The same attacks through io_uring: the operation runs in the kernel from a submission
//! queue entry (possibly in an io-wq worker thread), never as the syscall a filter would
//! watch. The error comes back as a negative errno in the completion's `res`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use io_uring::{opcode, squeue, types, IoUring};

use super::files::put_back;
use super::judge::{judge, judge_call, Outcome};
use super::sys::{cpath, describe, owned_fd};
use super::Ctx;

/// Where an io_uring attempt failed: setting the ring up, or the operation itself.
pub enum Failure {
    Setup(io::Error),
    Op(io::Error),
}

/// Submits one entry on a fresh ring and returns the completion's result. The caller keeps
/// every pointer in `entry` alive across this call.
pub fn submit_one(entry: squeue::Entry) -> Result<i32, Failure> {
    let mut ring = IoUring::new(4).map_err(Failure::Setup)?;
    // SAFETY: the entry's buffers (paths) are owned by the caller and outlive this function,
    // which waits for the completion before returning.
    unsafe { ring.submission().push(&entry) }
        .map_err(|_| Failure::Setup(io::Error::other("submission queue full")))?;
    ring.submit_and_wait(1).map_err(Failure::Setup)?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| Failure::Setup(io::Error::other("no completion after waiting")))?;
    match cqe.result() {
        res if res < 0 => Err(Failure::Op(io::Error::from_raw_os_error(-res))),
        res => Ok(res),
    }
}

/// Turns a failure into (which step, error) for a verdict: a ring that cannot be set up
/// (io_uring disabled, say) fails the attack at `io_uring_setup(2)`.
pub fn split(op: &str, r: Result<i32, Failure>) -> (String, io::Result<i32>) {
    match r {
        Ok(v) => (op.to_owned(), Ok(v)),
        Err(Failure::Op(e)) => (op.to_owned(), Err(e)),
        Err(Failure::Setup(e)) => (format!("io_uring_setup(2)/submit for {op}"), Err(e)),
    }
}

pub fn unlinkat(path: &CString) -> Result<i32, Failure> {
    submit_one(opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr()).build())
}

pub fn openat(path: &CString, flags: i32, mode: u32) -> Result<OwnedFd, Failure> {
    let entry = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
        .flags(flags | libc::O_CLOEXEC)
        .mode(mode)
        .build();
    submit_one(entry).map(owned_fd)
}

/// IORING_OP_UNLINKAT of protected/keep.txt.
pub fn uring_unlinkat(ctx: &Ctx) -> Outcome {
    let before = match ctx.prot.keep_before() {
        Ok(id) => id,
        Err(o) => return o,
    };
    let path = match cpath(&ctx.prot.keep) {
        Ok(p) => p,
        Err(e) => return Outcome::error(describe(&e)),
    };
    let (op, result) = split(
        "io_uring IORING_OP_UNLINKAT protected/keep.txt",
        unlinkat(&path),
    );
    judge(
        &op,
        result.map(|_| "removed keep.txt".into()),
        ctx.prot.keep_after(before),
    )
    .note(&ctx.prot.restore_keep())
}

/// IORING_OP_RENAMEAT of protected/keep.txt out into the workspace.
pub fn uring_renameat(ctx: &Ctx) -> Outcome {
    let before = match ctx.prot.keep_before() {
        Ok(id) => id,
        Err(o) => return o,
    };
    let stolen = ctx.args.workspace.join("uring-stolen.txt");
    let (from, to) = match (cpath(&ctx.prot.keep), cpath(&stolen)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Outcome::error(describe(&e)),
    };
    let cwd = types::Fd(libc::AT_FDCWD);
    let entry = opcode::RenameAt::new(cwd, from.as_ptr(), cwd, to.as_ptr()).build();
    let (op, result) = split(
        "io_uring IORING_OP_RENAMEAT protected/keep.txt -> workspace/uring-stolen.txt",
        submit_one(entry),
    );
    judge(
        &op,
        result.map(|_| "moved keep.txt out".into()),
        ctx.prot.keep_after(before),
    )
    .note(&put_back(ctx, &stolen))
}

/// IORING_OP_OPENAT of the secret, O_RDONLY; got through if it returned a descriptor.
pub fn uring_openat(ctx: &Ctx) -> Outcome {
    if let Err(o) = super::secret::secret_exists(ctx) {
        return o;
    }
    let path = match cpath(&ctx.args.secret) {
        Ok(p) => p,
        Err(e) => return Outcome::error(describe(&e)),
    };
    let (op, result) = match openat(&path, libc::O_RDONLY, 0) {
        Ok(fd) => (
            "io_uring IORING_OP_OPENAT secret O_RDONLY".to_owned(),
            Ok(fd),
        ),
        Err(Failure::Op(e)) => (
            "io_uring IORING_OP_OPENAT secret O_RDONLY".to_owned(),
            Err(e),
        ),
        Err(Failure::Setup(e)) => (
            "io_uring_setup(2)/submit for IORING_OP_OPENAT".to_owned(),
            Err(e),
        ),
    };
    let result = result.map(|fd| {
        let mut buf = [0u8; 64];
        match super::sys::read_fd(&fd, &mut buf) {
            Ok(n) => format!("got fd {}; read(2) gave {n} bytes", fd.as_raw_fd()),
            Err(e) => format!(
                "got fd {}; read(2) failed: {}",
                fd.as_raw_fd(),
                describe(&e)
            ),
        }
    });
    judge_call(&op, result)
}
