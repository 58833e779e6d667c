/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The kernel <-> daemon contract: every struct and constant that BPF programs and the
 * daemon share. secops-common/src/kernel.rs is the #[repr(C)] mirror of this file, and the
 * layout test (tests/layout.rs) compares the two through alignchecker.bpf.c's BTF, so a
 * change here that is not made there fails the build's tests.
 *
 * Constants are enumerators, not #defines, because enumerators reach BTF and so are
 * checked by the layout test too.
 *
 * Rules for changing this file:
 *  - Only fixed-width types; explicit padding fields, so no layout depends on the compiler.
 *  - Every struct that userspace hashes as a key (egress keys) has no implicit padding:
 *    BPF programs zero them whole before filling them in.
 */
#ifndef SECOPS_H
#define SECOPS_H

#include <linux/types.h>

enum secops_limits {
	/* Port ranges per egress prefix. */
	SECOPS_MAX_PORT_RANGES = 16,
	/* Bytes of a path (or exec filename) copied into an event, NUL included. */
	SECOPS_PATH_LEN = 256,
	/* Bytes of the argv head copied into an exec event (NULs between arguments). */
	SECOPS_ARGV_LEN = 128,
	SECOPS_COMM_LEN = 16,
	/*
	 * secops_stats counts the events the ring buffer had no room for, by what they were
	 * about: index kind * SECOPS_STATS_SUBS + sub, where sub tells the actions of one kind
	 * apart: an LSM event's op (enum secops_lsm_op); a grant use's operation (files: its
	 * enum secops_fs_op; egress: SECOPS_STATS_GRANT_NET + its enum secops_proto_bits); a
	 * denied destination's IPPROTO_*; 0 for the other kinds. The daemon turns each index
	 * into an action type with the same table it reads events with.
	 */
	SECOPS_STATS_SUBS = 32,
	SECOPS_STATS_LEN = 256,
	SECOPS_STATS_GRANT_NET = 16,
	/* File operations judged by the LSM programs (enum secops_fs_op). */
	SECOPS_FS_OPS = 8,
	/* Parent directories an LSM program walks up looking for a rule (the object first). */
	SECOPS_MAX_DEPTH = 40,
	/* Path components an LSM event carries (leaf first), and bytes of each. */
	SECOPS_NAME_SLOTS = 8,
	SECOPS_NAME_LEN = 48,
	/* Counter slots of secops_file_counts: (agent, low-risk rule) pairs; slot 0 is unused. */
	SECOPS_COUNT_SLOTS = 4096,
};

enum secops_event_kind {
	SECOPS_EVENT_EXEC = 1,
	SECOPS_EVENT_EXIT = 2,
	SECOPS_EVENT_UNLINK = 3,
	SECOPS_EVENT_RENAME = 4,
	SECOPS_EVENT_NET = 5,
	SECOPS_EVENT_LSM = 6,
	SECOPS_EVENT_GRANT = 7,
};

enum secops_verdict {
	SECOPS_VERDICT_ALLOW = 0,
	SECOPS_VERDICT_DENY = 1,
	/* Denied now; the daemon opens an approval ticket. */
	SECOPS_VERDICT_ESCALATE = 2,
};

/* secops_agent.flags */
enum secops_agent_flags {
	/* Judge this agent's connect/sendmsg against its egress tries. Clear: not judged. */
	SECOPS_AGENT_EGRESS_ENFORCED = 1,
};

/* secops_agent.autonomy: the policy's autonomy level, for the LSM layer (issue 4). */
enum secops_autonomy {
	SECOPS_AUTONOMY_FULL = 0,
	SECOPS_AUTONOMY_SEMI = 1,
	SECOPS_AUTONOMY_SUPERVISED = 2,
	SECOPS_AUTONOMY_LOCKED = 3,
};

/* secops_port_range.protocols */
enum secops_proto_bits {
	SECOPS_PROTO_TCP = 1,
	SECOPS_PROTO_UDP = 2,
};

/* Address families and IP protocols, as the kernel numbers them (AF_*, IPPROTO_*). */
enum secops_net_numbers {
	SECOPS_AF_INET = 2,
	SECOPS_AF_INET6 = 10,
	SECOPS_IPPROTO_TCP = 6,
	SECOPS_IPPROTO_UDP = 17,
	/* DNS: every agent packet and connect to this port goes to the daemon's resolver. */
	SECOPS_DNS_PORT = 53,
};

/* secops_net_body.kind: which hook saw the destination. */
enum secops_net_kind {
	SECOPS_NET_CONNECT = 1,
	SECOPS_NET_SENDMSG = 2,
};

/* secops_net_body.reason: why a destination was denied. */
enum secops_net_reason {
	/* Not in the allowlist, no name resolved to it for the agent, no grant. */
	SECOPS_NET_UNLISTED = 0,
	/* A DNS listener of the daemon: agents reach it only through their port-53 redirect. */
	SECOPS_NET_DNS_LISTENER = 1,
};

/*
 * File operations, as indexes into secops_inode_rule's verdict arrays. A hook maps to one
 * (renaming over an existing file is DELETE of the file replaced).
 */
enum secops_fs_op {
	SECOPS_OP_DELETE = 0,
	SECOPS_OP_RENAME = 1,
	SECOPS_OP_LINK = 2,
	SECOPS_OP_TRUNCATE = 3,
	SECOPS_OP_WRITE = 4,
	SECOPS_OP_READ = 5,
	SECOPS_OP_EXEC = 6,
	SECOPS_OP_CONNECT = 7, /* AF_UNIX connect to a socket file */
};

/*
 * secops_inode_rule verdict codes. NONE: no verdict (only in unused slots). ALLOW_COUNTED:
 * allowed, and where allowed operations are reported (deletes, renames) counted in
 * secops_file_counts instead of one event each: the daemon gives it for low-risk rules.
 */
enum secops_rule_verdict {
	SECOPS_RULE_NONE = 0,
	SECOPS_RULE_ALLOW = 1,
	SECOPS_RULE_DENY = 2,
	SECOPS_RULE_ESCALATE = 3,
	SECOPS_RULE_ALLOW_COUNTED = 4,
};

/* What an LSM event is about: the hook, and for files which check of it. */
enum secops_lsm_op {
	SECOPS_LSM_UNLINK = 1,
	SECOPS_LSM_RMDIR = 2,
	SECOPS_LSM_RENAME_SOURCE = 3,
	SECOPS_LSM_RENAME_TARGET = 4, /* the file a rename would replace */
	SECOPS_LSM_LINK = 5,
	SECOPS_LSM_TRUNCATE = 6,
	SECOPS_LSM_OPEN_WRITE = 7,
	SECOPS_LSM_OPEN_READ = 8,
	SECOPS_LSM_EXEC = 9,
	SECOPS_LSM_EXEC_FILELESS = 10, /* memfd or deleted file */
	SECOPS_LSM_MMAP_EXEC = 11, /* a denied binary mapped executable (ld.so) */
	SECOPS_LSM_SOCKET_CREATE = 12, /* raw or packet socket */
	SECOPS_LSM_SOCKET_CONNECT = 13, /* AF_INET/6 outside the allowlist */
	SECOPS_LSM_UNIX_CONNECT = 14,
	SECOPS_LSM_BPF = 15,
	SECOPS_LSM_PTRACE = 16,
	SECOPS_LSM_SIGNAL = 17,
	SECOPS_LSM_CGROUP_WRITE = 18,
	SECOPS_LSM_MOUNT = 19, /* mount(2), a remount or bind mount included */
	SECOPS_LSM_UMOUNT = 20,
	SECOPS_LSM_MOVE_MOUNT = 21, /* move_mount(2): how fsmount/open_tree mounts attach */
	SECOPS_LSM_PIVOT_ROOT = 22,
	SECOPS_LSM_MODULE_REQUEST = 23, /* request_module: autoloading by name */
	SECOPS_LSM_KERNEL_LOAD = 24, /* a file or buffer read into the kernel (modules, ...) */
	SECOPS_LSM_CHMOD = 25,
	SECOPS_LSM_MKDIR = 26,
	SECOPS_LSM_SYMLINK = 27,
};

/* secops_grant_key.kind */
enum secops_grant_kind {
	SECOPS_GRANT_FILE = 1,
	SECOPS_GRANT_NET = 2,
};

/* secops_grant.flags */
enum secops_grant_flags {
	/* Used once, then gone: the check that lets the operation through deletes the entry. */
	SECOPS_GRANT_ONE_SHOT = 1,
};

/* ARRAY secops_config, one entry, written by the daemon. */
struct secops_config {
	/* cgroup id of the secops root cgroup (agent cgroups are its children). */
	__u64 root_cgroup_id;
	/* cgroup2 level of agent cgroups; 0 means "not configured": programs ignore everyone. */
	__u32 agent_level;
	__u32 flags;
	/*
	 * The daemon's decision epoch (see struct secops_decision_key); 0: denials are not
	 * counted. Each daemon start begins a new one.
	 */
	__u32 decision_epoch;
	__u32 pad;
};

/*
 * LRU_HASH secops_cgroup_ancestors, value __u64: the id of `cgroup_id`'s ancestor at
 * `level` (itself at its own level), 0 when the cgroup is not that deep. Only kernels
 * whose tracing programs lack bpf_get_current_ancestor_cgroup_id fill it (see ancestry.h).
 * An entry never goes stale: a cgroup's ancestors never change and cgroup ids are never
 * reused; the level is in the key because the daemon sets agent_level.
 */
struct secops_ancestor_key {
	__u64 cgroup_id;
	__u32 level;
	__u32 pad;
};

/* HASH secops_agents: key __u64 cgroup id of an agent cgroup. */
struct secops_agent {
	__u32 agent_index;
	__u8 autonomy;
	__u8 flags;
	/*
	 * Host order. Non-zero: this agent's DNS is secops': the egress programs send its
	 * port-53 packets and connects to the daemon's listener for this agent on this port of
	 * 127.0.0.1 (and [::1] for IPv6 destinations), UDP and TCP. The listener knows the agent
	 * by the port it was reached on. 0: not redirected.
	 */
	__u16 dns_port;
};

struct secops_port_range {
	__u16 lo;
	__u16 hi;
	__u8 protocols;
	__u8 pad[3];
};

/*
 * LPM_TRIE secops_egress4 / secops_egress6. prefixlen counts the 32 bits of agent_index
 * plus the address prefix, so every entry belongs to exactly one agent. The trie returns
 * only the longest match: the daemon copies each prefix's ranges into every more specific
 * entry of the same agent, and the kernel checks the longest match alone.
 */
struct secops_egress4_key {
	__u32 prefixlen;
	__u32 agent_index;
	__u8 addr[4];
};

struct secops_egress6_key {
	__u32 prefixlen;
	__u32 agent_index;
	__u8 addr[16];
};

struct secops_egress_value {
	__u32 n_ranges;
	__u32 pad;
	struct secops_port_range ranges[SECOPS_MAX_PORT_RANGES];
};

/*
 * LRU_HASH secops_egress_allowed: allowed destinations, aggregated. The daemon drains it
 * (lookup-and-delete) to audit allowed connections without one record per packet.
 * IPv4 (and IPv4-mapped IPv6) destinations have family SECOPS_AF_INET and the address in
 * addr[0..4].
 */
struct secops_egress_allowed_key {
	__u32 agent_index;
	__u16 family;
	__u16 protocol;
	__u16 port; /* host order */
	__u16 pad;
	__u8 addr[16];
};

struct secops_egress_allowed_value {
	__u64 count;
	__u64 first_ns; /* bpf_ktime_get_boot_ns() */
	__u64 last_ns;
};

/*
 * HASH secops_dns_listeners: key __u16, a port (host order) the daemon's DNS listeners use
 * on 127.0.0.1 and [::1]; value __u32, the agent index it answers for. An agent that
 * addresses another agent's listener is denied, so no agent can speak as another (its own
 * listener is itself, whichever way it is reached).
 */

/*
 * LRU_HASH secops_dns_origins: key __u64 socket cookie of an agent's UDP socket whose DNS was
 * redirected; the server it addressed, so recvmsg4/6 can show the answer as coming from there
 * (a connected UDP socket's resolver library checks the source of the reply).
 */
struct secops_dns_origin {
	__u16 family; /* SECOPS_AF_INET (IPv4 in addr[0..4]) or SECOPS_AF_INET6 */
	__u16 port; /* network order */
	__u32 pad;
	__u8 addr[16]; /* network order */
};

/*
 * HASH secops_egress_names: an address that a name the agent's allowlist allows resolved to,
 * in an answer the daemon's resolver gave that agent. It allows the name's ports, each range
 * until its own expiry on the boot clock (the answer's TTL, clamped): the kernel checks the
 * expiry itself, so an address nobody looked up again stops being allowed with no daemon
 * involved. Connections made before stay open. IPv4 (and IPv4-mapped) as SECOPS_AF_INET with
 * the address in addr[0..4]; unused bytes zero (the key is hashed whole).
 */
struct secops_name_key {
	__u32 agent_index;
	__u16 family;
	__u16 pad;
	__u8 addr[16];
};

struct secops_name_value {
	__u32 n_ranges;
	__u32 pad;
	struct secops_port_range ranges[SECOPS_MAX_PORT_RANGES];
	__u64 expires_ns[SECOPS_MAX_PORT_RANGES]; /* bpf_ktime_get_boot_ns(), per range */
};

/*
 * HASH secops_inodes: the policy compiled to file objects, per agent. The programs walk from
 * the object up its parent directories (crossing mounts) and the first entry with a verdict
 * for the operation decides: `own` on the object itself, `child` one level above it,
 * `deep` further up. Key {agent, 0, 0} holds the agent's fallbacks: `deep` when the walk
 * reaches the root without a verdict, `own[SECOPS_OP_EXEC]` for fileless execs.
 * dev is the kernel's encoding (major << 20 | minor).
 */
struct secops_inode_key {
	__u32 agent_index;
	__u32 dev;
	__u64 ino;
};

struct secops_inode_rule {
	__u8 own[SECOPS_FS_OPS]; /* enum secops_rule_verdict; for the object itself */
	__u8 child[SECOPS_FS_OPS];
	__u8 deep[SECOPS_FS_OPS];
	/* Rule index + 1 behind each verdict (0: none or a built-in rule); for
	 * SECOPS_RULE_ALLOW_COUNTED, the counter slot in secops_file_counts. */
	__u16 own_rule[SECOPS_FS_OPS];
	__u16 child_rule[SECOPS_FS_OPS];
	__u16 deep_rule[SECOPS_FS_OPS];
};

/*
 * HASH secops_decisions, value __u64: the denials and escalations the programs reported,
 * counted when the event got its place in the ring buffer (one that found the ring full is
 * counted in secops_stats instead), per agent cgroup, action (`slot`: kind *
 * SECOPS_STATS_SUBS + sub, as in secops_stats) and verdict, within a decision epoch. The
 * counters are never reset by the programs: after a crash the next daemon starts a new
 * epoch, waits until no program can still count in the old one, and audits what the old
 * epoch counted and the log does not account for as lost, exactly and by type. A cgroup id
 * is never reused, so an agent re-registered in a new cgroup starts from nothing.
 */
struct secops_decision_key {
	__u64 cgroup_id;
	__u32 epoch;
	__u16 slot;
	__u8 verdict; /* enum secops_verdict */
	__u8 pad;
};

/* HASH secops_protected_pids: tgids agents may not signal or ptrace (the daemon). */

/*
 * ARRAY secops_file_counts (mmapable): allowed operations counted, not reported one by one
 * (SECOPS_RULE_ALLOW_COUNTED), one __u64 at [slot * SECOPS_FS_OPS + op]. For that verdict the
 * entry's rule field holds a counter slot, not a rule: the daemon gives each (agent,
 * low-risk rule) pair its own slot, and drains the counters by swapping them to zero through
 * its mapping of the array. An array element is found without hashing: this is the cost
 * of every workspace delete.
 */

/*
 * HASH secops_grants: a human's approval as the kernel checks it. An operation the policy
 * denies or escalates passes when an entry for exactly this agent, object and operation
 * exists and bpf_ktime_get_boot_ns() < expires_ns; after that it is denied again with no
 * daemon involved (the daemon only sweeps dead entries). Files: kind FILE, op an enum
 * secops_fs_op, dev/ino the object (dev as in secops_inode_key). Egress: kind NET, op
 * SECOPS_PROTO_TCP or _UDP, family/port/addr the destination (IPv4 and IPv4-mapped IPv6 as
 * SECOPS_AF_INET with the address in addr[0..4]). Unused fields are zero.
 */
struct secops_grant_key {
	__u32 agent_index;
	__u8 kind; /* enum secops_grant_kind */
	__u8 op;
	__u16 port; /* host order */
	__u32 dev;
	__u16 family;
	__u16 pad;
	__u64 ino;
	__u8 addr[16]; /* network order */
};

struct secops_grant {
	__u64 expires_ns; /* bpf_ktime_get_boot_ns() */
	__u64 ticket; /* the approval ticket, for the audit record of each use */
	__u32 flags; /* enum secops_grant_flags */
	__u32 pad;
};

/* RINGBUF secops_events carries struct secops_event, always whole. */
struct secops_event_header {
	__u32 kind; /* enum secops_event_kind */
	__u32 agent_index;
	__u64 cgroup_id; /* the agent cgroup (not the task's own, deeper, cgroup) */
	__u64 ts_boot_ns;
	__u32 pid; /* thread id */
	__u32 tgid; /* process id */
	__u32 uid;
	__u32 verdict; /* enum secops_verdict */
	char comm[SECOPS_COMM_LEN];
	/* Where this denial was counted (struct secops_decision_key); epoch 0: not counted. */
	__u32 decision_epoch;
	__u16 decision_slot;
	__u16 pad;
};

/* sched_process_exec: the new program. */
struct secops_exec_body {
	char filename[SECOPS_PATH_LEN]; /* as passed to execve (may be relative) */
	char argv[SECOPS_ARGV_LEN]; /* argv head, NUL between arguments */
	__u32 argv_len; /* bytes of argv that are valid */
	__u32 args_size; /* bytes of the whole argv; > argv_len means truncated */
};

/* sched_process_exit of the last thread of a process. */
struct secops_exit_body {
	__u32 exit_code; /* wait(2) status: (code << 8) | signal */
	__u32 pad;
};

/* sys_enter_unlinkat / unlink / rmdir: an attempt; path relative to dfd as given. */
struct secops_unlink_body {
	__s32 dfd; /* AT_FDCWD (-100) for unlink and rmdir */
	__u32 flags; /* AT_REMOVEDIR (0x200) for rmdir */
	char path[SECOPS_PATH_LEN];
};

/* sys_enter_renameat2 / renameat / rename: an attempt. */
struct secops_rename_body {
	__s32 olddfd;
	__s32 newdfd;
	__u32 flags;
	__u32 pad;
	char oldpath[SECOPS_PATH_LEN];
	char newpath[SECOPS_PATH_LEN];
};

/* cgroup connect4/6, sendmsg4/6: a denied destination. */
struct secops_net_body {
	__u16 family; /* SECOPS_AF_INET (also IPv4-mapped IPv6) or SECOPS_AF_INET6 */
	__u16 protocol; /* IPPROTO_* of the socket */
	__u16 port; /* host order */
	__u8 kind; /* enum secops_net_kind */
	__u8 reason; /* enum secops_net_reason */
	__u8 addr[16]; /* network order; IPv4 in addr[0..4] */
};

/*
 * An LSM program's denial. Files: the object, the entry that decided (anchor; {0, 0} when a
 * fallback did) and up to SECOPS_NAME_SLOTS names from the object up (names[0] is the
 * object's), so the daemon can rebuild the path below the anchor. Sockets: family, type,
 * protocol, port and addr. ptrace and signals: target_pid and signal.
 */
struct secops_lsm_body {
	__u32 op; /* enum secops_lsm_op */
	__u32 rule; /* rule index + 1; 0: a built-in rule */
	__u32 dev;
	__u32 anchor_dev;
	__u64 ino;
	__u64 anchor_ino;
	__u32 depth; /* levels from the object up to the anchor */
	__u32 n_names; /* names[] entries filled */
	__u32 target_pid;
	__u32 signal;
	__u16 family;
	__u16 sock_type;
	__u16 protocol;
	__u16 port; /* host order */
	__u8 addr[16];
	char names[SECOPS_NAME_SLOTS][SECOPS_NAME_LEN];
};

/* An operation that passed only because of a grant: one event per use. */
struct secops_grant_body {
	struct secops_grant_key key;
	__u64 ticket;
	__u32 flags; /* the grant's */
	__u32 lsm_op; /* files: the check (enum secops_lsm_op); egress: 0 */
};

union secops_event_body {
	struct secops_exec_body exec;
	struct secops_exit_body exit;
	struct secops_unlink_body unlink;
	struct secops_rename_body rename;
	struct secops_net_body net;
	struct secops_lsm_body lsm;
	struct secops_grant_body grant;
};

struct secops_event {
	struct secops_event_header header;
	union secops_event_body body;
};

#endif /* SECOPS_H */
