// SPDX-License-Identifier: Apache-2.0
// The node agent's pod channel as weft-cni speaks it: one HTTP/1.1 POST over the agent's root-only
// unix socket, answered with JSON (agent/node/pod-channel.ts is the other side). Everything is bounded
// by one deadline: connect, send and the whole answer.
#ifndef WEFT_CNI_AGENT_CLIENT_H
#define WEFT_CNI_AGENT_CLIENT_H

#include <stddef.h>

#define AGENT_MAX_REPLY (64 * 1024)

enum agent_result {
  AGENT_OK = 0,
  /* No agent listens: the socket file is missing, refuses connections, or the path is not a socket. */
  AGENT_UNREACHABLE,
  /* Connected, but no complete answer before the deadline. */
  AGENT_TIMEOUT,
  /* Connected and answered, but not with an HTTP response this client understands. */
  AGENT_PROTOCOL,
};

struct agent_reply {
  int status;                       /* the HTTP status */
  char body[AGENT_MAX_REPLY + 1];   /* NUL-terminated */
  size_t body_len;
};

/* POST `body` (JSON) to `path` on the agent's socket and wait up to timeout_ms for the answer. On
 * failure `why` says what happened (with the errno text). */
enum agent_result agent_post(const char *socket_path, const char *path, const char *body, int timeout_ms, struct agent_reply *reply, char *why, size_t why_cap);

/* Is anyone accepting connections on the socket (STATUS)? */
enum agent_result agent_probe(const char *socket_path, int timeout_ms, char *why, size_t why_cap);

#endif
