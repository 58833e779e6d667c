//! The filesystems the kernel layer stands on: the cgroup2 hierarchy (found, never
//! assumed: hybrid systems mount it at /sys/fs/cgroup/unified), bpffs for pins, tracefs for
//! tracepoint ids and securityfs for the LSM list. A fresh machine may have none of the
//! last three mounted, so each has a mount-if-needed.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::error::{KernelError, Result};
use super::sys;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const TRACEFS_MAGIC: i64 = 0x7472_6163;
const DEBUGFS_MAGIC: i64 = 0x6462_6720;
const SECURITYFS_MAGIC: i64 = 0x7363_6673;

pub const BPFFS_DEFAULT: &str = "/sys/fs/bpf";
pub const TRACEFS_DEFAULT: &str = "/sys/kernel/tracing";
pub const SECURITYFS_DEFAULT: &str = "/sys/kernel/security";

/// A cgroup2 mount: where it is, and which directory of the hierarchy it shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup2Mount {
    pub mount_point: PathBuf,
    /// The mount's root within the hierarchy, as this cgroup namespace sees it ("/" usually).
    pub root: PathBuf,
}

/// The cgroup2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Result<PathBuf> {
    Ok(cgroup2_mount_info()?.mount_point)
}

pub fn cgroup2_mount_info() -> Result<Cgroup2Mount> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(|e| KernelError::io("reading", path, e))?;
    parse_cgroup2_mount(&text).ok_or(KernelError::NoCgroup2Mount)
}

/// The first cgroup2 entry of a mountinfo text that no later mount hides (a container's
/// runtime may mount a fresh cgroup2 over the one it inherited at the same mount point).
/// Format (proc(5)): `id parent major:minor root mount-point options [optional fields...] -
/// fstype source super-options`.
pub fn parse_cgroup2_mount(mountinfo: &str) -> Option<Cgroup2Mount> {
    let mounts: Vec<(&str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fstype = after.split(' ').next()?;
            let mut fields = before.split(' ');
            let root = fields.nth(3)?;
            let mount_point = fields.next()?;
            Some((fstype, root, mount_point))
        })
        .collect();
    mounts
        .iter()
        .enumerate()
        .filter(|(_, (fstype, _, _))| *fstype == "cgroup2")
        .find(|(i, (_, _, point))| !mounts[i + 1..].iter().any(|(_, _, p)| p == point))
        .map(|(_, (_, root, mount_point))| Cgroup2Mount {
            mount_point: PathBuf::from(unescape_mountinfo(mount_point)),
            root: PathBuf::from(unescape_mountinfo(root)),
        })
}

/// Every mount point of this process's mount namespace, from /proc/self/mountinfo.
pub fn mount_points() -> Result<Vec<PathBuf>> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(|e| KernelError::io("reading", path, e))?;
    Ok(parse_mount_points(&text))
}

pub fn parse_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The id the kernel gives a cgroup (what `bpf_get_current_ancestor_cgroup_id` returns):
/// on cgroup2 it is the directory's inode number (kernfs node id, 64-bit on 64-bit hosts).
pub fn cgroup_id(cgroup_dir: &Path) -> Result<u64> {
    let meta = fs::metadata(cgroup_dir).map_err(|e| KernelError::io("stat", cgroup_dir, e))?;
    Ok(meta.ino())
}

pub use super::cgroup_level::cgroup_level;

fn is_fs(path: &Path, magic: i64) -> bool {
    sys::statfs_type(path).is_ok_and(|t| t == magic)
}

fn mount_if_needed(fstype: &'static str, target: &Path, magic: i64) -> Result<()> {
    if is_fs(target, magic) {
        return Ok(());
    }
    fs::create_dir_all(target).map_err(|e| KernelError::io("creating", target, e))?;
    sys::mount_pseudo(fstype, target).map_err(|source| KernelError::Mount {
        fstype,
        target: target.to_path_buf(),
        source,
    })
}

/// Mounts bpffs at `path` (normally /sys/fs/bpf) unless one is there already.
pub fn mount_bpffs_if_needed(path: &Path) -> Result<()> {
    mount_if_needed("bpf", path, BPF_FS_MAGIC)
}

/// Makes `pin_dir` (a directory on bpffs, e.g. /sys/fs/bpf/secops), mounting bpffs at its
/// parent if no bpffs is there.
pub fn ensure_pin_dir(pin_dir: &Path) -> Result<()> {
    if let Some(parent) = pin_dir.parent() {
        if !is_fs(parent, BPF_FS_MAGIC) {
            mount_bpffs_if_needed(parent)?;
        }
    }
    fs::create_dir_all(pin_dir).map_err(|e| KernelError::io("creating", pin_dir, e))?;
    if !is_fs(pin_dir, BPF_FS_MAGIC) {
        return Err(KernelError::NotBpffs {
            path: pin_dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Where tracefs is, mounting it at /sys/kernel/tracing if it is nowhere. Must run before
/// the first tracepoint attach: aya looks tracefs up once per process and keeps the answer.
pub fn mount_tracefs_if_needed() -> Result<PathBuf> {
    let tracing = Path::new(TRACEFS_DEFAULT);
    if is_fs(tracing, TRACEFS_MAGIC) {
        return Ok(tracing.to_path_buf());
    }
    let legacy = Path::new("/sys/kernel/debug/tracing");
    if is_fs(legacy, TRACEFS_MAGIC) && !is_fs(legacy, DEBUGFS_MAGIC) {
        return Ok(legacy.to_path_buf());
    }
    mount_if_needed("tracefs", tracing, TRACEFS_MAGIC)?;
    Ok(tracing.to_path_buf())
}

/// Mounts securityfs at /sys/kernel/security (where the active LSM list is) if needed.
pub fn mount_securityfs_if_needed() -> Result<PathBuf> {
    let path = Path::new(SECURITYFS_DEFAULT);
    mount_if_needed("securityfs", path, SECURITYFS_MAGIC)?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_cgroup2_in_hybrid_mode_with_optional_fields() {
        let m = parse_cgroup2_mount(HYBRID).expect("found");
        assert_eq!(m.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(m.root, Path::new("/"));
    }

    #[test]
    fn a_cgroup2_mount_hidden_by_a_later_one_is_skipped() {
        let text = "41 31 0:38 /.. /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                    90 41 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let m = parse_cgroup2_mount(text).expect("found");
        assert_eq!(m.root, Path::new("/"));
    }

    #[test]
    fn ignores_cgroup_v1_and_unescapes_octal() {
        let text = "40 31 0:37 / /a rw - cgroup cgroup rw\n\
                    50 31 0:40 /sub /mnt/my\\040cg rw - cgroup2 none rw\n";
        let m = parse_cgroup2_mount(text).expect("found");
        assert_eq!(m.mount_point, Path::new("/mnt/my cg"));
        assert_eq!(m.root, Path::new("/sub"));
        assert_eq!(
            parse_cgroup2_mount("40 31 0:37 / /a rw - cgroup cgroup rw\n"),
            None
        );
    }
}
