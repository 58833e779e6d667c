// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/* Process life of agent tasks: exec (binary and argv head) and process exit. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "vmlinux_min.h"
#include "common.h"

SEC("tracepoint/sched/sched_process_exec")
int secops_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	__u64 agent_cgroup = 0;
	const struct secops_agent *agent = secops_current_agent(&agent_cgroup);
	if (!agent)
		return 0;
	struct secops_event *ev =
		secops_event_start(SECOPS_EVENT_EXEC, 0, agent, agent_cgroup, SECOPS_VERDICT_ALLOW);
	if (!ev)
		return 0;

	/* The filename lives in the tracepoint record, at an offset the record gives. */
	__u32 filename_off = ctx->__data_loc_filename & 0xffff;
	bpf_probe_read_kernel_str(ev->body.exec.filename, sizeof(ev->body.exec.filename),
				  (const char *)ctx + filename_off);

	/*
	 * The new program's arguments are already on its stack (arg_start..arg_end of the new
	 * mm), NUL-separated, which is the layout the event wants.
	 */
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long arg_start = BPF_CORE_READ(mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(mm, arg_end);
	unsigned long args_size = arg_end > arg_start ? arg_end - arg_start : 0;
	__u32 len = args_size < SECOPS_ARGV_LEN ? (__u32)args_size : SECOPS_ARGV_LEN;
	if (len > 0 && bpf_probe_read_user(ev->body.exec.argv, len & (SECOPS_ARGV_LEN * 2 - 1),
					   (const void *)arg_start) == 0)
		ev->body.exec.argv_len = len;
	ev->body.exec.args_size = args_size > 0xffffffffUL ? 0xffffffffU : (__u32)args_size;

	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/*
 * sched_process_exit fires for every thread; a process has exited when its last thread
 * does, i.e. when signal->live (decremented before the tracepoint) has reached zero.
 * Reading it instead of the tracepoint's own group_dead field keeps the program working on
 * kernels older than that field.
 */
SEC("tracepoint/sched/sched_process_exit")
int secops_exit(void *ctx)
{
	__u64 agent_cgroup = 0;
	const struct secops_agent *agent = secops_current_agent(&agent_cgroup);
	if (!agent)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	struct secops_event *ev =
		secops_event_start(SECOPS_EVENT_EXIT, 0, agent, agent_cgroup, SECOPS_VERDICT_ALLOW);
	if (!ev)
		return 0;
	ev->body.exit.exit_code = (__u32)BPF_CORE_READ(task, exit_code);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

SECOPS_LICENSE;
