//! Parked syscalls (`secops run --ask`). The launcher's seccomp filter sends the asked calls
//! (deletes, renames, execs, connects) to a listener the daemon took from it; each waits in
//! the kernel until the daemon answers. The engine's `allow` continues the call, `deny` fails
//! it with EPERM, and `escalate` opens a ticket and keeps the call parked until a human (or
//! the timeout policy) decides.
//!
//! The arguments a notification points at are in the agent's memory and can change after the
//! daemon read them, so the daemon never approves a path: it resolves the object ((dev,
//! inode) of the file, or the address), records that in the ticket, and an approval grants
//! that object only. The call then continues and the kernel's own checks (the LSM programs,
//! the cgroup connect hook) judge what it really touches; a path swapped meanwhile is denied.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use libseccomp::{ScmpArch, ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
use secops_common::{CoreAction, Verdict};

use super::decide::{decide, Actor, AuditMode, Door, Recorded, Request};
use super::state::Shared;
use crate::api::action::ResolvedAction;
use crate::approvals::TicketStatus;
use crate::audit::{AuditObject, AuditWriter, ObjectKind};
use crate::enforce::kernel_inode;
use crate::engine::NormalizedPath;

/// At most this many calls of one agent wait for humans at once; more are refused (EPERM)
/// rather than piling up threads.
const MAX_PARKED: usize = 64;
const AT_FDCWD: i64 = -100;
const AT_EMPTY_PATH: u64 = 0x1000;
const PATH_MAX: usize = 4096;

/// Takes descriptor `fd` of process `pid` (pidfd_getfd) and checks that it is a seccomp
/// listener, so a caller cannot make the daemon serve something else.
pub(crate) fn take_listener(pid: u32, fd: i32) -> io::Result<OwnedFd> {
    let listener = descriptor_of(pid, fd)?;
    let target = std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd()))?;
    if target.as_os_str() != "anon_inode:seccomp notify" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "descriptor {fd} of pid {pid} is {}, not a seccomp listener",
                target.display()
            ),
        ));
    }
    Ok(listener)
}

/// A copy of descriptor `fd` of process `pid` (pidfd_open + pidfd_getfd; the daemon may
/// ptrace its agents, so the kernel allows it).
fn descriptor_of(pid: u32, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscalls with integer arguments; each result is checked, then owned.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(copy as RawFd) })
}

/// What the daemon makes of one notification.
#[derive(Debug)]
struct Asked {
    action: CoreAction,
    path: Option<String>,
    binary: Option<String>,
    addr: Option<(IpAddr, u16)>,
    /// The file as the kernel will number it (dev, inode), when it exists.
    inode: Option<(u32, u64)>,
}

enum Answer {
    Continue,
    Refuse,
}

/// Serves `listener` for `agent` on its own thread until no process uses the filter any more
/// or the daemon stops.
pub(crate) fn serve(
    shared: Arc<Shared>,
    writer: Arc<AuditWriter>,
    agent: String,
    listener: OwnedFd,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(format!("ask-{agent}"))
        .spawn(move || {
            let listener = Arc::new(listener);
            let parked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            while !shared.shutdown.load(std::sync::atomic::Ordering::SeqCst) {
                match wait_readable(listener.as_raw_fd(), 250) {
                    Ok(Readiness::Idle) => continue,
                    Ok(Readiness::Gone) | Err(_) => break,
                    Ok(Readiness::Ready) => {}
                }
                let req = match ScmpNotifReq::receive(listener.as_raw_fd()) {
                    Ok(req) => req,
                    // The task died or was interrupted between poll and receive.
                    Err(_) => continue,
                };
                let ctx = Context {
                    shared: &shared,
                    writer: &writer,
                    agent: &agent,
                    listener: &listener,
                    parked: &parked,
                };
                handle(&ctx, req);
            }
            tracing::info!(%agent, "stopped serving an --ask listener");
        })?;
    Ok(())
}

enum Readiness {
    Ready,
    Idle,
    Gone,
}

fn wait_readable(fd: RawFd, timeout_ms: i32) -> io::Result<Readiness> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(Readiness::Idle)
        } else {
            Err(e)
        };
    }
    if n == 0 {
        return Ok(Readiness::Idle);
    }
    if pfd.revents & libc::POLLIN != 0 {
        Ok(Readiness::Ready)
    } else {
        Ok(Readiness::Gone)
    }
}

fn respond(listener: &OwnedFd, id: u64, answer: Answer) {
    let resp = match answer {
        Answer::Continue => ScmpNotifResp::new_continue(id, ScmpNotifRespFlags::empty()),
        Answer::Refuse => ScmpNotifResp::new_error(id, -libc::EPERM, ScmpNotifRespFlags::empty()),
    };
    // Fails only when the task is gone (killed while waiting): nothing to answer then.
    let _ = resp.respond(listener.as_raw_fd());
}

struct Context<'a> {
    shared: &'a Arc<Shared>,
    writer: &'a Arc<AuditWriter>,
    agent: &'a str,
    listener: &'a Arc<OwnedFd>,
    parked: &'a Arc<std::sync::atomic::AtomicUsize>,
}

fn handle(ctx: &Context<'_>, req: ScmpNotifReq) {
    let Context {
        shared,
        writer,
        agent,
        listener,
        parked,
    } = *ctx;
    // Other ABIs number their calls and lay out their structs differently: refused.
    if req.data.arch != ScmpArch::native() {
        return respond(listener, req.id, Answer::Refuse);
    }
    let asked = match read_call(&req) {
        Ok(Some(asked)) => asked,
        // Nothing the policy judges (an AF_UNIX connect, a path that does not exist): the
        // kernel handles it as for any agent.
        Ok(None) => return respond(listener, req.id, Answer::Continue),
        Err(e) => {
            tracing::warn!(%agent, pid = req.pid, "reading a parked call's arguments: {e}");
            return respond(listener, req.id, Answer::Refuse);
        }
    };
    // The arguments were read from a task that may have died and had its pid reused.
    if libseccomp::notify_id_valid(listener.as_raw_fd(), req.id).is_err() {
        return;
    }
    let can_wait = parked.load(std::sync::atomic::Ordering::SeqCst) < MAX_PARKED;
    if !can_wait {
        tracing::warn!(%agent, "{MAX_PARKED} calls already wait for a human; an escalation now is refused");
    }
    let request = request_of(agent, &req, asked, can_wait);
    let outcome = decide(shared.as_ref(), writer, request, AuditMode::Enqueue);
    let (verdict, ticket) = (outcome.verdict(), outcome.judged.ticket);
    let recorded = match outcome.recorded {
        Recorded::Committing(ticket) => ticket.wait().is_ok(),
        Recorded::Refused => false,
        Recorded::Queued | Recorded::NotNeeded => true,
    };
    if !recorded {
        // Audit before action: a call whose record the log did not take does not run.
        tracing::error!(%agent, "the audit log refused the record of a parked call; refusing it");
        return respond(listener, req.id, Answer::Refuse);
    }
    match (verdict, ticket) {
        // Allowed, or a human's approval still runs (its kernel grant is installed): the
        // kernel's own checks judge what the call really touches.
        (Verdict::Allow, _) => respond(listener, req.id, Answer::Continue),
        (Verdict::Escalate, Some(id)) => {
            parked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (shared, listener, parked) = (shared.clone(), listener.clone(), parked.clone());
            let waiter = std::thread::Builder::new()
                .name(format!("parked-{id}"))
                .spawn(move || {
                    let answer = await_decision(&shared, &listener, req.id, id);
                    respond(&listener, req.id, answer);
                    parked.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            if let Err(e) = waiter {
                tracing::error!("starting a thread for a parked call: {e}");
            }
        }
        // Denied, or an escalation without a ticket (the queue failed): refused.
        _ => respond(listener, req.id, Answer::Refuse),
    }
}

/// The decision request for a parked call. `can_wait`: another call of this agent may wait
/// for a human (else an escalation is refused).
fn request_of(agent: &str, req: &ScmpNotifReq, asked: Asked, can_wait: bool) -> Request {
    let object = object_of(&asked);
    let mut action = ResolvedAction::core(asked.action);
    action.path = asked
        .path
        .as_deref()
        .and_then(|p| NormalizedPath::new(p).ok());
    action.binary = asked
        .binary
        .as_deref()
        .and_then(|p| NormalizedPath::new(p).ok());
    action.addr = asked.addr.map(|(a, _)| a);
    action.port = asked.addr.map(|(_, p)| p);
    Request {
        door: Door::Parked { can_wait },
        at_ns: crate::time::now_ns(),
        actor: Actor {
            agent: Some(agent.to_owned()),
            pid: Some(req.pid),
            ..Actor::default()
        },
        action,
        object: Some(object),
        inode: asked.inode,
        detail: String::new(),
        note: String::new(),
    }
}

/// Waits until ticket `id` is decided (and, if approved, its kernel grant installed), the
/// task goes away, or the daemon stops.
fn await_decision(shared: &Shared, listener: &OwnedFd, notification: u64, id: u64) -> Answer {
    loop {
        if let Some(status) = shared.decided.wait(id, Duration::from_millis(250)) {
            return match status {
                TicketStatus::Approved => Answer::Continue,
                _ => Answer::Refuse,
            };
        }
        if shared.shutdown.load(std::sync::atomic::Ordering::SeqCst)
            || libseccomp::notify_id_valid(listener.as_raw_fd(), notification).is_err()
        {
            return Answer::Refuse;
        }
    }
}

fn object_of(asked: &Asked) -> AuditObject {
    if let Some((addr, port)) = asked.addr {
        return AuditObject {
            kind: ObjectKind::Endpoint,
            value: super::events::endpoint(addr, port),
        };
    }
    match (&asked.binary, &asked.path) {
        (Some(b), _) => AuditObject {
            kind: ObjectKind::Binary,
            value: b.clone(),
        },
        (_, p) => AuditObject {
            kind: ObjectKind::Path,
            value: p.clone().unwrap_or_default(),
        },
    }
}

/// The call's object, read from the task and resolved in its view of the filesystem.
fn read_call(req: &ScmpNotifReq) -> io::Result<Option<Asked>> {
    let pid = req.pid;
    let a = req.data.args;
    let name = req
        .data
        .syscall
        .get_name()
        .map_err(|e| io::Error::other(e.to_string()))?;
    let file = |action, dfd: i64, path_ptr: u64, follow: bool| -> io::Result<Option<Asked>> {
        let raw = read_string(pid, path_ptr)?;
        let Some(path) = resolve(pid, dfd, &raw, follow)? else {
            return Ok(None);
        };
        let meta = if follow {
            std::fs::metadata(&path)
        } else {
            std::fs::symlink_metadata(&path)
        };
        let Ok(meta) = meta else {
            return Ok(None); // the call will fail with ENOENT by itself
        };
        let path = path.to_string_lossy().into_owned();
        let exec = action == CoreAction::ProcExec;
        Ok(Some(Asked {
            action,
            binary: exec.then(|| path.clone()),
            path: (!exec).then_some(path),
            addr: None,
            inode: Some(kernel_inode(&meta)),
        }))
    };
    match name.as_str() {
        "unlinkat" => file(CoreAction::FsDelete, a[0] as i32 as i64, a[1], false),
        "unlink" | "rmdir" => file(CoreAction::FsDelete, AT_FDCWD, a[0], false),
        "renameat2" | "renameat" => file(CoreAction::FsRename, a[0] as i32 as i64, a[1], false),
        "rename" => file(CoreAction::FsRename, AT_FDCWD, a[0], false),
        "execve" => file(CoreAction::ProcExec, AT_FDCWD, a[0], true),
        "execveat" => {
            if a[4] & AT_EMPTY_PATH != 0 && read_string(pid, a[1])?.is_empty() {
                let path = PathBuf::from(format!("/proc/{pid}/fd/{}", a[0] as i32));
                let target = std::fs::read_link(&path)?;
                let meta = std::fs::metadata(&path)?;
                return Ok(Some(Asked {
                    action: CoreAction::ProcExec,
                    binary: Some(target.to_string_lossy().into_owned()),
                    path: None,
                    addr: None,
                    inode: Some(kernel_inode(&meta)),
                }));
            }
            file(CoreAction::ProcExec, a[0] as i32 as i64, a[1], true)
        }
        "connect" => read_connect(pid, a[0] as i32, a[1], a[2] as usize),
        _ => Ok(None),
    }
}

/// A connect's destination and whether it is TCP (`net:connect`) or UDP (`net:send`).
fn read_connect(pid: u32, sockfd: i32, addr_ptr: u64, len: usize) -> io::Result<Option<Asked>> {
    let mut raw = [0u8; 28];
    let n = len.min(raw.len());
    read_memory(pid, addr_ptr, &mut raw[..n])?;
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    let addr = match (i32::from(family), n) {
        (libc::AF_INET, 16..) => IpAddr::V4(Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7])),
        (libc::AF_INET6, 24..) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&raw[8..24]);
            IpAddr::V6(Ipv6Addr::from(octets)).to_canonical()
        }
        // AF_UNIX and the rest: not egress.
        _ => return Ok(None),
    };
    let action = if socket_type(pid, sockfd)? == libc::SOCK_DGRAM {
        CoreAction::NetSend
    } else {
        CoreAction::NetConnect
    };
    Ok(Some(Asked {
        action,
        path: None,
        binary: None,
        addr: Some((addr, port)),
        inode: None,
    }))
}

fn socket_type(pid: u32, sockfd: i32) -> io::Result<i32> {
    let sock = descriptor_of(pid, sockfd)?;
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `ty`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ty)
}

fn read_memory(pid: u32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    let mem = File::open(format!("/proc/{pid}/mem"))?;
    mem.read_exact_at(buf, addr)
}

/// A NUL-terminated string from the task's memory, read page by page so a string that ends
/// just before an unmapped page is still read.
fn read_string(pid: u32, addr: u64) -> io::Result<Vec<u8>> {
    let mem = File::open(format!("/proc/{pid}/mem"))?;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < PATH_MAX {
        let to_page_end = 4096 - (at % 4096) as usize;
        let mut chunk = vec![0u8; to_page_end.min(PATH_MAX - out.len())];
        let n = mem.read_at(&mut chunk, at)?;
        if n == 0 {
            break;
        }
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&chunk[..n]);
        at += n as u64;
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "path longer than PATH_MAX",
    ))
}

/// The absolute path `raw` names for the task, relative to `dfd`: its directory with every
/// symlink resolved (as the kernel will walk it) and the last name kept as given, unless
/// `follow` (exec) resolves that too. `None` when the directory does not exist.
fn resolve(pid: u32, dfd: i64, raw: &[u8], follow: bool) -> io::Result<Option<PathBuf>> {
    let raw = Path::new(OsStr::from_bytes(raw));
    let base = if raw.is_absolute() {
        PathBuf::from(format!("/proc/{pid}/root"))
    } else if dfd == AT_FDCWD {
        PathBuf::from(format!("/proc/{pid}/cwd"))
    } else {
        PathBuf::from(format!("/proc/{pid}/fd/{dfd}"))
    };
    let full = base.join(raw.strip_prefix("/").unwrap_or(raw));
    if follow {
        return Ok(std::fs::canonicalize(&full).ok());
    }
    let (Some(parent), Some(name)) = (full.parent(), full.file_name()) else {
        return Ok(None);
    };
    if matches!(raw.components().next_back(), Some(Component::ParentDir)) {
        return Ok(std::fs::canonicalize(&full).ok());
    }
    Ok(std::fs::canonicalize(parent).ok().map(|dir| dir.join(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_their_directory_but_not_their_last_name() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("f"), "x").unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(real.join("f"), real.join("f-link")).unwrap();
        let pid = std::process::id();
        let through = format!("{}/link/f-link", dir.path().display());
        let canonical_real = std::fs::canonicalize(&real).unwrap();
        assert_eq!(
            resolve(pid, AT_FDCWD, through.as_bytes(), false).unwrap(),
            Some(canonical_real.join("f-link")),
            "a delete removes the link itself, found through the resolved directory"
        );
        assert_eq!(
            resolve(pid, AT_FDCWD, through.as_bytes(), true).unwrap(),
            Some(canonical_real.join("f")),
            "an exec runs what the link leads to"
        );
        assert_eq!(
            resolve(pid, AT_FDCWD, b"/nonexistent-dir/x", false).unwrap(),
            None
        );
    }

    #[test]
    fn strings_are_read_from_a_process_memory_up_to_their_nul() {
        let text = b"/some/path\0garbage";
        let got = read_string(std::process::id(), text.as_ptr() as u64).unwrap();
        assert_eq!(got, b"/some/path");
    }
}
