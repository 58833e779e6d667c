/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Helpers every program family uses: who is the current task's agent, and event output. */
#ifndef SECOPS_COMMON_H
#define SECOPS_COMMON_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "ancestry.h"
#include "maps.h"
#include "secops.h"

/*
 * The current task's agent, or NULL for every task that is not in an agent cgroup (or
 * below one): then the caller must change nothing. This is the safety rule that lets the
 * programs be attached on a shared machine: with an empty secops_agents map (or no
 * config) no task is an agent.
 *
 * Descendants of an agent cgroup are the same agent: the agent cgroup is the task's
 * ancestor at agent_level (ancestry.h).
 */
static __always_inline const struct secops_agent *secops_current_agent(__u64 *agent_cgroup)
{
	__u32 zero = 0;
	const struct secops_config *cfg = bpf_map_lookup_elem(&secops_config, &zero);
	if (!cfg || cfg->agent_level == 0)
		return NULL;
	return secops_agent_at(cfg->agent_level, agent_cgroup);
}

static __always_inline void secops_count_lost(__u32 kind, __u32 sub)
{
	__u32 slot = kind * SECOPS_STATS_SUBS + (sub & (SECOPS_STATS_SUBS - 1));
	__u64 *lost = bpf_map_lookup_elem(&secops_stats, &slot);
	if (lost)
		__sync_fetch_and_add(lost, 1);
}

/*
 * Counts the denial or escalation `ev` reports, once it has its place in the ring buffer (see
 * struct secops_decision_key), and writes into its header where: the epoch stays 0 if it was
 * not counted (no epoch set, or the map is full: the daemon leaves it out of its reckoning).
 * Allowed events are not counted: the constant verdict of their call sites removes this code
 * there.
 */
static __always_inline void secops_count_decision(struct secops_event_header *ev, __u32 kind,
						  __u32 sub, __u64 agent_cgroup, __u32 verdict)
{
	if (verdict == SECOPS_VERDICT_ALLOW)
		return;
	__u32 zero = 0;
	const struct secops_config *cfg = bpf_map_lookup_elem(&secops_config, &zero);
	if (!cfg || !cfg->decision_epoch)
		return;
	struct secops_decision_key key;
	__builtin_memset(&key, 0, sizeof(key)); /* the key is hashed whole, padding too */
	key.cgroup_id = agent_cgroup;
	key.epoch = cfg->decision_epoch;
	key.slot = (__u16)(kind * SECOPS_STATS_SUBS + (sub & (SECOPS_STATS_SUBS - 1)));
	key.verdict = (__u8)verdict;
	__u64 *count = bpf_map_lookup_elem(&secops_decisions, &key);
	if (!count) {
		__u64 none = 0;
		bpf_map_update_elem(&secops_decisions, &key, &none, BPF_NOEXIST);
		count = bpf_map_lookup_elem(&secops_decisions, &key);
		if (!count)
			return;
	}
	__sync_fetch_and_add(count, 1);
	ev->decision_epoch = key.epoch;
	ev->decision_slot = key.slot;
}

/*
 * A zeroed event with its header filled in, or NULL when the ring buffer is full: then
 * the loss is counted by kind and `sub` (see SECOPS_STATS_SUBS) so the daemon can audit
 * exactly what it did not see, as the action it was. The caller fills the body and calls
 * bpf_ringbuf_submit.
 */
static __always_inline struct secops_event *
secops_event_start(__u32 kind, __u32 sub, const struct secops_agent *agent, __u64 agent_cgroup,
		   __u32 verdict)
{
	struct secops_event *ev = bpf_ringbuf_reserve(&secops_events, sizeof(*ev), 0);
	if (!ev) {
		secops_count_lost(kind, sub);
		return NULL;
	}
	/* Reserved space holds old events' bytes: zero it so strings end cleanly. */
	__builtin_memset(ev, 0, sizeof(*ev));
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	ev->header.kind = kind;
	ev->header.agent_index = agent->agent_index;
	ev->header.cgroup_id = agent_cgroup;
	ev->header.ts_boot_ns = bpf_ktime_get_boot_ns();
	ev->header.pid = (__u32)pid_tgid;
	ev->header.tgid = pid_tgid >> 32;
	ev->header.uid = (__u32)bpf_get_current_uid_gid();
	ev->header.verdict = verdict;
	bpf_get_current_comm(ev->header.comm, sizeof(ev->header.comm));
	secops_count_decision(&ev->header, kind, sub, agent_cgroup, verdict);
	return ev;
}

/*
 * The counter for `key` in a hash map whose values are struct secops_egress_allowed_value,
 * made (zeroed) if it is not there yet; NULL only when the map is full. Another CPU may make
 * it first: then its entry is the one returned.
 */
static __always_inline struct secops_egress_allowed_value *secops_counter(void *map,
									    const void *key)
{
	struct secops_egress_allowed_value *v = bpf_map_lookup_elem(map, key);
	if (v)
		return v;
	struct secops_egress_allowed_value zero = {};
	bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

/*
 * The objects are dual-licensed (GPL-2.0-only OR Apache-2.0); the kernel only needs to see
 * that they are GPL-compatible to allow the GPL-only helpers (probe reads, comm).
 */
#define SECOPS_LICENSE char LICENSE[] SEC("license") = "GPL"

#endif /* SECOPS_COMMON_H */
