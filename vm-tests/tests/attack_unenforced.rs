//! The attack suite with nothing enforcing, on this host: every attack must get through
//! (ALLOWED) and every benign operation must work. This is what makes a `blocked` line in
//! the VM mean something: the same program, against the same kind of fixtures, really does
//! the damage when no policy stops it.
//!
//! A second run, as uid 65534, shows the other half of the judging on real kernel refusals:
//! where file permissions or missing capabilities refuse an attack (EACCES/EPERM) and the
//! target is intact, the line says `blocked`.
//!
//! Needs root (it makes cgroups, mounts a bpffs and loads a BPF program). Everything a run
//! makes is in a fresh temp dir, two throwaway cgroups named `secops-attack-test-<pid>-{a,b}`
//! (`-dac-{a,b}` for the second run, which may run at the same time) and a bpffs mounted
//! inside the temp dir; Drop guards remove all of it, even on failure, and only pids the test
//! spawned are killed. The "secret" is a file this test writes, never a real one.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use secops_vm_tests::attack::report::{self, Verdict};
use secops_vm_tests::attack::{ATTACKS, BENIGN};

const ATTACKER: &str = env!("CARGO_BIN_EXE_secops-attack");

/// Attacks that cannot get through on a plain host, with the verdict they must have and why:
/// as root, with nothing enforcing, every other attack does its damage.
fn expected_not_allowed() -> Vec<(&'static str, &'static str, &'static str)> {
    match module_loader() {
        ModuleLoader::Present => Vec::new(),
        ModuleLoader::Absent => vec![
            (
                "finit-module",
                "ERROR",
                "this kernel has no module loader (ENOSYS)",
            ),
            (
                "init-module",
                "ERROR",
                "this kernel has no module loader (ENOSYS)",
            ),
        ],
    }
}

enum ModuleLoader {
    Present,
    /// A kernel built without modules: finit_module and init_module are ENOSYS.
    Absent,
}

fn module_loader() -> ModuleLoader {
    if Path::new("/proc/modules").exists() {
        ModuleLoader::Present
    } else {
        ModuleLoader::Absent
    }
}

#[test]
fn every_attack_gets_through_when_nothing_enforces() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("\n*** attack_unenforced: skipped: needs root ***\n");
        return;
    }
    let mut fx = Fixtures::new("", None);
    let parsed = fx.run_attacker(None);

    let mut problems = Vec::new();
    let expected_not_allowed = expected_not_allowed();
    for a in &parsed.attacks {
        match expected_not_allowed.iter().find(|(n, _, _)| *n == a.name) {
            Some((_, verdict, why)) => {
                let got = match &a.verdict {
                    Verdict::Blocked(e) => format!("blocked {e}"),
                    Verdict::Allowed => "ALLOWED".into(),
                    Verdict::Error => "ERROR".into(),
                };
                if got != *verdict {
                    problems.push(format!("{}: expected {verdict} ({why}), got {got}", a.name));
                }
            }
            None if a.verdict != Verdict::Allowed => problems.push(format!(
                "{}: not ALLOWED: {:?} {}",
                a.name, a.verdict, a.detail
            )),
            None => {}
        }
    }
    for b in parsed.benign.iter().filter(|b| !b.ok) {
        problems.push(format!("benign {} failed: {}", b.name, b.detail));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The damage, checked independently of what the program says about itself.
    let killed = fx.daemon_exit_signal();
    assert_eq!(
        killed,
        Some(libc::SIGKILL),
        "the fake daemon was not SIGKILLed"
    );
    assert_eq!(
        fx.link.cgroup_id(),
        0,
        "the pinned cgroup link is still attached"
    );
    // And the program put back what it broke, so later attacks had targets.
    fx.assert_fixtures_in_place();
}

/// Unprivileged uid: what DAC and capabilities refuse.
const NOBODY: u32 = 65534;

/// The verdicts of a run as uid 65534 with root-owned fixtures (the workspace is its own).
/// `blocked` is any EPERM/EACCES; the rest are exact.
const DAC_EXPECTED: &[(&str, &str)] = &[
    ("unlink", "blocked"),
    ("unlinkat-dirfd", "blocked"),
    ("rmdir", "blocked"),
    ("rename-over", "blocked"),
    ("rename-away", "blocked"),
    // fs.protected_hardlinks (or the directory's mode) refuses the link.
    ("hardlink-write", "blocked"),
    ("truncate", "blocked"),
    ("open-trunc", "blocked"),
    ("open-write", "blocked"),
    ("uring-unlinkat", "blocked"),
    ("uring-renameat", "blocked"),
    ("uring-openat", "blocked"),
    ("symlink-delete", "blocked"),
    // Anyone may run a 0755 binary: DAC has nothing to say about these three.
    ("renamed-denied-binary", "ALLOWED"),
    ("memfd-exec", "ALLOWED"),
    ("ldso-exec", "ALLOWED"),
    ("secret-read", "blocked"),
    ("secret-hardlink-read", "blocked"),
    ("secret-link", "blocked"),
    ("secret-proc-fd", "blocked"),
    // CAP_NET_RAW.
    ("raw-socket", "blocked"),
    ("packet-socket", "blocked"),
    // Loopback connects need no privilege.
    ("connect-mapped", "ALLOWED"),
    ("connect-blocked", "ALLOWED"),
    // The fake daemon runs as root.
    ("stop-daemon", "blocked"),
    ("ptrace-daemon", "blocked"),
    ("daemon-mem", "blocked"),
    ("kill-daemon", "blocked"),
    // bpf(2) without CAP_BPF (kernel.unprivileged_bpf_disabled, or the pin's 0600 mode).
    ("bpf-detach", "blocked"),
    ("bpf-prog-ids", "blocked"),
    // cgroup.procs is root's, 0644.
    ("cgroup-escape", "blocked"),
    // The protected tree is root's: chmod/chown need ownership, new names write access.
    ("chmod-protected", "blocked"),
    ("mkdir-protected", "blocked"),
    ("symlink-protected", "blocked"),
    // The victim runs as root: no ptrace, no memory, no descriptors, no signals.
    ("ptrace-attach-foreign", "blocked"),
    ("ptrace-seize-foreign", "blocked"),
    ("process-vm-writev", "blocked"),
    ("proc-mem-write", "blocked"),
    ("pidfd-getfd", "blocked"),
    ("kill-foreign", "blocked"),
    ("tgkill-foreign", "blocked"),
    ("sigqueue-foreign", "blocked"),
    // CAP_SYS_MODULE (where the kernel has a module loader at all).
    ("finit-module", "blocked"),
    ("init-module", "blocked"),
    // CAP_SYS_ADMIN; pivot_root's child cannot even make its mount namespace.
    ("mount-tmpfs", "blocked"),
    ("bind-over-policy", "blocked"),
    ("pivot-root", "blocked"),
    // The fixtures' directory is root's (0755); the bpffs mount is root's business.
    ("rename-state-parent", "blocked"),
    ("umount-pins", "blocked"),
];

#[test]
fn kernel_refusals_with_intact_targets_are_reported_blocked() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("\n*** attack_unenforced: skipped: needs root ***\n");
        return;
    }
    let mut fx = Fixtures::new("dac-", Some(NOBODY));
    let parsed = fx.run_attacker(Some(NOBODY));
    let mut problems = Vec::new();
    for a in &parsed.attacks {
        let no_loader = matches!(module_loader(), ModuleLoader::Absent)
            && matches!(a.name.as_str(), "finit-module" | "init-module");
        let want = DAC_EXPECTED
            .iter()
            .find(|(n, _)| *n == a.name)
            .map(|(_, v)| if no_loader { "ERROR" } else { *v })
            .unwrap_or("(missing from DAC_EXPECTED)");
        let got = match &a.verdict {
            Verdict::Blocked(_) => "blocked",
            Verdict::Allowed => "ALLOWED",
            Verdict::Error => "ERROR",
        };
        if got != want {
            problems.push(format!(
                "{}: expected {want}, got {got}: {}",
                a.name, a.detail
            ));
        }
    }
    for b in parsed.benign.iter().filter(|b| !b.ok) {
        problems.push(format!("benign {} failed: {}", b.name, b.detail));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Blocked means intact: the daemon lives, the pinned link is attached, nothing moved.
    assert_eq!(fx.daemon_exit_signal_now(), None, "the fake daemon died");
    assert_ne!(fx.link.cgroup_id(), 0, "the pinned link was detached");
    fx.assert_fixtures_in_place();
}

/// Everything the attacker is pointed at. Fields drop in declaration order: the attacker is
/// long gone, then the daemon is killed, the link closed, the bpffs unmounted, the cgroups
/// removed (empty by then) and the temp dir deleted last.
struct Fixtures {
    daemon: ChildGuard,
    victim: ChildGuard,
    link: BpfLink,
    bpffs: Mount,
    blocked: TcpListener,
    allowed: TcpListener,
    cgroup_a: CgroupDir,
    cgroup_b: CgroupDir,
    workspace: PathBuf,
    protected: PathBuf,
    secret: PathBuf,
    prelinked: PathBuf,
    denied: PathBuf,
    policy_file: PathBuf,
    state_dir: PathBuf,
    _tmp: TempDir,
}

impl Fixtures {
    /// `tag` keeps the names of concurrent runs apart; `workspace_owner` is the uid the
    /// attacker will run as, whose workspace it is.
    fn new(tag: &str, workspace_owner: Option<u32>) -> Fixtures {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tmp = TempDir::new(std::env::temp_dir().join(format!(
            "secops-attack-test-{}-{tag}{nanos}",
            std::process::id()
        )));
        let root = tmp.0.clone();
        let workspace = root.join("workspace");
        let protected = root.join("protected");
        fs::create_dir(&workspace).expect("workspace");
        if let Some(uid) = workspace_owner {
            std::os::unix::fs::chown(&workspace, Some(uid), Some(uid)).expect("chown workspace");
        }
        fs::create_dir(&protected).expect("protected");
        fs::write(protected.join("keep.txt"), b"keep\n").expect("keep.txt");
        fs::create_dir(protected.join("subdir")).expect("subdir");
        let secret = root.join("fake-secret");
        fs::write(&secret, b"FAKE SECRET MADE BY THE TEST, NOT A KEY\n").expect("secret");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod");
        let prelinked = workspace.join("prelinked-secret");
        fs::hard_link(&secret, &prelinked).expect("prelinked secret");
        let denied = root.join("denied-tool");
        fs::copy(ATTACKER, &denied).expect("copy of secops-attack");
        fs::set_permissions(&denied, fs::Permissions::from_mode(0o755)).expect("chmod");

        let cgroup2 = cgroup2_mount().expect("a cgroup2 mount rooted at / in /proc/self/mountinfo");
        let name = format!("secops-attack-test-{}-{tag}", std::process::id());
        let cgroup_a = CgroupDir::new(cgroup2.join(format!("{name}a")));
        let cgroup_b = CgroupDir::new(cgroup2.join(format!("{name}b")));

        let bpffs = Mount::bpffs(root.join("bpffs"));
        let link = BpfLink::attach_to(&cgroup_b.0);
        link.pin(&bpffs.0.join("link"));

        let sleeper = || {
            ChildGuard(
                Command::new("sleep")
                    .arg("600")
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("spawn sleep"),
            )
        };
        let daemon = sleeper();
        let victim = sleeper();
        // A fake daemon's directory: its policy file and state directory.
        let daemon_dir = root.join("daemon");
        let state_dir = daemon_dir.join("state");
        fs::create_dir_all(&state_dir).expect("state dir");
        let policy_file = daemon_dir.join("policy.yaml");
        fs::write(&policy_file, b"version: 1\n").expect("policy file");
        let listen = || TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        Fixtures {
            daemon,
            victim,
            link,
            bpffs,
            blocked: listen(),
            allowed: listen(),
            cgroup_a,
            cgroup_b,
            workspace,
            protected,
            secret,
            prelinked,
            denied,
            policy_file,
            state_dir,
            _tmp: tmp,
        }
    }

    /// Runs secops-attack in cgroup a (as `uid` if given) and parses its report, checking
    /// that it names every operation in the program's order.
    fn run_attacker(&self, uid: Option<u32>) -> report::Report {
        let port = |l: &TcpListener| l.local_addr().expect("local addr").port().to_string();
        let procs_a = cstring(&self.cgroup_a.0.join("cgroup.procs"));
        let mut cmd = Command::new(ATTACKER);
        cmd.arg("run")
            .arg("--workspace")
            .arg(&self.workspace)
            .arg("--protected")
            .arg(&self.protected)
            .arg("--secret")
            .arg(&self.secret)
            .arg("--prelinked-secret")
            .arg(&self.prelinked)
            .arg("--denied-binary")
            .arg(&self.denied)
            .arg("--allowed-binary")
            .arg(allowed_binary())
            .arg("--daemon-pid")
            .arg(self.daemon.0.id().to_string())
            .arg("--bpf-pin")
            .arg(self.bpffs.0.join("link"))
            .arg("--foreign-procs")
            .arg(self.cgroup_b.0.join("cgroup.procs"))
            .arg("--blocked-port")
            .arg(port(&self.blocked))
            .arg("--allowed-port")
            .arg(port(&self.allowed))
            .arg("--victim-pid")
            .arg(self.victim.0.id().to_string())
            .arg("--policy-file")
            .arg(&self.policy_file)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: runs in the forked child before exec and only makes async-signal-safe
        // calls (open, write, close, setgroups, setresgid, setresuid) with a path prepared
        // before the fork. Writing "0" moves the writing process, i.e. this child, never the
        // test process, into cgroup a; the uid changes after that, while still root.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs_a.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(err);
                }
                if let Some(id) = uid {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setresgid(id, id, id) != 0
                        || libc::setresuid(id, id, id) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = ChildGuard(cmd.spawn().expect("spawn secops-attack"));
        let mut stdout = child.0.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.0.try_wait().expect("wait secops-attack") {
                break status;
            }
            assert!(Instant::now() < deadline, "secops-attack ran over 120 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = reader.join().unwrap_or_default();
        eprintln!("secops-attack output (uid {uid:?}):\n{out}");
        assert!(status.success(), "secops-attack: {status}\n{out}");
        let parsed = report::parse(&out).unwrap_or_else(|e| panic!("unparsable output: {e}"));
        let attack_names: Vec<&str> = parsed.attacks.iter().map(|a| a.name.as_str()).collect();
        let want: Vec<&str> = ATTACKS.iter().map(|(n, _)| *n).collect();
        assert_eq!(attack_names, want);
        let benign_names: Vec<&str> = parsed.benign.iter().map(|b| b.name.as_str()).collect();
        let want: Vec<&str> = BENIGN.iter().map(|(n, _)| *n).collect();
        assert_eq!(benign_names, want);
        parsed
    }

    /// keep.txt with its content, subdir, and nothing left in the workspace but the
    /// prelinked secret.
    fn assert_fixtures_in_place(&self) {
        assert_eq!(
            fs::read(self.protected.join("keep.txt")).ok(),
            Some(b"keep\n".to_vec())
        );
        assert!(self.protected.join("subdir").is_dir());
        let left: Vec<_> = fs::read_dir(&self.workspace)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("prelinked-secret")],
            "leftovers"
        );
    }

    /// Whether the fake daemon has already exited, without waiting.
    fn daemon_exit_signal_now(&mut self) -> Option<i32> {
        match self.daemon.0.try_wait() {
            Ok(Some(status)) => Some(status.signal().unwrap_or(0)),
            _ => None,
        }
    }
    /// Reaps the fake daemon if it dies within a few seconds, and says by which signal
    /// (through std's Child, so its Drop guard knows it is gone and never signals the pid).
    fn daemon_exit_signal(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.daemon.0.try_wait() {
                Ok(Some(status)) => return Some(status.signal().unwrap_or(0)),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return None,
            }
        }
    }
}

fn allowed_binary() -> &'static str {
    ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("/bin/true")
}

fn cstring(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL in a path we made")
}

fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fields: Vec<&str> = left.split_whitespace().collect();
        match (
            right.split_whitespace().next(),
            fields.get(3),
            fields.get(4),
        ) {
            (Some("cgroup2"), Some(&"/"), Some(point)) => Some(PathBuf::from(point)),
            _ => None,
        }
    })
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(path: PathBuf) -> TempDir {
        fs::create_dir(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child we spawned: killed (by its pid) and reaped on drop if still there.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

struct CgroupDir(PathBuf);

impl CgroupDir {
    fn new(path: PathBuf) -> CgroupDir {
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        CgroupDir(path)
    }
}

impl Drop for CgroupDir {
    /// The processes that were in it have exited (their guards drop first); the kernel may
    /// take a moment to let go of them, so rmdir is retried briefly.
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::remove_dir(&self.0).is_err() && self.0.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.0.exists() {
            eprintln!("warning: could not remove cgroup {}", self.0.display());
        }
    }
}

/// A bpffs instance of our own (its pins vanish with it).
struct Mount(PathBuf);

impl Mount {
    fn bpffs(path: PathBuf) -> Mount {
        fs::create_dir(&path).expect("bpffs mount point");
        let target = cstring(&path);
        // SAFETY: valid NUL-terminated strings; no data.
        let ret = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(ret, 0, "mount bpffs: {}", std::io::Error::last_os_error());
        Mount(path)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let target = cstring(&self.0);
        // SAFETY: a valid NUL-terminated string; MNT_DETACH so a busy mount still goes.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// A do-nothing cgroup_skb egress program (returns 1: pass) linked to a throwaway cgroup:
/// a real bpf link for `bpf-detach` to detach.
struct BpfLink {
    link: OwnedFd,
    _prog: OwnedFd,
}

type Attr = [u64; 16];

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<i32> {
    // SAFETY: attr is a valid buffer of its size; pointers in it outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret as i32)
    }
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: a descriptor bpf(2) just returned to us.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl BpfLink {
    fn attach_to(cgroup: &Path) -> BpfLink {
        const BPF_PROG_LOAD: libc::c_long = 5;
        const BPF_LINK_CREATE: libc::c_long = 28;
        const BPF_PROG_TYPE_CGROUP_SKB: u64 = 8;
        const BPF_CGROUP_INET_EGRESS: u64 = 1;
        // r0 = 1; exit
        let insns: [u64; 2] = [0xb7 | (1 << 32), 0x95];
        let license = c"GPL";
        let mut attr: Attr = [0; 16];
        attr[0] = BPF_PROG_TYPE_CGROUP_SKB | ((insns.len() as u64) << 32);
        attr[1] = insns.as_ptr() as u64;
        attr[2] = license.as_ptr() as u64;
        // prog_ifindex (u32 at 64) and expected_attach_type (u32 at 68).
        attr[8] = BPF_CGROUP_INET_EGRESS << 32;
        let prog = owned(bpf(BPF_PROG_LOAD, &mut attr).expect("BPF_PROG_LOAD cgroup_skb"));
        let dir = fs::File::open(cgroup).expect("open the cgroup");
        let mut attr: Attr = [0; 16];
        attr[0] = prog.as_raw_fd() as u64 | ((dir.as_raw_fd() as u64) << 32);
        attr[1] = BPF_CGROUP_INET_EGRESS;
        let link = owned(bpf(BPF_LINK_CREATE, &mut attr).expect("BPF_LINK_CREATE"));
        BpfLink { link, _prog: prog }
    }

    fn pin(&self, path: &Path) {
        const BPF_OBJ_PIN: libc::c_long = 6;
        let c = cstring(path);
        let mut attr: Attr = [0; 16];
        attr[0] = c.as_ptr() as u64;
        attr[1] = self.link.as_raw_fd() as u64;
        bpf(BPF_OBJ_PIN, &mut attr).expect("BPF_OBJ_PIN");
    }

    /// struct bpf_link_info's cgroup.cgroup_id (offset 16): 0 once the link is detached.
    fn cgroup_id(&self) -> u64 {
        const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
        let mut info = [0u64; 16];
        let mut attr: Attr = [0; 16];
        attr[0] = self.link.as_raw_fd() as u64 | ((std::mem::size_of_val(&info) as u64) << 32);
        attr[1] = info.as_mut_ptr() as u64;
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).expect("BPF_OBJ_GET_INFO_BY_FD");
        info[2]
    }
}
