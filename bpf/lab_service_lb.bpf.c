// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The lab's kube-proxy: a socket-level service load balancer (Cilium-style). Attached with
 * cgroup/connect4 to the lab's cgroup root, it rewrites connect() to a service VIP:port into one of the
 * service's backends, chosen at random, so no packet ever carries the VIP. TCP and (connected) UDP.
 * It never refuses a connection: it returns 1 in every case. The mesh must not depend on it.
 *
 * Map layout (mirrored in agent/lab/lb.ts):
 *   key   { __u32 vip (network order); __u16 port (host order); __u16 pad }
 *   value { __u32 count; __u32 pad; backends[32] { __u32 ip (network order); __u16 port (host order); __u16 pad } }
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define WEFT_LAB_MAX_BACKENDS 32

struct weft_lab_svc_key {
	__u32 vip;
	__u16 port;
	__u16 pad;
};

struct weft_lab_backend {
	__u32 ip;
	__u16 port;
	__u16 pad;
};

struct weft_lab_svc_value {
	__u32 count;
	__u32 pad;
	struct weft_lab_backend backends[WEFT_LAB_MAX_BACKENDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct weft_lab_svc_key);
	__type(value, struct weft_lab_svc_value);
} weft_lab_svc SEC(".maps");

SEC("cgroup/connect4")
int weft_lab_connect4(struct bpf_sock_addr *ctx)
{
	struct weft_lab_svc_key key = {};
	struct weft_lab_svc_value *svc;
	struct weft_lab_backend *be;
	__u32 count, idx;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 1;

	key.vip = ctx->user_ip4;
	key.port = bpf_ntohs((__u16)ctx->user_port);
	svc = bpf_map_lookup_elem(&weft_lab_svc, &key);
	if (!svc)
		return 1;

	count = svc->count;
	if (count == 0 || count > WEFT_LAB_MAX_BACKENDS)
		return 1;
	idx = bpf_get_prandom_u32() % count;
	/* Keep the bound check: clang knows idx < count <= 32 and would drop it; the verifier does not. */
	asm volatile("" : "+r"(idx));
	if (idx >= WEFT_LAB_MAX_BACKENDS)
		return 1;
	be = &svc->backends[idx];
	ctx->user_ip4 = be->ip;
	ctx->user_port = bpf_htons(be->port);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
