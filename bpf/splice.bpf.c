// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Same-node splice: the sk_msg verdict for every socket in weft_splice_socks (see the comment on
 * struct weft_splice_ctl in weft.h). A message from an armed app socket whose earlier bytes have all
 * been written onward by the proxy goes straight into the target proxy socket's send queue; any
 * other message goes on to the proxy as usual. (What went around is counted by the agent from the
 * target socket's TCP_INFO: a redirect the target cannot take is retried by the app, so counting
 * here would count it twice.)
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include <bpf/bpf_endian.h>

#include "weft.h"
#include "maps.h"
#include "sockaddr.h"

SEC("sk_msg")
int weft_splice_msg(struct sk_msg_md *msg)
{
	struct weft_sock_key key = {};
	struct weft_splice_count *count;
	struct weft_splice_ctl *ctl;

	WEFT_SOCK_KEY(&key, msg);
	count = bpf_map_lookup_elem(&weft_splice_count, &key);
	if (!count)
		return SK_PASS; /* a proxy socket, or one that was never made spliceable */
	ctl = bpf_map_lookup_elem(&weft_splice_ctl, &key);
	/* count->passed only changes here, under this socket's lock: no message races another */
	if (ctl && ctl->armed && ctl->forwarded == count->passed) {
		struct weft_sock_key target = ctl->target;

		if (bpf_msg_redirect_hash(msg, &weft_splice_socks, &target, 0) == SK_PASS) {
			count->redirected += 1;
			return SK_PASS;
		}
		/* the target is gone: the proxy is tearing the connection down; let it see the rest */
	}
	count->passed += msg->size;
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
