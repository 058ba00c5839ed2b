// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Inbound capture (sk_lookup, attached to each enrolled pod's network namespace). A new TCP
 * connection arriving from the network for one of the pod's ports is given to the proxy's inbound
 * listener instead of the app's. Nothing is rewritten: the accepted socket's local address is the
 * original destination. Proxy ports (HBONE 15008 and the capture listeners) and excluded ports go to
 * their normal owners, and so does a connection from the pod's own address to itself: that is the
 * proxy handing a connection to the app (its upstream socket lives in the pod's netns, so its source
 * is the pod IP), or the pod talking to itself. Note that ingress_ifindex cannot tell these apart:
 * for a local destination the kernel reports the device owning the address, not lo. When the proxy
 * hands a connection over from the client's own address (IP_TRANSPARENT, so the app sees the real
 * peer), it registers that one connection (both ends and the netns) in weft_upstreams first, and
 * it passes too.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "weft.h"
#include "maps.h"
#include "events.h"
#include "sockaddr.h"

#define IPPROTO_TCP_ 6

const volatile __u16 inbound_port = WEFT_INBOUND_PORT;
const volatile __u16 outbound_port = WEFT_OUTBOUND_PORT;
const volatile __u16 hbone_port = WEFT_HBONE_PORT;

static __always_inline void weft_report(__u8 kind, __u8 reason, struct bpf_sk_lookup *ctx,
					const struct weft_sockaddr *dst)
{
	struct weft_event *e = weft_event_reserve(kind, WEFT_DIR_INBOUND, reason, 0);

	if (!e)
		return;
	if (ctx->family == WEFT_AF_INET) {
		weft_sockaddr_v4(&e->src, ctx->remote_ip4, bpf_ntohs(ctx->remote_port));
	} else {
		__u32 ip6[4] = { ctx->remote_ip6[0], ctx->remote_ip6[1], ctx->remote_ip6[2],
				 ctx->remote_ip6[3] };

		weft_sockaddr_v6(&e->src, ip6, bpf_ntohs(ctx->remote_port));
	}
	e->dst = *dst;
	bpf_ringbuf_submit(e, 0);
}

SEC("sk_lookup")
int weft_sk_lookup(struct bpf_sk_lookup *ctx)
{
	__u16 port = (__u16)ctx->local_port; /* host order */
	__u16 remote_port = bpf_ntohs(ctx->remote_port);
	struct weft_ip_key key = {};
	struct weft_sockaddr dst = {};
	struct weft_sock_key up = {};
	struct bpf_sock *listener;
	long err;

	if (ctx->protocol != IPPROTO_TCP_)
		return SK_PASS;
	if (port == hbone_port || port == inbound_port || port == outbound_port)
		return SK_PASS;
	if (ctx->family == WEFT_AF_INET) {
		__u32 ip = ctx->local_ip4;

		if (ctx->remote_ip4 == ip)
			return SK_PASS;

		__builtin_memcpy(key.addr, &ip, 4);
		weft_sockaddr_v4(&dst, ip, port);
		weft_sockaddr_v4(&up.remote, ctx->remote_ip4, remote_port);
	} else {
		__u32 ip6[4] = { ctx->local_ip6[0], ctx->local_ip6[1], ctx->local_ip6[2],
				 ctx->local_ip6[3] };

		if (ctx->remote_ip6[0] == ip6[0] && ctx->remote_ip6[1] == ip6[1] &&
		    ctx->remote_ip6[2] == ip6[2] && ctx->remote_ip6[3] == ip6[3])
			return SK_PASS;
		__u32 rip6[4] = { ctx->remote_ip6[0], ctx->remote_ip6[1], ctx->remote_ip6[2],
				  ctx->remote_ip6[3] };

		__builtin_memcpy(key.addr, ip6, 16);
		weft_sockaddr_v6(&dst, ip6, port);
		weft_sockaddr_v6(&up.remote, rip6, remote_port);
	}
	key.family = ctx->family;

	/*
	 * The proxy's own connection to the app, registered for exactly this connection. sk_lookup
	 * cannot read its netns cookie; the key's local address (a pod IP, unique on the node) names
	 * the netns instead, so the cookie is left 0 (see struct weft_sock_key in weft.h).
	 */
	up.local = dst;
	if (bpf_map_lookup_elem(&weft_upstreams, &up))
		return SK_PASS;

	if (weft_port_excluded(port, WEFT_EXCLUDE_INBOUND)) {
		weft_report(WEFT_EV_PASSED, WEFT_REASON_EXCLUDED_PORT, ctx, &dst);
		return SK_PASS;
	}

	/* Enrolled (this program is attached) but no listener: the proxy is not ready. Fail closed. */
	listener = bpf_map_lookup_elem(&weft_listeners, &key);
	if (!listener) {
		weft_report(WEFT_EV_REFUSED, WEFT_REASON_NO_LISTENER, ctx, &dst);
		return SK_DROP;
	}
	err = bpf_sk_assign(ctx, listener, 0);
	bpf_sk_release(listener);
	if (err) {
		weft_report(WEFT_EV_REFUSED, WEFT_REASON_NO_LISTENER, ctx, &dst);
		return SK_DROP;
	}
	weft_report(WEFT_EV_STEERED, WEFT_REASON_NONE, ctx, &dst);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
