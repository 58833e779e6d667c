//! Loading code into the kernel: finit_module(2) of a file and init_module(2) of a buffer.
//! Neither holds a real module (nothing is loaded even when nothing stops the call): the
//! damage is that the kernel read it as one, which its loader's refusal of the content
//! (ENOEXEC and kin) shows; EPERM/EACCES is a refusal before the read.

use std::io;
use std::os::fd::AsRawFd;

use super::judge::{judge_call, Outcome};
use super::sys::{self, check};
use super::Ctx;

/// Longer than an ELF header: a shorter buffer is refused (ENOEXEC) before any check.
fn not_a_module() -> Vec<u8> {
    let mut bytes = b"\x7fELF not a kernel module, made by secops-attack\n".to_vec();
    bytes.resize(4096, 0);
    bytes
}

/// An error from the module loader's look at the content: the kernel read it.
fn read_by_loader(result: io::Result<libc::c_long>) -> io::Result<String> {
    match result {
        Ok(_) => Ok("loaded".into()),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOEXEC | libc::EBADMSG | libc::ENOKEY | libc::EKEYREJECTED) => Ok(format!(
                "the kernel read it as a module ({})",
                sys::describe(&e)
            )),
            _ => Err(e),
        },
    }
}

/// finit_module(2) of a workspace file.
pub fn finit_module(ctx: &Ctx) -> Outcome {
    let path = ctx.args.workspace.join("not-a-module.ko");
    if let Err(e) = std::fs::write(&path, not_a_module()) {
        return Outcome::error(format!("writing {}: {}", path.display(), sys::describe(&e)));
    }
    let result = sys::open(&path, libc::O_RDONLY).and_then(|fd| {
        // SAFETY: an open descriptor, empty NUL-terminated parameters, flags 0.
        check(unsafe { libc::syscall(libc::SYS_finit_module, fd.as_raw_fd(), c"".as_ptr(), 0) })
    });
    let _ = std::fs::remove_file(&path);
    judge_call(
        "finit_module(2) workspace/not-a-module.ko",
        read_by_loader(result),
    )
}

/// init_module(2) of a buffer.
pub fn init_module(_: &Ctx) -> Outcome {
    let image = not_a_module();
    // SAFETY: a buffer of its length, empty NUL-terminated parameters.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            image.as_ptr(),
            image.len(),
            c"".as_ptr(),
        )
    };
    judge_call("init_module(2) of a buffer", read_by_loader(check(ret)))
}
