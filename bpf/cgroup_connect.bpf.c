// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Outbound capture at connect() time (cgroup/connect4 and cgroup/connect6: one hook, two address
 * families). A TCP connect() from a socket in an enrolled pod network namespace is rewritten to the
 * proxy's outbound listener, 127.0.0.1:15001 inside that same netns, and the original destination is
 * recorded under the socket's cookie. Rewriting at the socket, not the packet, means no NAT and no
 * iptables: the pod's first SYN already goes to the proxy.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "weft.h"
#include "maps.h"
#include "events.h"
#include "sockaddr.h"

#define IPPROTO_TCP_ 6

const volatile __u16 outbound_port = WEFT_OUTBOUND_PORT;

static __always_inline void weft_report(__u8 kind, __u8 reason, __u64 netns, __u64 sock_cookie,
					const struct weft_sockaddr *dst)
{
	struct weft_event *e = weft_event_reserve(kind, WEFT_DIR_OUTBOUND, reason, netns);

	if (!e)
		return;
	e->socket_cookie = sock_cookie;
	e->dst = *dst;
	bpf_ringbuf_submit(e, 0);
}

/*
 * The decision shared by both families. Returns 1 to let connect() go on (steered or not), 0 to
 * refuse it with EPERM. *steer is set when the caller must rewrite the destination.
 */
static __always_inline int weft_decide(struct bpf_sock_addr *ctx, const struct weft_sockaddr *dst,
				       int loopback, int ipv6, int *steer)
{
	__u64 netns = bpf_get_netns_cookie(ctx);
	struct weft_enrollment *en;
	__u64 cookie, cgroup;

	*steer = 0;
	if (ctx->protocol != IPPROTO_TCP_)
		return 1;
	en = bpf_map_lookup_elem(&weft_enrolled, &netns);
	if (!en)
		return 1; /* not an enrolled pod: not ours to touch, and not worth an event */

	cookie = bpf_get_socket_cookie(ctx);
	/*
	 * The proxy's own sockets live in the pod's netns too and must not loop back into it. They are
	 * told apart by the cgroup of the task calling connect(): the agent's. Not by the socket's mark,
	 * which a pod with CAP_NET_ADMIN could set to walk around the proxy.
	 */
	cgroup = bpf_get_current_cgroup_id();
	if (bpf_map_lookup_elem(&weft_proxy_cgroups, &cgroup)) {
		weft_report(WEFT_EV_PASSED, WEFT_REASON_PROXY_SOCKET, netns, cookie, dst);
		return 1;
	}
	if (loopback) {
		weft_report(WEFT_EV_PASSED, WEFT_REASON_LOOPBACK, netns, cookie, dst);
		return 1;
	}
	if (weft_port_excluded(dst->port, WEFT_EXCLUDE_OUTBOUND)) {
		weft_report(WEFT_EV_PASSED, WEFT_REASON_EXCLUDED_PORT, netns, cookie, dst);
		return 1;
	}
	/*
	 * Native IPv6 is not proxied yet (the listeners are IPv4): refuse it rather than let it pass
	 * around the mesh. Dual-stack clients fall back to IPv4 on the error.
	 */
	if (ipv6) {
		weft_report(WEFT_EV_REFUSED, WEFT_REASON_IPV6, netns, cookie, dst);
		return 0;
	}
	/* Fail closed: an enrolled pod whose proxy is not ready gets no plaintext path around it. */
	if (en->state != WEFT_ENROLL_READY) {
		weft_report(WEFT_EV_REFUSED, WEFT_REASON_PROXY_NOT_READY, netns, cookie, dst);
		return 0;
	}

	struct weft_orig_dst od = {};

	od.dst = *dst;
	od.netns_cookie = netns;
	od.start_ns = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&weft_dst_cookie, &cookie, &od, BPF_ANY)) {
		/* Without a record the proxy could not forward it: refuse rather than leak. */
		weft_report(WEFT_EV_REFUSED, WEFT_REASON_NONE, netns, cookie, dst);
		return 0;
	}
	weft_report(WEFT_EV_STEERED, WEFT_REASON_NONE, netns, cookie, dst);
	*steer = 1;
	return 1;
}

SEC("cgroup/connect4")
int weft_connect4(struct bpf_sock_addr *ctx)
{
	struct weft_sockaddr dst = {};
	__u32 ip = ctx->user_ip4;
	int steer, ret;

	weft_sockaddr_v4(&dst, ip, bpf_ntohs((__u16)ctx->user_port));
	ret = weft_decide(ctx, &dst, weft_is_loopback_v4(ip), 0, &steer);
	if (steer) {
		ctx->user_ip4 = bpf_htonl(0x7f000001);
		ctx->user_port = bpf_htons(outbound_port);
	}
	return ret;
}

SEC("cgroup/connect6")
int weft_connect6(struct bpf_sock_addr *ctx)
{
	struct weft_sockaddr dst = {};
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	int mapped = weft_is_v4_mapped(w0, w1, w2);
	int loopback, steer, ret;

	if (mapped) {
		/* A dual-stack socket dialling IPv4: record and steer it as IPv4. */
		weft_sockaddr_v4(&dst, w3, port);
		loopback = weft_is_loopback_v4(w3);
	} else {
		__u32 ip6[4] = { w0, w1, w2, w3 };

		weft_sockaddr_v6(&dst, ip6, port);
		loopback = w0 == 0 && w1 == 0 && w2 == 0 && w3 == bpf_htonl(1);
	}
	ret = weft_decide(ctx, &dst, loopback, !mapped, &steer);
	if (steer) {
		/* only IPv4-mapped destinations are steered: to the IPv4 listener, through the mapping */
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = bpf_htonl(0x7f000001);
		ctx->user_port = bpf_htons(outbound_port);
	}
	return ret;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
