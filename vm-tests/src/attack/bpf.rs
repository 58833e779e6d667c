//! Tampering with secops' BPF objects: open its pinned link and detach it (enforcement gone
//! for everyone), and enumerate the loaded programs. Raw bpf(2) with a zeroed attribute
//! buffer: only the few fields each command reads are set.

use std::fs;
use std::io;

use super::judge::{judge, judge_call, Outcome, Target};
use super::sys::{check, cpath, describe, owned_fd};
use super::Ctx;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_LINK_DETACH: libc::c_long = 34;

/// Big enough for every command used here; bytes the kernel does not know must be zero, and
/// they are.
type Attr = [u64; 16];

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid buffer of size_of::<Attr>() bytes; pointers inside it (a path)
    // are kept alive by the caller for the duration of the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    })
}

/// bpf(BPF_OBJ_GET) on the pin, then bpf(BPF_LINK_DETACH) on what it gave.
pub fn bpf_detach(ctx: &Ctx) -> Outcome {
    let pin = &ctx.args.bpf_pin;
    if let Err(e) = fs::symlink_metadata(pin) {
        return Outcome::error(format!("the pin {}: {}", pin.display(), describe(&e)));
    }
    let path = match cpath(pin) {
        Ok(p) => p,
        Err(e) => return Outcome::error(describe(&e)),
    };
    let mut attr: Attr = [0; 16];
    // union bpf_attr, BPF_OBJ_GET: pathname (u64) at 0, bpf_fd (u32) and file_flags after.
    attr[0] = path.as_ptr() as u64;
    let fd = match bpf(BPF_OBJ_GET, &mut attr) {
        Ok(fd) => owned_fd(fd as libc::c_int),
        Err(e) => {
            let target = pin_state(pin);
            return judge("bpf(2) BPF_OBJ_GET on the pin (op 1)", Err(e), target);
        }
    };
    let mut attr: Attr = [0; 16];
    // BPF_LINK_DETACH: link_fd (u32) at 0.
    attr[0] = u64::from(std::os::fd::AsRawFd::as_raw_fd(&fd) as u32);
    let result = bpf(BPF_LINK_DETACH, &mut attr).map(|_| "detached the pinned link".into());
    judge(
        "bpf(2) BPF_LINK_DETACH (op 2; BPF_OBJ_GET gave a descriptor)",
        result,
        pin_state(pin),
    )
}

/// A refused attempt must leave the pin where it was.
fn pin_state(pin: &std::path::Path) -> Target {
    match fs::symlink_metadata(pin) {
        Ok(_) => Target::Intact,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Target::Damaged("the pin is gone".into()),
        Err(e) => Target::Unverifiable(format!("stat the pin: {}", describe(&e))),
    }
}

/// bpf(BPF_PROG_GET_NEXT_ID) from 0: learning which programs are loaded.
pub fn bpf_prog_ids(_: &Ctx) -> Outcome {
    let mut attr: Attr = [0; 16];
    // BPF_PROG_GET_NEXT_ID: start_id (u32) at 0, next_id (u32) at 4; start_id 0 is the first.
    let result = match bpf(BPF_PROG_GET_NEXT_ID, &mut attr) {
        Ok(_) => Ok(format!("first program id {}", (attr[0] >> 32) as u32)),
        // ENOENT: the call was allowed, there is simply no program to name.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            Ok("allowed (ENOENT: no programs loaded)".into())
        }
        Err(e) => Err(e),
    };
    judge_call("bpf(2) BPF_PROG_GET_NEXT_ID", result)
}
