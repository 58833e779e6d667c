// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Never attached: the daemon runs it once with BPF_PROG_TEST_RUN, which runs a raw
 * tracepoint program in the calling thread, to learn the level of the caller's cgroup
 * counted from the cgroup2 hierarchy's real root. Inside a cgroup namespace (secops in a
 * container) /proc/self/cgroup and mountinfo count from the namespace's root instead, but
 * the programs' ancestor lookups count from the real root. Declares no maps.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "vmlinux_min.h"

SEC("raw_tp/secops_cgroup_level")
int secops_cgroup_level(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct cgroup *cgrp = BPF_CORE_READ(task, cgroups, dfl_cgrp);
	if (!cgrp)
		return -1;
	return BPF_CORE_READ(cgrp, level);
}

char LICENSE[] SEC("license") = "GPL";
