/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Approvals in the kernel: the check every program makes before it denies or escalates
 * something a human may have allowed (see struct secops_grant_key). The expiry is checked
 * here, with the boot clock, so a grant that ran out denies again without the daemon.
 */
#ifndef SECOPS_GRANTS_H
#define SECOPS_GRANTS_H

#include "common.h"

/*
 * Whether a running grant covers `key`. `use`: this check is the one that lets the
 * operation through, so the use is reported and a one-shot grant is spent. Other checks
 * on the way (the LSM connect backstop before the cgroup hook, mmap of a binary being
 * executed) only look. A one-shot grant is spent by deleting it: of two concurrent uses,
 * only one delete succeeds, so only one passes.
 */
static __noinline bool secops_granted(const struct secops_agent *agent, __u64 agent_cgroup,
				      const struct secops_grant_key *key, __u32 lsm_op, bool use)
{
	const struct secops_grant *g = bpf_map_lookup_elem(&secops_grants, key);
	if (!g)
		return false;
	if (bpf_ktime_get_boot_ns() >= g->expires_ns)
		return false;
	__u64 ticket = g->ticket;
	__u32 flags = g->flags;
	if (!use)
		return true;
	if ((flags & SECOPS_GRANT_ONE_SHOT) && bpf_map_delete_elem(&secops_grants, key) != 0)
		return false;
	__u32 sub = key->kind == SECOPS_GRANT_NET ? SECOPS_STATS_GRANT_NET + key->op : key->op;
	struct secops_event *ev =
		secops_event_start(SECOPS_EVENT_GRANT, sub, agent, agent_cgroup, SECOPS_VERDICT_ALLOW);
	if (ev) {
		__builtin_memcpy(&ev->body.grant.key, key, sizeof(*key));
		ev->body.grant.ticket = ticket;
		ev->body.grant.flags = flags;
		ev->body.grant.lsm_op = lsm_op;
		bpf_ringbuf_submit(ev, 0);
	}
	return true;
}

#endif /* SECOPS_GRANTS_H */
