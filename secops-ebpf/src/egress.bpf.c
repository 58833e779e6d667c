// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Egress allowlist per agent: cgroup/connect4|6 (TCP, and UDP connect) and
 * cgroup/sendmsg4|6 (unconnected UDP), attached to the secops root cgroup so that every
 * agent below it is covered. Returning 0 makes the syscall fail with EPERM.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* cgroup sock_addr programs have bpf_get_current_ancestor_cgroup_id on every kernel. */
#define SECOPS_ANCESTOR_HELPER_ONLY
#include "egress.h"

static __always_inline __u16 dest_port(const struct bpf_sock_addr *ctx)
{
	return bpf_ntohs((__u16)ctx->user_port);
}

SEC("cgroup/connect4")
int secops_connect4(struct bpf_sock_addr *ctx)
{
	__u64 agent_cgroup = 0;
	const struct secops_agent *agent = enforced_agent(&agent_cgroup);
	if (!agent)
		return SOCK_ALLOW;
	__u32 protocol = ctx->protocol;
	return judge4(agent, agent_cgroup, ctx->user_ip4, dest_port(ctx), (__u16)protocol,
		      connect_proto_bit(protocol), SECOPS_NET_CONNECT, true);
}

SEC("cgroup/connect6")
int secops_connect6(struct bpf_sock_addr *ctx)
{
	__u64 agent_cgroup = 0;
	const struct secops_agent *agent = enforced_agent(&agent_cgroup);
	if (!agent)
		return SOCK_ALLOW;
	__u32 ip6[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	__u32 protocol = ctx->protocol;
	return judge6(agent, agent_cgroup, ip6, dest_port(ctx), (__u16)protocol,
		      connect_proto_bit(protocol), SECOPS_NET_CONNECT, true);
}

/* Only unconnected UDP sends reach the sendmsg hooks: judged with the UDP bit. */
SEC("cgroup/sendmsg4")
int secops_sendmsg4(struct bpf_sock_addr *ctx)
{
	__u64 agent_cgroup = 0;
	const struct secops_agent *agent = enforced_agent(&agent_cgroup);
	if (!agent)
		return SOCK_ALLOW;
	return judge4(agent, agent_cgroup, ctx->user_ip4, dest_port(ctx), (__u16)ctx->protocol,
		      SECOPS_PROTO_UDP, SECOPS_NET_SENDMSG, true);
}

SEC("cgroup/sendmsg6")
int secops_sendmsg6(struct bpf_sock_addr *ctx)
{
	__u64 agent_cgroup = 0;
	const struct secops_agent *agent = enforced_agent(&agent_cgroup);
	if (!agent)
		return SOCK_ALLOW;
	__u32 ip6[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	return judge6(agent, agent_cgroup, ip6, dest_port(ctx), (__u16)ctx->protocol,
		      SECOPS_PROTO_UDP, SECOPS_NET_SENDMSG, true);
}

SECOPS_LICENSE;
