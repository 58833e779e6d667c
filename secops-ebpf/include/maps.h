/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Every map, declared once. Each program object includes this file, and every map is
 * pinned by name: the loader gives all objects the same pin directory, so the objects
 * share one set of maps, and a restarted daemon adopts the pinned maps (and the state the
 * kernel keeps enforcing from them) instead of creating empty ones.
 */
#ifndef SECOPS_MAPS_H
#define SECOPS_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "secops.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct secops_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* cgroup id of the agent cgroup */
	__type(value, struct secops_agent);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_agents SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* LPM tries require it */
	__type(key, struct secops_egress4_key);
	__type(value, struct secops_egress_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_egress4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct secops_egress6_key);
	__type(value, struct secops_egress_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_egress6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct secops_egress_allowed_key);
	__type(value, struct secops_egress_allowed_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_egress_allowed SEC(".maps");

/* A cache of agent-level ancestors, where no helper gives them (see ancestry.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct secops_ancestor_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_cgroup_ancestors SEC(".maps");

/*
 * The secops root cgroup (index 0, set by the daemon), for bpf_current_task_under_cgroup
 * where that walk is used: a task outside it is no agent, found in one cheap helper call.
 */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_root_cgroup SEC(".maps");

/* The DNS layer (see struct secops_agent.dns_port and the structs below it). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u16);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_dns_listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct secops_dns_origin);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_dns_origins SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct secops_name_key);
	__type(value, struct secops_name_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_egress_names SEC(".maps");

/* The policy compiled to file objects (see struct secops_inode_rule). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* memory only for the entries there are */
	__type(key, struct secops_inode_key);
	__type(value, struct secops_inode_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_inodes SEC(".maps");

/* tgid -> 1: processes agents may not signal or ptrace (the daemon itself). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_protected_pids SEC(".maps");

/* See struct secops_inode_rule: counters of allowed deletes and renames, by slot and op. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SECOPS_COUNT_SLOTS * SECOPS_FS_OPS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_file_counts SEC(".maps");

/* Approvals as the kernel checks them (see struct secops_grant_key). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct secops_grant_key);
	__type(value, struct secops_grant);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_grants SEC(".maps");

/* Size in bytes; the loader may override it (a power of two, a multiple of the page size). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_events SEC(".maps");

/* Events lost because the ring buffer was full, per CPU, indexed by event kind. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SECOPS_STATS_LEN);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_stats SEC(".maps");

/* See struct secops_decision_key. Preallocated: tracing programs on 5.10 need it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct secops_decision_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_decisions SEC(".maps");

/* Written by the daemon (a timestamp); read by nothing yet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} secops_heartbeat SEC(".maps");

#endif /* SECOPS_MAPS_H */
