/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The current task's cgroup at a given level of the cgroup2 hierarchy: how every program
 * finds the agent cgroup of a task in an agent cgroup or below one.
 *
 * bpf_get_current_ancestor_cgroup_id answers directly, but tracing programs (tracepoints,
 * LSM) get it only on newer kernels; Debian 11's 5.10 refuses it there ("unknown func").
 * Such kernels read the answer through CO-RE instead: task->cgroups->dfl_cgrp, its level,
 * and its ancestor at that level (ancestor_ids[] before 6.0, ancestors[]->kn->id after),
 * and keep it in secops_cgroup_ancestors keyed by the task's own cgroup, so the walk's
 * probe reads are paid once per cgroup, not once per hook. A task in an agent cgroup itself
 * (where secops run puts agents) is found by its own cgroup id first, so an agent's hot
 * path is bpf_get_current_cgroup_id and one lookup, as with the helper. Tasks outside the
 * secops root cgroup (most of the machine) are told apart first by
 * bpf_current_task_under_cgroup against secops_root_cgroup, which is O(1) and needs no map
 * lookup. Which path a program takes is the loader's
 * choice (secops_ancestor_helper, set from a probe of this kernel); the verifier sees the
 * constant and never visits the other path, so an object built once loads on both kinds of
 * kernel.
 *
 * cgroup sock_addr programs have the helper on every kernel secops supports (5.7+) and no
 * probe reads: they define SECOPS_ANCESTOR_HELPER_ONLY.
 */
#ifndef SECOPS_ANCESTRY_H
#define SECOPS_ANCESTRY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "secops.h"

#ifndef SECOPS_ANCESTOR_HELPER_ONLY
#include <bpf/bpf_core_read.h>

#include "vmlinux_min.h"

/* Set by the loader before the object is loaded: 1 where the helper is allowed. */
const volatile __u32 secops_ancestor_helper = 1;

/*
 * The walk: `task`'s default-hierarchy cgroup and its ancestor at `level`, or 0. Probe reads
 * only, so `task` may be any task the kernel handed a hook (the LSM programs ask it of the
 * target of a ptrace or a signal too).
 */
static __noinline __u64 secops_task_ancestor(struct task_struct *task, __u32 level)
{
	struct cgroup *cgrp = BPF_CORE_READ(task, cgroups, dfl_cgrp);
	if (!cgrp)
		return 0;
	int own_level = BPF_CORE_READ(cgrp, level);
	if (own_level < 0 || level > (__u32)own_level)
		return 0;
	__u64 id = 0;
	if (bpf_core_field_exists(struct cgroup___ancestor_ids, ancestor_ids)) {
		const void *ids = (const void *)cgrp +
				  bpf_core_field_offset(struct cgroup___ancestor_ids, ancestor_ids);
		if (bpf_probe_read_kernel(&id, sizeof(id), ids + (__u64)level * sizeof(__u64)) < 0)
			return 0;
		return id;
	}
	const void *ancestors = (const void *)cgrp + bpf_core_field_offset(struct cgroup, ancestors);
	struct cgroup *ancestor = NULL;
	if (bpf_probe_read_kernel(&ancestor, sizeof(ancestor),
				  ancestors + (__u64)level * sizeof(ancestor)) < 0 ||
	    !ancestor)
		return 0;
	return BPF_CORE_READ(ancestor, kn, id);
}

static __always_inline __u64 secops_walk_ancestor(__u32 level)
{
	return secops_task_ancestor((struct task_struct *)bpf_get_current_task(), level);
}
#endif

/* The agent whose agent cgroup is `id`, or NULL. */
static __always_inline const struct secops_agent *secops_agent_of(__u64 id, __u64 *agent_cgroup)
{
	if (id == 0)
		return NULL;
	const struct secops_agent *agent = bpf_map_lookup_elem(&secops_agents, &id);
	if (agent)
		*agent_cgroup = id;
	return agent;
}

/*
 * The agent of the current task: the one whose agent cgroup is the task's ancestor at
 * `level` (or its own cgroup), or NULL.
 */
static __always_inline const struct secops_agent *secops_agent_at(__u32 level,
								  __u64 *agent_cgroup)
{
#ifndef SECOPS_ANCESTOR_HELPER_ONLY
	if (!secops_ancestor_helper) {
		/*
		 * Most tasks are not below the secops root at all: one O(1) helper says so. Only
		 * a definite "no" (0) ends the search; an unset root (-EAGAIN) goes the whole way.
		 */
		if (bpf_current_task_under_cgroup(&secops_root_cgroup, 0) == 0)
			return NULL;
		__u64 own = bpf_get_current_cgroup_id();
		/*
		 * Agents run in their agent cgroup itself (secops run puts them there): one
		 * lookup, as with the helper. Only a task in no agent cgroup, or below one,
		 * needs its ancestor.
		 */
		const struct secops_agent *agent = secops_agent_of(own, agent_cgroup);
		if (agent)
			return agent;
		struct secops_ancestor_key key = {
			.cgroup_id = own,
			.level = level,
		};
		const __u64 *cached = bpf_map_lookup_elem(&secops_cgroup_ancestors, &key);
		__u64 id;
		if (cached) {
			id = *cached;
		} else {
			id = secops_walk_ancestor(level);
			bpf_map_update_elem(&secops_cgroup_ancestors, &key, &id, BPF_ANY);
		}
		/* Its own cgroup is no agent's (looked up above): nothing more to find. */
		if (id == own)
			return NULL;
		return secops_agent_of(id, agent_cgroup);
	}
#endif
	return secops_agent_of(bpf_get_current_ancestor_cgroup_id(level), agent_cgroup);
}

#endif /* SECOPS_ANCESTRY_H */
