//! What this kernel lets secops do, each layer with a reason a person can act on when it
//! is not available. Probing loads nothing that stays and attaches nothing.

use std::fmt;

use aya::programs::{Lsm, ProgramError, ProgramType};
use aya::sys::{is_helper_supported, is_map_supported, is_program_supported, BpfHelper};
use aya::{Btf, EbpfLoader};

use super::fs;

/// One kernel capability: whether secops can use it, and why (not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    pub active: bool,
    pub reason: String,
}

impl Capability {
    fn yes(reason: impl Into<String>) -> Capability {
        Capability {
            active: true,
            reason: reason.into(),
        }
    }
    fn no(reason: impl Into<String>) -> Capability {
        Capability {
            active: false,
            reason: reason.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Tagging exec/exit/unlink/rename from tracepoints.
    pub tracepoints: Capability,
    /// The egress allowlist (cgroup connect4/6, sendmsg4/6).
    pub cgroup_sock_addr: Capability,
    /// The one event ring buffer.
    pub ring_buffer: Capability,
    /// Synchronous denies from BPF LSM programs.
    pub bpf_lsm: Capability,
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, c) in [
            ("tracepoints", &self.tracepoints),
            ("cgroup socket hooks", &self.cgroup_sock_addr),
            ("ring buffer", &self.ring_buffer),
            ("BPF LSM", &self.bpf_lsm),
        ] {
            let state = if c.active { "active" } else { "inactive" };
            writeln!(f, "{name}: {state} ({})", c.reason)?;
        }
        Ok(())
    }
}

/// The errno behind an aya program error, named (EPERM, ...), when there is one.
fn errno_name(e: &ProgramError) -> String {
    let io = match e {
        ProgramError::LoadError { io_error, .. } => Some(io_error),
        ProgramError::SyscallError(s) => Some(&s.io_error),
        _ => None,
    };
    let Some(io) = io else {
        return e.to_string();
    };
    let name = match io.raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::E2BIG) => "E2BIG",
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP",
        Some(524) => "ENOTSUPP",
        _ => return io.to_string(),
    };
    format!("{name}: {io}")
}

fn program_type(ty: ProgramType, what: &str) -> Result<(), String> {
    match is_program_supported(ty) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("the kernel does not support {what} programs")),
        Err(e) => Err(format!(
            "probing {what} programs failed: {}",
            errno_name(&e)
        )),
    }
}

fn probe_tracepoints() -> Capability {
    if let Err(why) = program_type(ProgramType::TracePoint, "tracepoint") {
        return Capability::no(why);
    }
    let tracefs = match fs::mount_tracefs_if_needed() {
        Ok(p) => p,
        Err(e) => return Capability::no(format!("tracefs unavailable: {e}")),
    };
    let missing: Vec<&str> = [
        "sched/sched_process_exec",
        "sched/sched_process_exit",
        "syscalls/sys_enter_unlinkat",
        "syscalls/sys_enter_renameat2",
    ]
    .into_iter()
    .filter(|event| !tracefs.join("events").join(event).join("id").exists())
    .collect();
    if !missing.is_empty() {
        return Capability::no(format!(
            "tracepoints missing from {}: {} (syscall tracepoints need CONFIG_FTRACE_SYSCALLS)",
            tracefs.display(),
            missing.join(", ")
        ));
    }
    Capability::yes(format!(
        "tracepoint programs supported; events in {}",
        tracefs.display()
    ))
}

fn probe_cgroup_sock_addr() -> Capability {
    if let Err(why) = program_type(ProgramType::CgroupSockAddr, "cgroup sock_addr") {
        return Capability::no(why);
    }
    match fs::cgroup2_mount() {
        Ok(mount) => Capability::yes(format!(
            "cgroup sock_addr programs supported; cgroup2 at {}",
            mount.display()
        )),
        Err(e) => Capability::no(e.to_string()),
    }
}

fn probe_ring_buffer() -> Capability {
    match is_map_supported(aya::maps::MapType::RingBuf) {
        Ok(true) => Capability::yes("BPF_MAP_TYPE_RINGBUF is supported"),
        Ok(false) => Capability::no("the kernel has no BPF ring buffer (needs 5.8+)"),
        Err(e) => Capability::no(format!("probing the ring buffer failed: {e}")),
    }
}

fn probe_bpf_lsm() -> Capability {
    let securityfs = match fs::mount_securityfs_if_needed() {
        Ok(p) => p,
        Err(e) => return Capability::no(format!("securityfs unavailable: {e}")),
    };
    let list_path = securityfs.join("lsm");
    let list = match std::fs::read_to_string(&list_path) {
        Ok(l) => l.trim().to_owned(),
        Err(e) => return Capability::no(format!("reading {}: {e}", list_path.display())),
    };
    if !list.split(',').any(|l| l == "bpf") {
        return Capability::no(format!(
            "bpf is not in the active LSM list ({list}); boot with lsm={list},bpf"
        ));
    }
    match load_trivial_lsm() {
        Ok(()) => Capability::yes(format!(
            "bpf in the LSM list ({list}) and LSM programs load"
        )),
        Err(why) => Capability::no(format!("in LSM list but loading failed: {why}")),
    }
}

fn load_trivial_lsm() -> Result<(), String> {
    let btf = Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))?;
    let mut ebpf = EbpfLoader::new()
        .load(secops_ebpf::PROBE_LSM)
        .map_err(|e| format!("parsing the probe object: {e}"))?;
    let program: &mut Lsm = ebpf
        .program_mut(secops_ebpf::programs::PROBE_LSM)
        .ok_or("the probe object has no program")?
        .try_into()
        .map_err(|e: ProgramError| e.to_string())?;
    program.load("file_open", &btf).map_err(|e| errno_name(&e))
}

/// Whether tracing programs (tracepoints, LSM) may call
/// `bpf_get_current_ancestor_cgroup_id` here. Where they may not (Debian 11's 5.10), the
/// programs find a task's agent cgroup by reading its cgroup through CO-RE instead
/// (`secops-ebpf/include/ancestry.h`).
pub fn ancestor_helper_in_tracing() -> bool {
    matches!(
        is_helper_supported(
            ProgramType::TracePoint,
            BpfHelper::BPF_FUNC_get_current_ancestor_cgroup_id,
        ),
        Ok(true)
    )
}

/// Probes every layer. Needs root (CAP_BPF and CAP_SYS_ADMIN) to say anything but "no".
pub fn probe() -> Capabilities {
    Capabilities {
        tracepoints: probe_tracepoints(),
        cgroup_sock_addr: probe_cgroup_sock_addr(),
        ring_buffer: probe_ring_buffer(),
        bpf_lsm: probe_bpf_lsm(),
    }
}
