/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Capture events for the flow pipeline: a ring buffer of struct weft_event, and a per-CPU count of
 * events that found the ring full. A loss is always counted, never silent.
 */
#ifndef __WEFT_EVENTS_H
#define __WEFT_EVENTS_H

#include "weft.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_ev_lost SEC(".maps");

/* Reserve a zeroed event with its common fields set, or count the loss and return NULL. */
static __always_inline struct weft_event *weft_event_reserve(__u8 kind, __u8 direction, __u8 reason,
							     __u64 netns_cookie)
{
	struct weft_event *e = bpf_ringbuf_reserve(&weft_events, sizeof(*e), 0);

	if (!e) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&weft_ev_lost, &zero);

		if (lost)
			*lost += 1;
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->direction = direction;
	e->reason = reason;
	e->netns_cookie = netns_cookie;
	return e;
}

#endif /* __WEFT_EVENTS_H */
