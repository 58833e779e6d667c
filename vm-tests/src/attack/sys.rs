//! Thin wrappers over the libc calls the attacks make, and errno naming. Attacks call the
//! syscalls directly (not through std helpers that may pick another syscall) so each line can
//! name exactly what was tried.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A path as the kernel wants it; a NUL inside is the caller's mistake, not a block.
pub fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", path.display()),
        )
    })
}

/// A libc return value: negative means errno is set.
pub fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn check_int(ret: libc::c_int) -> io::Result<libc::c_int> {
    check(libc::c_long::from(ret)).map(|_| ret)
}

/// EPERM or EACCES: the two answers an LSM (or a missing capability) gives for "not allowed".
pub fn denial(err: &io::Error) -> Option<i32> {
    match err.raw_os_error() {
        Some(e @ (libc::EPERM | libc::EACCES)) => Some(e),
        _ => None,
    }
}

/// "ENOENT (No such file or directory)", or the error's text when it carries no errno.
pub fn describe(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(e) => {
            // std's text ends in " (os error N)", which the symbolic name already says.
            let text = io::Error::from_raw_os_error(e).to_string();
            let text = text.split(" (os error").next().unwrap_or_default();
            format!("{} ({text})", errno_name(e))
        }
        None => err.to_string(),
    }
}

pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::EPIPE => "EPIPE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        _ => return format!("E{e}"),
    };
    name.to_owned()
}

/// An owned file descriptor from a raw syscall result, closed on drop.
pub fn owned_fd(fd: libc::c_int) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: callers pass a descriptor a syscall just returned to us and nobody else owns.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

pub fn open(path: &Path, flags: libc::c_int) -> io::Result<std::os::fd::OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: c is a valid NUL-terminated string; the mode is used only with O_CREAT.
    let fd = check_int(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) })?;
    Ok(owned_fd(fd))
}

pub fn unlink(path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: c is a valid NUL-terminated string.
    check_int(unsafe { libc::unlink(c.as_ptr()) }).map(drop)
}

pub fn link(from: &Path, to: &Path) -> io::Result<()> {
    let (a, b) = (cpath(from)?, cpath(to)?);
    // SAFETY: both are valid NUL-terminated strings.
    check_int(unsafe { libc::link(a.as_ptr(), b.as_ptr()) }).map(drop)
}

pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    let (a, b) = (cpath(from)?, cpath(to)?);
    // SAFETY: both are valid NUL-terminated strings.
    check_int(unsafe { libc::rename(a.as_ptr(), b.as_ptr()) }).map(drop)
}

pub fn write_fd(fd: &std::os::fd::OwnedFd, data: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: data is a valid buffer of data.len() bytes.
    let n = check(unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) } as _)?;
    Ok(n as usize)
}

pub fn read_fd(fd: &std::os::fd::OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: buf is a valid writable buffer of buf.len() bytes.
    let n = check(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } as _)?;
    Ok(n as usize)
}
