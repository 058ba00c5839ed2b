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

#endif /* __WEFT_SOCKADDR_H */
