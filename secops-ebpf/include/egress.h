/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The egress allowlist decision, shared by the cgroup sock_addr programs (egress.bpf.c) and
 * the LSM socket_connect backstop (lsm.bpf.c): both judge a destination against the same
 * per-agent tries, so they cannot disagree.
 */
#ifndef SECOPS_EGRESS_H
#define SECOPS_EGRESS_H

#include <bpf/bpf_endian.h>

#include "grants.h"

#define SOCK_ALLOW 1
#define SOCK_DENY 0

/* IPPROTO_MPTCP: a TCP variant, judged as TCP. */
#define SECOPS_IPPROTO_MPTCP 262

/*
 * The protocol bit a connect() is judged with. Anything other than TCP or UDP (ICMP ping
 * sockets, for one) gets no bit, so no port range can allow it: fail closed.
 */
static __always_inline __u8 connect_proto_bit(__u32 protocol)
{
	if (protocol == SECOPS_IPPROTO_TCP || protocol == SECOPS_IPPROTO_MPTCP)
		return SECOPS_PROTO_TCP;
	if (protocol == SECOPS_IPPROTO_UDP)
		return SECOPS_PROTO_UDP;
	return 0;
}

static __always_inline bool ranges_allow(const struct secops_egress_value *v, __u16 port,
					 __u8 bit)
{
	if (!v || !bit)
		return false;
	__u32 n = v->n_ranges;
	for (__u32 i = 0; i < SECOPS_MAX_PORT_RANGES; i++) {
		if (i >= n)
			break;
		const struct secops_port_range *r = &v->ranges[i];
		if ((r->protocols & bit) && port >= r->lo && port <= r->hi)
			return true;
	}
	return false;
}

/* An address into a zeroed 16-byte field: IPv4 (addr_len 4) in its first four bytes. */
static __always_inline void copy_addr(__u8 dst[16], const __u8 *addr, __u32 addr_len)
{
	if (addr_len == 4)
		__builtin_memcpy(dst, addr, 4);
	else
		__builtin_memcpy(dst, addr, 16);
}

static __always_inline void count_allowed(__u32 agent_index, __u16 family, __u16 protocol,
					  __u16 port, const __u8 *addr, __u32 addr_len)
{
	struct secops_egress_allowed_key key;
	__builtin_memset(&key, 0, sizeof(key)); /* the key is hashed whole, padding too */
	key.agent_index = agent_index;
	key.family = family;
	key.protocol = protocol;
	key.port = port;
	copy_addr(key.addr, addr, addr_len);

	struct secops_egress_allowed_value *v = secops_counter(&secops_egress_allowed, &key);
	if (!v)
		return;
	__u64 now = bpf_ktime_get_boot_ns();
	__sync_fetch_and_add(&v->count, 1);
	if (!v->first_ns)
		v->first_ns = now;
	v->last_ns = now;
}

static __always_inline void report_denied(const struct secops_agent *agent, __u64 agent_cgroup,
					  __u16 family, __u16 protocol, __u16 port,
					  const __u8 *addr, __u32 addr_len, __u8 kind, __u8 reason)
{
	struct secops_event *ev =
		secops_event_start(SECOPS_EVENT_NET, protocol, agent, agent_cgroup,
				   SECOPS_VERDICT_DENY);
	if (!ev)
		return;
	ev->body.net.family = family;
	ev->body.net.protocol = protocol;
	ev->body.net.port = port;
	ev->body.net.kind = kind;
	ev->body.net.reason = reason;
	copy_addr(ev->body.net.addr, addr, addr_len);
	bpf_ringbuf_submit(ev, 0);
}

/* 127.0.0.1 in network order, where the daemon's DNS listeners are (and [::1]). */
#define SECOPS_LOOPBACK4 bpf_htonl(0x7f000001)

/*
 * Whether this is port 53 of an agent whose DNS secops answers: then the cgroup hooks send
 * it to the daemon's listener instead (see secops_agent.dns_port). Only TCP and UDP.
 */
static __always_inline bool dns_redirected(const struct secops_agent *agent, __u16 port,
					   __u8 bit)
{
	return port == SECOPS_DNS_PORT && agent->dns_port && bit;
}

/* The agent whose DNS listener `port` on loopback is, or NULL: not a listener. */
static __always_inline const __u32 *dns_listener_owner(__u16 port)
{
	return bpf_map_lookup_elem(&secops_dns_listeners, &port);
}

/*
 * Whether an answer of the daemon's resolver to this agent allows the destination: an
 * allowed name resolved to the address, and the range of its port has not expired.
 */
static __always_inline bool name_allows(__u32 agent_index, __u16 family, const __u8 *addr,
					__u32 addr_len, __u16 port, __u8 bit)
{
	struct secops_name_key key;
	__builtin_memset(&key, 0, sizeof(key)); /* the key is hashed whole, padding too */
	key.agent_index = agent_index;
	key.family = family;
	copy_addr(key.addr, addr, addr_len);
	const struct secops_name_value *v = bpf_map_lookup_elem(&secops_egress_names, &key);
	if (!v || !bit)
		return false;
	__u64 now = bpf_ktime_get_boot_ns();
	__u32 n = v->n_ranges;
	for (__u32 i = 0; i < SECOPS_MAX_PORT_RANGES; i++) {
		if (i >= n)
			break;
		const struct secops_port_range *r = &v->ranges[i];
		if ((r->protocols & bit) && port >= r->lo && port <= r->hi && now < v->expires_ns[i])
			return true;
	}
	return false;
}

/*
 * A grant for this destination. Its protocol bit is the operation: a TCP approval does not
 * open UDP to the same port.
 */
static __always_inline bool net_granted(const struct secops_agent *agent, __u64 agent_cgroup,
					__u16 family, __u16 port, __u8 bit, const __u8 *addr,
					__u32 addr_len, bool use)
{
	struct secops_grant_key key;
	__builtin_memset(&key, 0, sizeof(key)); /* the key is hashed whole, padding too */
	key.agent_index = agent->agent_index;
	key.kind = SECOPS_GRANT_NET;
	key.op = bit;
	key.port = port;
	key.family = family;
	copy_addr(key.addr, addr, addr_len);
	return secops_granted(agent, agent_cgroup, &key, 0, use);
}

/*
 * ip4 in network order. `count` marks the cgroup hooks, which have the last word: they
 * record allowed destinations for the aggregated audit and spend grants. The LSM backstop
 * runs before them and only looks, so a connect is neither counted nor charged twice.
 * Order: the DNS layer (redirected port 53; the daemon's listeners: only the agent's own),
 * the allowlist's tries, the names the agent resolved, grants.
 */
static __always_inline int judge4(const struct secops_agent *agent, __u64 agent_cgroup,
				  __u32 ip4, __u16 port, __u16 protocol, __u8 bit, __u8 kind,
				  bool count)
{
	struct secops_egress4_key key = {
		.prefixlen = 32 + 32,
		.agent_index = agent->agent_index,
	};
	__builtin_memcpy(key.addr, &ip4, 4);
	/* Only the LSM backstop gets here with it: the cgroup hooks redirect it first. */
	if (dns_redirected(agent, port, bit))
		return SOCK_ALLOW;
	/*
	 * The daemon's listeners: another agent's would let this one speak as that agent. Its
	 * own is itself (and is where a connected IPv6 socket's datagrams to a redirected
	 * IPv4-mapped server go, through sendmsg4, on every send).
	 */
	const __u32 *owner = ip4 == SECOPS_LOOPBACK4 ? dns_listener_owner(port) : NULL;
	if (owner) {
		if (*owner == agent->agent_index && bit)
			return SOCK_ALLOW;
		report_denied(agent, agent_cgroup, SECOPS_AF_INET, protocol, port, key.addr, 4,
			      kind, SECOPS_NET_DNS_LISTENER);
		return SOCK_DENY;
	}
	const struct secops_egress_value *v = bpf_map_lookup_elem(&secops_egress4, &key);
	if (ranges_allow(v, port, bit) ||
	    name_allows(agent->agent_index, SECOPS_AF_INET, key.addr, 4, port, bit)) {
		if (count)
			count_allowed(agent->agent_index, SECOPS_AF_INET, protocol, port, key.addr,
				      4);
		return SOCK_ALLOW;
	}
	if (bit && net_granted(agent, agent_cgroup, SECOPS_AF_INET, port, bit, key.addr, 4, count))
		return SOCK_ALLOW;
	report_denied(agent, agent_cgroup, SECOPS_AF_INET, protocol, port, key.addr, 4, kind,
		      SECOPS_NET_UNLISTED);
	return SOCK_DENY;
}

static __always_inline bool is_loopback6(const __u32 ip6[4])
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == 0 && ip6[3] == bpf_htonl(1);
}

static __always_inline int judge6(const struct secops_agent *agent, __u64 agent_cgroup,
				  const __u32 ip6[4], __u16 port, __u16 protocol, __u8 bit,
				  __u8 kind, bool count)
{
	/* ::ffff:a.b.c.d is the IPv4 address it carries, and is judged as one. */
	if (ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0x0000ffff))
		return judge4(agent, agent_cgroup, ip6[3], port, protocol, bit, kind, count);

	struct secops_egress6_key key = {
		.prefixlen = 32 + 128,
		.agent_index = agent->agent_index,
	};
	__builtin_memcpy(key.addr, ip6, 16);
	if (dns_redirected(agent, port, bit))
		return SOCK_ALLOW;
	const __u32 *owner = is_loopback6(ip6) ? dns_listener_owner(port) : NULL;
	if (owner) {
		if (*owner == agent->agent_index && bit)
			return SOCK_ALLOW;
		report_denied(agent, agent_cgroup, SECOPS_AF_INET6, protocol, port, key.addr, 16,
			      kind, SECOPS_NET_DNS_LISTENER);
		return SOCK_DENY;
	}
	const struct secops_egress_value *v = bpf_map_lookup_elem(&secops_egress6, &key);
	if (ranges_allow(v, port, bit) ||
	    name_allows(agent->agent_index, SECOPS_AF_INET6, key.addr, 16, port, bit)) {
		if (count)
			count_allowed(agent->agent_index, SECOPS_AF_INET6, protocol, port, key.addr,
				      16);
		return SOCK_ALLOW;
	}
	if (bit &&
	    net_granted(agent, agent_cgroup, SECOPS_AF_INET6, port, bit, key.addr, 16, count))
		return SOCK_ALLOW;
	report_denied(agent, agent_cgroup, SECOPS_AF_INET6, protocol, port, key.addr, 16, kind,
		      SECOPS_NET_UNLISTED);
	return SOCK_DENY;
}

/* The agent whose egress is judged, or NULL: not an agent, or not enforced for it. */
static __always_inline const struct secops_agent *enforced_agent(__u64 *agent_cgroup)
{
	const struct secops_agent *agent = secops_current_agent(agent_cgroup);
	if (!agent || !(agent->flags & SECOPS_AGENT_EGRESS_ENFORCED))
		return NULL;
	return agent;
}

#endif /* SECOPS_EGRESS_H */
