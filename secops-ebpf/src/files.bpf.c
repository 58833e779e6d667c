// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * File deletes and renames by agent tasks, at syscall entry: these are attempts (the
 * tracepoint cannot see the result) with the path strings as the task passed them. The
 * daemon resolves a relative path against /proc/<pid>/cwd or the dfd's link.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "vmlinux_min.h"
#include "common.h"

#define SECOPS_AT_FDCWD -100
#define SECOPS_AT_REMOVEDIR 0x200

static __always_inline void report_unlink(__s32 dfd, unsigned long path, __u32 flags)
{
	__u64 agent_cgroup = 0;
	const struct secops_agent *agent = secops_current_agent(&agent_cgroup);
	if (!agent)
		return;
	struct secops_event *ev =
		secops_event_start(SECOPS_EVENT_UNLINK, 0, agent, agent_cgroup, SECOPS_VERDICT_ALLOW);
	if (!ev)
		return;
	ev->body.unlink.dfd = dfd;
	ev->body.unlink.flags = flags;
	bpf_probe_read_user_str(ev->body.unlink.path, sizeof(ev->body.unlink.path),
				(const void *)path);
	bpf_ringbuf_submit(ev, 0);
}

static __always_inline void report_rename(__s32 olddfd, unsigned long oldpath, __s32 newdfd,
					  unsigned long newpath, __u32 flags)
{
	__u64 agent_cgroup = 0;
	const struct secops_agent *agent = secops_current_agent(&agent_cgroup);
	if (!agent)
		return;
	struct secops_event *ev =
		secops_event_start(SECOPS_EVENT_RENAME, 0, agent, agent_cgroup, SECOPS_VERDICT_ALLOW);
	if (!ev)
		return;
	ev->body.rename.olddfd = olddfd;
	ev->body.rename.newdfd = newdfd;
	ev->body.rename.flags = flags;
	bpf_probe_read_user_str(ev->body.rename.oldpath, sizeof(ev->body.rename.oldpath),
				(const void *)oldpath);
	bpf_probe_read_user_str(ev->body.rename.newpath, sizeof(ev->body.rename.newpath),
				(const void *)newpath);
	bpf_ringbuf_submit(ev, 0);
}

/* unlinkat(int dfd, const char *pathname, int flag) */
SEC("tracepoint/syscalls/sys_enter_unlinkat")
int secops_unlinkat(struct trace_event_raw_sys_enter *ctx)
{
	report_unlink((__s32)ctx->args[0], ctx->args[1], (__u32)ctx->args[2]);
	return 0;
}

/* unlink(const char *pathname) */
SEC("tracepoint/syscalls/sys_enter_unlink")
int secops_unlink(struct trace_event_raw_sys_enter *ctx)
{
	report_unlink(SECOPS_AT_FDCWD, ctx->args[0], 0);
	return 0;
}

/* rmdir(const char *pathname): reported as unlinkat(AT_FDCWD, path, AT_REMOVEDIR). */
SEC("tracepoint/syscalls/sys_enter_rmdir")
int secops_rmdir(struct trace_event_raw_sys_enter *ctx)
{
	report_unlink(SECOPS_AT_FDCWD, ctx->args[0], SECOPS_AT_REMOVEDIR);
	return 0;
}

/* renameat2(int olddfd, const char *old, int newdfd, const char *new, unsigned int flags) */
SEC("tracepoint/syscalls/sys_enter_renameat2")
int secops_renameat2(struct trace_event_raw_sys_enter *ctx)
{
	report_rename((__s32)ctx->args[0], ctx->args[1], (__s32)ctx->args[2], ctx->args[3],
		      (__u32)ctx->args[4]);
	return 0;
}

/* renameat(int olddfd, const char *old, int newdfd, const char *new) */
SEC("tracepoint/syscalls/sys_enter_renameat")
int secops_renameat(struct trace_event_raw_sys_enter *ctx)
{
	report_rename((__s32)ctx->args[0], ctx->args[1], (__s32)ctx->args[2], ctx->args[3], 0);
	return 0;
}

/* rename(const char *old, const char *new) */
SEC("tracepoint/syscalls/sys_enter_rename")
int secops_rename(struct trace_event_raw_sys_enter *ctx)
{
	report_rename(SECOPS_AT_FDCWD, ctx->args[0], SECOPS_AT_FDCWD, ctx->args[1], 0);
	return 0;
}

SECOPS_LICENSE;
