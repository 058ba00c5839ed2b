// SPDX-License-Identifier: Apache-2.0
// HTTP/1.1 over the agent's unix socket, just enough for the pod channel: one request per connection
// ("Connection: close"), an answer with Content-Length, chunked, or ended by the close.
#define _GNU_SOURCE
#include "agent_client.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Headers and chunk framing around a body of at most AGENT_MAX_REPLY bytes. */
#define RAW_CAP (AGENT_MAX_REPLY + 8192)

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 1 ready, 0 deadline passed, -1 error (errno). */
static int wait_fd(int fd, short events, long long deadline) {
  for (;;) {
    long long left = deadline - now_ms();
    if (left <= 0) return 0;
    struct pollfd p = {.fd = fd, .events = events};
    int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
    if (r < 0 && errno == EINTR) continue;
    return r < 0 ? -1 : (r > 0);
  }
}

/* A connected, non-blocking socket, or -1 with *res and why set. */
static int open_socket(const char *path, long long deadline, enum agent_result *res, char *why, size_t cap) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sa.sun_path)) {
    snprintf(why, cap, "socket path %s is longer than %zu bytes", path, sizeof(sa.sun_path) - 1);
    *res = AGENT_UNREACHABLE;
    return -1;
  }
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(why, cap, "socket: %s", strerror(errno));
    *res = AGENT_UNREACHABLE;
    return -1;
  }
  /* A unix-socket connect waits (for room in a full backlog) at most SO_SNDTIMEO. */
  long long left = deadline - now_ms();
  if (left < 1) left = 1;
  struct timeval tv = {.tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int r;
  do r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    int err = errno;
    close(fd);
    snprintf(why, cap, "connect %s: %s", path, strerror(err));
    *res = (err == EAGAIN || err == EINPROGRESS) ? AGENT_TIMEOUT : AGENT_UNREACHABLE;
    return -1;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

/* Digits of `base` in [from, to) as a number no larger than max: the end of the digits, or NULL when
 * there are none or the number is too large. Bounded by `to`, unlike strtoull, which also skips
 * leading white space (CR and LF among it) into whatever follows. */
static const char *parse_number(const char *from, const char *to, int base, unsigned long long max, unsigned long long *out) {
  unsigned long long v = 0;
  const char *p = from;
  for (; p < to; p++) {
    int d;
    if (*p >= '0' && *p <= '9') d = *p - '0';
    else if (base == 16 && *p >= 'a' && *p <= 'f') d = *p - 'a' + 10;
    else if (base == 16 && *p >= 'A' && *p <= 'F') d = *p - 'A' + 10;
    else break;
    if (v > (max - (unsigned)d) / (unsigned)base) return NULL;
    v = v * (unsigned)base + (unsigned)d;
  }
  if (p == from) return NULL;
  *out = v;
  return p;
}

/* Parse what has arrived. 1: a complete response in *reply; 0: need more; -1: malformed (why set). */
static int parse_response(const char *raw, size_t n, int eof, struct agent_reply *reply, char *why, size_t cap) {
  const char *end = memmem(raw, n, "\r\n\r\n", 4);
  if (!end) {
    if (eof || n >= RAW_CAP) {
      snprintf(why, cap, "incomplete HTTP response headers (%zu bytes)", n);
      return -1;
    }
    return 0;
  }
  if (n < 12 || (memcmp(raw, "HTTP/1.1 ", 9) != 0 && memcmp(raw, "HTTP/1.0 ", 9) != 0) || raw[9] < '1' || raw[9] > '5' || raw[10] < '0' || raw[10] > '9' ||
      raw[11] < '0' || raw[11] > '9') {
    snprintf(why, cap, "not an HTTP response");
    return -1;
  }
  reply->status = (raw[9] - '0') * 100 + (raw[10] - '0') * 10 + (raw[11] - '0');
  long long content_length = -1; /* none */
  int chunked = 0;
  const char *line = memchr(raw, '\n', (size_t)(end - raw));
  while (line && line < end) {
    line++;
    const char *eol = memchr(line, '\n', (size_t)(end + 2 - line));
    if (!eol) break;
    const char *colon = memchr(line, ':', (size_t)(eol - line));
    if (colon) {
      size_t name_len = (size_t)(colon - line);
      const char *v = colon + 1;
      while (v < eol && (*v == ' ' || *v == '\t')) v++;
      if (name_len == 14 && strncasecmp(line, "content-length", 14) == 0) {
        unsigned long long cl;
        const char *stop = parse_number(v, eol, 10, (unsigned long long)AGENT_MAX_REPLY + 1, &cl);
        /* What follows the digits may only be the line's end (optional white space, CR). */
        while (stop && stop < eol && (*stop == ' ' || *stop == '\t' || *stop == '\r')) stop++;
        if (!stop || stop != eol) {
          snprintf(why, cap, "bad or oversized Content-Length");
          return -1;
        }
        content_length = (long long)cl;
      } else if (name_len == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
        chunked = memmem(v, (size_t)(eol - v), "chunked", 7) != NULL;
      }
    }
    line = eol;
  }
  const char *body = end + 4;
  size_t have = n - (size_t)(body - raw);
  if (chunked) {
    size_t out = 0;
    const char *p = body, *stop = raw + n;
    for (;;) {
      const char *crlf = memmem(p, (size_t)(stop - p), "\r\n", 2);
      if (!crlf) goto more;
      unsigned long long size;
      const char *after = parse_number(p, crlf, 16, AGENT_MAX_REPLY, &size);
      /* A chunk extension (";name=value") may follow the size; nothing else may. */
      if (!after || (after != crlf && *after != ';' && *after != ' ' && *after != '\t')) {
        snprintf(why, cap, "bad chunk size");
        return -1;
      }
      p = crlf + 2;
      if (size == 0) break;
      if (size > AGENT_MAX_REPLY - out) {
        snprintf(why, cap, "answer longer than %d bytes", AGENT_MAX_REPLY);
        return -1;
      }
      if ((size_t)(stop - p) < size + 2) goto more;
      memcpy(reply->body + out, p, size);
      out += size;
      p += size + 2;
    }
    reply->body_len = out;
    reply->body[out] = '\0';
    return 1;
  more:
    if (eof) {
      snprintf(why, cap, "the answer ended inside a chunk");
      return -1;
    }
    return 0;
  }
  if (content_length >= 0) {
    if (content_length > AGENT_MAX_REPLY) {
      snprintf(why, cap, "answer longer than %d bytes", AGENT_MAX_REPLY);
      return -1;
    }
    if (have < (size_t)content_length) {
      if (eof) {
        snprintf(why, cap, "the answer ended after %zu of %lld bytes", have, content_length);
        return -1;
      }
      return 0;
    }
    have = (size_t)content_length;
  } else if (!eof) {
    return 0;
  }
  if (have > AGENT_MAX_REPLY) {
    snprintf(why, cap, "answer longer than %d bytes", AGENT_MAX_REPLY);
    return -1;
  }
  memcpy(reply->body, body, have);
  reply->body_len = have;
  reply->body[have] = '\0';
  return 1;
}

enum agent_result agent_post(const char *socket_path, const char *path, const char *body, int timeout_ms, struct agent_reply *reply, char *why, size_t why_cap) {
  long long deadline = now_ms() + timeout_ms;
  enum agent_result res = AGENT_OK;
  int fd = open_socket(socket_path, deadline, &res, why, why_cap);
  if (fd < 0) return res;

  size_t body_len = strlen(body);
  char head[256];
  int head_len = snprintf(head, sizeof(head),
                          "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", path, body_len);
  struct iovec_part {
    const char *p;
    size_t n;
  } parts[2] = {{head, (size_t)head_len}, {body, body_len}};
  for (int i = 0; i < 2; i++) {
    size_t off = 0;
    while (off < parts[i].n) {
      ssize_t w = send(fd, parts[i].p + off, parts[i].n - off, MSG_NOSIGNAL);
      if (w > 0) {
        off += (size_t)w;
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno == EAGAIN) {
        int ready = wait_fd(fd, POLLOUT, deadline);
        if (ready > 0) continue;
        if (ready == 0) {
          snprintf(why, why_cap, "no room to send the request within %d ms", timeout_ms);
          res = AGENT_TIMEOUT;
        } else {
          snprintf(why, why_cap, "poll: %s", strerror(errno));
          res = AGENT_UNREACHABLE;
        }
        close(fd);
        return res;
      }
      snprintf(why, why_cap, "send: %s", strerror(errno));
      close(fd);
      return AGENT_UNREACHABLE;
    }
  }

  char *raw = malloc(RAW_CAP);
  if (!raw) {
    snprintf(why, why_cap, "out of memory");
    close(fd);
    return AGENT_PROTOCOL;
  }
  size_t n = 0;
  for (;;) {
    ssize_t r = recv(fd, raw + n, RAW_CAP - n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) {
      int ready = wait_fd(fd, POLLIN, deadline);
      if (ready > 0) continue;
      if (ready == 0) {
        snprintf(why, why_cap, "no answer within %d ms", timeout_ms);
        res = AGENT_TIMEOUT;
      } else {
        snprintf(why, why_cap, "poll: %s", strerror(errno));
        res = AGENT_PROTOCOL;
      }
      break;
    }
    if (r < 0) {
      /* ECONNRESET: the agent went away while we waited (it restarts, or was killed). */
      snprintf(why, why_cap, "recv: %s", strerror(errno));
      res = AGENT_UNREACHABLE;
      break;
    }
    n += (size_t)r;
    int done = parse_response(raw, n, r == 0, reply, why, why_cap);
    if (done == 1) {
      res = AGENT_OK;
      break;
    }
    if (done < 0) {
      /* Closed before saying anything: nobody answered (an agent that died mid-request). */
      res = (r == 0 && n == 0) ? AGENT_UNREACHABLE : AGENT_PROTOCOL;
      if (r == 0 && n == 0) snprintf(why, why_cap, "the agent closed the connection without answering");
      break;
    }
    if (n == RAW_CAP) {
      snprintf(why, why_cap, "answer longer than %d bytes", AGENT_MAX_REPLY);
      res = AGENT_PROTOCOL;
      break;
    }
  }
  free(raw);
  close(fd);
  return res;
}

enum agent_result agent_probe(const char *socket_path, int timeout_ms, char *why, size_t why_cap) {
  enum agent_result res = AGENT_OK;
  int fd = open_socket(socket_path, now_ms() + timeout_ms, &res, why, why_cap);
  if (fd < 0) return res;
  close(fd);
  return AGENT_OK;
}
