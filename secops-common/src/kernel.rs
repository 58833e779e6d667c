//! The kernel <-> daemon contract in Rust: `#[repr(C)]` mirrors of every struct and
//! constant in `secops-ebpf/include/secops.h`. The layout test (`tests/layout.rs`) compares
//! these with the C header's BTF, field by field, so the two cannot drift apart silently;
//! the size assertions below only catch the grossest changes at compile time.
//!
//! Field names are the C names, so the test can match them. Every type is plain old data:
//! any bit pattern is a valid value, which is what lets the daemon read them out of map
//! values and ring buffer records.

use core::mem::size_of;

pub const MAX_PORT_RANGES: usize = 16;
pub const PATH_LEN: usize = 256;
pub const ARGV_LEN: usize = 128;
pub const COMM_LEN: usize = 16;
/// `secops_stats` counts lost events at `kind * STATS_SUBS + sub` (see `SECOPS_STATS_SUBS`
/// in `secops.h`: the sub-kind that tells one kind's actions apart).
pub const STATS_SUBS: usize = 32;
pub const STATS_LEN: usize = 256;
/// A grant use's sub-kind for egress: this plus its protocol bit (files: their `OP_*`).
pub const STATS_GRANT_NET: u32 = 16;
pub const FS_OPS: usize = 8;
pub const MAX_DEPTH: usize = 40;
pub const NAME_SLOTS: usize = 8;
pub const NAME_LEN: usize = 48;
/// Counter slots of `secops_file_counts` (slot 0 unused); the array holds `FS_OPS` per slot.
pub const COUNT_SLOTS: usize = 4096;

pub const EVENT_EXEC: u32 = 1;
pub const EVENT_EXIT: u32 = 2;
pub const EVENT_UNLINK: u32 = 3;
pub const EVENT_RENAME: u32 = 4;
pub const EVENT_NET: u32 = 5;
pub const EVENT_LSM: u32 = 6;
pub const EVENT_GRANT: u32 = 7;

pub const VERDICT_ALLOW: u32 = 0;
pub const VERDICT_DENY: u32 = 1;
pub const VERDICT_ESCALATE: u32 = 2;

/// `enum secops_fs_op`: indexes into [`InodeRule`]'s arrays.
pub const OP_DELETE: usize = 0;
pub const OP_RENAME: usize = 1;
pub const OP_LINK: usize = 2;
pub const OP_TRUNCATE: usize = 3;
pub const OP_WRITE: usize = 4;
pub const OP_READ: usize = 5;
pub const OP_EXEC: usize = 6;
pub const OP_CONNECT: usize = 7;

/// `enum secops_rule_verdict`.
pub const RULE_NONE: u8 = 0;
pub const RULE_ALLOW: u8 = 1;
pub const RULE_DENY: u8 = 2;
pub const RULE_ESCALATE: u8 = 3;
pub const RULE_ALLOW_COUNTED: u8 = 4;

/// `enum secops_lsm_op`: what an LSM event is about.
pub const LSM_UNLINK: u32 = 1;
pub const LSM_RMDIR: u32 = 2;
pub const LSM_RENAME_SOURCE: u32 = 3;
pub const LSM_RENAME_TARGET: u32 = 4;
pub const LSM_LINK: u32 = 5;
pub const LSM_TRUNCATE: u32 = 6;
pub const LSM_OPEN_WRITE: u32 = 7;
pub const LSM_OPEN_READ: u32 = 8;
pub const LSM_EXEC: u32 = 9;
pub const LSM_EXEC_FILELESS: u32 = 10;
pub const LSM_MMAP_EXEC: u32 = 11;
pub const LSM_SOCKET_CREATE: u32 = 12;
pub const LSM_SOCKET_CONNECT: u32 = 13;
pub const LSM_UNIX_CONNECT: u32 = 14;
pub const LSM_BPF: u32 = 15;
pub const LSM_PTRACE: u32 = 16;
pub const LSM_SIGNAL: u32 = 17;
pub const LSM_CGROUP_WRITE: u32 = 18;
pub const LSM_MOUNT: u32 = 19;
pub const LSM_UMOUNT: u32 = 20;
pub const LSM_MOVE_MOUNT: u32 = 21;
pub const LSM_PIVOT_ROOT: u32 = 22;
pub const LSM_MODULE_REQUEST: u32 = 23;
pub const LSM_KERNEL_LOAD: u32 = 24;
pub const LSM_CHMOD: u32 = 25;
pub const LSM_MKDIR: u32 = 26;
pub const LSM_SYMLINK: u32 = 27;

/// `Agent::flags`: judge this agent's connect/sendmsg against its egress tries.
pub const AGENT_EGRESS_ENFORCED: u8 = 1;

/// `Agent::autonomy` values.
pub const AUTONOMY_FULL: u8 = 0;
pub const AUTONOMY_SEMI: u8 = 1;
pub const AUTONOMY_SUPERVISED: u8 = 2;
pub const AUTONOMY_LOCKED: u8 = 3;

/// `PortRange::protocols` bits.
pub const PROTO_TCP: u8 = 1;
pub const PROTO_UDP: u8 = 2;

/// Address families and IP protocols as the kernel numbers them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;
/// Every agent packet and connect to this port goes to the daemon's DNS listener for it.
pub const DNS_PORT: u16 = 53;

/// `NetBody::kind`: which hook saw the destination.
pub const NET_CONNECT: u8 = 1;
pub const NET_SENDMSG: u8 = 2;

/// `NetBody::reason`: why a destination was denied.
pub const NET_UNLISTED: u8 = 0;
/// One of the daemon's DNS listeners, which agents reach only through the port-53 redirect.
pub const NET_DNS_LISTENER: u8 = 1;

// enum secops_grant_kind
pub const GRANT_FILE: u8 = 1;
pub const GRANT_NET: u8 = 2;

// enum secops_grant_flags
pub const GRANT_ONE_SHOT: u32 = 1;

/// Map names (each pinned under this name in the pin directory).
pub const MAP_CONFIG: &str = "secops_config";
pub const MAP_AGENTS: &str = "secops_agents";
pub const MAP_EGRESS4: &str = "secops_egress4";
pub const MAP_EGRESS6: &str = "secops_egress6";
pub const MAP_EGRESS_ALLOWED: &str = "secops_egress_allowed";
pub const MAP_EVENTS: &str = "secops_events";
pub const MAP_STATS: &str = "secops_stats";
pub const MAP_HEARTBEAT: &str = "secops_heartbeat";
pub const MAP_INODES: &str = "secops_inodes";
pub const MAP_PROTECTED_PIDS: &str = "secops_protected_pids";
pub const MAP_FILE_COUNTS: &str = "secops_file_counts";
pub const MAP_GRANTS: &str = "secops_grants";
pub const MAP_CGROUP_ANCESTORS: &str = "secops_cgroup_ancestors";
pub const MAP_ROOT_CGROUP: &str = "secops_root_cgroup";
pub const MAP_DNS_LISTENERS: &str = "secops_dns_listeners";
pub const MAP_DNS_ORIGINS: &str = "secops_dns_origins";
pub const MAP_EGRESS_NAMES: &str = "secops_egress_names";
pub const MAP_DECISIONS: &str = "secops_decisions";
pub const MAPS: [&str; 18] = [
    MAP_CONFIG,
    MAP_AGENTS,
    MAP_EGRESS4,
    MAP_EGRESS6,
    MAP_EGRESS_ALLOWED,
    MAP_EVENTS,
    MAP_STATS,
    MAP_HEARTBEAT,
    MAP_INODES,
    MAP_PROTECTED_PIDS,
    MAP_FILE_COUNTS,
    MAP_GRANTS,
    MAP_CGROUP_ANCESTORS,
    MAP_ROOT_CGROUP,
    MAP_DNS_LISTENERS,
    MAP_DNS_ORIGINS,
    MAP_EGRESS_NAMES,
    MAP_DECISIONS,
];

/// `struct secops_config`, the one entry of `secops_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// cgroup id of the secops root cgroup.
    pub root_cgroup_id: u64,
    /// cgroup2 level of agent cgroups (children of the root); 0: programs ignore everyone.
    pub agent_level: u32,
    pub flags: u32,
    /// The epoch denials are counted in ([`DecisionKey`]); 0: not counted.
    pub decision_epoch: u32,
    pub pad: u32,
}

/// `struct secops_ancestor_key`, the key of `secops_cgroup_ancestors` (value: the `u64` id
/// of the ancestor at `level`, 0 if the cgroup is not that deep). The programs alone write
/// it, on kernels whose tracing programs lack `bpf_get_current_ancestor_cgroup_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AncestorKey {
    pub cgroup_id: u64,
    pub level: u32,
    pub pad: u32,
}

/// `struct secops_agent`, the value of `secops_agents` (key: the agent cgroup's id, `u64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Agent {
    pub agent_index: u32,
    pub autonomy: u8,
    pub flags: u8,
    /// Host order; non-zero: the agent's port-53 traffic goes to the daemon's DNS listener on
    /// this port of 127.0.0.1 and [::1] (UDP and TCP).
    pub dns_port: u16,
}

/// `struct secops_port_range`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
    /// `PROTO_TCP` | `PROTO_UDP`.
    pub protocols: u8,
    pub pad: [u8; 3],
}

/// `struct secops_egress4_key`: `prefixlen` counts the 32 bits of `agent_index` too.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Egress4Key {
    pub prefixlen: u32,
    pub agent_index: u32,
    pub addr: [u8; 4],
}

/// `struct secops_egress6_key`: `prefixlen` counts the 32 bits of `agent_index` too.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Egress6Key {
    pub prefixlen: u32,
    pub agent_index: u32,
    pub addr: [u8; 16],
}

/// `struct secops_egress_value`: the ranges allowed at the longest matching prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EgressValue {
    pub n_ranges: u32,
    pub pad: u32,
    pub ranges: [PortRange; MAX_PORT_RANGES],
}

/// `struct secops_egress_allowed_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EgressAllowedKey {
    pub agent_index: u32,
    pub family: u16,
    pub protocol: u16,
    /// Host order.
    pub port: u16,
    pub pad: u16,
    /// Network order; IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
}

/// `struct secops_egress_allowed_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressAllowedValue {
    pub count: u64,
    /// `CLOCK_BOOTTIME` ns.
    pub first_ns: u64,
    pub last_ns: u64,
}

/// `struct secops_event_header`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    pub agent_index: u32,
    /// The agent cgroup (not the task's own, possibly deeper, cgroup).
    pub cgroup_id: u64,
    /// `CLOCK_BOOTTIME` ns.
    pub ts_boot_ns: u64,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    pub uid: u32,
    pub verdict: u32,
    pub comm: [u8; COMM_LEN],
    /// Where this denial was counted ([`DecisionKey`]); epoch 0: not counted.
    pub decision_epoch: u32,
    pub decision_slot: u16,
    pub pad: u16,
}

/// `struct secops_exec_body`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecBody {
    pub filename: [u8; PATH_LEN],
    /// The argv head, NUL between arguments.
    pub argv: [u8; ARGV_LEN],
    /// Valid bytes of `argv`.
    pub argv_len: u32,
    /// Bytes of the whole argv; more than `argv_len` means the head is truncated.
    pub args_size: u32,
}

/// `struct secops_exit_body`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitBody {
    /// A wait(2) status: `(code << 8) | signal`.
    pub exit_code: u32,
    pub pad: u32,
}

/// `struct secops_unlink_body`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnlinkBody {
    /// `AT_FDCWD` (-100) for unlink and rmdir.
    pub dfd: i32,
    /// `AT_REMOVEDIR` (0x200) for rmdir.
    pub flags: u32,
    pub path: [u8; PATH_LEN],
}

/// `struct secops_rename_body`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenameBody {
    pub olddfd: i32,
    pub newdfd: i32,
    pub flags: u32,
    pub pad: u32,
    pub oldpath: [u8; PATH_LEN],
    pub newpath: [u8; PATH_LEN],
}

/// `struct secops_net_body`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetBody {
    pub family: u16,
    pub protocol: u16,
    /// Host order.
    pub port: u16,
    pub kind: u8,
    /// `NET_UNLISTED` or `NET_DNS_LISTENER`.
    pub reason: u8,
    /// Network order; IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
}

/// `struct secops_dns_origin`, the value of `secops_dns_origins` (key: a socket cookie): the
/// server an agent's UDP socket addressed before its DNS was redirected.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsOrigin {
    pub family: u16,
    /// Network order.
    pub port: u16,
    pub pad: u32,
    pub addr: [u8; 16],
}

/// `struct secops_name_key`: an address an allowed name resolved to for one agent (IPv4 as
/// [`AF_INET`] in the first four bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameKey {
    pub agent_index: u32,
    pub family: u16,
    pub pad: u16,
    /// Network order.
    pub addr: [u8; 16],
}

/// `struct secops_name_value`: the name's port ranges, each allowed until its own expiry
/// (`CLOCK_BOOTTIME` ns).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameValue {
    pub n_ranges: u32,
    pub pad: u32,
    pub ranges: [PortRange; MAX_PORT_RANGES],
    pub expires_ns: [u64; MAX_PORT_RANGES],
}

/// `struct secops_inode_key`: an agent's entry for one file object. `dev` is the kernel's
/// encoding (`major << 20 | minor`), not glibc's `st_dev`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeKey {
    pub agent_index: u32,
    pub dev: u32,
    pub ino: u64,
}

/// `struct secops_inode_rule`: verdicts (`RULE_*`) per operation for the object itself,
/// for its children, and for everything deeper below it, with the rule (index + 1) behind
/// each.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeRule {
    pub own: [u8; FS_OPS],
    pub child: [u8; FS_OPS],
    pub deep: [u8; FS_OPS],
    pub own_rule: [u16; FS_OPS],
    pub child_rule: [u16; FS_OPS],
    pub deep_rule: [u16; FS_OPS],
}

/// `struct secops_lsm_body`: an LSM program's denial.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LsmBody {
    pub op: u32,
    pub rule: u32,
    pub dev: u32,
    pub anchor_dev: u32,
    pub ino: u64,
    pub anchor_ino: u64,
    pub depth: u32,
    pub n_names: u32,
    pub target_pid: u32,
    pub signal: u32,
    pub family: u16,
    pub sock_type: u16,
    pub protocol: u16,
    pub port: u16,
    pub addr: [u8; 16],
    pub names: [[u8; NAME_LEN]; NAME_SLOTS],
}

/// `struct secops_grant_key`: what a grant lets through. Files: `kind` [`GRANT_FILE`], `op`
/// an `OP_*`, `dev`/`ino` the object. Egress: `kind` [`GRANT_NET`], `op` [`PROTO_TCP`] or
/// [`PROTO_UDP`], `family`/`port`/`addr` the destination (IPv4 as [`AF_INET`] in the first
/// four bytes of `addr`). Unused fields are zero: the kernel hashes the key whole.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantKey {
    pub agent_index: u32,
    pub kind: u8,
    pub op: u8,
    /// Host order.
    pub port: u16,
    pub dev: u32,
    pub family: u16,
    pub pad: u16,
    pub ino: u64,
    /// Network order.
    pub addr: [u8; 16],
}

/// `struct secops_grant`: until when (boot clock) and for which ticket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    pub expires_ns: u64,
    pub ticket: u64,
    pub flags: u32,
    pub pad: u32,
}

/// `struct secops_decision_key`, the key of `secops_decisions` (value: `u64`, the denials
/// and escalations reported under this key): per agent cgroup, action slot (`kind *
/// STATS_SUBS + sub`, as in `secops_stats`) and verdict, in one decision epoch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DecisionKey {
    pub cgroup_id: u64,
    pub epoch: u32,
    pub slot: u16,
    pub verdict: u8,
    pub pad: u8,
}

/// `struct secops_grant_body`: an operation that passed because of a grant.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantBody {
    pub key: GrantKey,
    pub ticket: u64,
    pub flags: u32,
    /// Files: the check (`LSM_*`); egress: 0.
    pub lsm_op: u32,
}

/// `union secops_event_body`; `EventHeader::kind` says which member is meant.
#[repr(C)]
#[derive(Clone, Copy)]
pub union EventBody {
    pub exec: ExecBody,
    pub exit: ExitBody,
    pub unlink: UnlinkBody,
    pub rename: RenameBody,
    pub net: NetBody,
    pub lsm: LsmBody,
    pub grant: GrantBody,
}

/// `struct secops_event`: every ring buffer record is exactly one of these.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    pub header: EventHeader,
    pub body: EventBody,
}

const _: () = assert!(size_of::<Config>() == 24);
const _: () = assert!(size_of::<Agent>() == 8);
const _: () = assert!(size_of::<PortRange>() == 8);
const _: () = assert!(size_of::<Egress4Key>() == 12);
const _: () = assert!(size_of::<Egress6Key>() == 24);
const _: () = assert!(size_of::<EgressValue>() == 8 + 8 * MAX_PORT_RANGES);
const _: () = assert!(size_of::<EgressAllowedKey>() == 28);
const _: () = assert!(size_of::<EgressAllowedValue>() == 24);
const _: () = assert!(size_of::<DnsOrigin>() == 24);
const _: () = assert!(size_of::<NameKey>() == 24);
const _: () = assert!(size_of::<NameValue>() == 8 + 16 * MAX_PORT_RANGES);
const _: () = assert!(size_of::<EventHeader>() == 64);
const _: () = assert!(size_of::<RenameBody>() == 16 + 2 * PATH_LEN);
const _: () = assert!(size_of::<InodeKey>() == 16);
const _: () = assert!(size_of::<GrantKey>() == 40);
const _: () = assert!(size_of::<Grant>() == 24);
const _: () = assert!(size_of::<GrantBody>() == 56);
const _: () = assert!(size_of::<InodeRule>() == 3 * FS_OPS + 6 * FS_OPS);
const _: () = assert!(size_of::<LsmBody>() == 72 + NAME_SLOTS * NAME_LEN);
const _: () = assert!(size_of::<EventBody>() == size_of::<RenameBody>());
const _: () = assert!(size_of::<Event>() == 64 + 16 + 2 * PATH_LEN);
const _: () = assert!(size_of::<DecisionKey>() == 16);

/// The one table from what the kernel reports to action types: an event kind
/// (`EVENT_*`) and its sub-kind, which tells one kind's actions apart (an LSM event's
/// `LSM_*` op; a grant use's `OP_*`, or [`STATS_GRANT_NET`] plus its `PROTO_*` bit; a
/// denied destination's `IPPROTO_*`; 0 for the rest). Events are read with it, and lost
/// events, which `secops_stats` counts by the same pair, are audited with it. `None`: a pair
/// no program of this build reports.
///
/// Reads are judged only where a rule protects the file, so an LSM read is `secret:read`;
/// TCP is `net:connect` and every other protocol `net:send` (the egress policy treats all
/// datagrams alike: resolvers only).
pub fn kernel_action(kind: u32, sub: u32) -> Option<crate::CoreAction> {
    use crate::CoreAction as A;
    let file_op = |op: u32| {
        Some(match op as usize {
            OP_DELETE => A::FsDelete,
            OP_RENAME => A::FsRename,
            OP_LINK => A::FsLink,
            OP_TRUNCATE => A::FsTruncate,
            OP_WRITE => A::FsWrite,
            OP_READ => A::SecretRead,
            OP_EXEC => A::ProcExec,
            OP_CONNECT => A::NetConnect,
            _ => return None,
        })
    };
    Some(match (kind, sub) {
        (EVENT_EXEC, 0) => A::ProcExec,
        (EVENT_EXIT, 0) => A::ProcExit,
        (EVENT_UNLINK, 0) => A::FsDelete,
        (EVENT_RENAME, 0) => A::FsRename,
        (EVENT_NET, sub) if sub == u32::from(IPPROTO_TCP) => A::NetConnect,
        (EVENT_NET, _) => A::NetSend,
        (EVENT_LSM, op) => match op {
            LSM_UNLINK | LSM_RMDIR | LSM_RENAME_TARGET => A::FsDelete,
            LSM_RENAME_SOURCE => A::FsRename,
            LSM_LINK => A::FsLink,
            LSM_TRUNCATE => A::FsTruncate,
            LSM_OPEN_WRITE => A::FsWrite,
            LSM_OPEN_READ => A::SecretRead,
            LSM_EXEC | LSM_EXEC_FILELESS | LSM_MMAP_EXEC => A::ProcExec,
            LSM_SOCKET_CREATE => A::NetSend,
            LSM_SOCKET_CONNECT | LSM_UNIX_CONNECT => A::NetConnect,
            LSM_BPF => A::SysBpf,
            LSM_PTRACE => A::ProcPtrace,
            LSM_SIGNAL => A::ProcSignal,
            LSM_CGROUP_WRITE => A::SysCgroup,
            LSM_MOUNT | LSM_UMOUNT | LSM_MOVE_MOUNT | LSM_PIVOT_ROOT => A::SysMount,
            LSM_MODULE_REQUEST | LSM_KERNEL_LOAD => A::SysModule,
            LSM_CHMOD => A::FsChmod,
            LSM_MKDIR | LSM_SYMLINK => A::FsCreate,
            _ => return None,
        },
        (EVENT_GRANT, sub) if sub == STATS_GRANT_NET + u32::from(PROTO_UDP) => A::NetSend,
        (EVENT_GRANT, sub) if sub == STATS_GRANT_NET + u32::from(PROTO_TCP) => A::NetConnect,
        (EVENT_GRANT, op) => return file_op(op),
        _ => return None,
    })
}

/// A grant's sub-kind, as the programs count a lost use of it (see [`kernel_action`]).
pub fn grant_sub(key: &GrantKey) -> u32 {
    if key.kind == GRANT_NET {
        STATS_GRANT_NET + u32::from(key.op)
    } else {
        u32::from(key.op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Category, CoreAction};

    #[test]
    fn every_reported_pair_is_one_kernel_action_and_fits_its_stats_slot() {
        for op in LSM_UNLINK..=LSM_SYMLINK {
            let action = kernel_action(EVENT_LSM, op).expect("every LSM op has an action");
            assert!(action.category().is_kernel_observable(), "{op}: {action:?}");
            assert!((op as usize) < STATS_SUBS, "LSM op {op} fits a stats slot");
        }
        assert_eq!(kernel_action(EVENT_LSM, 0), None);
        assert_eq!(
            kernel_action(EVENT_LSM, LSM_OPEN_READ),
            Some(CoreAction::SecretRead)
        );
        for op in 0..FS_OPS as u32 {
            assert!(
                kernel_action(EVENT_GRANT, op).is_some(),
                "file grant op {op}"
            );
        }
        let udp = GrantKey {
            kind: GRANT_NET,
            op: PROTO_UDP,
            ..GrantKey::default()
        };
        assert_eq!(
            kernel_action(EVENT_GRANT, grant_sub(&udp)),
            Some(CoreAction::NetSend)
        );
        assert!((grant_sub(&udp) as usize) < STATS_SUBS);
        assert_eq!(
            kernel_action(EVENT_NET, u32::from(IPPROTO_UDP)),
            Some(CoreAction::NetSend)
        );
        assert_eq!(
            kernel_action(EVENT_NET, u32::from(IPPROTO_TCP)),
            Some(CoreAction::NetConnect)
        );
        assert!((IPPROTO_UDP as usize) < STATS_SUBS);
        assert_eq!(kernel_action(EVENT_EXEC, 3), None, "exec has no sub-kinds");
        assert_eq!(STATS_LEN, 8 * STATS_SUBS, "every kind has its slots");
        assert_eq!(
            kernel_action(EVENT_EXIT, 0).map(CoreAction::category),
            Some(Category::Proc)
        );
    }
}
