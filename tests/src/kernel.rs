//! Helpers for the tests that load real BPF into this kernel: root and feature checks that
//! skip loudly, cgroups and bpffs pin directories that clean up after themselves (also when
//! a test fails), and a forked child that runs a fixed list of syscalls inside a cgroup.
//!
//! The child is made with fork(2) and only makes async-signal-safe syscalls before it
//! exits (every buffer and address is prepared by the parent), which is what a fork from a
//! multi-threaded test process allows.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use secops_common::kernel::{Agent, Config};
use secops_daemon::kernel::{fs as kfs, unpin_all, KernelMaps};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or test process) uses: `secops-test-<pid>-<n>`.
pub fn unique_name() -> String {
    format!(
        "secops-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Makes the cgroup `agent_dir` (below the secops root `root`) the agent `agent` for the
/// programs: the config (root id, the agents' level) and the agents map entry.
pub fn make_agent(maps: &mut KernelMaps, root: &Path, agent_dir: &Path, agent: Agent) {
    maps.set_config(&Config {
        root_cgroup_id: kfs::cgroup_id(root).unwrap_or_else(|e| panic!("{e}")),
        agent_level: kfs::cgroup_level(agent_dir).unwrap_or_else(|e| panic!("{e}")),
        flags: 0,
        ..Config::default()
    })
    .unwrap_or_else(|e| panic!("set_config: {e}"));
    maps.set_root_cgroup(root)
        .unwrap_or_else(|e| panic!("set_root_cgroup: {e}"));
    maps.upsert_agent(
        kfs::cgroup_id(agent_dir).unwrap_or_else(|e| panic!("{e}")),
        &agent,
    )
    .unwrap_or_else(|e| panic!("upsert_agent: {e}"));
}

/// True when the test can load BPF; otherwise prints why it is skipped.
pub fn need_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: {test}: loading BPF needs root");
        return false;
    }
    true
}

/// A cgroup made by the test below the cgroup2 mount, removed on drop: every process left in
/// it (all of them the test's own children) is killed first, then the directories are
/// removed deepest first.
pub struct TestCgroup {
    pub path: PathBuf,
    children: Vec<PathBuf>,
}

impl TestCgroup {
    /// `<cgroup2>/secops-test-<pid>-<n>`, with child cgroups at `children` (relative paths,
    /// parents before their children).
    pub fn new(children: &[&str]) -> TestCgroup {
        let mount = kfs::cgroup2_mount().unwrap_or_else(|e| panic!("finding cgroup2: {e}"));
        let path = mount.join(unique_name());
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        let mut cgroup = TestCgroup {
            path,
            children: Vec::new(),
        };
        for child in children {
            let p = cgroup.path.join(child);
            fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
            cgroup.children.push(p);
        }
        cgroup
    }

    pub fn child(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

fn kill_and_remove(dir: &Path) {
    // cgroup.kill (5.14+) kills every process in the cgroup; they are all this test's.
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if Instant::now() > deadline => {
                eprintln!(
                    "warning: could not remove test cgroup {}: {e}",
                    dir.display()
                );
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for child in self.children.iter().rev() {
            kill_and_remove(child);
        }
        kill_and_remove(&self.path);
    }
}

/// `/sys/fs/bpf/secops-test-<pid>-<n>` (bpffs mounted if needed); on drop every secops
/// pin in it is removed (detaching pinned links) and then the directory.
pub struct TestPinDir {
    pub path: PathBuf,
}

impl TestPinDir {
    pub fn new() -> TestPinDir {
        let root = Path::new(kfs::BPFFS_DEFAULT);
        kfs::mount_bpffs_if_needed(root).unwrap_or_else(|e| panic!("bpffs: {e}"));
        TestPinDir {
            path: root.join(unique_name()),
        }
    }
}

impl Default for TestPinDir {
    fn default() -> Self {
        TestPinDir::new()
    }
}

impl Drop for TestPinDir {
    fn drop(&mut self) {
        if let Err(e) = unpin_all(&self.path) {
            eprintln!("warning: unpinning {}: {e}", self.path.display());
        }
        // Anything a failed test left besides secops' own pins.
        if let Ok(entries) = fs::read_dir(&self.path) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        let _ = fs::remove_dir(&self.path);
    }
}

/// One syscall for the child to make. Built by the parent: the child only reads it.
pub enum Op {
    /// socket(AF_INET, SOCK_STREAM) + connect.
    ConnectTcp(SocketAddr),
    /// socket(AF_INET6, SOCK_STREAM) + connect to `::ffff:<v4>`.
    ConnectTcpMapped(Ipv4Addr, u16),
    /// socket(family, SOCK_DGRAM) + sendto, unconnected.
    SendUdp(SocketAddr),
    /// socket(family, SOCK_DGRAM) + connect.
    ConnectUdp(SocketAddr),
    Unlink(CString),
    Rename(CString, CString),
    Rmdir(CString),
    /// execve; the child's last op (it does not come back).
    Exec(CString, Vec<CString>),
}

enum Prepared {
    Connect {
        family: i32,
        ty: i32,
        addr: libc::sockaddr_storage,
        len: libc::socklen_t,
        send: bool,
    },
    Unlink(CString),
    Rename(CString, CString),
    Rmdir(CString),
    Exec {
        path: CString,
        // Owns the strings `ptrs` points into.
        _argv: Vec<CString>,
        ptrs: Vec<*const libc::c_char>,
    },
}

fn sockaddr(addr: SocketAddr) -> (i32, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (
                libc::AF_INET,
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                libc::AF_INET6,
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

fn prepare(op: &Op) -> Prepared {
    let connect = |addr: SocketAddr, ty: i32, send: bool| {
        let (family, addr, len) = sockaddr(addr);
        Prepared::Connect {
            family,
            ty,
            addr,
            len,
            send,
        }
    };
    match op {
        Op::ConnectTcp(a) => connect(*a, libc::SOCK_STREAM, false),
        Op::ConnectTcpMapped(ip, port) => connect(
            SocketAddr::new(ip.to_ipv6_mapped().into(), *port),
            libc::SOCK_STREAM,
            false,
        ),
        Op::SendUdp(a) => connect(*a, libc::SOCK_DGRAM, true),
        Op::ConnectUdp(a) => connect(*a, libc::SOCK_DGRAM, false),
        Op::Unlink(p) => Prepared::Unlink(p.clone()),
        Op::Rename(a, b) => Prepared::Rename(a.clone(), b.clone()),
        Op::Rmdir(p) => Prepared::Rmdir(p.clone()),
        Op::Exec(path, argv) => {
            let argv = argv.clone();
            let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
            ptrs.push(std::ptr::null());
            Prepared::Exec {
                path: path.clone(),
                _argv: argv,
                ptrs,
            }
        }
    }
}

/// The child's side: one errno (0 for success) per op, written to `out`.
///
/// # Safety
/// Runs in a forked child of a multi-threaded process: only async-signal-safe calls.
unsafe fn child_run(procs_fd: i32, out: i32, ops: &[Prepared]) -> ! {
    unsafe {
        let errno = || *libc::__errno_location();
        let report = |value: i32| {
            let bytes = value.to_ne_bytes();
            libc::write(out, bytes.as_ptr().cast(), bytes.len());
        };
        // Join the cgroup before doing anything the programs should see.
        if procs_fd >= 0 && libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
            report(-1);
            libc::_exit(2);
        }
        for op in ops {
            let result = match op {
                Prepared::Connect {
                    family,
                    ty,
                    addr,
                    len,
                    send,
                } => {
                    let s = libc::socket(*family, *ty, 0);
                    if s < 0 {
                        errno()
                    } else {
                        let sa = (addr as *const libc::sockaddr_storage).cast::<libc::sockaddr>();
                        let r = if *send {
                            libc::sendto(s, b"x".as_ptr().cast(), 1, 0, sa, *len) as i32
                        } else {
                            libc::connect(s, sa, *len)
                        };
                        let e = if r < 0 { errno() } else { 0 };
                        libc::close(s);
                        e
                    }
                }
                Prepared::Unlink(p) => {
                    if libc::unlink(p.as_ptr()) < 0 {
                        errno()
                    } else {
                        0
                    }
                }
                Prepared::Rename(a, b) => {
                    if libc::rename(a.as_ptr(), b.as_ptr()) < 0 {
                        errno()
                    } else {
                        0
                    }
                }
                Prepared::Rmdir(p) => {
                    if libc::rmdir(p.as_ptr()) < 0 {
                        errno()
                    } else {
                        0
                    }
                }
                Prepared::Exec { path, ptrs, .. } => {
                    report(0);
                    libc::close(out);
                    libc::execv(path.as_ptr(), ptrs.as_ptr());
                    libc::_exit(127);
                }
            };
            report(result);
        }
        libc::_exit(0);
    }
}

/// What the child did: its pid, one errno per op (0: success), and its wait status.
#[derive(Debug)]
pub struct ChildRun {
    pub pid: u32,
    pub results: Vec<i32>,
    pub status: i32,
}

/// Forks a child that joins `cgroup` (none: stays in the test's cgroup), makes `ops` in
/// order, and exits; waits for it.
pub fn run_child(cgroup: Option<&Path>, ops: &[Op]) -> ChildRun {
    let procs = cgroup.map(|c| {
        let path = c.join("cgroup.procs");
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
    });
    let prepared: Vec<Prepared> = ops.iter().map(prepare).collect();
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid 2-int array.
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
        0,
        "pipe2"
    );
    // SAFETY: the pipe fds are fresh and owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let procs_fd = procs.as_ref().map_or(-1, File::as_raw_fd);

    // SAFETY: the child only runs child_run (async-signal-safe syscalls) and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: see child_run.
        unsafe { child_run(procs_fd, write_end.as_raw_fd(), &prepared) };
    }
    drop(write_end);
    drop(procs);
    let mut bytes = Vec::new();
    File::from(read_end)
        .read_to_end(&mut bytes)
        .unwrap_or_else(|e| panic!("reading child results: {e}"));
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid");
    let results = bytes
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    ChildRun {
        pid: pid as u32,
        results,
        status,
    }
}

/// The name of an errno, for assertion messages.
pub fn errno_name(e: i32) -> String {
    match e {
        0 => "ok".into(),
        libc::EPERM => "EPERM".into(),
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        other => std::io::Error::from_raw_os_error(other).to_string(),
    }
}

/// This process's own cgroup (to come back to after joining an agent's).
pub fn own_cgroup() -> PathBuf {
    let mount = kfs::cgroup2_mount().unwrap_or_else(|e| panic!("finding cgroup2: {e}"));
    let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/");
    mount.join(rel.trim_start_matches('/'))
}

/// The `p` quantile (0..1) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}
