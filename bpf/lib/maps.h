/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The capture maps. Every capture object includes this header and every map is pinned by name, so
 * the objects loaded with the same pin root share one instance of each map, and a restarted agent
 * finds the maps (and the state in them) where the previous one left them.
 */
#ifndef __WEFT_MAPS_H
#define __WEFT_MAPS_H

#include "weft.h"

/* Enrolled pod network namespaces: netns cookie -> enrollment state. Filled by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct weft_enrollment);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_enrolled SEC(".maps");

/* Original destination by the client socket's cookie, written at connect(). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, struct weft_orig_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_dst_cookie SEC(".maps");

/* Original destination by (netns, client local address), written when the connection is
 * established: the proxy knows exactly this from the socket it accepted. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct weft_tuple_key);
	__type(value, struct weft_orig_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_dst_tuple SEC(".maps");

/* Each enrolled pod's inbound capture listener, keyed by the pod's IP. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct weft_ip_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_listeners SEC(".maps");

/* Connections the proxy is opening to an app from the client's address: never steered inbound.
 * Keyed by the whole connection (the app's pod IP names its netns: sk_lookup has no netns cookie),
 * so an entry lets exactly one connection through; sockops removes it once the app has accepted, the agent when the connect failed. LRU, so
 * entries of an agent that died mid-connect cannot fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct weft_sock_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_upstreams SEC(".maps");

/* Same-node splice: app and proxy sockets (sk_msg redirects between them). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 131072);
	__type(key, struct weft_sock_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_splice_socks SEC(".maps");

/* Same-node splice control, by app socket: the agent arms it. No prealloc, so a reader
 * always sees one whole value even while the agent replaces it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct weft_sock_key);
	__type(value, struct weft_splice_ctl);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_splice_ctl SEC(".maps");

/* Bytes each spliceable app socket sent through the proxy and around it. Created by sockops when
 * the socket is established (before it can send), so no byte is ever uncounted. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct weft_sock_key);
	__type(value, struct weft_splice_count);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_splice_count SEC(".maps");

/* Destinations that may be on this node (its enrolled pods, and VIPs of services with such an
 * endpoint): only connections to them are worth making spliceable. Filled by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct weft_ip_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_splice_dsts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct weft_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_config SEC(".maps");

static __always_inline int weft_splice_enabled(void)
{
	__u32 zero = 0;
	struct weft_config *cfg = bpf_map_lookup_elem(&weft_config, &zero);

	return cfg && (cfg->flags & WEFT_CFG_SPLICE);
}

/* The cgroups (v2 ids) of node agents: their sockets are the proxy's own and are never captured.
 * A pod cannot move itself into another cgroup, unlike a socket mark, which CAP_NET_ADMIN sets.
 * More than one during an agent upgrade (old and new agent side by side). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u64);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_proxy_cgroups SEC(".maps");

/* Ports never captured: port (host order) -> WEFT_EXCLUDE_* bits. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_excl_ports SEC(".maps");

static __always_inline int weft_port_excluded(__u16 port, __u8 direction_bit)
{
	__u8 *bits = bpf_map_lookup_elem(&weft_excl_ports, &port);

	return bits && (*bits & direction_bit);
}

#endif /* __WEFT_MAPS_H */
