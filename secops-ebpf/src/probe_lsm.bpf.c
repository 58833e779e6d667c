// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * The smallest BPF LSM program, loaded (never attached) by the daemon's capability probe
 * to learn whether this kernel really lets secops load LSM programs: "bpf" in the active
 * LSM list is necessary, not sufficient. It declares no maps, so loading it pins nothing.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("lsm/file_open")
int secops_probe_lsm(unsigned long long *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
