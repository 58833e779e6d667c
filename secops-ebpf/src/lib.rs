//! secops' kernel programs, as BPF object bytes ready for aya's `EbpfLoader::load`.
//!
//! `build.rs` compiles each `src/*.bpf.c` with clang; each constant here is one object, so
//! a caller names the program family it loads in one line. Every object declares the same
//! maps (`include/maps.h`), pinned by name, so objects loaded with one pin directory share
//! them. `include/secops.h` is the layout contract, mirrored by `secops_common::kernel`.

/// Wraps the bytes so the static is aligned: the ELF parser reads the object in place and
/// needs at least 8-byte alignment, which `include_bytes!` alone does not promise.
#[repr(C, align(32))]
struct Aligned<B: ?Sized>(B);

macro_rules! object {
    ($file:literal) => {{
        static OBJECT: &Aligned<[u8]> =
            &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/", $file)));
        &OBJECT.0
    }};
}

/// `cgroup/connect4`, `cgroup/connect6`, `cgroup/sendmsg4`, `cgroup/sendmsg6`: the egress
/// allowlist.
pub const EGRESS: &[u8] = object!("egress.bpf.o");

/// `tracepoint/sched/sched_process_exec` and `sched_process_exit`.
pub const EXEC: &[u8] = object!("exec.bpf.o");

/// `tracepoint/syscalls/sys_enter_{unlinkat,unlink,rmdir,renameat2,renameat,rename}`.
pub const FILES: &[u8] = object!("files.bpf.o");

/// The BPF LSM programs: files, exec, sockets and self-protection (`lsm/*`).
pub const LSM: &[u8] = object!("lsm.bpf.o");

/// `lsm/file_open` doing nothing, for the capability probe (declares no maps).
pub const PROBE_LSM: &[u8] = object!("probe_lsm.bpf.o");

/// `raw_tp` program run once with BPF_PROG_TEST_RUN: the caller's cgroup level counted
/// from the hierarchy's real root (declares no maps).
pub const CGROUP_LEVEL: &[u8] = object!("cgroup_level.bpf.o");

/// Never loaded: its BTF describes every shared type, for the layout test.
pub const ALIGNCHECKER: &[u8] = object!("alignchecker.bpf.o");

/// The objects a loader loads, by name.
pub const PROGRAM_OBJECTS: &[(&str, &[u8])] = &[
    ("egress", EGRESS),
    ("exec", EXEC),
    ("files", FILES),
    ("lsm", LSM),
];

/// The names of the programs (the C functions) in the objects above.
pub mod programs {
    pub const CGROUP_LEVEL: &str = "secops_cgroup_level";
    pub const CONNECT4: &str = "secops_connect4";
    pub const CONNECT6: &str = "secops_connect6";
    pub const SENDMSG4: &str = "secops_sendmsg4";
    pub const SENDMSG6: &str = "secops_sendmsg6";
    pub const RECVMSG4: &str = "secops_recvmsg4";
    pub const RECVMSG6: &str = "secops_recvmsg6";
    pub const EXEC: &str = "secops_exec";
    pub const EXIT: &str = "secops_exit";
    pub const UNLINKAT: &str = "secops_unlinkat";
    pub const UNLINK: &str = "secops_unlink";
    pub const RMDIR: &str = "secops_rmdir";
    pub const RENAMEAT2: &str = "secops_renameat2";
    pub const RENAMEAT: &str = "secops_renameat";
    pub const RENAME: &str = "secops_rename";
    pub const PROBE_LSM: &str = "secops_probe_lsm";
    pub const LSM_UNLINK: &str = "secops_lsm_unlink";
    pub const LSM_RMDIR: &str = "secops_lsm_rmdir";
    pub const LSM_RENAME: &str = "secops_lsm_rename";
    pub const LSM_LINK: &str = "secops_lsm_link";
    pub const LSM_TRUNCATE: &str = "secops_lsm_truncate";
    pub const LSM_MKNOD: &str = "secops_lsm_mknod";
    pub const LSM_FILE_OPEN: &str = "secops_lsm_file_open";
    pub const LSM_EXEC: &str = "secops_lsm_exec";
    pub const LSM_MMAP: &str = "secops_lsm_mmap";
    pub const LSM_SOCKET_CREATE: &str = "secops_lsm_socket_create";
    pub const LSM_SOCKET_CONNECT: &str = "secops_lsm_socket_connect";
    pub const LSM_UNIX_STREAM_CONNECT: &str = "secops_lsm_unix_stream_connect";
    pub const LSM_UNIX_MAY_SEND: &str = "secops_lsm_unix_may_send";
    pub const LSM_BPF: &str = "secops_lsm_bpf";
    pub const LSM_PTRACE: &str = "secops_lsm_ptrace";
    pub const LSM_TASK_KILL: &str = "secops_lsm_task_kill";
    pub const LSM_SB_MOUNT: &str = "secops_lsm_sb_mount";
    pub const LSM_SB_UMOUNT: &str = "secops_lsm_sb_umount";
    pub const LSM_MOVE_MOUNT: &str = "secops_lsm_move_mount";
    pub const LSM_SB_PIVOTROOT: &str = "secops_lsm_sb_pivotroot";
    pub const LSM_MODULE_REQUEST: &str = "secops_lsm_module_request";
    pub const LSM_KERNEL_READ_FILE: &str = "secops_lsm_kernel_read_file";
    pub const LSM_KERNEL_LOAD_DATA: &str = "secops_lsm_kernel_load_data";
    pub const LSM_CHMOD: &str = "secops_lsm_chmod";
    pub const LSM_MKDIR: &str = "secops_lsm_mkdir";
    pub const LSM_SYMLINK: &str = "secops_lsm_symlink";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_aligned_bpf_elf() {
        for (name, bytes) in PROGRAM_OBJECTS
            .iter()
            .chain([&("alignchecker", ALIGNCHECKER), &("probe_lsm", PROBE_LSM)])
        {
            assert_eq!(
                bytes.as_ptr() as usize % 8,
                0,
                "{name} is not 8-byte aligned"
            );
            assert!(bytes.starts_with(b"\x7fELF"), "{name} is not ELF");
            // e_machine 247 is EM_BPF.
            assert_eq!(u16::from_le_bytes([bytes[18], bytes[19]]), 247, "{name}");
        }
    }
}
