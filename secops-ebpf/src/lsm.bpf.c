// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Synchronous enforcement with BPF LSM: every hook first finds the task's agent and
 * returns the previous verdict unchanged for everyone else, so with an empty agents map
 * nothing on the machine is affected.
 *
 * Files are judged by (dev, inode), never by path strings: the daemon compiles the policy
 * into secops_inodes entries (its anchors: the directories rules name, every mount root,
 * and the existing files whose verdict differs from their directory's), and a program walks
 * from the object up its d_parent chain to the nearest entry. Every entry is final: the
 * daemon computed it with the whole rule set, so "no rule" there already means allow. A
 * file created inside a protected directory later is found by the walk; a hardlink or a
 * rename keeps the inode, and with it its own entry.
 *
 * A denial returns -EPERM and reports an event (SECOPS_EVENT_LSM, or SECOPS_EVENT_NET for
 * a connect) with the rule behind it; an `escalate` verdict is a denial now that asks the
 * daemon for an approval ticket.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "vmlinux_min.h"
#include "egress.h"

#define EPERM 1

#define FMODE_READ 0x1
#define FMODE_WRITE 0x2
#define PROT_EXEC 0x4

#define AF_INET 2
#define AF_INET6 10
#define AF_PACKET 17
#define SOCK_TYPE_MASK 0xf
#define SOCK_RAW 3
#define SOCK_PACKET 10

#define CGROUP_SUPER_MAGIC 0x27e0eb
#define CGROUP2_SUPER_MAGIC 0x63677270

#define MAX_ERRNO 4095

/*
 * What an LSM program returns must be provably 0 or an errno ([-4095, 0]): kernels from
 * 6.12.117 on refuse the program otherwise. Two kinds of value are not provable as written:
 *
 * - the previous program's verdict (the hook's last argument), an arbitrary u64 to the
 *   verifier: lsm_verdict() bounds it (sign-extended behind a barrier, so clang keeps the
 *   check), and anything out of range (no kernel passes that) is a denial;
 * - `denied ? -EPERM : 0`, which clang computes as a NEG whose range older verifiers do not
 *   track: eperm_if() makes the choice a branch between two constants, in asm so that clang
 *   cannot turn it back into arithmetic.
 *
 * Every other return is a constant. Both run only where needed: a task outside every agent
 * pays for neither (the overhead target outside agents is 1.05x).
 */
static __always_inline int lsm_verdict(int verdict)
{
	long ret = verdict;
	asm volatile("" : "+r"(ret));
	if (ret > 0 || ret < -MAX_ERRNO)
		return -EPERM;
	return (int)ret;
}

_Static_assert(EPERM == 1, "eperm_if returns -1 for -EPERM");

static __always_inline int eperm_if(bool denied)
{
	int ret;
	int cond = denied;
	asm volatile("%[ret] = 0;"
		     "if %[cond] == 0 goto +1;"
		     "%[ret] = -1;" /* -EPERM */
		     : [ret] "=&r"(ret)
		     : [cond] "r"(cond));
	return ret;
}

/* A walk's answer: the verdict, the rule behind it, and where it was found. */
struct decision {
	__u32 verdict; /* enum secops_rule_verdict */
	__u32 rule;
	__u32 depth;
	__u32 anchor_dev;
	__u64 anchor_ino;
};

/* Only what the programs need of the sockaddr the kernel copied in from the caller. */
struct inet_addr {
	__u16 family;
	__u16 port; /* network order */
	union {
		__u32 v4;
		struct {
			__u32 flowinfo;
			__u32 v6[4];
		};
	};
};

static __always_inline __u32 pick(const struct secops_inode_rule *r, __u32 depth, __u32 op,
				  __u32 *rule)
{
	op &= SECOPS_FS_OPS - 1;
	if (depth == 0) {
		*rule = r->own_rule[op];
		return r->own[op];
	}
	if (depth == 1) {
		*rule = r->child_rule[op];
		return r->child[op];
	}
	*rule = r->deep_rule[op];
	return r->deep[op];
}

/*
 * The nearest entry from `dentry` up. A negative dentry (a name about to be created) has no
 * inode: its parent directory is then the first level, and judges it as a child.
 */
static __noinline void decide(__u32 agent_index, struct dentry *dentry, __u32 op,
			      struct decision *d)
{
	struct secops_inode_key key = { .agent_index = agent_index };
	const struct secops_inode_rule *r;

	for (__u32 depth = 0; depth < SECOPS_MAX_DEPTH; depth++) {
		struct inode *inode = dentry->d_inode;
		if (inode) {
			key.dev = inode->i_sb->s_dev;
			key.ino = inode->i_ino;
			r = bpf_map_lookup_elem(&secops_inodes, &key);
			if (r) {
				d->verdict = pick(r, depth, op, &d->rule);
				d->depth = depth;
				d->anchor_dev = key.dev;
				d->anchor_ino = key.ino;
				return;
			}
		}
		struct dentry *parent = dentry->d_parent;
		if (!parent || parent == dentry) {
			/* The root of a filesystem no entry covers (pipes, memfds, ...). */
			key.dev = 0;
			key.ino = 0;
			r = bpf_map_lookup_elem(&secops_inodes, &key);
			d->verdict = r ? pick(r, 2, op, &d->rule) : SECOPS_RULE_ALLOW;
			d->depth = depth;
			d->anchor_dev = 0;
			d->anchor_ino = 0;
			return;
		}
		dentry = parent;
	}
	/* Deeper than the walk may go: fail closed. */
	d->verdict = SECOPS_RULE_DENY;
	d->rule = 0;
	d->depth = SECOPS_MAX_DEPTH;
	d->anchor_dev = 0;
	d->anchor_ino = 0;
}

static __always_inline bool denies(__u32 verdict)
{
	return verdict == SECOPS_RULE_DENY || verdict == SECOPS_RULE_ESCALATE;
}

static __always_inline __u32 event_verdict(__u32 rule_verdict)
{
	return rule_verdict == SECOPS_RULE_ESCALATE ? SECOPS_VERDICT_ESCALATE
						    : SECOPS_VERDICT_DENY;
}

/*
 * The object's name and its parents' (leaf first), for the audit record's path: `max`
 * names, as many as lie between the object and the entry that decided (whose path the
 * daemon knows), or all slots when no entry did.
 */
static __noinline void fill_names(struct secops_lsm_body *body, struct dentry *dentry,
				  __u32 max)
{
	__u32 n = 0;
	for (__u32 i = 0; i < SECOPS_NAME_SLOTS; i++) {
		if (!dentry || i >= max)
			break;
		const unsigned char *name = dentry->d_name.name;
		if (bpf_probe_read_kernel_str(body->names[i], SECOPS_NAME_LEN, name) < 0)
			break;
		n = i + 1;
		struct dentry *parent = dentry->d_parent;
		if (parent == dentry)
			break;
		dentry = parent;
	}
	body->n_names = n;
}

/*
 * An allowed operation of a low-risk rule: counted, reported in aggregate by the daemon.
 * `slot` is the entry's counter slot (see struct secops_inode_rule). No timestamps: the
 * daemon knows the window between two drains, and a clock read per delete would cost more
 * than the count.
 */
static __always_inline void count_allowed_file(__u32 slot, __u32 op)
{
	__u32 index = (slot % SECOPS_COUNT_SLOTS) * SECOPS_FS_OPS + (op & (SECOPS_FS_OPS - 1));
	__u64 *count = bpf_map_lookup_elem(&secops_file_counts, &index);
	if (count)
		__sync_fetch_and_add(count, 1);
}

static __always_inline struct secops_event *lsm_event(const struct secops_agent *agent,
						      __u64 agent_cgroup, __u32 verdict,
						      __u32 op, __u32 rule)
{
	struct secops_event *ev =
		secops_event_start(SECOPS_EVENT_LSM, op, agent, agent_cgroup, verdict);
	if (ev) {
		ev->body.lsm.op = op;
		ev->body.lsm.rule = rule;
	}
	return ev;
}

/*
 * Judges `op` on `dentry` for the current agent: 0 to allow, -EPERM to deny. A denial is
 * reported; so is an allowed delete or rename (REPORT_ALLOWED), which is how the audit
 * log sees destruction when these programs, not the syscall tracepoints, are attached.
 * `check` is CHECK(operation, the hook's check named in the event, flags).
 */
#define REPORT_ALLOWED 0x10000
/* A check on the way to the one that lets the operation through: grants are looked at, not used. */
#define LOOK_ONLY 0x20000
/* BPF functions take at most five arguments: the operation, the check and the flag share one. */
#define CHECK(op, lsm_op, flags) ((op) | ((lsm_op) << 8) | (flags))
#define CHECK_OP(check) ((check) & 0xff)
#define CHECK_LSM_OP(check) (((check) >> 8) & 0xff)

/* A human's approval of exactly this operation on exactly this file (dev, inode). */
static __always_inline bool file_granted(const struct secops_agent *agent, __u64 agent_cgroup,
					 __u32 dev, __u64 ino, __u32 check)
{
	struct secops_grant_key key;
	__builtin_memset(&key, 0, sizeof(key)); /* the key is hashed whole, padding too */
	key.agent_index = agent->agent_index;
	key.kind = SECOPS_GRANT_FILE;
	key.op = (__u8)CHECK_OP(check);
	key.dev = dev;
	key.ino = ino;
	return secops_granted(agent, agent_cgroup, &key, CHECK_LSM_OP(check),
			      !(check & LOOK_ONLY));
}

static __noinline int judge_file(const struct secops_agent *agent, __u64 agent_cgroup,
				 struct dentry *dentry, __u32 check)
{
	__u32 op = CHECK_OP(check);
	__u32 lsm_op = CHECK_LSM_OP(check);
	bool report_allowed = check & REPORT_ALLOWED;
	struct decision d = {};
	decide(agent->agent_index, dentry, op, &d);
	bool denied = denies(d.verdict);
	struct inode *object = dentry->d_inode;
	if (denied && object &&
	    file_granted(agent, agent_cgroup, object->i_sb->s_dev, object->i_ino, check))
		return 0;
	if (!denied && !report_allowed)
		return 0;
	if (d.verdict == SECOPS_RULE_ALLOW_COUNTED) {
		count_allowed_file(d.rule, op);
		return 0;
	}
	struct secops_event *ev = lsm_event(
		agent, agent_cgroup, denied ? event_verdict(d.verdict) : SECOPS_VERDICT_ALLOW,
		lsm_op, d.rule);
	if (ev) {
		if (object) {
			ev->body.lsm.dev = object->i_sb->s_dev;
			ev->body.lsm.ino = object->i_ino;
		}
		ev->body.lsm.anchor_dev = d.anchor_dev;
		ev->body.lsm.anchor_ino = d.anchor_ino;
		ev->body.lsm.depth = d.depth;
		fill_names(&ev->body.lsm, dentry, d.anchor_ino ? d.depth : SECOPS_NAME_SLOTS);
		bpf_ringbuf_submit(ev, 0);
	}
	return eperm_if(denied);
}

/*
 * Judges `check`'s operation by the object's own entry alone (no walk): for checks where a
 * directory's verdict does not apply. The daemon knows the entry's path, so the event
 * carries no names.
 */
static __always_inline int judge_own(const struct secops_agent *agent, __u64 agent_cgroup,
				     const struct secops_inode_key *key, __u32 check)
{
	const struct secops_inode_rule *r = bpf_map_lookup_elem(&secops_inodes, key);
	if (!r)
		return 0;
	__u32 rule = 0;
	__u32 verdict = pick(r, 0, CHECK_OP(check), &rule);
	if (!denies(verdict))
		return 0;
	if (file_granted(agent, agent_cgroup, key->dev, key->ino, check))
		return 0;
	struct secops_event *ev = lsm_event(agent, agent_cgroup, event_verdict(verdict),
					    CHECK_LSM_OP(check), rule);
	if (ev) {
		ev->body.lsm.dev = key->dev;
		ev->body.lsm.ino = key->ino;
		ev->body.lsm.anchor_dev = key->dev;
		ev->body.lsm.anchor_ino = key->ino;
		bpf_ringbuf_submit(ev, 0);
	}
	return -EPERM;
}

/* A denial that is not about a file: a built-in self-protection rule (rule 0). */
static __always_inline int deny_other(const struct secops_agent *agent, __u64 agent_cgroup,
				      __u32 lsm_op, __u32 target_pid, __u32 signal)
{
	struct secops_event *ev = lsm_event(agent, agent_cgroup, SECOPS_VERDICT_DENY, lsm_op, 0);
	if (ev) {
		ev->body.lsm.target_pid = target_pid;
		ev->body.lsm.signal = signal;
		bpf_ringbuf_submit(ev, 0);
	}
	return -EPERM;
}

/*
 * The start of every program: a verdict an earlier BPF LSM program gave stands; a task
 * outside every agent is let through at once.
 */
#define AGENT_OR_PASS(previous)                                                              \
	int previous_verdict = (previous);                                                   \
	if (previous_verdict)                                                                \
		return lsm_verdict(previous_verdict);                                        \
	__u64 agent_cgroup = 0;                                                              \
	const struct secops_agent *agent = secops_current_agent(&agent_cgroup);             \
	if (!agent)                                                                          \
		return 0

/* int path_unlink(const struct path *dir, struct dentry *dentry) */
SEC("lsm/path_unlink")
int secops_lsm_unlink(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[2]);
	return judge_file(agent, agent_cgroup, (struct dentry *)ctx[1],
			  CHECK(SECOPS_OP_DELETE, SECOPS_LSM_UNLINK, REPORT_ALLOWED));
}

/* int path_rmdir(const struct path *dir, struct dentry *dentry) */
SEC("lsm/path_rmdir")
int secops_lsm_rmdir(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[2]);
	return judge_file(agent, agent_cgroup, (struct dentry *)ctx[1],
			  CHECK(SECOPS_OP_DELETE, SECOPS_LSM_RMDIR, REPORT_ALLOWED));
}

/*
 * int path_rename(const struct path *old_dir, struct dentry *old_dentry,
 *                 const struct path *new_dir, struct dentry *new_dentry[, unsigned int flags])
 * The flags argument (and so the position of the previous verdict) depends on the kernel,
 * so it is not read: renaming over an existing file is judged as deleting that file and as
 * renaming it (RENAME_EXCHANGE moves it), and a new name is judged as a write into its
 * directory.
 */
SEC("lsm/path_rename")
int secops_lsm_rename(unsigned long long *ctx)
{
	AGENT_OR_PASS(0);
	struct dentry *old_dentry = (struct dentry *)ctx[1];
	struct dentry *new_dentry = (struct dentry *)ctx[3];
	/* Targets first: an allowed rename is reported once, as its source. */
	int err;
	if (new_dentry->d_inode) {
		err = judge_file(agent, agent_cgroup, new_dentry,
				  CHECK(SECOPS_OP_DELETE, SECOPS_LSM_RENAME_TARGET, 0));
		if (err)
			return err;
		err = judge_file(agent, agent_cgroup, new_dentry,
				  CHECK(SECOPS_OP_RENAME, SECOPS_LSM_RENAME_TARGET, 0));
	} else {
		err = judge_file(agent, agent_cgroup, new_dentry,
				  CHECK(SECOPS_OP_WRITE, SECOPS_LSM_RENAME_TARGET, 0));
	}
	if (err)
		return err;
	return judge_file(agent, agent_cgroup, old_dentry,
			  CHECK(SECOPS_OP_RENAME, SECOPS_LSM_RENAME_SOURCE, REPORT_ALLOWED));
}

/* int path_link(struct dentry *old_dentry, const struct path *new_dir, struct dentry *new_dentry) */
SEC("lsm/path_link")
int secops_lsm_link(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[3]);
	int err = judge_file(agent, agent_cgroup, (struct dentry *)ctx[0],
			  CHECK(SECOPS_OP_LINK, SECOPS_LSM_LINK, 0));
	if (err)
		return err;
	return judge_file(agent, agent_cgroup, (struct dentry *)ctx[2],
			  CHECK(SECOPS_OP_WRITE, SECOPS_LSM_LINK, 0));
}

/* int path_truncate(const struct path *path): truncate(2), ftruncate(2) and O_TRUNC. */
SEC("lsm/path_truncate")
int secops_lsm_truncate(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[1]);
	const struct path *path = (const struct path *)ctx[0];
	struct dentry *dentry = path->dentry;
	if (!dentry)
		return 0; /* no file: nothing to truncate */
	return judge_file(agent, agent_cgroup, dentry,
			  CHECK(SECOPS_OP_TRUNCATE, SECOPS_LSM_TRUNCATE, 0));
}

/*
 * int path_mknod(const struct path *dir, struct dentry *dentry, umode_t mode, unsigned int dev)
 * open(O_CREAT) of a new name comes here before the file exists.
 */
SEC("lsm/path_mknod")
int secops_lsm_mknod(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[4]);
	return judge_file(agent, agent_cgroup, (struct dentry *)ctx[1],
			  CHECK(SECOPS_OP_WRITE, SECOPS_LSM_OPEN_WRITE, 0));
}

/* int file_open(struct file *file) */
SEC("lsm/file_open")
int secops_lsm_file_open(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[1]);
	struct file *file = (struct file *)ctx[0];
	struct dentry *dentry = file->f_path.dentry;
	struct inode *inode = file->f_inode;
	unsigned int mode = file->f_mode;
	if (!dentry || !inode)
		return 0; /* not a file with a name (the kernel opens none such through here) */

	/* Agents stay in their cgroup: no writes to any cgroup file (cgroup.procs, ...). */
	if (mode & FMODE_WRITE) {
		unsigned long magic = inode->i_sb->s_magic;
		if (magic == CGROUP2_SUPER_MAGIC || magic == CGROUP_SUPER_MAGIC) {
			struct secops_event *ev = lsm_event(agent, agent_cgroup, SECOPS_VERDICT_DENY,
							    SECOPS_LSM_CGROUP_WRITE, 0);
			if (ev) {
				fill_names(&ev->body.lsm, dentry, SECOPS_NAME_SLOTS);
				bpf_ringbuf_submit(ev, 0);
			}
			return -EPERM;
		}
		int err = judge_file(agent, agent_cgroup, dentry,
				  CHECK(SECOPS_OP_WRITE, SECOPS_LSM_OPEN_WRITE, 0));
		if (err)
			return err;
	}
	if (mode & FMODE_READ)
		return judge_file(agent, agent_cgroup, dentry,
				  CHECK(SECOPS_OP_READ, SECOPS_LSM_OPEN_READ, 0));
	return 0;
}

/* The agent's verdict for executing a file that has no name: a memfd or a deleted file. */
static __always_inline int judge_fileless(const struct secops_agent *agent, __u64 agent_cgroup,
					  struct dentry *dentry)
{
	struct secops_inode_key key = { .agent_index = agent->agent_index };
	const struct secops_inode_rule *r = bpf_map_lookup_elem(&secops_inodes, &key);
	__u32 rule = 0;
	__u32 verdict = r ? pick(r, 0, SECOPS_OP_EXEC, &rule) : SECOPS_RULE_DENY;
	if (!denies(verdict))
		return 0;
	struct secops_event *ev = lsm_event(agent, agent_cgroup, event_verdict(verdict),
					    SECOPS_LSM_EXEC_FILELESS, rule);
	if (ev) {
		fill_names(&ev->body.lsm, dentry, SECOPS_NAME_SLOTS);
		bpf_ringbuf_submit(ev, 0);
	}
	return -EPERM;
}

/* int bprm_check_security(struct linux_binprm *bprm) */
SEC("lsm/bprm_check_security")
int secops_lsm_exec(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[1]);
	struct linux_binprm *bprm = (struct linux_binprm *)ctx[0];
	struct file *file = bprm->file;
	if (!file)
		return -EPERM; /* nothing to judge the exec by: fail closed */
	struct dentry *dentry = file->f_path.dentry;
	struct inode *inode = file->f_inode;
	if (!dentry || !inode || inode->i_nlink == 0)
		return judge_fileless(agent, agent_cgroup, dentry);
	return judge_file(agent, agent_cgroup, dentry, CHECK(SECOPS_OP_EXEC, SECOPS_LSM_EXEC, 0));
}

/*
 * int mmap_file(struct file *file, unsigned long reqprot, unsigned long prot, unsigned long flags)
 * `ld.so BINARY` maps a binary without exec(2). Only the binary's own entry is consulted:
 * a directory's exec verdict is about starting programs, and libraries are mapped from
 * directories that no exec allowlist names. The image exec(2) itself maps is the task's
 * exe_file by then, and bprm_check_security has judged it (and spent a one-shot grant).
 */
SEC("lsm/mmap_file")
int secops_lsm_mmap(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[4]);
	struct file *file = (struct file *)ctx[0];
	if (!file || !(ctx[2] & PROT_EXEC))
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (BPF_CORE_READ(task, mm, exe_file) == file)
		return 0;
	struct inode *inode = file->f_inode;
	if (!inode)
		return 0;
	struct secops_inode_key key = {
		.agent_index = agent->agent_index,
		.dev = inode->i_sb->s_dev,
		.ino = inode->i_ino,
	};
	return judge_own(agent, agent_cgroup, &key,
			 CHECK(SECOPS_OP_EXEC, SECOPS_LSM_MMAP_EXEC, LOOK_ONLY));
}

/* int socket_create(int family, int type, int protocol, int kern): no raw or packet sockets. */
SEC("lsm/socket_create")
int secops_lsm_socket_create(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[4]);
	int family = (int)ctx[0];
	int type = (int)ctx[1] & SOCK_TYPE_MASK;
	if (ctx[3] || (family != AF_PACKET && type != SOCK_RAW && type != SOCK_PACKET))
		return 0;
	struct secops_event *ev = lsm_event(agent, agent_cgroup, SECOPS_VERDICT_DENY,
					    SECOPS_LSM_SOCKET_CREATE, 0);
	if (ev) {
		ev->body.lsm.family = (__u16)family;
		ev->body.lsm.sock_type = (__u16)type;
		ev->body.lsm.protocol = (__u16)ctx[2];
		bpf_ringbuf_submit(ev, 0);
	}
	return -EPERM;
}

/*
 * int socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)
 * The backstop of the cgroup connect hooks for AF_INET/6: the same tries decide. It runs
 * before them, so a connect it denies is reported here and they never see it.
 */
SEC("lsm/socket_connect")
int secops_lsm_socket_connect(unsigned long long *ctx)
{
	int previous_verdict = (int)ctx[3];
	if (previous_verdict)
		return lsm_verdict(previous_verdict);
	__u64 agent_cgroup = 0;
	const struct secops_agent *agent = enforced_agent(&agent_cgroup);
	if (!agent)
		return 0;
	struct socket *sock = (struct socket *)ctx[0];
	struct inet_addr addr = {};
	if (bpf_probe_read_kernel(&addr, sizeof(addr), (const void *)ctx[1]) < 0)
		return 0;
	if (addr.family != AF_INET && addr.family != AF_INET6)
		return 0;
	if ((int)ctx[2] < (addr.family == AF_INET ? 8 : 24))
		return 0; /* too short: the kernel refuses it with EINVAL itself */
	/* A socket without its sock has no protocol: judged with none, which nothing allows. */
	struct sock *sk = sock->sk;
	__u16 protocol = sk ? sk->sk_protocol : 0;
	__u16 port = bpf_ntohs(addr.port);
	int verdict;
	if (addr.family == AF_INET)
		verdict = judge4(agent, agent_cgroup, addr.v4, port, protocol,
				 connect_proto_bit(protocol), SECOPS_NET_CONNECT, false);
	else
		verdict = judge6(agent, agent_cgroup, addr.v6, port, protocol,
				 connect_proto_bit(protocol), SECOPS_NET_CONNECT, false);
	return eperm_if(verdict != SOCK_ALLOW);
}

/* Judges an AF_UNIX connect by the inode of the socket file the peer is bound to. */
static __always_inline int judge_unix_peer(const struct secops_agent *agent, __u64 agent_cgroup,
					   struct sock *other)
{
	struct dentry *dentry = NULL;
	/* struct unix_sock begins with its struct sock. */
	if (bpf_core_read(&dentry, sizeof(dentry),
			  &((struct unix_sock *)other)->path.dentry) < 0 || !dentry)
		return 0; /* abstract or unbound: no file to protect */
	struct inode *inode = BPF_CORE_READ(dentry, d_inode);
	if (!inode)
		return 0;
	struct secops_inode_key key = {
		.agent_index = agent->agent_index,
		.dev = BPF_CORE_READ(inode, i_sb, s_dev),
		.ino = BPF_CORE_READ(inode, i_ino),
	};
	return judge_own(agent, agent_cgroup, &key,
			 CHECK(SECOPS_OP_CONNECT, SECOPS_LSM_UNIX_CONNECT, 0));
}

/* int unix_stream_connect(struct sock *sock, struct sock *other, struct sock *newsk) */
SEC("lsm/unix_stream_connect")
int secops_lsm_unix_stream_connect(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[3]);
	return judge_unix_peer(agent, agent_cgroup, (struct sock *)ctx[1]);
}

/* int unix_may_send(struct socket *sock, struct socket *other): datagram sockets. */
SEC("lsm/unix_may_send")
int secops_lsm_unix_may_send(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[2]);
	struct socket *other = (struct socket *)ctx[1];
	struct sock *peer = other->sk;
	if (!peer)
		return 0; /* no peer: no socket file to protect */
	return judge_unix_peer(agent, agent_cgroup, peer);
}

/*
 * int bpf(int cmd, union bpf_attr *attr, unsigned int size[, ...]): agents make no bpf()
 * calls at all, so they can neither load programs nor find and detach secops' own. The
 * argument list grew in 6.9, so the previous verdict is not read.
 */
SEC("lsm/bpf")
int secops_lsm_bpf(unsigned long long *ctx)
{
	AGENT_OR_PASS(0);
	return deny_other(agent, agent_cgroup, SECOPS_LSM_BPF, 0, (__u32)ctx[0]);
}

/*
 * Whether `task` is outside the current agent: not in its agent cgroup or below it. Another
 * agent's task, the daemon and every process of the host are all foreign. The answer is the
 * task's ancestor at the agent level, read through CO-RE (no helper asks it of another task
 * on every kernel); a task whose cgroup cannot be read is foreign.
 */
static __always_inline bool foreign_task(struct task_struct *task, __u64 agent_cgroup)
{
	__u32 zero = 0;
	const struct secops_config *cfg = bpf_map_lookup_elem(&secops_config, &zero);
	if (!task || !cfg)
		return true;
	/* The daemon, wherever it runs. */
	__u32 tgid = (__u32)task->tgid;
	if (bpf_map_lookup_elem(&secops_protected_pids, &tgid))
		return true;
	return secops_task_ancestor(task, cfg->agent_level) != agent_cgroup;
}

#define PTRACE_MODE_NOAUDIT 0x04

/*
 * int ptrace_access_check(struct task_struct *child, unsigned int mode)
 * Every way of acting through another process asks ptrace_may_access: PTRACE_ATTACH and
 * SEIZE, process_vm_readv/writev, /proc/PID/mem, environ, maps and fd links, pidfd_getfd,
 * setns through /proc/PID/ns. The kernel has answered "self" before this hook is called.
 * A probe whose refusal the kernel itself keeps quiet (PTRACE_MODE_NOAUDIT: ps reading
 * /proc/PID/stat, which then leaves the addresses out) is refused without an event, or
 * every `ps` would flood the audit log.
 */
SEC("lsm/ptrace_access_check")
int secops_lsm_ptrace(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[2]);
	struct task_struct *child = (struct task_struct *)ctx[0];
	if (!foreign_task(child, agent_cgroup))
		return 0;
	if ((unsigned int)ctx[1] & PTRACE_MODE_NOAUDIT)
		return -EPERM;
	return deny_other(agent, agent_cgroup, SECOPS_LSM_PTRACE, child ? (__u32)child->tgid : 0,
			  0);
}

/*
 * int task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig,
 *               const struct cred *cred)
 * Signals the kernel sends itself (SIGCHLD to a parent, a tty's SIGINT) do not come here.
 * Signal 0 (does it exist?) is not a signal and stays allowed.
 */
SEC("lsm/task_kill")
int secops_lsm_task_kill(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[4]);
	struct task_struct *target = (struct task_struct *)ctx[0];
	int sig = (int)ctx[2];
	if (sig == 0 || !foreign_task(target, agent_cgroup))
		return 0;
	return deny_other(agent, agent_cgroup, SECOPS_LSM_SIGNAL,
			  target ? (__u32)target->tgid : 0, (__u32)sig);
}

/*
 * The mount table is the operator's: agents mount, unmount, move and pivot nothing, in any
 * mount namespace (a bind mount over the policy directory, a tmpfs over the state
 * directory, an unmounted bpffs would each change what the daemon reads or pins). The
 * event names `dentry` (the mount point, the file read into the kernel), if there is one.
 */
static __always_inline int deny_named(const struct secops_agent *agent, __u64 agent_cgroup,
				      __u32 lsm_op, struct dentry *dentry)
{
	struct secops_event *ev = lsm_event(agent, agent_cgroup, SECOPS_VERDICT_DENY, lsm_op, 0);
	if (ev) {
		if (dentry)
			fill_names(&ev->body.lsm, dentry, SECOPS_NAME_SLOTS);
		bpf_ringbuf_submit(ev, 0);
	}
	return -EPERM;
}

/* int sb_mount(const char *dev_name, const struct path *path, const char *type,
 *              unsigned long flags, void *data) */
SEC("lsm/sb_mount")
int secops_lsm_sb_mount(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[5]);
	const struct path *path = (const struct path *)ctx[1];
	return deny_named(agent, agent_cgroup, SECOPS_LSM_MOUNT, path ? path->dentry : NULL);
}

/* int sb_umount(struct vfsmount *mnt, int flags) */
SEC("lsm/sb_umount")
int secops_lsm_sb_umount(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[2]);
	return deny_named(agent, agent_cgroup, SECOPS_LSM_UMOUNT, NULL);
}

/* int move_mount(const struct path *from_path, const struct path *to_path) */
SEC("lsm/move_mount")
int secops_lsm_move_mount(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[2]);
	const struct path *to = (const struct path *)ctx[1];
	return deny_named(agent, agent_cgroup, SECOPS_LSM_MOVE_MOUNT, to ? to->dentry : NULL);
}

/* int sb_pivotroot(const struct path *old_path, const struct path *new_path) */
SEC("lsm/sb_pivotroot")
int secops_lsm_sb_pivotroot(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[2]);
	const struct path *new_root = (const struct path *)ctx[1];
	return deny_named(agent, agent_cgroup, SECOPS_LSM_PIVOT_ROOT,
			  new_root ? new_root->dentry : NULL);
}

/*
 * Agents put nothing into the kernel: no module autoloading by name, and no file or buffer
 * read into the kernel (init_module, finit_module; firmware, kexec images and IMA policy
 * come the same way and are no agent's business either). The launcher's seccomp filter
 * refuses the syscalls too; these hold an agent some other program placed in its cgroup.
 */

/* int kernel_module_request(char *kmod_name): the event names the module asked for. */
SEC("lsm/kernel_module_request")
int secops_lsm_module_request(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[1]);
	struct secops_event *ev = lsm_event(agent, agent_cgroup, SECOPS_VERDICT_DENY,
					    SECOPS_LSM_MODULE_REQUEST, 0);
	if (ev) {
		const char *name = (const char *)ctx[0];
		if (name && bpf_probe_read_kernel_str(ev->body.lsm.names[0], SECOPS_NAME_LEN,
						      name) > 0)
			ev->body.lsm.n_names = 1;
		bpf_ringbuf_submit(ev, 0);
	}
	return -EPERM;
}

/* int kernel_read_file(struct file *file, enum kernel_read_file_id id, bool contents) */
SEC("lsm/kernel_read_file")
int secops_lsm_kernel_read_file(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[3]);
	struct file *file = (struct file *)ctx[0];
	return deny_named(agent, agent_cgroup, SECOPS_LSM_KERNEL_LOAD,
			  file ? file->f_path.dentry : NULL);
}

/* int kernel_load_data(enum kernel_load_data_id id, bool contents) */
SEC("lsm/kernel_load_data")
int secops_lsm_kernel_load_data(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[2]);
	return deny_named(agent, agent_cgroup, SECOPS_LSM_KERNEL_LOAD, NULL);
}

/*
 * Metadata and new names, judged like writes (SECOPS_OP_WRITE, whose actions are fs:write,
 * fs:create and fs:chmod): chmod of the object itself, and mkdir and symlink of a new name
 * in a directory (as open(O_CREAT) is, in path_mknod). Not path_chown: its kuid_t and kgid_t
 * are structs passed by value, which 5.10's trampolines refuse ("arg1 type STRUCT is
 * unsupported").
 */

/* int path_chmod(const struct path *path, umode_t mode) */
SEC("lsm/path_chmod")
int secops_lsm_chmod(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[2]);
	const struct path *path = (const struct path *)ctx[0];
	struct dentry *dentry = path ? path->dentry : NULL;
	if (!dentry)
		return 0;
	return judge_file(agent, agent_cgroup, dentry,
			  CHECK(SECOPS_OP_WRITE, SECOPS_LSM_CHMOD, 0));
}

/* int path_mkdir(const struct path *dir, struct dentry *dentry, umode_t mode) */
SEC("lsm/path_mkdir")
int secops_lsm_mkdir(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[3]);
	struct dentry *dentry = (struct dentry *)ctx[1];
	if (!dentry)
		return 0;
	return judge_file(agent, agent_cgroup, dentry,
			  CHECK(SECOPS_OP_WRITE, SECOPS_LSM_MKDIR, 0));
}

/* int path_symlink(const struct path *dir, struct dentry *dentry, const char *old_name) */
SEC("lsm/path_symlink")
int secops_lsm_symlink(unsigned long long *ctx)
{
	AGENT_OR_PASS((int)ctx[3]);
	struct dentry *dentry = (struct dentry *)ctx[1];
	if (!dentry)
		return 0;
	return judge_file(agent, agent_cgroup, dentry,
			  CHECK(SECOPS_OP_WRITE, SECOPS_LSM_SYMLINK, 0));
}

SECOPS_LICENSE;
