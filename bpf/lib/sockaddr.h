/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Filling struct weft_sockaddr from the kernel's various address representations. */
#ifndef __WEFT_SOCKADDR_H
#define __WEFT_SOCKADDR_H

#include "weft.h"

static __always_inline void weft_sockaddr_v4(struct weft_sockaddr *sa, __u32 ip_be, __u16 port_host)
{
	__builtin_memcpy(sa->addr, &ip_be, 4);
	sa->port = port_host;
	sa->family = WEFT_AF_INET;
}

static __always_inline void weft_sockaddr_v6(struct weft_sockaddr *sa, const __u32 *ip6_be, __u16 port_host)
{
	__u32 w0 = ip6_be[0], w1 = ip6_be[1], w2 = ip6_be[2], w3 = ip6_be[3];

	__builtin_memcpy(sa->addr, &w0, 4);
	__builtin_memcpy(sa->addr + 4, &w1, 4);
	__builtin_memcpy(sa->addr + 8, &w2, 4);
	__builtin_memcpy(sa->addr + 12, &w3, 4);
	sa->port = port_host;
	sa->family = WEFT_AF_INET6;
}

/* ::ffff:a.b.c.d — an IPv6 socket talking IPv4. */
static __always_inline int weft_is_v4_mapped(__u32 w0, __u32 w1, __u32 w2)
{
	return w0 == 0 && w1 == 0 && w2 == bpf_htonl(0x0000ffff);
}

static __always_inline int weft_is_loopback_v4(__u32 ip_be)
{
	return (bpf_ntohl(ip_be) >> 24) == 127;
}

/* A port the kernel hands over "in network byte order" in a __u32: some context types put it in the
 * upper half (sock_ops, sk_msg on little-endian), some in the lower; a connected port is never 0. */
static __always_inline __u16 weft_port_from_be32(__u32 v)
{
	return v > 0xffff ? (__u16)bpf_ntohl(v) : bpf_ntohs((__u16)v);
}

/* One end of a connected socket; IPv4-mapped IPv6 is stored as IPv4 (see struct weft_sock_key). */
static __always_inline void weft_sockaddr_any(struct weft_sockaddr *sa, __u32 family, __u32 ip4,
					      __u32 w0, __u32 w1, __u32 w2, __u32 w3, __u16 port)
{
	if (family == WEFT_AF_INET) {
		weft_sockaddr_v4(sa, ip4, port);
	} else if (weft_is_v4_mapped(w0, w1, w2)) {
		weft_sockaddr_v4(sa, w3, port);
	} else {
		__u32 ip6[4] = { w0, w1, w2, w3 };

		weft_sockaddr_v6(sa, ip6, port);
	}
}

#define WEFT_SOCK_KEY(key, ctx)                                                                     \
	do {                                                                                        \
		(key)->netns_cookie = bpf_get_netns_cookie(ctx);                                    \
		weft_sockaddr_any(&(key)->local, (ctx)->family, (ctx)->local_ip4,                   \
				  (ctx)->local_ip6[0], (ctx)->local_ip6[1], (ctx)->local_ip6[2],    \
				  (ctx)->local_ip6[3], (__u16)(ctx)->local_port);                   \
		weft_sockaddr_any(&(key)->remote, (ctx)->family, (ctx)->remote_ip4,                 \
				  (ctx)->remote_ip6[0], (ctx)->remote_ip6[1], (ctx)->remote_ip6[2], \
				  (ctx)->remote_ip6[3], weft_port_from_be32((ctx)->remote_port));   \
	} while (0)

#endif /* __WEFT_SOCKADDR_H */
