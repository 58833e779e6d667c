// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Egress allowlist per agent: cgroup/connect4|6 (TCP, and UDP connect) and
 * cgroup/sendmsg4|6 (unconnected UDP), attached to the secops root cgroup so that every
 * agent below it is covered. Returning 0 makes the syscall fail with EPERM.
 *
 * The DNS layer: an agent whose entry names a DNS port has every packet and connect to port
 * 53 (any address, TCP and UDP, IPv4, IPv6 and IPv4-mapped) sent to the daemon's listener
 * for it on loopback instead, which answers only what the agent's allowlist names.
 * cgroup/recvmsg4|6 give the answers on an agent's UDP socket the address the agent asked,
 * so resolver libraries that check where a reply came from accept them.
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

/* Remembers which server a UDP socket's DNS went to, before the redirect (see recvmsg4). */
static __always_inline void remember_origin(struct bpf_sock_addr *ctx, __u16 family,
					    const __u32 *addr, __u32 addr_len)
{
	struct secops_dns_origin origin;
	__builtin_memset(&origin, 0, sizeof(origin));
	origin.family = family;
	origin.port = (__u16)ctx->user_port;
	copy_addr(origin.addr, (const __u8 *)addr, addr_len);
	__u64 cookie = bpf_get_socket_cookie(ctx);
	bpf_map_update_elem(&secops_dns_origins, &cookie, &origin, BPF_ANY);
}

/*
 * Port 53 of a DNS-redirected agent goes to 127.0.0.1:dns_port. `udp`: the socket will
 * receive the answer through recvmsg4/6, which need the server it addressed.
 */
static __always_inline bool redirect_dns4(struct bpf_sock_addr *ctx,
					  const struct secops_agent *agent, __u8 bit, bool udp)
{
	if (!dns_redirected(agent, dest_port(ctx), bit))
		return false;
	if (udp) {
		__u32 ip4 = ctx->user_ip4;
		remember_origin(ctx, SECOPS_AF_INET, &ip4, 4);
	}
	ctx->user_ip4 = SECOPS_LOOPBACK4;
	ctx->user_port = bpf_htons(agent->dns_port);
	return true;
}

/*
 * The same for an IPv6 socket: a native IPv6 server becomes [::1]:dns_port; an IPv4-mapped
 * one (only connect6 sees those: an unconnected send to one goes through sendmsg4)
 * becomes ::ffff:127.0.0.1.
 */
static __always_inline bool redirect_dns6(struct bpf_sock_addr *ctx,
					  const struct secops_agent *agent, __u8 bit, bool udp)
{
	if (!dns_redirected(agent, dest_port(ctx), bit))
		return false;
	__u32 ip6[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	bool mapped = ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0x0000ffff);
	if (udp) {
		if (mapped)
			remember_origin(ctx, SECOPS_AF_INET, &ip6[3], 4);
		else
			remember_origin(ctx, SECOPS_AF_INET6, ip6, 16);
	}
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = mapped ? bpf_htonl(0x0000ffff) : 0;
	ctx->user_ip6[3] = mapped ? SECOPS_LOOPBACK4 : bpf_htonl(1);
	ctx->user_port = bpf_htons(agent->dns_port);
	return true;
}

SEC("cgroup/connect4")
int secops_connect4(struct bpf_sock_addr *ctx)
{
	__u64 agent_cgroup = 0;
	const struct secops_agent *agent = enforced_agent(&agent_cgroup);
	if (!agent)
		return SOCK_ALLOW;
	__u32 protocol = ctx->protocol;
	__u8 bit = connect_proto_bit(protocol);
	if (redirect_dns4(ctx, agent, bit, bit == SECOPS_PROTO_UDP))
		return SOCK_ALLOW;
	return judge4(agent, agent_cgroup, ctx->user_ip4, dest_port(ctx), (__u16)protocol, bit,
		      SECOPS_NET_CONNECT, true);
}

SEC("cgroup/connect6")
int secops_connect6(struct bpf_sock_addr *ctx)
{
	__u64 agent_cgroup = 0;
	const struct secops_agent *agent = enforced_agent(&agent_cgroup);
	if (!agent)
		return SOCK_ALLOW;
	__u32 protocol = ctx->protocol;
	__u8 bit = connect_proto_bit(protocol);
	if (redirect_dns6(ctx, agent, bit, bit == SECOPS_PROTO_UDP))
		return SOCK_ALLOW;
	__u32 ip6[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	return judge6(agent, agent_cgroup, ip6, dest_port(ctx), (__u16)protocol, bit,
		      SECOPS_NET_CONNECT, true);
}

/* Only unconnected UDP sends reach the sendmsg hooks: judged with the UDP bit. */
SEC("cgroup/sendmsg4")
int secops_sendmsg4(struct bpf_sock_addr *ctx)
{
	__u64 agent_cgroup = 0;
	const struct secops_agent *agent = enforced_agent(&agent_cgroup);
	if (!agent)
		return SOCK_ALLOW;
	if (redirect_dns4(ctx, agent, SECOPS_PROTO_UDP, true))
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
	if (redirect_dns6(ctx, agent, SECOPS_PROTO_UDP, true))
		return SOCK_ALLOW;
	__u32 ip6[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	return judge6(agent, agent_cgroup, ip6, dest_port(ctx), (__u16)ctx->protocol,
		      SECOPS_PROTO_UDP, SECOPS_NET_SENDMSG, true);
}

/*
 * The server this socket's redirected DNS went to, if `ctx` says the datagram came from the
 * agent's own listener. (recvmsg programs must return 1: they only rewrite.)
 */
static __always_inline const struct secops_dns_origin *
answered_origin(struct bpf_sock_addr *ctx, const struct secops_agent *agent, bool from_listener)
{
	if (!agent->dns_port || !from_listener ||
	    (__u16)ctx->user_port != bpf_htons(agent->dns_port))
		return NULL;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	return bpf_map_lookup_elem(&secops_dns_origins, &cookie);
}

SEC("cgroup/recvmsg4")
int secops_recvmsg4(struct bpf_sock_addr *ctx)
{
	__u64 agent_cgroup = 0;
	const struct secops_agent *agent = enforced_agent(&agent_cgroup);
	if (!agent)
		return 1;
	const struct secops_dns_origin *origin =
		answered_origin(ctx, agent, ctx->user_ip4 == SECOPS_LOOPBACK4);
	if (!origin || origin->family != SECOPS_AF_INET)
		return 1;
	__u32 ip4;
	__builtin_memcpy(&ip4, origin->addr, 4);
	ctx->user_ip4 = ip4;
	ctx->user_port = origin->port;
	return 1;
}

SEC("cgroup/recvmsg6")
int secops_recvmsg6(struct bpf_sock_addr *ctx)
{
	__u64 agent_cgroup = 0;
	const struct secops_agent *agent = enforced_agent(&agent_cgroup);
	if (!agent)
		return 1;
	__u32 ip6[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	bool mapped_loopback = ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0x0000ffff) &&
			       ip6[3] == SECOPS_LOOPBACK4;
	const struct secops_dns_origin *origin =
		answered_origin(ctx, agent, mapped_loopback || is_loopback6(ip6));
	if (!origin)
		return 1;
	__u32 addr[4];
	__builtin_memcpy(addr, origin->addr, 16);
	if (origin->family == SECOPS_AF_INET) {
		/* An IPv4 server addressed through an IPv6 socket: ::ffff:a.b.c.d. */
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = addr[0];
	} else {
		ctx->user_ip6[0] = addr[0];
		ctx->user_ip6[1] = addr[1];
		ctx->user_ip6[2] = addr[2];
		ctx->user_ip6[3] = addr[3];
	}
	ctx->user_port = origin->port;
	return 1;
}

SECOPS_LICENSE;
