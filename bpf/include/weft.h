/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Structures shared between weft's eBPF programs and the agent. The TypeScript side mirrors every
 * struct here in agent/datapath/layout.ts: change both together, keep explicit padding so the layout
 * is the same on every architecture.
 */
#ifndef __WEFT_H
#define __WEFT_H

/* SO_MARK on every socket the proxy opens itself (Istio's value). Reply routing inside a pod uses it;
 * capture does not: any pod with CAP_NET_ADMIN can set a mark, so the proxy's sockets are recognised
 * by the agent's cgroup instead (weft_proxy_cgroups). */
#define WEFT_PROXY_MARK 0x539

#define WEFT_OUTBOUND_PORT 15001
#define WEFT_INBOUND_PORT 15006
#define WEFT_HBONE_PORT 15008

#define WEFT_AF_INET 2
#define WEFT_AF_INET6 10

/* An IPv4 or IPv6 socket address. IPv4 sits in addr[0..3]; addr is network order, port host order. */
struct weft_sockaddr {
	__u8 addr[16];
	__u16 port;
	__u8 family;
	__u8 pad;
};

/* Value of weft_enrolled, keyed by the pod's network namespace cookie. */
enum weft_enroll_state {
	WEFT_ENROLL_READY = 1,	/* the proxy listens in this netns: steer */
	WEFT_ENROLL_PENDING = 2, /* enrolled, proxy not ready: refuse (fail closed) */
};

struct weft_enrollment {
	__u32 state;
	__u32 pad;
};

/* The original destination of a steered connection. */
struct weft_orig_dst {
	struct weft_sockaddr dst;
	__u64 netns_cookie;
	__u64 start_ns;
};

/* Key of weft_orig_dst_by_tuple: the client socket's local address inside its netns. */
struct weft_tuple_key {
	__u64 netns_cookie;
	struct weft_sockaddr src;
};

/* Key of weft_inbound_listeners (SOCKHASH): a pod IP, whose proxy inbound listener is the value. */
struct weft_ip_key {
	__u8 addr[16];
	__u32 family;
};

/* weft_upstreams: a connection the proxy itself is opening to an app inside a pod, from the original
 * client's address (IP_TRANSPARENT). sk_lookup must let it reach the app, not the proxy. Keyed by a
 * struct weft_sock_key as the app's side sees it: local = the app's address (a pod IP, unique on
 * the node, so it names the netns: sk_lookup cannot read a netns cookie, which is left 0),
 * remote = the transparent source (client IP, port chosen by the proxy). Bits: */
#define WEFT_UPSTREAM_PASS 1   /* sk_lookup lets the SYN reach the app */
#define WEFT_UPSTREAM_SPLICE 2 /* sockops puts the app's accepted socket in weft_splice_socks */

/*
 * Same-node splice (sockhash + sk_msg). The proxy relays a same-node connection through two sockets
 * of its own: P1 (accepted from the client app C) and P2 (connected to the server app S). Once the
 * proxy has authorized the connection it arms the splice: what C sends is pushed by the kernel
 * straight into P2's send queue (so it reaches S), and what S sends into P1's (so it reaches C).
 * Bytes a socket sent before the splice went through the proxy; a redirect is allowed only once the
 * proxy has written every one of them onward (forwarded == passed), so nothing can overtake them.
 */
/* A connected socket, as sk_msg can name it (it has no socket cookie): its netns and both ends.
 * An IPv4-mapped IPv6 address is stored as plain IPv4, so the agent can compute every key. */
struct weft_sock_key {
	__u64 netns_cookie;
	struct weft_sockaddr local;
	struct weft_sockaddr remote;
};

struct weft_splice_ctl { /* written by the agent only; keyed by the app socket */
	struct weft_sock_key target; /* the proxy socket whose send queue takes this app's bytes */
	__u64 forwarded;	     /* bytes of this app socket the proxy has written to target */
	__u32 armed;
	__u32 pad;
};

struct weft_splice_count { /* written by the kernel side only; keyed by the app socket */
	__u64 passed;	  /* bytes sent through the proxy (sk_msg SK_PASS) */
	__u64 redirected; /* messages redirected (0: the proxy saw every byte; no need to ask TCP) */
};

/* weft_config[0]: WEFT_CFG_* bits the agent sets. */
#define WEFT_CFG_SPLICE 1

struct weft_config {
	__u32 flags;
	__u32 pad;
};

/* Bits of weft_excluded_ports values. */
#define WEFT_EXCLUDE_OUTBOUND 1
#define WEFT_EXCLUDE_INBOUND 2

enum weft_event_kind {
	WEFT_EV_STEERED = 1, /* connect() or an inbound SYN sent to the proxy */
	WEFT_EV_PASSED = 2,  /* an enrolled netns's connection deliberately left alone */
	WEFT_EV_REFUSED = 3, /* enrolled but no proxy ready: refused (fail closed) */
	WEFT_EV_CLOSED = 4,  /* a steered connection closed: bytes and duration */
};

enum weft_direction {
	WEFT_DIR_OUTBOUND = 1,
	WEFT_DIR_INBOUND = 2,
};

enum weft_reason {
	WEFT_REASON_NONE = 0,
	WEFT_REASON_EXCLUDED_PORT = 1,
	WEFT_REASON_PROXY_SOCKET = 2,
	WEFT_REASON_LOOPBACK = 3,
	WEFT_REASON_PROXY_NOT_READY = 4,
	WEFT_REASON_NO_LISTENER = 5,
	WEFT_REASON_PROXY_PORT = 6,
	WEFT_REASON_IPV6 = 7, /* native IPv6 from an enrolled pod: not proxied yet, so refused */
};

/* One record of the weft_events ring buffer; 96 bytes. */
struct weft_event {
	__u64 ts_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 netns_cookie;
	__u64 socket_cookie;
	struct weft_sockaddr src;
	struct weft_sockaddr dst; /* the original destination */
	__u8 kind;
	__u8 direction;
	__u8 reason;
	__u8 pad[5];
	__u64 bytes_sent;     /* CLOSED: bytes acknowledged by the peer */
	__u64 bytes_received; /* CLOSED: bytes received */
	__u64 duration_ns;    /* CLOSED: from connect() to close */
};

#endif /* __WEFT_H */
