//! The level of a cgroup counted from the cgroup2 hierarchy's real root: what the programs'
//! ancestor lookups (`bpf_get_current_ancestor_cgroup_id(level)`, or the CO-RE walk) count,
//! and so what `secops_config.agent_level` must say.
//!
//! Paths alone give it only in the initial cgroup namespace. Inside another one (secops in
//! a container with its own cgroup namespace) /proc/self/cgroup and mountinfo count from the
//! namespace's root, whose own depth they hide; the kernel is asked for it instead: a raw
//! tracepoint program run with BPF_PROG_TEST_RUN in this thread reads the thread's cgroup
//! level, and the namespace root's level is that minus the thread's path depth.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use aya::programs::RawTracePoint;
use aya::EbpfLoader;

use super::error::{KernelError, Result};
use super::fs::cgroup2_mount_info;
use super::sys;

/// `PROC_CGROUP_INIT_INO`: the inode number of the initial cgroup namespace in
/// /proc/*/ns/cgroup, fixed by the kernel.
const INITIAL_CGROUP_NS_INO: u64 = 0xEFFF_FFFB;

/// The level of `cgroup_dir` (a directory of this process's cgroup2 mount) in the whole
/// hierarchy: 0 for the real root.
pub fn cgroup_level(cgroup_dir: &Path) -> Result<u32> {
    let mount = cgroup2_mount_info()?;
    let canonical = std::fs::canonicalize(cgroup_dir)
        .map_err(|e| KernelError::io("resolving", cgroup_dir, e))?;
    let below =
        canonical
            .strip_prefix(&mount.mount_point)
            .map_err(|_| KernelError::NotInCgroup2 {
                path: canonical.clone(),
                mount: mount.mount_point.clone(),
            })?;
    // mountinfo shows the mount's root relative to this namespace's root ("/.." above it).
    let level = namespace_root_level()? + depth(&mount.root) + depth(below);
    u32::try_from(level).map_err(|_| KernelError::CgroupLevel {
        path: canonical.clone(),
        reason: format!("computed level {level} is negative"),
    })
}

/// Path components below minus those above (`..`).
fn depth(path: &Path) -> i64 {
    path.components()
        .map(|c| match c {
            Component::Normal(_) => 1,
            Component::ParentDir => -1,
            _ => 0,
        })
        .sum()
}

/// The real level of this cgroup namespace's root: 0 in the initial namespace.
fn namespace_root_level() -> Result<i64> {
    let ns = Path::new("/proc/thread-self/ns/cgroup");
    let ino = std::fs::metadata(ns)
        .map_err(|e| KernelError::io("stat", ns, e))?
        .ino();
    if ino == INITIAL_CGROUP_NS_INO {
        return Ok(0);
    }
    let own = Path::new("/proc/thread-self/cgroup");
    let text = std::fs::read_to_string(own).map_err(|e| KernelError::io("reading", own, e))?;
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| KernelError::CgroupLevel {
            path: own.to_path_buf(),
            reason: "no cgroup v2 (\"0::\") line".into(),
        })?;
    let level = own_level_from_kernel().map_err(|reason| KernelError::CgroupLevel {
        path: own.to_path_buf(),
        reason: format!(
            "secops runs in a cgroup namespace, so the level must come from the kernel, and \
             asking it failed: {reason}"
        ),
    })?;
    Ok(i64::from(level) - depth(Path::new(path)))
}

/// This thread's cgroup level, as the kernel counts it.
fn own_level_from_kernel() -> std::result::Result<u32, String> {
    let mut ebpf = EbpfLoader::new()
        .load(secops_ebpf::CGROUP_LEVEL)
        .map_err(|e| format!("parsing the level probe: {e}"))?;
    let program: &mut RawTracePoint = ebpf
        .program_mut(secops_ebpf::programs::CGROUP_LEVEL)
        .ok_or("the level probe object has no program")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    program
        .load()
        .map_err(|e| format!("loading the level probe: {e}"))?;
    let fd = program.fd().map_err(|e| e.to_string())?;
    let level = sys::prog_test_run_raw_tp(fd.as_fd())
        .map_err(|e| format!("BPF_PROG_TEST_RUN of the level probe: {e}"))?;
    // The program returns -1 when the task has no default-hierarchy cgroup.
    i32::try_from(level)
        .ok()
        .and_then(|l| u32::try_from(l).ok())
        .ok_or_else(|| "the kernel found no cgroup2 cgroup for this thread".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_down_and_up() {
        assert_eq!(depth(Path::new("/")), 0);
        assert_eq!(depth(Path::new("/secops/coder")), 2);
        assert_eq!(depth(Path::new("secops")), 1);
        assert_eq!(depth(Path::new("/../..")), -2);
    }
}
