// SPDX-License-Identifier: Apache-2.0
// weft-cni: the chained CNI plugin that hands each new pod to the node agent before its containers
// start. The runtime runs it after the primary plugin (which created the pod's interface and gave it
// its addresses); on ADD it posts the pod's netns path, container id, name, namespace and addresses to
// the agent's pod channel (agent/node/pod-channel.ts) and waits, bounded, until the agent has attached
// capture, so the pod's first packet is already meshed or refused — never sent around the mesh.
//
// The fail-closed rule, decided here because the plugin cannot ask anyone when the agent is down:
// namespaces listed in `weft.excludeNamespaces` (kube-system, by default) always pass through without
// asking; every other pod's ADD fails (code 11, try again later) while no agent answers, and the
// runtime retries. A pod the agent finds outside the mesh (NOT_ENROLLED) passes through. DEL always
// succeeds: the agent reconciles what it missed. Output on ADD is `prevResult`, byte for byte.
//
// Network configuration (one entry of the conflist; the runtime adds cniVersion, name, prevResult):
//   {"type": "weft-cni", "weft": {"podSocket": "/var/run/weft/pods.sock", "timeoutMs": 10000,
//                                 "excludeNamespaces": ["kube-system"]}}
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent_client.h"
#include "json.h"

#define LATEST_VERSION "1.1.0"
static const char *const SUPPORTED_VERSIONS[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
#define N_SUPPORTED (sizeof(SUPPORTED_VERSIONS) / sizeof(SUPPORTED_VERSIONS[0]))

/* A network configuration is a few KiB; more is not one. */
#define MAX_CONFIG_BYTES (1 << 20)
/* When the configuration names no timeout; CniDefaults.addTimeoutMs (agent/config.ts) is the same
 * value, and the lab and the installer always write it. */
#define DEFAULT_TIMEOUT_MS 10000
#define MIN_TIMEOUT_MS 100
#define MAX_TIMEOUT_MS 300000
#define MAX_EXCLUDED 256
#define MAX_IPS 16
#define NAMESPACE_MAX 63
#define POD_NAME_MAX 253
#define CONTAINER_ID_MAX 256
#define PATH_CAP 4096
#define BODY_CAP 8192

/* CNI's well-known error codes (SPEC.md "Error"), and weft's own from 100 on. */
enum cni_error {
  ERR_INCOMPATIBLE_VERSION = 1,
  ERR_UNSUPPORTED_FIELD = 2,
  ERR_INVALID_ENV = 4,
  ERR_IO = 5,
  ERR_DECODE = 6,
  ERR_INVALID_CONFIG = 7,
  ERR_TRY_AGAIN_LATER = 11,
  ERR_PLUGIN_UNAVAILABLE = 50,
  /* The agent answered and refused the pod (its request was not acceptable). */
  ERR_AGENT_REFUSED = 100,
  /* CHECK: the agent does not hold this pod (or holds another sandbox of it). */
  ERR_POD_NOT_HELD = 101,
};

static const char *out_version = LATEST_VERSION;
static const char *command = "?";

struct config {
  char version[16];
  char name[256];
  int prev; /* token of prevResult, or -1 */
  char socket[sizeof(((struct sockaddr_un *)0)->sun_path)];
  int timeout_ms;
  int n_excluded;
  char excluded[MAX_EXCLUDED][NAMESPACE_MAX + 1];
};

struct pod {
  char container_id[CONTAINER_ID_MAX + 1];
  char netns[PATH_CAP];
  char ifname[16];
  char name[POD_NAME_MAX + 1];
  char namespace_[NAMESPACE_MAX + 1];
  int has_identity; /* CNI_ARGS named a Kubernetes pod */
};

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "weft-cni: %s: ", command);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* The CNI error result on stdout (where the runtime reads it), a line on stderr, exit 1. */
static void fail(int code, const char *msg, const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));
static void fail(int code, const char *msg, const char *fmt, ...) {
  char details[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(details, sizeof(details), fmt, ap);
  va_end(ap);
  static char out[16384];
  size_t pos = (size_t)snprintf(out, sizeof(out), "{\"cniVersion\":\"%s\",\"code\":%d,\"msg\":", out_version, code);
  json_put_string(out, sizeof(out), &pos, msg);
  memcpy(out + pos, ",\"details\":", 11);
  pos += 11;
  json_put_string(out, sizeof(out), &pos, details);
  fputs(out, stdout);
  fputs("}\n", stdout);
  fflush(stdout);
  note("error %d: %s: %s", code, msg, details);
  exit(1);
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// ---------------------------------------------------------------------------------------------
// Checks on what the runtime passes. The agent checks again; these make the error name the variable.

static int is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
static int is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

/* A Kubernetes namespace: an RFC 1123 label. */
static int valid_namespace(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > NAMESPACE_MAX || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1])) return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_lower_alnum(s[i]) && s[i] != '-') return 0;
  return 1;
}

/* A pod name, as the agent accepts it: lower-case alphanumerics, '-' and '.', alphanumeric at both ends. */
static int valid_pod_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > POD_NAME_MAX || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1])) return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_lower_alnum(s[i]) && s[i] != '-' && s[i] != '.') return 0;
  return 1;
}

/* CNI_CONTAINERID: an alphanumeric, then alphanumerics, '_', '.' or '-' (SPEC.md "Parameters"). */
static int valid_container_id(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > CONTAINER_ID_MAX || !is_alnum(s[0])) return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_alnum(s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-') return 0;
  return 1;
}

/* CNI_IFNAME: a Linux interface name (not empty, under 16 bytes, not . or .., no '/', ':' or space). */
static int valid_ifname(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 15 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '/' || c == ':' || c <= ' ' || c == 0x7f) return 0;
  }
  return 1;
}

/* An absolute path of printable ASCII with no `..` segment: the agent enters this netns as root. */
static int valid_abs_path(const char *s, size_t max) {
  size_t n = strlen(s);
  if (n < 2 || n > max || s[0] != '/') return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f) return 0;
  for (const char *p = s; (p = strstr(p, "/..")) != NULL; p += 3)
    if (p[3] == '/' || p[3] == '\0') return 0;
  return 1;
}

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

static void copy_env(char *dst, size_t cap, const char *name, int required, int (*valid)(const char *)) {
  const char *v = env(name);
  dst[0] = '\0';
  if (!v) {
    if (required) fail(ERR_INVALID_ENV, "missing environment variable", "%s is required for %s", name, command);
    return;
  }
  if (strlen(v) >= cap || !valid(v)) fail(ERR_INVALID_ENV, "invalid environment variable", "%s: \"%.200s\" is not valid", name, v);
  memcpy(dst, v, strlen(v) + 1);
}

static int valid_netns(const char *s) { return valid_abs_path(s, PATH_CAP - 1); }

/* CNI_ARGS: "K=V;K=V". Kubernetes runtimes pass K8S_POD_NAMESPACE and K8S_POD_NAME (and others,
 * ignored). Without both, this is no Kubernetes pod: nothing to mesh. */
static void parse_cni_args(struct pod *pod) {
  const char *raw = env("CNI_ARGS");
  pod->has_identity = 0;
  if (!raw) return;
  char buf[4096];
  if (strlen(raw) >= sizeof(buf)) fail(ERR_INVALID_ENV, "invalid environment variable", "CNI_ARGS: longer than %zu bytes", sizeof(buf) - 1);
  memcpy(buf, raw, strlen(raw) + 1);
  int have_name = 0, have_ns = 0;
  char *save = NULL;
  for (char *pair = strtok_r(buf, ";", &save); pair; pair = strtok_r(NULL, ";", &save)) {
    char *eq = strchr(pair, '=');
    if (!eq) fail(ERR_INVALID_ENV, "invalid environment variable", "CNI_ARGS: \"%.100s\" is not KEY=VALUE", pair);
    *eq = '\0';
    const char *key = pair, *value = eq + 1;
    if (strcmp(key, "K8S_POD_NAME") == 0) {
      if (!valid_pod_name(value)) fail(ERR_INVALID_ENV, "invalid environment variable", "CNI_ARGS K8S_POD_NAME: \"%.100s\" is not a pod name", value);
      memcpy(pod->name, value, strlen(value) + 1);
      have_name = 1;
    } else if (strcmp(key, "K8S_POD_NAMESPACE") == 0) {
      if (!valid_namespace(value)) fail(ERR_INVALID_ENV, "invalid environment variable", "CNI_ARGS K8S_POD_NAMESPACE: \"%.100s\" is not a namespace name", value);
      memcpy(pod->namespace_, value, strlen(value) + 1);
      have_ns = 1;
    }
  }
  pod->has_identity = have_name && have_ns;
}

// ---------------------------------------------------------------------------------------------
// The network configuration.

static char *read_stdin(size_t *len) {
  size_t cap = 16384, n = 0;
  char *buf = malloc(cap);
  if (!buf) fail(ERR_IO, "cannot read the network configuration", "out of memory");
  for (;;) {
    if (n == cap) {
      if (cap > MAX_CONFIG_BYTES) fail(ERR_IO, "cannot read the network configuration", "more than %d bytes on stdin", MAX_CONFIG_BYTES);
      cap *= 2;
      char *bigger = realloc(buf, cap + 1);
      if (!bigger) fail(ERR_IO, "cannot read the network configuration", "out of memory");
      buf = bigger;
    }
    ssize_t r = read(STDIN_FILENO, buf + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail(ERR_IO, "cannot read the network configuration", "read stdin: %s", strerror(errno));
    if (r == 0) break;
    n += (size_t)r;
    if (n > MAX_CONFIG_BYTES) fail(ERR_IO, "cannot read the network configuration", "more than %d bytes on stdin", MAX_CONFIG_BYTES);
  }
  *len = n;
  return buf;
}

static void parse_document(struct json_doc *doc, const char *text, size_t len) {
  if (json_parse(doc, text, len) < 0) fail(ERR_DECODE, "cannot decode the network configuration", "%s", doc->error);
  if (doc->tok[0].type != JSON_OBJECT) fail(ERR_DECODE, "cannot decode the network configuration", "it is not a JSON object");
}

static int supported_version(const char *v) {
  for (size_t i = 0; i < N_SUPPORTED; i++)
    if (strcmp(v, SUPPORTED_VERSIONS[i]) == 0) return 1;
  return 0;
}

static void read_string_field(const struct json_doc *doc, int t, char *out, size_t cap, const char *field) {
  if (t < 0 || doc->tok[t].type != JSON_STRING || json_string(doc, t, out, cap) < 0)
    fail(ERR_INVALID_CONFIG, "invalid network configuration", "%s: a string of at most %zu bytes is required", field, cap - 1);
}

static void parse_config(const struct json_doc *doc, struct config *c) {
  memset(c, 0, sizeof(*c));
  int v = json_get(doc, 0, "cniVersion");
  if (v < 0) fail(ERR_INVALID_CONFIG, "invalid network configuration", "cniVersion: missing");
  if (doc->tok[v].type != JSON_STRING || json_string(doc, v, c->version, sizeof(c->version)) < 0 || !supported_version(c->version))
    fail(ERR_INCOMPATIBLE_VERSION, "incompatible CNI version", "cniVersion %.*s is not supported (supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)",
         (int)(doc->tok[v].end - doc->tok[v].start > 40 ? 40 : doc->tok[v].end - doc->tok[v].start), doc->text + doc->tok[v].start);
  out_version = c->version;
  read_string_field(doc, json_get(doc, 0, "name"), c->name, sizeof(c->name), "name");

  int weft = json_get(doc, 0, "weft");
  if (weft < 0 || doc->tok[weft].type != JSON_OBJECT) fail(ERR_INVALID_CONFIG, "invalid network configuration", "weft: the plugin's settings object is required");
  c->timeout_ms = DEFAULT_TIMEOUT_MS;
  int have_socket = 0;
  char key[64];
  int i = weft + 1;
  for (int m = 0; m < doc->tok[weft].count; m++) {
    int k = i, val = i + 1;
    i = doc->tok[val].next;
    if (json_string(doc, k, key, sizeof(key)) < 0) key[0] = '\0';
    if (strcmp(key, "podSocket") == 0) {
      read_string_field(doc, val, c->socket, sizeof(c->socket), "weft.podSocket");
      if (!valid_abs_path(c->socket, sizeof(c->socket) - 1)) fail(ERR_INVALID_CONFIG, "invalid network configuration", "weft.podSocket: \"%s\" is not an absolute path", c->socket);
      have_socket = 1;
    } else if (strcmp(key, "timeoutMs") == 0) {
      int64_t t;
      if (json_int(doc, val, MIN_TIMEOUT_MS, MAX_TIMEOUT_MS, &t) < 0)
        fail(ERR_INVALID_CONFIG, "invalid network configuration", "weft.timeoutMs: an integer from %d to %d is required", MIN_TIMEOUT_MS, MAX_TIMEOUT_MS);
      c->timeout_ms = (int)t;
    } else if (strcmp(key, "excludeNamespaces") == 0) {
      if (doc->tok[val].type != JSON_ARRAY || doc->tok[val].count > MAX_EXCLUDED)
        fail(ERR_INVALID_CONFIG, "invalid network configuration", "weft.excludeNamespaces: a list of at most %d namespace names is required", MAX_EXCLUDED);
      for (int e = 0; e < doc->tok[val].count; e++) {
        char *ns = c->excluded[c->n_excluded];
        int t = json_at(doc, val, e);
        if (doc->tok[t].type != JSON_STRING || json_string(doc, t, ns, NAMESPACE_MAX + 1) < 0 || !valid_namespace(ns))
          fail(ERR_INVALID_CONFIG, "invalid network configuration", "weft.excludeNamespaces[%d]: a namespace name is required", e);
        c->n_excluded++;
      }
    } else {
      /* A misspelt setting must not silently become the default (SPEC.md: code 2 names key and value). */
      size_t n = doc->tok[val].end - doc->tok[val].start;
      fail(ERR_UNSUPPORTED_FIELD, "unsupported field in network configuration", "weft.%s = %.*s%s", key[0] ? key : "(unreadable key)", (int)(n > 80 ? 80 : n),
           doc->text + doc->tok[val].start, n > 80 ? "…" : "");
    }
  }
  if (!have_socket) fail(ERR_INVALID_CONFIG, "invalid network configuration", "weft.podSocket: missing (the node agent's pod channel)");

  c->prev = json_get(doc, 0, "prevResult");
  if (c->prev >= 0 && doc->tok[c->prev].type == JSON_NULL) c->prev = -1;
  if (c->prev >= 0 && doc->tok[c->prev].type != JSON_OBJECT) fail(ERR_INVALID_CONFIG, "invalid network configuration", "prevResult: a result object is required");
}

static int excluded(const struct config *c, const char *ns) {
  for (int i = 0; i < c->n_excluded; i++)
    if (strcmp(c->excluded[i], ns) == 0) return 1;
  return 0;
}

/* The pod's addresses from prevResult: every `ips` entry on an interface inside the sandbox (or with
 * no interface index, as IPAM-only results have), canonicalised. */
static int pod_ips(const struct json_doc *doc, int prev, char ips[MAX_IPS][INET6_ADDRSTRLEN]) {
  int list = json_get(doc, prev, "ips");
  if (list < 0) return 0;
  if (doc->tok[list].type != JSON_ARRAY) fail(ERR_INVALID_CONFIG, "invalid network configuration", "prevResult.ips: a list is required");
  int ifaces = json_get(doc, prev, "interfaces");
  int n = 0;
  for (int i = 0; i < doc->tok[list].count; i++) {
    int entry = json_at(doc, list, i);
    char addr[128];
    if (doc->tok[entry].type != JSON_OBJECT) fail(ERR_INVALID_CONFIG, "invalid network configuration", "prevResult.ips[%d]: an object is required", i);
    int a = json_get(doc, entry, "address");
    if (a < 0 || json_string(doc, a, addr, sizeof(addr)) < 0) fail(ERR_INVALID_CONFIG, "invalid network configuration", "prevResult.ips[%d].address: a CIDR string is required", i);
    int iface = json_get(doc, entry, "interface");
    if (iface >= 0) {
      int64_t idx;
      if (json_int(doc, iface, 0, 1 << 20, &idx) < 0) fail(ERR_INVALID_CONFIG, "invalid network configuration", "prevResult.ips[%d].interface: an index is required", i);
      int obj = json_at(doc, ifaces, (int)idx);
      char sandbox[PATH_CAP];
      int s = json_get(doc, obj, "sandbox");
      /* An address on a host-side interface (a bridge gateway) is not the pod's. */
      if (s < 0 || json_string(doc, s, sandbox, sizeof(sandbox)) <= 0) continue;
    }
    char *slash = strchr(addr, '/');
    if (!slash) fail(ERR_INVALID_CONFIG, "invalid network configuration", "prevResult.ips[%d].address: \"%s\" is not in CIDR form", i, addr);
    *slash = '\0';
    char *end;
    long prefix = strtol(slash + 1, &end, 10);
    unsigned char bin[16];
    int family = strchr(addr, ':') ? AF_INET6 : AF_INET;
    if (*end || end == slash + 1 || prefix < 0 || prefix > (family == AF_INET ? 32 : 128) || inet_pton(family, addr, bin) != 1)
      fail(ERR_INVALID_CONFIG, "invalid network configuration", "prevResult.ips[%d].address: \"%s/%s\" is not an IP address with a prefix", i, addr, slash + 1);
    if (n == MAX_IPS) fail(ERR_INVALID_CONFIG, "invalid network configuration", "prevResult.ips: more than %d addresses for the pod", MAX_IPS);
    inet_ntop(family, bin, ips[n], INET6_ADDRSTRLEN);
    n++;
  }
  return n;
}

static void print_prev_result(const struct json_doc *doc, int prev) {
  fwrite(doc->text + doc->tok[prev].start, 1, doc->tok[prev].end - doc->tok[prev].start, stdout);
  fflush(stdout);
}

// ---------------------------------------------------------------------------------------------
// Talking to the agent.

static void body_field(char *body, size_t *pos, const char *name, const char *value, int first) {
  if (*pos + strlen(name) + 5 >= BODY_CAP) fail(ERR_INVALID_ENV, "request too large", "the pod's description does not fit in %d bytes", BODY_CAP);
  *pos += (size_t)snprintf(body + *pos, BODY_CAP - *pos, "%s\"%s\":", first ? "{" : ",", name);
  if (json_put_string(body, BODY_CAP, pos, value) < 0) fail(ERR_INVALID_ENV, "request too large", "the pod's description does not fit in %d bytes", BODY_CAP);
}

static void pod_body(char *body, const struct pod *pod, int with_netns) {
  size_t pos = 0;
  body_field(body, &pos, "containerId", pod->container_id, 1);
  if (with_netns) body_field(body, &pos, "netns", pod->netns, 0);
  body_field(body, &pos, "podNamespace", pod->namespace_, 0);
  body_field(body, &pos, "podName", pod->name, 0);
}

/* DEL and CHECK: the pod by container id, namespace and name (no netns: it may be gone already). */
static enum agent_result post_pod(const struct config *c, const char *path, const struct pod *pod, struct agent_reply *reply, char *why, size_t why_cap) {
  char body[BODY_CAP];
  pod_body(body, pod, 0);
  strcat(body, "}");
  return agent_post(c->socket, path, body, c->timeout_ms, reply, why, why_cap);
}

/* The agent's JSON answer: the string member `key`, or "" when absent or unreadable. */
static void reply_field(const struct agent_reply *r, const char *key, char *out, size_t cap) {
  struct json_doc doc;
  out[0] = '\0';
  if (json_parse(&doc, r->body, r->body_len) == 0) {
    int t = json_get(&doc, 0, key);
    if (t >= 0 && json_string(&doc, t, out, cap) < 0) out[0] = '\0';
  }
  json_free(&doc);
}

// ---------------------------------------------------------------------------------------------
// Commands.

static void cmd_version(const char *text, size_t len) {
  char version[16] = LATEST_VERSION;
  size_t i = 0;
  while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) i++;
  if (i < len) {
    struct json_doc doc;
    parse_document(&doc, text, len);
    int v = json_get(&doc, 0, "cniVersion");
    char asked[16];
    /* The answer names the version asked about (SPEC.md "VERSION Success"), if it looks like one. */
    if (v >= 0 && json_string(&doc, v, asked, sizeof(asked)) > 0 && strspn(asked, "0123456789.") == strlen(asked)) memcpy(version, asked, sizeof(version));
    json_free(&doc);
  }
  printf("{\"cniVersion\":\"%s\",\"supportedVersions\":[", version);
  for (size_t k = 0; k < N_SUPPORTED; k++) printf("%s\"%s\"", k ? "," : "", SUPPORTED_VERSIONS[k]);
  printf("]}\n");
}

static void read_pod(struct pod *pod, int netns_required) {
  memset(pod, 0, sizeof(*pod));
  copy_env(pod->container_id, sizeof(pod->container_id), "CNI_CONTAINERID", 1, valid_container_id);
  copy_env(pod->netns, sizeof(pod->netns), "CNI_NETNS", netns_required, valid_netns);
  copy_env(pod->ifname, sizeof(pod->ifname), "CNI_IFNAME", 1, valid_ifname);
  parse_cni_args(pod);
}

static void cmd_add(const struct json_doc *doc, const struct config *c) {
  struct pod pod;
  read_pod(&pod, 1);
  if (c->prev < 0) fail(ERR_INVALID_CONFIG, "invalid network configuration", "prevResult: missing; weft-cni is a chained plugin and runs after the one that creates the pod's interface");
  char ips[MAX_IPS][INET6_ADDRSTRLEN];
  int n_ips = pod_ips(doc, c->prev, ips);
  if (!pod.has_identity) {
    note("container %s: no K8S_POD_NAME/K8S_POD_NAMESPACE in CNI_ARGS, not a Kubernetes pod: passed through", pod.container_id);
    print_prev_result(doc, c->prev);
    return;
  }
  if (excluded(c, pod.namespace_)) {
    note("%s/%s: namespace excluded: passed through", pod.namespace_, pod.name);
    print_prev_result(doc, c->prev);
    return;
  }
  if (n_ips == 0) fail(ERR_INVALID_CONFIG, "invalid network configuration", "prevResult.ips: no address on the pod's interface (%s/%s)", pod.namespace_, pod.name);

  char body[BODY_CAP];
  pod_body(body, &pod, 1);
  size_t pos = strlen(body);
  pos += (size_t)snprintf(body + pos, BODY_CAP - pos, ",\"ips\":[");
  for (int i = 0; i < n_ips; i++) pos += (size_t)snprintf(body + pos, BODY_CAP - pos, "%s\"%s\"", i ? "," : "", ips[i]);
  snprintf(body + pos, BODY_CAP - pos, "]}");

  static struct agent_reply reply;
  char why[512];
  long long started = now_ms();
  enum agent_result r = agent_post(c->socket, "/v1/cni/add", body, c->timeout_ms, &reply, why, sizeof(why));
  if (r != AGENT_OK)
    fail(ERR_TRY_AGAIN_LATER, "the weft node agent did not take the pod",
         "%s/%s: %s; pods outside the excluded namespaces start only once the agent has captured them (fail closed)", pod.namespace_, pod.name, why);
  char state[32], error[512];
  reply_field(&reply, "state", state, sizeof(state));
  reply_field(&reply, "error", error, sizeof(error));
  if (reply.status >= 400 && reply.status < 500) fail(ERR_AGENT_REFUSED, "the weft node agent refused the pod", "%s/%s: HTTP %d: %s", pod.namespace_, pod.name, reply.status, error);
  if (reply.status != 200) fail(ERR_TRY_AGAIN_LATER, "the weft node agent could not capture the pod", "%s/%s: HTTP %d: %s", pod.namespace_, pod.name, reply.status, error);
  if (strcmp(state, "READY") != 0 && strcmp(state, "PENDING") != 0 && strcmp(state, "NOT_ENROLLED") != 0)
    fail(ERR_TRY_AGAIN_LATER, "the weft node agent gave no capture state", "%s/%s: answer %.200s", pod.namespace_, pod.name, reply.body);
  note("%s/%s: container %s netns %s: %s in %lld ms", pod.namespace_, pod.name, pod.container_id, pod.netns, state, now_ms() - started);
  print_prev_result(doc, c->prev);
}

static void cmd_del(const struct config *c) {
  struct pod pod;
  read_pod(&pod, 0);
  if (!pod.has_identity || excluded(c, pod.namespace_)) return;
  static struct agent_reply reply;
  char why[512];
  enum agent_result r = post_pod(c, "/v1/cni/del", &pod, &reply, why, sizeof(why));
  /* DEL must succeed: the agent, once back, drops pods whose netns is gone. */
  if (r != AGENT_OK) note("%s/%s: agent not told (%s); it reconciles when it is back", pod.namespace_, pod.name, why);
  else if (reply.status != 200) note("%s/%s: agent answered HTTP %d: %.200s", pod.namespace_, pod.name, reply.status, reply.body);
  else note("%s/%s: container %s deleted", pod.namespace_, pod.name, pod.container_id);
}

static void cmd_check(const struct config *c) {
  struct pod pod;
  read_pod(&pod, 1);
  if (c->prev < 0) fail(ERR_INVALID_CONFIG, "invalid network configuration", "prevResult: missing (CHECK needs the result of the ADD)");
  if (!pod.has_identity || excluded(c, pod.namespace_)) return;
  static struct agent_reply reply;
  char why[512];
  enum agent_result r = post_pod(c, "/v1/cni/check", &pod, &reply, why, sizeof(why));
  /* A runtime may take a failed CHECK as permanent; an agent restarting is not (capture is pinned
   * and keeps refusing the pod's traffic meanwhile), so only the agent's own answer can fail it. */
  if (r != AGENT_OK) {
    note("%s/%s: agent not reachable (%s); not a failure of the pod", pod.namespace_, pod.name, why);
    return;
  }
  char state[32];
  reply_field(&reply, "state", state, sizeof(state));
  if (reply.status == 200 && strcmp(state, "UNKNOWN") == 0)
    fail(ERR_POD_NOT_HELD, "the weft node agent does not hold the pod", "%s/%s (container %s) is not among the agent's pods", pod.namespace_, pod.name, pod.container_id);
  if (reply.status != 200) note("%s/%s: agent answered HTTP %d: %.200s", pod.namespace_, pod.name, reply.status, reply.body);
}

static void cmd_status(const struct config *c) {
  char why[512];
  if (agent_probe(c->socket, c->timeout_ms, why, sizeof(why)) != AGENT_OK)
    fail(ERR_PLUGIN_UNAVAILABLE, "the weft node agent is not available", "%s; new pods outside the excluded namespaces cannot start", why);
}

int main(void) {
  const char *cmd = env("CNI_COMMAND");
  if (!cmd) fail(ERR_INVALID_ENV, "missing environment variable", "CNI_COMMAND is required");
  command = cmd;
  int known = 0;
  for (const char *const *k = (const char *const[]){"ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC", NULL}; *k; k++) known |= strcmp(*k, cmd) == 0;
  if (!known) fail(ERR_INVALID_ENV, "invalid environment variable", "CNI_COMMAND: \"%.40s\" is not ADD, DEL, CHECK, VERSION, STATUS or GC", cmd);

  size_t len;
  char *text = read_stdin(&len);
  if (strcmp(cmd, "VERSION") == 0) {
    cmd_version(text, len);
    return 0;
  }
  struct json_doc doc;
  parse_document(&doc, text, len);
  static struct config c;
  parse_config(&doc, &c);
  if (strcmp(cmd, "ADD") == 0) cmd_add(&doc, &c);
  else if (strcmp(cmd, "DEL") == 0) cmd_del(&c);
  else if (strcmp(cmd, "CHECK") == 0) cmd_check(&c);
  else if (strcmp(cmd, "STATUS") == 0) cmd_status(&c);
  /* GC: the plugin keeps no state of its own; the agent drops pods whose netns is gone. */
  json_free(&doc);
  free(text);
  return 0;
}
