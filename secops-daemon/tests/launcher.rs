//! The launcher and the cgroup tree API on the real kernel, with real processes: nothing is
//! mocked. Needs root and a cgroup2 mount; without them every test prints `skipped: <reason>`
//! and passes.
//!
//! Processes under test are this test binary re-executed in a *role* (launcher, syscall probe,
//! daemonizer, busy loop, ...). The role is chosen by the first argument and dispatched from an
//! `.init_array` constructor, i.e. before the test harness's `main` runs: a role process is a
//! plain single-threaded program, like `secops run`, and prints nothing but its own output.

use std::collections::BTreeMap;
use std::ffi::{CStr, OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use secops_daemon::cgroups::{is_cgroup2, process_cgroup, CgroupDir, TestCgroup};
use secops_daemon::kernel::fs::cgroup_level;
use secops_daemon::launcher::{self, BLOCKED_SYSCALLS};

const ROLE_FLAG: &str = "--secops-launcher-test-role=";

// ---------------------------------------------------------------------------------------------
// Role dispatch.

/// glibc calls `.init_array` functions with (argc, argv, envp) before `main`; that is how a
/// role gets its arguments without depending on the order in which std captures them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[link_section = ".init_array"]
static ROLE_DISPATCH: extern "C" fn(
    libc::c_int,
    *const *const libc::c_char,
    *const *const libc::c_char,
) = dispatch_role;

extern "C" fn dispatch_role(
    argc: libc::c_int,
    argv: *const *const libc::c_char,
    _envp: *const *const libc::c_char,
) {
    if argc < 2 || argv.is_null() {
        return;
    }
    let args: Vec<OsString> = (0..argc as usize)
        .map(|i| {
            // SAFETY: glibc passes argc valid NUL-terminated strings in argv.
            let arg = unsafe { CStr::from_ptr(*argv.add(i)) };
            OsStr::from_bytes(arg.to_bytes()).to_os_string()
        })
        .collect();
    let Some(role) = args[1].to_str().and_then(|a| a.strip_prefix(ROLE_FLAG)) else {
        return;
    };
    let rest = &args[2..];
    let code = match role {
        "launch" => role_launch(rest),
        "probe" => role_probe(),
        "daemonize" => role_daemonize(rest),
        "sleep" => {
            std::thread::sleep(Duration::from_secs(120));
            0
        }
        "busy" => loop {
            std::hint::black_box(std::time::SystemTime::now());
        },
        "bpf-cgroup-id" => role_bpf_cgroup_id(rest),
        _ => {
            eprintln!("unknown role {role}");
            99
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// `launch CGROUP CMD ARGS...`: what `secops run` does once it knows the agent's cgroup.
fn role_launch(rest: &[OsString]) -> i32 {
    let [cgroup, cmd, args @ ..] = rest else {
        eprintln!("launch: need CGROUP CMD [ARGS]");
        return 98;
    };
    // A real `secops run` is a Rust main, which ignores SIGPIPE; do the same so the test sees
    // whether the launcher restores it for the command.
    // SAFETY: changing a signal disposition in a single-threaded process.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    launcher::run_in_agent_or_exit(
        &launcher::Launch::in_cgroup(Path::new(cgroup)),
        cmd,
        args,
        None,
    )
}

/// Prints `key=value` lines: where the probe runs, its confinement, and the outcome of each
/// blocked system call (with arguments that are harmless if the call does go through) and of
/// ordinary work.
fn role_probe() -> i32 {
    let mut out = std::io::stdout().lock();
    let mut put = |k: &str, v: String| {
        let _ = writeln!(out, "{k}={v}");
    };
    put(
        "cgroup",
        std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
            })
            .unwrap_or_default(),
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    put("nnp", field("NoNewPrivs:"));
    put("seccomp", field("Seccomp:"));
    let sig_ign = u64::from_str_radix(&field("SigIgn:"), 16).unwrap_or(0);
    put(
        "sigpipe_ignored",
        (sig_ign & (1 << (libc::SIGPIPE - 1)) != 0).to_string(),
    );

    for (name, result) in blocked_call_probes() {
        put(&format!("sys.{name}"), result);
    }
    for (name, result) in compat_abi_probes() {
        put(&format!("compat.{name}"), result);
    }
    for (name, result) in ordinary_work() {
        put(&format!("ok.{name}"), result);
    }
    0
}

fn outcome(rc: libc::c_long) -> String {
    if rc >= 0 {
        "ok".to_string()
    } else {
        errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EPERM => "EPERM".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::ESRCH => "ESRCH".into(),
        libc::EBADF => "EBADF".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::ENODEV => "ENODEV".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::EACCES => "EACCES".into(),
        other => format!("errno{other}"),
    }
}

/// One probe per entry of BLOCKED_SYSCALLS (the test checks none is missing), except `umount`,
/// which only exists in the i386 ABI and is probed there.
fn blocked_call_probes() -> Vec<(&'static str, String)> {
    let nonexistent = c"/nonexistent/secops-probe";
    let null = std::ptr::null::<libc::c_void>();
    let mut r = Vec::new();
    // SAFETY (every syscall below): arguments are integers, NULL, or pointers to live locals;
    // each is chosen so that the call fails harmlessly (bad fd, missing path, bad flags) or
    // does nothing lasting if no filter stops it.
    unsafe {
        // BPF_MAP_CREATE with an empty attribute: EINVAL from the kernel.
        r.push(("bpf", outcome(libc::syscall(libc::SYS_bpf, 0, null, 0))));
        r.push(("ptrace", probe_ptrace_attach()));
        let src: u64 = 0x5ec0;
        let mut dst: u64 = 0;
        let local = libc::iovec {
            iov_base: (&mut dst as *mut u64).cast(),
            iov_len: 8,
        };
        let remote = libc::iovec {
            iov_base: (&src as *const u64).cast_mut().cast(),
            iov_len: 8,
        };
        // Reading and writing our own memory: allowed for anyone unless filtered.
        r.push((
            "process_vm_readv",
            outcome(libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) as _),
        ));
        let mut target: u64 = 0;
        let wsrc = libc::iovec {
            iov_base: (&src as *const u64).cast_mut().cast(),
            iov_len: 8,
        };
        let wdst = libc::iovec {
            iov_base: (&mut target as *mut u64).cast(),
            iov_len: 8,
        };
        r.push((
            "process_vm_writev",
            outcome(libc::process_vm_writev(libc::getpid(), &wsrc, 1, &wdst, 1, 0) as _),
        ));
        r.push((
            "perf_event_open",
            outcome(libc::syscall(libc::SYS_perf_event_open, null, 0, -1, -1, 0)),
        ));
        // Flag bit 0x8000 is undefined: EINVAL before anything is loaded or unloaded.
        r.push((
            "kexec_load",
            outcome(libc::syscall(libc::SYS_kexec_load, 0, 0, null, 0x8000)),
        ));
        r.push((
            "kexec_file_load",
            outcome(libc::syscall(
                libc::SYS_kexec_file_load,
                -1,
                -1,
                0,
                null,
                0x8000,
            )),
        ));
        r.push((
            "init_module",
            outcome(libc::syscall(libc::SYS_init_module, null, 0, c"".as_ptr())),
        ));
        r.push((
            "finit_module",
            outcome(libc::syscall(libc::SYS_finit_module, -1, c"".as_ptr(), 0)),
        ));
        r.push((
            "delete_module",
            outcome(libc::syscall(
                libc::SYS_delete_module,
                c"secops_no_such_module".as_ptr(),
                libc::O_NONBLOCK,
            )),
        ));
        r.push((
            "mount",
            outcome(libc::mount(
                c"none".as_ptr(),
                nonexistent.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                null,
            ) as _),
        ));
        r.push((
            "umount2",
            outcome(libc::umount2(nonexistent.as_ptr(), 0) as _),
        ));
        r.push((
            "pivot_root",
            outcome(libc::syscall(
                libc::SYS_pivot_root,
                nonexistent.as_ptr(),
                nonexistent.as_ptr(),
            )),
        ));
        r.push((
            "fsopen",
            outcome(libc::syscall(
                libc::SYS_fsopen,
                c"secops-no-such-fs".as_ptr(),
                0,
            )),
        ));
        r.push((
            "fsconfig",
            outcome(libc::syscall(libc::SYS_fsconfig, -1, 0, null, null, 0)),
        ));
        r.push((
            "fsmount",
            outcome(libc::syscall(libc::SYS_fsmount, -1, 0, 0)),
        ));
        r.push((
            "fspick",
            outcome(libc::syscall(libc::SYS_fspick, -1, nonexistent.as_ptr(), 0)),
        ));
        r.push((
            "move_mount",
            outcome(libc::syscall(
                libc::SYS_move_mount,
                -1,
                nonexistent.as_ptr(),
                -1,
                nonexistent.as_ptr(),
                0,
            )),
        ));
        r.push((
            "open_tree",
            outcome(libc::syscall(
                libc::SYS_open_tree,
                -1,
                nonexistent.as_ptr(),
                0,
            )),
        ));
        r.push((
            "mount_setattr",
            outcome(libc::syscall(
                libc::SYS_mount_setattr,
                -1,
                nonexistent.as_ptr(),
                0,
                null,
                0,
            )),
        ));
        r.push((
            "open_by_handle_at",
            outcome(libc::syscall(libc::SYS_open_by_handle_at, -1, null, 0)),
        ));
        r.push((
            "pidfd_getfd",
            outcome(libc::syscall(libc::SYS_pidfd_getfd, -1, 0, 0)),
        ));
        // Level 0 is what every process already has.
        r.push(("iopl", outcome(libc::syscall(libc::SYS_iopl, 0))));
        // Turning off zero ports changes nothing.
        r.push((
            "ioperm",
            outcome(libc::syscall(libc::SYS_ioperm, 0x80, 0, 0)),
        ));
        r.push((
            "io_uring_setup",
            outcome(libc::syscall(libc::SYS_io_uring_setup, 1, null)),
        ));
        r.push((
            "io_uring_enter",
            outcome(libc::syscall(
                libc::SYS_io_uring_enter,
                -1,
                0,
                0,
                0,
                null,
                0,
            )),
        ));
        r.push((
            "io_uring_register",
            outcome(libc::syscall(libc::SYS_io_uring_register, -1, 0, null, 0)),
        ));
    }
    r
}

/// PTRACE_ATTACH to a child of our own: as root without a filter this succeeds (so EPERM can
/// only come from the baseline), and the child is killed and reaped either way.
fn probe_ptrace_attach() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "no-exe".into();
    };
    let Ok(child) = Command::new(exe)
        .arg(format!("{ROLE_FLAG}sleep"))
        .stdin(Stdio::null())
        .spawn()
    else {
        return "spawn-failed".into();
    };
    let pid = child.id() as libc::pid_t;
    // SAFETY: ptrace and kill on our own child; waitpid with a valid status pointer.
    unsafe {
        let result = outcome(libc::ptrace(
            libc::PTRACE_ATTACH,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        ));
        libc::kill(pid, libc::SIGKILL);
        // A traced child reports its stop before its death; reap until it is really gone.
        let mut status = 0;
        while libc::waitpid(pid, &mut status, libc::__WALL) == pid {
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                break;
            }
        }
        result
    }
}

/// The same kind of calls through the 32-bit ABIs a 64-bit process can also use.
#[cfg(target_arch = "x86_64")]
fn compat_abi_probes() -> Vec<(&'static str, String)> {
    /// i386 ABI via `int 0x80`. Only 32-bit arguments survive this entry, so all are 0 here
    /// (NULL pointers: the kernel answers EFAULT/EINVAL if the filter lets the call through).
    fn int80(nr: u32, a: u32, b: u32) -> String {
        let ret: u32;
        // SAFETY: the i386 entry clobbers only eax (r8-r11 declared clobbered to be safe); rbx
        // is reserved by LLVM, so the first argument is swapped in and out around the call.
        unsafe {
            std::arch::asm!(
                "xchg {a:r}, rbx",
                "int 0x80",
                "xchg {a:r}, rbx",
                a = inout(reg) a as u64 => _,
                inlateout("eax") nr => ret,
                in("ecx") b,
                in("edx") 0u32,
                in("esi") 0u32,
                in("edi") 0u32,
                lateout("r8") _,
                lateout("r9") _,
                lateout("r10") _,
                lateout("r11") _,
            );
        }
        let ret = ret as i32;
        if ret >= 0 {
            "ok".into()
        } else {
            errno_name(-ret)
        }
    }
    /// x32 ABI: x86_64 numbers with bit 30 set. This kernel may not support x32 at all
    /// (ENOSYS), but the filter sees the call first.
    fn x32(nr: libc::c_long) -> String {
        // SAFETY: all-zero arguments to a call that then fails.
        outcome(unsafe { libc::syscall(0x4000_0000 | nr, 0, 0, 0, 0, 0) })
    }
    vec![
        ("i386_mount", int80(21, 0, 0)),
        ("i386_umount", int80(22, 0, 0)),
        // PTRACE_ATTACH (16) to a pid that cannot exist: ESRCH if it gets through.
        ("i386_ptrace", int80(26, 16, 0x3fff_fff0)),
        ("i386_bpf", int80(357, 0, 0)),
        ("x32_bpf", x32(libc::SYS_bpf)),
        ("x32_mount", x32(libc::SYS_mount)),
    ]
}

#[cfg(not(target_arch = "x86_64"))]
fn compat_abi_probes() -> Vec<(&'static str, String)> {
    Vec::new()
}

fn ordinary_work() -> Vec<(&'static str, String)> {
    fn check(f: impl FnOnce() -> std::io::Result<bool>) -> String {
        match f() {
            Ok(true) => "ok".into(),
            Ok(false) => "wrong-result".into(),
            Err(e) => format!("error: {e}"),
        }
    }
    let mut r = Vec::new();
    r.push((
        "read_file",
        check(|| Ok(std::fs::read("/proc/self/exe")?.starts_with(b"\x7fELF"))),
    ));
    r.push((
        "write_file",
        check(|| {
            let path = std::env::temp_dir().join(format!("secops-probe-{}", std::process::id()));
            std::fs::write(&path, b"agent")?;
            let back = std::fs::read(&path)?;
            std::fs::remove_file(&path)?;
            Ok(back == b"agent")
        }),
    ));
    r.push((
        "spawn_sh",
        check(|| Ok(Command::new("sh").args(["-c", "true"]).status()?.success())),
    ));
    r.push((
        "tcp",
        check(|| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
            let (mut server, _) = listener.accept()?;
            client.write_all(b"ping")?;
            let mut buf = [0u8; 4];
            std::io::Read::read_exact(&mut server, &mut buf)?;
            Ok(&buf == b"ping")
        }),
    ));
    r.push((
        "udp",
        check(|| {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
            sock.send_to(b"dns?", sock.local_addr()?)?;
            let mut buf = [0u8; 4];
            let (n, _) = sock.recv_from(&mut buf)?;
            Ok(n == 4 && &buf == b"dns?")
        }),
    ));
    r.push((
        "thread",
        check(|| Ok(std::thread::spawn(|| 6 * 7).join().ok() == Some(42))),
    ));
    // Last, because it changes how this process sees the hierarchy: cgroup namespaces are
    // deliberately left allowed (see the baseline's comments).
    r.push((
        "unshare_cgroupns",
        check(|| {
            // SAFETY: unshare with a flag only.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWCGROUP) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(true)
        }),
    ));
    r
}

/// `daemonize PIDFILE`: the classic double fork with setsid in between. The grandchild writes
/// its pid, detaches from stdio (so nobody waits on our pipes) and lingers.
fn role_daemonize(rest: &[OsString]) -> i32 {
    let [pidfile] = rest else {
        return 98;
    };
    // SAFETY: fork in a single-threaded process (roles run before main); the children only
    // call async-signal-safe functions or plain Rust that does not depend on other threads.
    unsafe {
        let first = libc::fork();
        if first < 0 {
            return 97;
        }
        if first > 0 {
            let mut status = 0;
            libc::waitpid(first, &mut status, 0);
            return if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                96
            };
        }
        if libc::setsid() < 0 {
            libc::_exit(95);
        }
        let second = libc::fork();
        if second < 0 {
            libc::_exit(94);
        }
        if second > 0 {
            libc::_exit(0);
        }
        let tmp = PathBuf::from(pidfile).with_extension("tmp");
        if std::fs::write(&tmp, libc::getpid().to_string()).is_err()
            || std::fs::rename(&tmp, pidfile).is_err()
        {
            libc::_exit(93);
        }
        let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(devnull, fd);
        }
        libc::sleep(120);
        libc::_exit(0);
    }
}

/// `bpf-cgroup-id CGROUP`: joins the cgroup (no launcher, no filter: this needs bpf) and prints
/// what `bpf_get_current_cgroup_id()` returns inside it. A socket-filter program calling the
/// helper is run once with BPF_PROG_TEST_RUN, which executes it in the calling task; the
/// return value is 32 bits, so a second program returns the upper half.
fn role_bpf_cgroup_id(rest: &[OsString]) -> i32 {
    let [cgroup] = rest else {
        return 98;
    };
    let joined = CgroupDir::open_path(Path::new(cgroup)).and_then(|dir| dir.add_self());
    if let Err(e) = joined {
        eprintln!("bpf-cgroup-id: {e}");
        return 97;
    }
    let half = |shift: bool| -> std::io::Result<u32> {
        let call = BpfInsn::new(0x85, 0, 0, BPF_FUNC_GET_CURRENT_CGROUP_ID);
        let rsh = BpfInsn::new(0x77, 0, 0, 32); // r0 >>= 32
        let exit = BpfInsn::new(0x95, 0, 0, 0);
        let prog: Vec<BpfInsn> = if shift {
            vec![call, rsh, exit]
        } else {
            vec![call, exit]
        };
        bpf_run_socket_filter(&prog)
    };
    match (half(false), half(true)) {
        (Ok(lo), Ok(hi)) => {
            println!("{}", (u64::from(hi) << 32) | u64::from(lo));
            0
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("bpf-cgroup-id: {e}");
            96
        }
    }
}

const BPF_FUNC_GET_CURRENT_CGROUP_ID: i32 = 80;

#[repr(C)]
#[derive(Clone, Copy)]
struct BpfInsn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl BpfInsn {
    fn new(code: u8, regs: u8, off: i16, imm: i32) -> Self {
        Self {
            code,
            regs,
            off,
            imm,
        }
    }
}

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD; the kernel zero-extends a
/// shorter attribute.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
}

/// The leading fields of `union bpf_attr` for BPF_PROG_TEST_RUN.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
}

fn bpf_run_socket_filter(prog: &[BpfInsn]) -> std::io::Result<u32> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
    let license = c"GPL";
    let load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: the attribute points at live instructions and a NUL-terminated license.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &load as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // A socket filter's test run needs at least an Ethernet header of input.
    let packet = [0u8; 64];
    let mut run = TestRunAttr {
        prog_fd: fd as u32,
        data_size_in: packet.len() as u32,
        data_in: packet.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: the attribute points at a live input buffer; retval is written back into it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut run as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is the program descriptor we own.
    unsafe { libc::close(fd as libc::c_int) };
    if rc < 0 {
        return Err(err);
    }
    Ok(run.retval)
}

// ---------------------------------------------------------------------------------------------
// Test scaffolding.

/// Printed outside the test harness's capture, so a skip is visible in a normal `cargo test`.
fn skip(test: &str, reason: &str) {
    // One write, so parallel tests' lines do not interleave.
    let line = format!("skipped: {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The cgroup2 mount point from /proc/self/mountinfo (until the kernel module's helper lands).
fn find_cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        // Fields: id parent major:minor root mountpoint options [optional...] - fstype ...
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fresh cgroup `<cgroup2>/secops-test-launcher-<pid>-<n>` that is killed and removed when
/// the test ends, however it ends; None (after printing why) where the test cannot run.
fn test_cgroup(test: &str) -> Option<TestCgroup> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        skip(
            test,
            "role dispatch relies on glibc passing argv to .init_array functions",
        );
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip(
            test,
            "needs root (cgroup writes, bpf, ptrace of the probes)",
        );
        return None;
    }
    let Some(mount) = find_cgroup2_mount() else {
        skip(test, "no cgroup2 filesystem mounted");
        return None;
    };
    let root = match CgroupDir::root(&mount) {
        Ok(root) => root,
        Err(e) => panic!("cgroup2 mount {} unusable: {e}", mount.display()),
    };
    let name = format!(
        "secops-test-launcher-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    match TestCgroup::create(&root, &name) {
        Ok(cg) => Some(cg),
        Err(e) => panic!("creating test cgroup {name}: {e}"),
    }
}

fn self_exe() -> PathBuf {
    match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => panic!("current_exe: {e}"),
    }
}

fn role(name: &str) -> Command {
    let mut cmd = Command::new(self_exe());
    cmd.arg(format!("{ROLE_FLAG}{name}"));
    cmd
}

/// `secops run` (the launch role) for CMD ARGS in `cgroup`.
fn launch<S: AsRef<OsStr>>(cgroup: &CgroupDir, cmd: impl AsRef<OsStr>, args: &[S]) -> Command {
    let mut c = role("launch");
    c.arg(cgroup.path()).arg(cmd).args(args);
    c.stdin(Stdio::null());
    c
}

fn run(mut cmd: Command) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("running {cmd:?}: {e}"),
    }
}

fn parse_report(out: &Output) -> BTreeMap<String, String> {
    assert!(
        out.status.success(),
        "probe failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(report: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    report
        .get(key)
        .map(String::as_str)
        .unwrap_or("<missing from report>")
}

/// Waits until `pred` holds, up to `timeout`.
fn wait_for(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) {
    let start = Instant::now();
    while !pred() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// utime + stime of a process, in clock ticks, from /proc/<pid>/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) => panic!("/proc/{pid}/stat: {e}"),
    };
    // The command name (field 2) may contain spaces; fields are counted after its ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    num(11) + num(12)
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn launched_command_runs_in_the_agent_cgroup_with_no_new_privs_and_the_filter() {
    let Some(cg) =
        test_cgroup("launched_command_runs_in_the_agent_cgroup_with_no_new_privs_and_the_filter")
    else {
        return;
    };
    let report = parse_report(&run(launch(
        &cg,
        self_exe(),
        &[format!("{ROLE_FLAG}probe")],
    )));
    assert_eq!(get(&report, "cgroup"), cg.relative_path().to_string_lossy());
    assert_eq!(get(&report, "nnp"), "1");
    // 2 = SECCOMP_MODE_FILTER.
    assert_eq!(get(&report, "seccomp"), "2");
    // The launcher ignored SIGPIPE (as a Rust main does); the command must not inherit that.
    assert_eq!(get(&report, "sigpipe_ignored"), "false");
}

#[test]
fn baseline_denies_kernel_tampering_calls_with_eperm_and_ordinary_work_still_works() {
    let Some(cg) = test_cgroup(
        "baseline_denies_kernel_tampering_calls_with_eperm_and_ordinary_work_still_works",
    ) else {
        return;
    };
    // The same probe without the launcher: as root every call gets past the permission check
    // and fails (or succeeds) for another reason, so the EPERM seen under the launcher is the
    // baseline's doing and not the kernel's.
    let control = parse_report(&run({
        let mut c = role("probe");
        c.stdin(Stdio::null());
        c
    }));
    let agent = parse_report(&run(launch(
        &cg,
        self_exe(),
        &[format!("{ROLE_FLAG}probe")],
    )));

    // Two independent lists must agree: every call the probe knows must be denied (so
    // deleting an entry from BLOCKED_SYSCALLS fails here), and every entry of BLOCKED_SYSCALLS
    // must be probed (so adding one without a probe fails too).
    let mut failures = Vec::new();
    let mut keys: Vec<String> = control
        .keys()
        .filter(|k| k.starts_with("sys.") || k.starts_with("compat."))
        .cloned()
        .collect();
    for &(name, _) in BLOCKED_SYSCALLS {
        let key = match name {
            // i386 only; probed through int 0x80.
            "umount" if cfg!(target_arch = "x86_64") => "compat.i386_umount".to_string(),
            "umount" => continue,
            _ => format!("sys.{name}"),
        };
        if !control.contains_key(&key) {
            failures.push(format!("{name} is blocked but has no probe ({key})"));
        }
        keys.push(key);
    }
    keys.sort();
    keys.dedup();
    for key in &keys {
        let (without, with) = (get(&control, key), get(&agent, key));
        if with != "EPERM" {
            failures.push(format!("{key}: {with} under the launcher, expected EPERM"));
        }
        if without == "EPERM" {
            failures.push(format!(
                "{key}: EPERM even without the launcher, so the kernel refused it, not the baseline"
            ));
        }
    }
    for key in control.keys().filter(|k| k.starts_with("ok.")) {
        if get(&agent, key) != "ok" {
            failures.push(format!("{key}: {} under the launcher", get(&agent, key)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            keys.iter().filter(|k| k.starts_with("compat.")).count(),
            6,
            "compat ABI probes missing: {control:?}"
        );
    }
}

#[test]
fn double_fork_and_setsid_stay_in_the_agent_cgroup() {
    let Some(cg) = test_cgroup("double_fork_and_setsid_stay_in_the_agent_cgroup") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("secops-launcher-{}", std::process::id()));
    ok("mkdir", std::fs::create_dir_all(&dir));
    let pidfile = dir.join("daemon.pid");
    let out = run(launch(
        &cg,
        self_exe(),
        &[
            OsString::from(format!("{ROLE_FLAG}daemonize")),
            pidfile.clone().into_os_string(),
        ],
    ));
    assert!(out.status.success(), "{out:?}");
    let text = ok("pidfile", std::fs::read_to_string(&pidfile));
    let _ = std::fs::remove_dir_all(&dir);
    let pid: u32 = ok("pid", text.trim().parse());

    // The launcher and the middle process are gone; the grandchild lives on in a session of
    // its own, reparented away from us, and is still in the agent's cgroup.
    let cgroup = ok("process_cgroup", process_cgroup(pid));
    assert_eq!(cgroup, cg.relative_path());
    assert!(ok("contains_process", cg.contains_process(pid)));
    assert_eq!(ok("procs", cg.procs()), vec![pid]);
    // SAFETY: getsid has no preconditions.
    let (theirs, ours) = unsafe { (libc::getsid(pid as libc::pid_t), libc::getsid(0)) };
    assert!(
        theirs > 0 && theirs != ours,
        "setsid did not take: {theirs}"
    );
    // The guard kills it.
}

#[test]
fn exit_status_is_the_commands() {
    let Some(cg) = test_cgroup("exit_status_is_the_commands") else {
        return;
    };
    let out = run(launch(&cg, "sh", &["-c", "exit 7"]));
    assert_eq!(out.status.code(), Some(7), "{out:?}");

    let out = run(launch(&cg, "sh", &["-c", "echo from-the-agent; exit 0"]));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-the-agent\n");

    // Death by signal is reported as such, because the launcher *became* the command.
    let out = run(launch(&cg, "sh", &["-c", "kill -KILL $$"]));
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out:?}");
}

#[test]
fn missing_or_unexecutable_command_and_bad_cgroup_fail_like_a_shell_with_clear_messages() {
    let Some(cg) = test_cgroup(
        "missing_or_unexecutable_command_and_bad_cgroup_fail_like_a_shell_with_clear_messages",
    ) else {
        return;
    };
    let out = run(launch(&cg, "secops-no-such-command", &["x"]));
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("command not found: secops-no-such-command"),
        "{stderr}"
    );

    let dir = std::env::temp_dir().join(format!("secops-launcher-noexec-{}", std::process::id()));
    ok("mkdir", std::fs::create_dir_all(&dir));
    let script = dir.join("not-executable");
    ok("write", std::fs::write(&script, "#!/bin/sh\nexit 0\n"));
    let out = run(launch(&cg, &script, &[] as &[&str]));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot execute"), "{stderr}");

    // A directory that is not a cgroup: the launcher fails (125) before touching anything and
    // names the step and the path.
    let not_a_cgroup = std::env::temp_dir();
    let mut c = role("launch");
    c.arg(&not_a_cgroup).arg("true").stdin(Stdio::null());
    let out = run(c);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("agent cgroup") && stderr.contains("not a cgroup v2 directory"),
        "{stderr}"
    );
}

#[test]
fn freeze_stops_a_busy_loop_and_thaw_resumes_it() {
    let Some(cg) = test_cgroup("freeze_stops_a_busy_loop_and_thaw_resumes_it") else {
        return;
    };
    let mut child = ok(
        "spawn",
        launch(&cg, self_exe(), &[format!("{ROLE_FLAG}busy")]).spawn(),
    );
    let pid = child.id();
    wait_for(
        "the busy loop to enter the cgroup",
        Duration::from_secs(10),
        || cg.procs().map(|p| p == vec![pid]).unwrap_or(false),
    );
    let start = cpu_ticks(pid);
    wait_for("the busy loop to burn CPU", Duration::from_secs(10), || {
        cpu_ticks(pid) > start + 5
    });

    ok("freeze", cg.freeze());
    assert!(ok("events", cg.events()).frozen);
    let frozen_at = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cpu_ticks(pid), frozen_at, "CPU time advanced while frozen");

    ok("thaw", cg.thaw());
    assert!(!ok("events", cg.events()).frozen);
    wait_for(
        "the busy loop to run again",
        Duration::from_secs(10),
        || cpu_ticks(pid) > frozen_at + 5,
    );

    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn kill_leaves_no_process_in_the_cgroup_or_its_descendants() {
    let Some(cg) = test_cgroup("kill_leaves_no_process_in_the_cgroup_or_its_descendants") else {
        return;
    };
    let sub = ok("create sub", CgroupDir::create(&cg, "sub"));
    let mut busy = ok(
        "spawn",
        launch(&cg, self_exe(), &[format!("{ROLE_FLAG}busy")]).spawn(),
    );
    let mut sleeper = ok("spawn", role("sleep").stdin(Stdio::null()).spawn());
    ok("add_process", sub.add_process(sleeper.id()));
    // And one that double-forked away from us.
    let pidfile = std::env::temp_dir().join(format!("secops-kill-{}.pid", std::process::id()));
    let out = run(launch(
        &cg,
        self_exe(),
        &[
            OsString::from(format!("{ROLE_FLAG}daemonize")),
            pidfile.clone().into_os_string(),
        ],
    ));
    assert!(out.status.success(), "{out:?}");
    let daemon: u32 = ok(
        "pid",
        ok("pidfile", std::fs::read_to_string(&pidfile))
            .trim()
            .parse(),
    );
    let _ = std::fs::remove_file(&pidfile);
    wait_for("all three in the tree", Duration::from_secs(10), || {
        cg.procs().map(|p| p.len() == 3).unwrap_or(false)
    });
    assert_eq!(ok("sub procs", sub.own_procs()), vec![sleeper.id()]);
    assert!(!ok("own procs", cg.own_procs()).contains(&sleeper.id()));

    ok("kill", cg.kill());
    assert_eq!(ok("procs", cg.procs()), Vec::<u32>::new());
    assert!(!ok("events", cg.events()).populated);
    // The daemon was reparented away from us; it is gone or a zombie its new parent reaps.
    assert!(matches!(process_state(daemon), None | Some('Z')));
    assert_eq!(
        busy.wait().ok().and_then(|s| s.signal()),
        Some(libc::SIGKILL)
    );
    assert_eq!(
        sleeper.wait().ok().and_then(|s| s.signal()),
        Some(libc::SIGKILL)
    );
    ok("remove", cg.remove());
    assert!(!cg.path().exists());
}

#[test]
fn test_guard_kills_by_pid_and_removes_the_tree_even_when_a_test_panics() {
    let Some(outer) =
        test_cgroup("test_guard_kills_by_pid_and_removes_the_tree_even_when_a_test_panics")
    else {
        return;
    };
    let mut sleeper = ok("spawn", role("sleep").stdin(Stdio::null()).spawn());
    let pid = sleeper.id();
    let guard_path = {
        let guard = ok("create", TestCgroup::create(outer.dir(), "guarded"));
        ok("create nested", CgroupDir::create(&guard, "nested"));
        let nested = ok("child", guard.child("nested"));
        ok("add_process", nested.add_process(pid));
        let path = guard.path().to_path_buf();
        // Drop while unwinding from a failed assertion, as in a failing test.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _guard = guard;
            panic!("simulated test failure");
        }));
        assert!(unwound.is_err());
        path
    };
    assert!(!guard_path.exists(), "{} left behind", guard_path.display());
    assert_eq!(
        sleeper.wait().ok().and_then(|s| s.signal()),
        Some(libc::SIGKILL)
    );
}

#[test]
fn cgroup_id_is_the_id_the_kernel_reports() {
    let Some(cg) = test_cgroup("cgroup_id_is_the_id_the_kernel_reports") else {
        return;
    };
    let id = ok("id", cg.id());

    // 1. name_to_handle_at: cgroupfs (kernfs) encodes a node's 64-bit id as its file handle
    //    (type FILEID_KERNFS); this is how libbpf's selftests and systemd obtain cgroup ids.
    #[repr(C)]
    struct Handle {
        handle_bytes: u32,
        handle_type: i32,
        f_handle: [u8; 64],
    }
    let mut handle = Handle {
        handle_bytes: 64,
        handle_type: 0,
        f_handle: [0; 64],
    };
    let mut mount_id: libc::c_int = 0;
    let path = ok(
        "path",
        std::ffi::CString::new(cg.path().as_os_str().as_bytes()),
    );
    // SAFETY: valid path, a handle buffer whose handle_bytes states its capacity, and a live
    // mount id.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            path.as_ptr(),
            &mut handle as *mut Handle,
            &mut mount_id as *mut libc::c_int,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "name_to_handle_at: {}",
        std::io::Error::last_os_error()
    );
    assert_eq!(handle.handle_bytes, 8);
    let mut id_bytes = [0u8; 8];
    id_bytes.copy_from_slice(&handle.f_handle[..8]);
    assert_eq!(u64::from_ne_bytes(id_bytes), id, "file handle id != inode");

    // 2. The kernel's own answer: bpf_get_current_cgroup_id() in a process inside the cgroup.
    let out = run({
        let mut c = role("bpf-cgroup-id");
        c.arg(cg.path()).stdin(Stdio::null());
        c
    });
    assert!(out.status.success(), "{out:?}");
    let from_bpf: u64 = ok(
        "bpf id",
        String::from_utf8_lossy(&out.stdout).trim().parse(),
    );
    assert_eq!(from_bpf, id, "bpf_get_current_cgroup_id != inode");

    // And a child cgroup has its own id.
    let sub = ok("sub", CgroupDir::create(&cg, "sub"));
    assert_ne!(ok("sub id", sub.id()), id);
}

#[test]
fn tree_api_create_level_procs_and_remove() {
    let Some(cg) = test_cgroup("tree_api_create_level_procs_and_remove") else {
        return;
    };
    assert!(ok("is_cgroup2", is_cgroup2(cg.mount())));
    assert!(ok("is_cgroup2", is_cgroup2(cg.path())));
    assert!(!ok("is_cgroup2", is_cgroup2(&std::env::temp_dir())));
    assert!(is_cgroup2(Path::new("/nonexistent/secops")).is_err());

    assert_eq!(ok("level", cgroup_level(cg.path())), 1);
    let a = ok("create a", CgroupDir::create(&cg, "a"));
    let again = ok("create a again", CgroupDir::create(&cg, "a"));
    assert_eq!(a, again);
    let b = ok("create b", CgroupDir::create(&a, "b"));
    assert_eq!(ok("level", cgroup_level(b.path())), 3);
    assert_eq!(b.relative_path(), cg.relative_path().join("a").join("b"));
    assert_eq!(ok("open_path", CgroupDir::open_path(b.path())), b);
    assert_eq!(ok("open", CgroupDir::open(cg.mount(), b.path())), b);
    assert!(CgroupDir::open(cg.mount(), &cg.path().join("..").join("..")).is_err());
    assert!(CgroupDir::create(&cg, "../escape").is_err());
    assert_eq!(
        ok("children", cg.children()),
        vec![a.clone()],
        "interface files are not children"
    );

    // A process in the deepest cgroup counts for every ancestor.
    let mut sleeper = ok("spawn", role("sleep").stdin(Stdio::null()).spawn());
    let pid = sleeper.id();
    ok("add_process", b.add_process(pid));
    assert_eq!(ok("procs", cg.procs()), vec![pid]);
    assert_eq!(ok("own procs", cg.own_procs()), Vec::<u32>::new());
    assert_eq!(ok("b own procs", b.own_procs()), vec![pid]);
    assert!(ok("contains", a.contains_process(pid)));
    assert!(ok("events", cg.events()).populated);

    // Removal refuses while anything lives below, and says who.
    let err = match a.remove() {
        Ok(()) => panic!("removed a populated cgroup"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("processes remain") && err.contains(&pid.to_string()),
        "{err}"
    );
    assert!(b.path().exists());

    let _ = sleeper.kill();
    let _ = sleeper.wait();
    wait_for("the sleeper to leave", Duration::from_secs(10), || {
        cg.procs().map(|p| p.is_empty()).unwrap_or(false)
    });
    ok("remove a", a.remove());
    assert!(!a.path().exists() && !b.path().exists());
    assert!(cg.path().exists());
}
