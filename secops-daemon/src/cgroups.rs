//! A small cgroup v2 tree API, working on a cgroup2 mount whose path the caller supplies.
//!
//! Only the core interface files are used (`cgroup.procs`, `cgroup.events`, `cgroup.freeze`,
//! `cgroup.kill`): on hybrid hosts the cgroup2 mount (e.g. `/sys/fs/cgroup/unified`) has every
//! controller bound to a v1 hierarchy, so nothing else can be relied on.
//!
//! Signals are only ever sent to processes found in a cgroup's `cgroup.procs`, through a pidfd
//! that is confirmed to still be in that cgroup after it was opened, so a pid that was reused
//! in the meantime is never hit.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// How long `freeze`, `thaw` and `kill` wait for the kernel to report the new state. Freezing
/// waits for every task to reach a freezable point, which a task stuck in uninterruptible I/O
/// can delay; a few seconds covers that without hanging a caller forever.
pub const STATE_CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Something went wrong with a cgroup operation. Every variant names the file or directory
/// involved, because "permission denied" alone does not tell an operator where to look.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("{}: not a cgroup v2 directory (no cgroup2 filesystem here)", path.display())]
    NotCgroup2 { path: PathBuf },

    #[error("{}: not below the cgroup2 mount {}", path.display(), mount.display())]
    OutsideMount { path: PathBuf, mount: PathBuf },

    #[error("invalid cgroup name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },

    #[error("{}: cannot remove, processes remain: {pids:?}", path.display())]
    ProcessesRemain { path: PathBuf, pids: Vec<u32> },

    #[error("{}: refusing to {what} the root cgroup of the mount", path.display())]
    RootCgroup { path: PathBuf, what: &'static str },

    #[error(
        "{}: refusing to {what} a cgroup that contains this process (pid {pid})",
        path.display()
    )]
    ContainsSelf {
        path: PathBuf,
        what: &'static str,
        pid: u32,
    },

    #[error("{}: not {wanted} after {waited:?}; processes in it: {pids:?}", path.display())]
    Timeout {
        path: PathBuf,
        wanted: &'static str,
        waited: Duration,
        pids: Vec<u32>,
    },

    #[error("{}: unexpected content: {line:?}", path.display())]
    Parse { path: PathBuf, line: String },
}

type Result<T> = std::result::Result<T, CgroupError>;

fn io_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { path, what, source }
}

/// Whether `path` is on a cgroup2 filesystem (checked with statfs, so a directory that merely
/// looks like a cgroup is not mistaken for one).
pub fn is_cgroup2(path: &Path) -> Result<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| CgroupError::Io {
        path: path.to_path_buf(),
        what: "statfs",
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: c_path is a valid NUL-terminated string and buf is large enough for statfs.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(io_err(path, "statfs")(io::Error::last_os_error()));
    }
    // SAFETY: statfs returned 0, so it filled buf.
    let st = unsafe { buf.assume_init() };
    // f_type's integer type differs between architectures (and libc versions), so both sides
    // are widened to one type; on x86_64 that is a no-op cast.
    #[allow(clippy::unnecessary_cast)]
    let is_v2 = st.f_type as i64 == libc::CGROUP2_SUPER_MAGIC as i64;
    Ok(is_v2)
}

/// The cgroup v2 path of a process as the kernel reports it in `/proc/<pid>/cgroup` (the
/// `0::` line), e.g. `/secops/coder`. It is relative to the reader's cgroup namespace root,
/// which is also what a cgroup2 mount made in that namespace shows.
pub fn process_cgroup(pid: u32) -> Result<PathBuf> {
    read_cgroup_file(&PathBuf::from(format!("/proc/{pid}/cgroup")))
}

/// The cgroup v2 path of the calling process (see [`process_cgroup`]).
pub fn self_cgroup() -> Result<PathBuf> {
    read_cgroup_file(Path::new("/proc/self/cgroup"))
}

fn read_cgroup_file(file: &Path) -> Result<PathBuf> {
    let text = fs::read_to_string(file).map_err(io_err(file, "read"))?;
    for line in text.lines() {
        // v1 hierarchies are listed too on hybrid hosts; only the unified one ("0::") is v2.
        if let Some(rest) = line.strip_prefix("0::") {
            return Ok(PathBuf::from(rest));
        }
    }
    Err(CgroupError::Parse {
        path: file.to_path_buf(),
        line: "no cgroup v2 (\"0::\") line".to_string(),
    })
}

/// The two flags of `cgroup.events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupEvents {
    /// Some process lives in this cgroup or a descendant.
    pub populated: bool,
    /// The cgroup is completely frozen.
    pub frozen: bool,
}

/// A directory in a cgroup v2 hierarchy, together with the mount it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    mount: PathBuf,
    path: PathBuf,
}

impl CgroupDir {
    /// The root cgroup of a cgroup2 mount.
    pub fn root(mount: &Path) -> Result<Self> {
        if !is_cgroup2(mount)? {
            return Err(CgroupError::NotCgroup2 {
                path: mount.to_path_buf(),
            });
        }
        Ok(Self {
            mount: mount.to_path_buf(),
            path: mount.to_path_buf(),
        })
    }

    /// An existing cgroup below `mount`. `path` is absolute, or relative to the mount.
    pub fn open(mount: &Path, path: &Path) -> Result<Self> {
        let root = Self::root(mount)?;
        let path = root.mount.join(path);
        if !lexically_below(&path, &root.mount) {
            return Err(CgroupError::OutsideMount {
                path,
                mount: root.mount,
            });
        }
        if !is_cgroup2(&path)? {
            return Err(CgroupError::NotCgroup2 { path });
        }
        Ok(Self {
            mount: root.mount,
            path,
        })
    }

    /// An existing cgroup given only by its absolute path; the mount is the topmost cgroup2
    /// directory above it. This is what a launcher told "your cgroup is X" needs.
    pub fn open_path(path: &Path) -> Result<Self> {
        let canonical = fs::canonicalize(path).map_err(io_err(path, "resolve"))?;
        if !is_cgroup2(&canonical)? {
            return Err(CgroupError::NotCgroup2 {
                path: path.to_path_buf(),
            });
        }
        let mut mount = canonical.clone();
        while let Some(parent) = mount.parent() {
            if !is_cgroup2(parent)? {
                break;
            }
            mount = parent.to_path_buf();
        }
        Ok(Self {
            mount,
            path: canonical,
        })
    }

    /// Creates `name` below `parent`, or opens it if it already exists (so a daemon restarted
    /// halfway through setting up an agent can simply run the same steps again).
    pub fn create(parent: &CgroupDir, name: &str) -> Result<Self> {
        validate_name(name)?;
        let path = parent.path.join(name);
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !is_cgroup2(&path)? || !path.is_dir() {
                    return Err(CgroupError::NotCgroup2 { path });
                }
            }
            Err(e) => return Err(io_err(&path, "mkdir")(e)),
        }
        Ok(Self {
            mount: parent.mount.clone(),
            path,
        })
    }

    /// An existing child cgroup.
    pub fn child(&self, name: &str) -> Result<Self> {
        validate_name(name)?;
        let path = self.path.join(name);
        if !path.is_dir() {
            return Err(io_err(&path, "open")(io::ErrorKind::NotFound.into()));
        }
        Ok(Self {
            mount: self.mount.clone(),
            path,
        })
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup2 mount this cgroup lives under.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The cgroup's path relative to the mount, with a leading `/`, as `/proc/<pid>/cgroup`
    /// shows it (for a mount of the namespace's root cgroup).
    pub fn relative_path(&self) -> PathBuf {
        let rel = self.path.strip_prefix(&self.mount).unwrap_or(Path::new(""));
        Path::new("/").join(rel)
    }

    /// Whether this is the mount's root cgroup. (Its level in the hierarchy, which the
    /// kernel programs need, is `kernel::fs::cgroup_level`: the mount need not show the
    /// hierarchy's root.)
    pub fn is_mount_root(&self) -> bool {
        self.path == self.mount
    }

    /// The cgroup id: what `bpf_get_current_cgroup_id()` returns for a task in this cgroup.
    ///
    /// cgroupfs is kernfs, and on 64-bit kernels (since 5.5) a kernfs node's inode number is its
    /// 64-bit node id, which is the cgroup id (`cgroup_id()` returns `cgrp->kn->id`). So the
    /// directory's inode number is the id. The launcher tests check this against the kernel
    /// itself: against the `name_to_handle_at` file handle (kernfs encodes the node id there)
    /// and against a BPF program calling `bpf_get_current_cgroup_id()` from inside the cgroup.
    pub fn id(&self) -> Result<u64> {
        let md = fs::metadata(&self.path).map_err(io_err(&self.path, "stat"))?;
        Ok(md.ino())
    }

    /// Moves a process (all its threads) into this cgroup.
    pub fn add_process(&self, pid: u32) -> Result<()> {
        let file = self.path.join("cgroup.procs");
        let mut f = OpenOptions::new()
            .write(true)
            .open(&file)
            .map_err(io_err(&file, "open"))?;
        // The kernel takes exactly one pid per write(2); a single short write_all is one call.
        f.write_all(format!("{pid}\n").as_bytes())
            .map_err(io_err(&file, "write"))
    }

    /// Moves the calling process into this cgroup.
    pub fn add_self(&self) -> Result<()> {
        self.add_process(std::process::id())
    }

    /// Processes directly in this cgroup (not its descendants).
    pub fn own_procs(&self) -> Result<Vec<u32>> {
        let file = self.path.join("cgroup.procs");
        let text = fs::read_to_string(&file).map_err(io_err(&file, "read"))?;
        parse_pids(&file, &text)
    }

    /// Processes in this cgroup and every descendant (descendants count as the same agent),
    /// sorted.
    pub fn procs(&self) -> Result<Vec<u32>> {
        let mut pids: Vec<u32> = self
            .procs_by_cgroup()?
            .into_iter()
            .flat_map(|(_, pids)| pids)
            .collect();
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Whether a process is in this cgroup or a descendant, by its `/proc/<pid>/cgroup`.
    pub fn contains_process(&self, pid: u32) -> Result<bool> {
        let theirs = process_cgroup(pid)?;
        Ok(theirs.starts_with(self.relative_path()))
    }

    /// Direct child cgroups.
    pub fn children(&self) -> Result<Vec<CgroupDir>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.path).map_err(io_err(&self.path, "read directory"))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&self.path, "read directory"))?;
            let file_type = entry
                .file_type()
                .map_err(io_err(&self.path, "read directory"))?;
            if file_type.is_dir() {
                out.push(Self {
                    mount: self.mount.clone(),
                    path: entry.path(),
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// `cgroup.events`.
    pub fn events(&self) -> Result<CgroupEvents> {
        let file = self.path.join("cgroup.events");
        let text = fs::read_to_string(&file).map_err(io_err(&file, "read"))?;
        parse_events(&file, &text)
    }

    /// Freezes every process in this cgroup and its descendants, and waits until the kernel
    /// reports the cgroup frozen.
    pub fn freeze(&self) -> Result<()> {
        self.refuse_if_contains_self("freeze")?;
        self.write_core_file("cgroup.freeze", "1")?;
        self.wait_for_events("frozen", |e| e.frozen, STATE_CHANGE_TIMEOUT)
    }

    /// Undoes [`freeze`](Self::freeze) and waits until the kernel reports it thawed.
    pub fn thaw(&self) -> Result<()> {
        self.write_core_file("cgroup.freeze", "0")?;
        self.wait_for_events("thawed", |e| !e.frozen, STATE_CHANGE_TIMEOUT)
    }

    /// SIGKILLs every process in this cgroup and its descendants and waits until none is left.
    /// Uses `cgroup.kill` (Linux 5.14+), which the kernel applies atomically, even to processes
    /// forking at that moment; on older kernels falls back to [`kill_by_pid`](Self::kill_by_pid).
    pub fn kill(&self) -> Result<()> {
        self.refuse_root("kill")?;
        self.refuse_if_contains_self("kill")?;
        let kill_file = self.path.join("cgroup.kill");
        if kill_file.exists() {
            self.write_core_file("cgroup.kill", "1")?;
            self.wait_until_empty(STATE_CHANGE_TIMEOUT)
        } else {
            self.kill_by_pid()
        }
    }

    /// SIGKILLs every process listed in this cgroup's and its descendants' `cgroup.procs`, one
    /// pid at a time, until none is left. The cgroup is frozen first where the kernel can, so a
    /// fork loop cannot outrun the kills (SIGKILL still reaches frozen tasks).
    pub fn kill_by_pid(&self) -> Result<()> {
        self.refuse_root("kill")?;
        self.refuse_if_contains_self("kill")?;
        let can_freeze = self.path.join("cgroup.freeze").exists();
        if can_freeze {
            // Not waiting for "frozen 1": the flag alone makes new children start frozen, and a
            // task stuck in the kernel must not delay its own kill.
            self.write_core_file("cgroup.freeze", "1")?;
        }
        let deadline = Instant::now() + STATE_CHANGE_TIMEOUT;
        let result = loop {
            let listed = self.procs_by_cgroup()?;
            if listed.iter().all(|(_, pids)| pids.is_empty()) {
                break Ok(());
            }
            if Instant::now() >= deadline {
                break Err(CgroupError::Timeout {
                    path: self.path.clone(),
                    wanted: "empty",
                    waited: STATE_CHANGE_TIMEOUT,
                    pids: self.procs().unwrap_or_default(),
                });
            }
            for (dir, pids) in &listed {
                for &pid in pids {
                    kill_listed_pid(dir, pid)?;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if can_freeze {
            // Leave the cgroup usable: a process moved in later must not start frozen.
            self.write_core_file("cgroup.freeze", "0")?;
        }
        result
    }

    /// Removes this cgroup and every descendant, deepest first. Fails, naming the pids, if any
    /// process remains anywhere in the subtree (a cgroup with processes cannot be removed, and
    /// killing them is a separate, deliberate step).
    pub fn remove(&self) -> Result<()> {
        let pids = self.procs()?;
        if !pids.is_empty() {
            return Err(CgroupError::ProcessesRemain {
                path: self.path.clone(),
                pids,
            });
        }
        self.remove_subtree()
    }

    fn remove_subtree(&self) -> Result<()> {
        match self.children() {
            Ok(children) => {
                for child in children {
                    child.remove_subtree()?;
                }
            }
            Err(CgroupError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        match fs::remove_dir(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(CgroupError::ProcessesRemain {
                path: self.path.clone(),
                pids: self.procs().unwrap_or_default(),
            }),
            Err(e) => Err(io_err(&self.path, "rmdir")(e)),
        }
    }

    /// Every (cgroup directory, its own pids) pair in the subtree. Descendants that vanish while
    /// being walked are skipped: they were removed, so they hold no process.
    fn procs_by_cgroup(&self) -> Result<Vec<(PathBuf, Vec<u32>)>> {
        let mut out = Vec::new();
        let mut stack = vec![self.clone()];
        while let Some(dir) = stack.pop() {
            let own = match dir.own_procs() {
                Ok(pids) => pids,
                Err(CgroupError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound && dir != *self =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            out.push((dir.path.clone(), own));
            match dir.children() {
                Ok(children) => stack.extend(children),
                Err(CgroupError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound && dir != *self => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn write_core_file(&self, name: &str, value: &str) -> Result<()> {
        let file = self.path.join(name);
        let mut f = OpenOptions::new()
            .write(true)
            .open(&file)
            .map_err(io_err(&file, "open"))?;
        f.write_all(value.as_bytes())
            .map_err(io_err(&file, "write"))
    }

    fn wait_until_empty(&self, timeout: Duration) -> Result<()> {
        self.wait_for_events("empty", |e| !e.populated, timeout)
    }

    /// Waits until `cgroup.events` satisfies `done`. kernfs signals changes to that file with
    /// POLLPRI, so this sleeps in poll(2) rather than spinning; each poll is capped so that a
    /// missed notification costs at most a short delay.
    fn wait_for_events(
        &self,
        wanted: &'static str,
        done: impl Fn(&CgroupEvents) -> bool,
        timeout: Duration,
    ) -> Result<()> {
        let file = self.path.join("cgroup.events");
        let mut f = File::open(&file).map_err(io_err(&file, "open"))?;
        let deadline = Instant::now() + timeout;
        let mut text = String::new();
        loop {
            text.clear();
            f.seek(SeekFrom::Start(0)).map_err(io_err(&file, "seek"))?;
            f.read_to_string(&mut text).map_err(io_err(&file, "read"))?;
            if done(&parse_events(&file, &text)?) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CgroupError::Timeout {
                    path: self.path.clone(),
                    wanted,
                    waited: timeout,
                    pids: self.procs().unwrap_or_default(),
                });
            }
            let slice = (deadline - now).min(Duration::from_millis(100));
            let mut pfd = libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLPRI,
                revents: 0,
            };
            // SAFETY: pfd is a valid pollfd for the duration of the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, slice.as_millis() as libc::c_int) };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(io_err(&file, "poll")(err));
                }
            }
        }
    }

    fn refuse_root(&self, what: &'static str) -> Result<()> {
        if self.is_mount_root() {
            return Err(CgroupError::RootCgroup {
                path: self.path.clone(),
                what,
            });
        }
        Ok(())
    }

    /// Freezing or killing our own cgroup would hang or kill the caller (a test runner, the
    /// daemon); that is never what the caller meant.
    fn refuse_if_contains_self(&self, what: &'static str) -> Result<()> {
        let ours = self_cgroup()?;
        if ours.starts_with(self.relative_path()) {
            return Err(CgroupError::ContainsSelf {
                path: self.path.clone(),
                what,
                pid: std::process::id(),
            });
        }
        Ok(())
    }
}

/// SIGKILLs `pid` if, once pinned by a pidfd, it is still listed in `dir`'s `cgroup.procs`.
/// The pidfd refers to whichever process had the pid when it was opened; checking membership
/// afterwards means a pid that was recycled for an unrelated process is left alone, and a
/// process that exits after the check makes the signal fail with ESRCH instead of hitting a
/// newcomer.
fn kill_listed_pid(dir: &Path, pid: u32) -> Result<()> {
    let Ok(raw_pid) = libc::pid_t::try_from(pid) else {
        return Ok(());
    };
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw_pid, 0) };
    let pidfd = if fd >= 0 {
        // SAFETY: pidfd_open returned a new file descriptor that nothing else owns.
        Some(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    } else {
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::ESRCH) => return Ok(()),
            // Kernels before 5.3: no pidfds; the membership check below narrows the race.
            Some(libc::ENOSYS) => None,
            _ => return Err(io_err(dir, "pidfd_open")(io::Error::last_os_error())),
        }
    };
    let procs = dir.join("cgroup.procs");
    let still_listed = match fs::read_to_string(&procs) {
        Ok(text) => parse_pids(&procs, &text)?.contains(&pid),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_err(&procs, "read")(e)),
    };
    if !still_listed {
        return Ok(());
    }
    let rc = match &pidfd {
        // SAFETY: the pidfd is valid; null siginfo means "as if sent by kill(2)".
        Some(fd) => unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        },
        // SAFETY: plain kill(2).
        None => libc::c_long::from(unsafe { libc::kill(raw_pid, libc::SIGKILL) }),
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(io_err(dir, "kill")(err));
        }
    }
    Ok(())
}

fn parse_pids(file: &Path, text: &str) -> Result<Vec<u32>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse::<u32>().map_err(|_| CgroupError::Parse {
                path: file.to_path_buf(),
                line: l.to_string(),
            })
        })
        .collect()
}

fn parse_events(file: &Path, text: &str) -> Result<CgroupEvents> {
    let mut populated = None;
    let mut frozen = None;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let flag = match value {
            "0" => false,
            "1" => true,
            _ => {
                return Err(CgroupError::Parse {
                    path: file.to_path_buf(),
                    line: line.to_string(),
                })
            }
        };
        match key {
            "populated" => populated = Some(flag),
            "frozen" => frozen = Some(flag),
            _ => {}
        }
    }
    match populated {
        Some(populated) => Ok(CgroupEvents {
            populated,
            // Kernels before 5.2 have no freezer and no "frozen" key: never frozen.
            frozen: frozen.unwrap_or(false),
        }),
        None => Err(CgroupError::Parse {
            path: file.to_path_buf(),
            line: "no \"populated\" line".to_string(),
        }),
    }
}

fn validate_name(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("not a directory name")
    } else if name.contains('/') || name.contains('\0') {
        Some("contains '/' or NUL")
    } else if name.starts_with("cgroup.") {
        Some("the cgroup. prefix is reserved for interface files")
    } else {
        None
    };
    match why {
        Some(why) => Err(CgroupError::InvalidName {
            name: name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// `path` is `base` or below it, without `..` escaping it.
fn lexically_below(path: &Path, base: &Path) -> bool {
    match path.strip_prefix(base) {
        Ok(rel) => rel.components().all(|c| matches!(c, Component::Normal(_))),
        Err(_) => false,
    }
}

/// A cgroup for one test: created on construction; on drop (also while unwinding from a
/// failed assertion) its processes are SIGKILLed by pid and the cgroup removed. Problems
/// during cleanup are printed, because a panic in drop would abort the test run.
#[derive(Debug)]
pub struct TestCgroup {
    dir: CgroupDir,
}

impl TestCgroup {
    /// Creates `name` below `parent` (reusing a leftover of the same name).
    pub fn create(parent: &CgroupDir, name: &str) -> Result<Self> {
        let dir = CgroupDir::create(parent, name)?;
        // A leftover from a crashed run may still hold processes; start clean.
        dir.kill_by_pid()?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &CgroupDir {
        &self.dir
    }
}

impl std::ops::Deref for TestCgroup {
    type Target = CgroupDir;
    fn deref(&self) -> &CgroupDir {
        &self.dir
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.dir.kill_by_pid() {
            eprintln!("TestCgroup cleanup: {e}");
        }
        if let Err(e) = self.dir.remove() {
            eprintln!("TestCgroup cleanup: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_with_and_without_frozen() {
        let p = Path::new("cgroup.events");
        assert_eq!(
            parse_events(p, "populated 1\nfrozen 0\n").ok(),
            Some(CgroupEvents {
                populated: true,
                frozen: false
            })
        );
        assert_eq!(
            parse_events(p, "populated 0\n").ok(),
            Some(CgroupEvents {
                populated: false,
                frozen: false
            })
        );
        assert!(parse_events(p, "frozen 1\n").is_err());
        assert!(parse_events(p, "populated 2\n").is_err());
    }

    #[test]
    fn parses_pids() {
        let p = Path::new("cgroup.procs");
        assert_eq!(parse_pids(p, "12\n345\n").ok(), Some(vec![12, 345]));
        assert_eq!(parse_pids(p, "").ok(), Some(vec![]));
        assert!(parse_pids(p, "12\nabc\n").is_err());
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", ".", "..", "a/b", "cgroup.procs"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("secops-agent-1").is_ok());
    }

    #[test]
    fn below_is_lexical_and_rejects_dotdot() {
        let base = Path::new("/sys/fs/cgroup");
        assert!(lexically_below(Path::new("/sys/fs/cgroup/a/b"), base));
        assert!(lexically_below(base, base));
        assert!(!lexically_below(Path::new("/sys/fs/cgroup/../x"), base));
        assert!(!lexically_below(Path::new("/sys/fs"), base));
    }

    #[test]
    fn relative_path_and_mount_root() {
        let dir = CgroupDir {
            mount: PathBuf::from("/sys/fs/cgroup/unified"),
            path: PathBuf::from("/sys/fs/cgroup/unified/secops/coder"),
        };
        assert_eq!(dir.relative_path(), PathBuf::from("/secops/coder"));
        assert!(!dir.is_mount_root());
        let root = CgroupDir {
            mount: PathBuf::from("/sys/fs/cgroup/unified"),
            path: PathBuf::from("/sys/fs/cgroup/unified"),
        };
        assert_eq!(root.relative_path(), PathBuf::from("/"));
        assert!(root.is_mount_root());
    }
}
