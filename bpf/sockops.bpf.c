// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sockops for steered connections. When the pod's socket is established its local address is known,
 * so the original destination recorded at connect() is copied under (netns, local address): that is
 * the accepted socket's peer address, the one key the proxy can compute. When the connection closes,
 * both records go and a CLOSED event carries bytes and duration for the flow pipeline.
 *
 * Same-node splice: with it on, every steered client socket whose destination may be on this node
 * (weft_splice_dsts), and every app socket accepting one of
 * the proxy's splice-candidate upstream connections, goes into weft_splice_socks (so the sk_msg
 * program sees what it sends) with a byte count created before it can send anything.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "weft.h"
#include "maps.h"
#include "events.h"
#include "sockaddr.h"

#define TCP_CLOSE_ 7

/* The client socket's local address, as the proxy will see it as the accepted socket's peer. */
static __always_inline void weft_local_addr(struct bpf_sock_ops *skops, struct weft_sockaddr *sa)
{
	__u16 port = (__u16)skops->local_port; /* host order */

	if (skops->family == WEFT_AF_INET) {
		weft_sockaddr_v4(sa, skops->local_ip4, port);
		return;
	}
	__u32 w0 = skops->local_ip6[0], w1 = skops->local_ip6[1], w2 = skops->local_ip6[2],
	      w3 = skops->local_ip6[3];

	if (weft_is_v4_mapped(w0, w1, w2)) {
		/* the proxy's IPv4 listener sees this peer as plain IPv4 */
		weft_sockaddr_v4(sa, w3, port);
	} else {
		__u32 ip6[4] = { w0, w1, w2, w3 };

		weft_sockaddr_v6(sa, ip6, port);
	}
}

static __always_inline void weft_watch_close(struct bpf_sock_ops *skops)
{
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* Make the socket spliceable: a zero count first, then the sockhash. Returns 0 on success. */
static __always_inline int weft_splice_candidate(struct bpf_sock_ops *skops)
{
	struct weft_splice_count zero = {};
	struct weft_sock_key key = {};

	WEFT_SOCK_KEY(&key, skops);
	if (bpf_map_update_elem(&weft_splice_count, &key, &zero, BPF_NOEXIST))
		return -1; /* full (or a stale entry): never spliced, everything goes through the proxy */
	if (bpf_sock_hash_update(skops, &weft_splice_socks, &key, BPF_NOEXIST)) {
		bpf_map_delete_elem(&weft_splice_count, &key);
		return -1;
	}
	return 0;
}

/* Is the original destination one of this node's pods, or a service that has one? */
static __always_inline int weft_may_be_local(const struct weft_sockaddr *dst)
{
	struct weft_ip_key key = {};

	__builtin_memcpy(key.addr, dst->addr, 16);
	key.family = dst->family;
	return bpf_map_lookup_elem(&weft_splice_dsts, &key) != NULL;
}

static __always_inline void weft_on_established(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct weft_orig_dst *od = bpf_map_lookup_elem(&weft_dst_cookie, &cookie);
	struct weft_tuple_key key = {};

	if (!od)
		return; /* not a steered connection */
	key.netns_cookie = od->netns_cookie;
	weft_local_addr(skops, &key.src);
	bpf_map_update_elem(&weft_dst_tuple, &key, od, BPF_ANY);
	if (weft_splice_enabled() && weft_may_be_local(&od->dst))
		weft_splice_candidate(skops);
	/* ask for state changes so the close is seen and the records are removed */
	weft_watch_close(skops);
}

/*
 * An app accepted a connection: if it is the proxy's upstream, its weft_upstreams entry has done its
 * job (letting the SYN past sk_lookup) and goes now, so it can never let anything else through; a
 * splice candidate's app socket joins the sockhash first.
 */
static __always_inline void weft_on_passive_established(struct bpf_sock_ops *skops)
{
	struct weft_sock_key up = {};
	__u8 *bits;

	WEFT_SOCK_KEY(&up, skops);
	up.netns_cookie = 0; /* as sk_lookup keys it: the pod IP names the netns */
	bits = bpf_map_lookup_elem(&weft_upstreams, &up);
	if (!bits)
		return;
	if ((*bits & WEFT_UPSTREAM_SPLICE) && weft_splice_enabled() && weft_splice_candidate(skops) == 0)
		weft_watch_close(skops);
	bpf_map_delete_elem(&weft_upstreams, &up);
}

/* A spliceable socket closed: its count goes unless the agent still holds the connection (armed
 * or about to be); the agent reads the final count and removes both. */
static __always_inline void weft_splice_on_close(struct bpf_sock_ops *skops)
{
	struct weft_sock_key key = {};

	WEFT_SOCK_KEY(&key, skops);
	if (!bpf_map_lookup_elem(&weft_splice_ctl, &key))
		bpf_map_delete_elem(&weft_splice_count, &key);
}

static __always_inline void weft_on_close(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct weft_orig_dst *od = bpf_map_lookup_elem(&weft_dst_cookie, &cookie);
	struct weft_tuple_key key = {};
	struct weft_event *e;

	if (!od)
		return;
	key.netns_cookie = od->netns_cookie;
	weft_local_addr(skops, &key.src);
	e = weft_event_reserve(WEFT_EV_CLOSED, WEFT_DIR_OUTBOUND, WEFT_REASON_NONE, od->netns_cookie);
	if (e) {
		e->socket_cookie = cookie;
		e->src = key.src;
		e->dst = od->dst;
		e->bytes_sent = skops->bytes_acked;
		e->bytes_received = skops->bytes_received;
		e->duration_ns = bpf_ktime_get_ns() - od->start_ns;
		bpf_ringbuf_submit(e, 0);
	}
	bpf_map_delete_elem(&weft_dst_tuple, &key);
	bpf_map_delete_elem(&weft_dst_cookie, &cookie);
}

SEC("sockops")
int weft_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		weft_on_established(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		weft_on_passive_established(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == TCP_CLOSE_) {
			weft_on_close(skops);
			weft_splice_on_close(skops);
		}
		break;
	default:
		break;
	}
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
