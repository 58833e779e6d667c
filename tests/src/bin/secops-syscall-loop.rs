//! The measured loops of the Landlock bench (`benches/landlock.rs`), run as an agent:
//! `secops-syscall-loop unlink|open-write|exec N` does N operations in the current directory
//! and prints the nanoseconds they took in all, so process start-up is not measured.

use std::ffi::CString;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(n)) = (
        args.get(1),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: secops-syscall-loop unlink|open-write|exec N");
        std::process::exit(2);
    };
    let name = CString::new("secops-loop-file").expect("no NUL");
    let started = Instant::now();
    for _ in 0..n {
        // SAFETY: plain file and process calls on a NUL-terminated name and fds this loop
        // owns; the child only execs or exits.
        unsafe {
            match mode.as_str() {
                "unlink" => {
                    let fd = libc::open(name.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o600);
                    assert!(fd >= 0, "create: {}", std::io::Error::last_os_error());
                    libc::close(fd);
                    assert_eq!(libc::unlink(name.as_ptr()), 0, "unlink");
                }
                "open-write" => {
                    let fd = libc::open(name.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o600);
                    assert!(fd >= 0, "open: {}", std::io::Error::last_os_error());
                    libc::close(fd);
                }
                "exec" => {
                    let program = c"/bin/true";
                    let argv = [program.as_ptr(), std::ptr::null()];
                    let pid = libc::fork();
                    if pid == 0 {
                        libc::execv(program.as_ptr(), argv.as_ptr());
                        libc::_exit(127);
                    }
                    let mut status = 0;
                    libc::waitpid(pid, &mut status, 0);
                    assert_eq!(status, 0, "/bin/true failed");
                }
                other => {
                    eprintln!("unknown mode {other}");
                    std::process::exit(2);
                }
            }
        }
    }
    println!("{}", started.elapsed().as_nanos());
}
