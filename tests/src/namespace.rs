//! A cgroup namespace like a container's: a cgroup made for it, and a holder process that
//! moved into that cgroup, unshared its cgroup and mount namespaces and mounted cgroup2
//! over the host's mount point, so that inside, the mount's root (and /proc/self/cgroup's
//! "/") is that cgroup, not the hierarchy's root. Commands run inside with `nsenter`, after
//! joining the namespace's cgroup. Dropping it kills the holder (by pid) and removes the
//! cgroup.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::kernel::TestCgroup;

pub struct CgroupNamespace {
    /// The namespace's root cgroup, as the host sees it.
    pub cgroup: TestCgroup,
    holder: Child,
}

impl CgroupNamespace {
    /// Needs root and util-linux's `unshare` and `nsenter`.
    pub fn start() -> CgroupNamespace {
        let cgroup = TestCgroup::new(&[]);
        let mount = secops_daemon::kernel::fs::cgroup2_mount()
            .unwrap_or_else(|e| panic!("finding cgroup2: {e}"));
        let script = format!(
            "umount '{m}' && mount -t cgroup2 cgroup2 '{m}' && echo ready && exec sleep 3600",
            m = mount.display()
        );
        let mut command = Command::new("unshare");
        command
            .args(["--cgroup", "--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        join_cgroup(&mut command, &cgroup.path);
        let mut holder = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting unshare (util-linux): {e}"));
        let stdout = holder.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        if read.is_err() || line.trim() != "ready" {
            let _ = holder.kill();
            let _ = holder.wait();
            panic!("the namespace holder did not come up: {read:?} {line:?}");
        }
        CgroupNamespace { cgroup, holder }
    }

    /// How to run commands inside.
    pub fn entry(&self) -> Entry {
        Entry {
            holder: self.holder.id(),
            cgroup: self.cgroup.path.clone(),
        }
    }
}

/// What running a command inside the namespace needs: the holder (whose namespaces
/// `nsenter` enters) and the namespace's cgroup (host path).
#[derive(Clone, Debug)]
pub struct Entry {
    holder: u32,
    cgroup: PathBuf,
}

impl Entry {
    /// `program` run inside the namespace (its cgroup, cgroup namespace and mounts).
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg("--target")
            .arg(self.holder.to_string())
            .args(["--cgroup", "--mount", "--"])
            .arg(program);
        join_cgroup(&mut command, &self.cgroup);
        command
    }

    /// The namespace's root cgroup, as the host sees it.
    pub fn host_cgroup(&self) -> &Path {
        &self.cgroup
    }
}

/// Makes the child join `cgroup` before it execs (writing 0 to cgroup.procs moves the
/// writer), so the namespace's processes live in the namespace's cgroup.
fn join_cgroup(command: &mut Command, cgroup: &Path) {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .unwrap_or_else(|e| panic!("opening {}/cgroup.procs: {e}", cgroup.display()));
    let fd = procs.as_raw_fd();
    // SAFETY: the closure makes one write(2), async-signal-safe; `procs` stays open in the
    // parent until the Command is dropped (moved into the closure).
    unsafe {
        command.pre_exec(move || {
            let _keep = &procs;
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Drop for CgroupNamespace {
    fn drop(&mut self) {
        // Child::kill signals the holder's own pid.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
