// SPDX-License-Identifier: Apache-2.0
// Policy routing inside a pod's netns over rtnetlink, for the proxy's transparent sockets
// (agent/ztunnel/inpod-routing.ts says why it is needed). Done here instead of spawning `nsenter ip`
// per pod: no process per enrollment, no dependency on the node's binaries.
//
// Everything runs on a libuv pool thread that has entered the netns (WithNetns restores it): the
// rtnetlink socket is created there, so it talks to that netns's routing, and the sysctls are
// written there too, because /proc/sys/net resolves to the netns of the task (thread) that walks the
// path, not of the process or of the /proc mount. Each request carries NLM_F_ACK and every answer
// is checked; a failure names the rtnetlink operation and what it was about. Raw rtnetlink rather
// than libmnl: five message kinds with u32 attributes do not need a library, and the node needs
// nothing more installed.
#include <fcntl.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>
#include <vector>

#include "weft.h"

#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
#endif
#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif

namespace weft {

namespace {

constexpr size_t kMaxRules = 8;
constexpr uint32_t kMaxPriority = 32765;  // 0 is the `local` rule, 32766/32767 main and default
constexpr int kAnswerTimeoutS = 5;       // the kernel answers at once; bounds a pool thread anyway
constexpr int kDumpRetries = 3;          // a dump interrupted by a concurrent change is redone

struct Rule {
  uint32_t priority = 0, fwmark = 0, table = 0;
};

struct Spec {
  uint32_t table = 0;  // the table of the `local 0.0.0.0/0 dev lo` route, flushed by clear
  std::vector<Rule> rules;
};

// A rule as found in the netns (list): the fields a foreign rule with the same priority may lack.
struct RuleState {
  uint32_t priority = 0;
  bool hasMark = false;
  uint32_t fwmark = 0, fwmask = 0;
  uint32_t table = 0;  // 0: not a lookup rule
};

// ---- arguments (TypeError naming the argument, code WEFT_ERR_NATIVE_USAGE) ------------------

std::string NetnsPathArg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw ArgTypeErr(env, "netnsPath must be a string");
  std::string p = info[0].As<Napi::String>().Utf8Value();
  if (p.find('\0') != std::string::npos) throw ArgTypeErr(env, "netnsPath must not contain NUL bytes");
  // Relative to what? The agent's working directory names no netns.
  if (p.empty() || p[0] != '/') throw ArgTypeErr(env, "netnsPath must be an absolute path");
  return p;
}

uint32_t U32Field(Napi::Object o, const char* key, const std::string& name, uint32_t lo, uint32_t hi) {
  Napi::Value v = o.Get(key);
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  // Compared as doubles before the cast: NaN or an out-of-range double cast to an integer is UB.
  if (!std::isfinite(d) || d != std::floor(d) || d < lo || d > hi)
    throw ArgTypeErr(o.Env(), name + " must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi));
  return static_cast<uint32_t>(d);
}

Spec SpecArg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[1].IsObject() || info[1].IsArray() || info[1].IsFunction())
    throw ArgTypeErr(env, "options must be an object { table, rules }");
  Napi::Object o = info[1].As<Napi::Object>();
  Spec s;
  s.table = U32Field(o, "table", "options.table", 1, 0xffffffffu);
  // clear flushes this table: it must never be one the netns's own routing lives in.
  if (s.table == RT_TABLE_DEFAULT || s.table == RT_TABLE_MAIN || s.table == RT_TABLE_LOCAL)
    throw ArgTypeErr(env, "options.table must not be 253, 254 or 255 (default, main, local): clear flushes it");
  Napi::Value rv = o.Get("rules");
  if (!rv.IsArray()) throw ArgTypeErr(env, "options.rules must be an array of { priority, fwmark, table }");
  Napi::Array arr = rv.As<Napi::Array>();
  if (arr.Length() < 1 || arr.Length() > kMaxRules)
    throw ArgTypeErr(env, "options.rules must hold 1.." + std::to_string(kMaxRules) + " rules");
  std::set<uint32_t> seen;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    std::string at = "options.rules[" + std::to_string(i) + "]";
    Napi::Value v = arr.Get(i);
    if (!v.IsObject() || v.IsArray() || v.IsFunction()) throw ArgTypeErr(env, at + " must be an object { priority, fwmark, table }");
    Napi::Object r = v.As<Napi::Object>();
    Rule rule;
    rule.priority = U32Field(r, "priority", at + ".priority", 1, kMaxPriority);
    // fwmark 0 would be no match at all: the rule would send every packet to its table.
    rule.fwmark = U32Field(r, "fwmark", at + ".fwmark", 1, 0xffffffffu);
    rule.table = U32Field(r, "table", at + ".table", 1, 0xffffffffu);
    if (!seen.insert(rule.priority).second) throw ArgTypeErr(env, at + ".priority " + std::to_string(rule.priority) + " appears twice");
    s.rules.push_back(rule);
  }
  return s;
}

std::string Hex(uint32_t v) {
  char b[16];
  snprintf(b, sizeof b, "0x%x", v);
  return b;
}

std::string Describe(const Rule& r) {
  return "pref " + std::to_string(r.priority) + " fwmark " + Hex(r.fwmark) + " lookup " + std::to_string(r.table);
}

// ---- rtnetlink ------------------------------------------------------------------------------

// One request being built: nlmsghdr, the family header, then u32 attributes.
class Request {
 public:
  Request(uint16_t type, uint16_t flags, const void* hdr, size_t hdrLen) {
    buf_.resize(NLMSG_HDRLEN + NLMSG_ALIGN(hdrLen));
    nlmsghdr* n = Header();
    n->nlmsg_type = type;
    n->nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
    std::memcpy(buf_.data() + NLMSG_HDRLEN, hdr, hdrLen);
  }
  // A message the kernel sent (a dumped route), resent as another request type.
  Request(const nlmsghdr* from, uint16_t type, uint16_t flags) {
    buf_.assign(reinterpret_cast<const uint8_t*>(from), reinterpret_cast<const uint8_t*>(from) + from->nlmsg_len);
    nlmsghdr* n = Header();
    n->nlmsg_type = type;
    n->nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
    n->nlmsg_pid = 0;
  }
  void U32(uint16_t type, uint32_t v) {
    size_t off = buf_.size();
    buf_.resize(off + RTA_SPACE(sizeof v));
    auto* a = reinterpret_cast<rtattr*>(buf_.data() + off);
    a->rta_type = type;
    a->rta_len = RTA_LENGTH(sizeof v);
    std::memcpy(RTA_DATA(a), &v, sizeof v);
  }
  nlmsghdr* Finish(uint32_t seq) {
    nlmsghdr* n = Header();
    n->nlmsg_len = static_cast<uint32_t>(buf_.size());
    n->nlmsg_seq = seq;
    return n;
  }
  uint16_t Type() { return Header()->nlmsg_type; }

 private:
  nlmsghdr* Header() { return reinterpret_cast<nlmsghdr*>(buf_.data()); }
  std::vector<uint8_t> buf_;
};

const char* OpName(uint16_t type) {
  switch (type) {
    case RTM_NEWROUTE: return "RTM_NEWROUTE";
    case RTM_DELROUTE: return "RTM_DELROUTE";
    case RTM_GETROUTE: return "RTM_GETROUTE";
    case RTM_NEWRULE: return "RTM_NEWRULE";
    case RTM_DELRULE: return "RTM_DELRULE";
    case RTM_GETRULE: return "RTM_GETRULE";
    default: return "RTM_?";
  }
}

// Walks the rtattrs that follow a family header of hdrLen bytes in message n.
void ForEachAttr(const nlmsghdr* n, size_t hdrLen, const std::function<void(const rtattr*)>& fn) {
  if (n->nlmsg_len < NLMSG_LENGTH(hdrLen)) return;
  auto* a = reinterpret_cast<const rtattr*>(reinterpret_cast<const uint8_t*>(NLMSG_DATA(n)) + NLMSG_ALIGN(hdrLen));
  int len = static_cast<int>(n->nlmsg_len - NLMSG_LENGTH(NLMSG_ALIGN(hdrLen)));
  for (; RTA_OK(a, len); a = RTA_NEXT(a, len)) fn(a);
}

bool AttrU32(const rtattr* a, uint32_t* out) {
  if (RTA_PAYLOAD(a) < sizeof(uint32_t)) return false;
  std::memcpy(out, RTA_DATA(a), sizeof(uint32_t));
  return true;
}

class Rtnl {
 public:
  ~Rtnl() {
    if (fd_ >= 0) close(fd_);
  }

  // Made on the thread that has entered the netns: the socket belongs to that netns for good.
  OsError Open() {
    fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd_ < 0) return Fail("socket(2)", errno, "AF_NETLINK NETLINK_ROUTE");
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    if (bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) return Fail("bind(2)", errno, "AF_NETLINK");
    timeval tv{kAnswerTimeoutS, 0};
    if (setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) return Fail("setsockopt(2)", errno, "SO_RCVTIMEO");
    // Best effort: the kernel's own explanation of an error (extended ack), without the request
    // echoed back. Older kernels lack them and still answer.
    int one = 1;
    setsockopt(fd_, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
    setsockopt(fd_, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
    buf_.resize(64 * 1024);
    return {};
  }

  // Sends a request with NLM_F_ACK and waits for its NLMSG_ERROR. The kernel's answer goes to
  // *kernelErr (0: acknowledged) for the caller to judge; the OsError is for a failure to ask.
  OsError Ask(Request& req, const std::string& what, int* kernelErr, std::string* extack) {
    uint32_t seq = ++seq_;
    nlmsghdr* n = req.Finish(seq);
    n->nlmsg_flags |= NLM_F_ACK;
    std::string op = std::string("rtnetlink ") + OpName(req.Type());
    OsError e = Send(n, op, what);
    if (e) return e;
    for (;;) {
      int len = 0;
      e = Receive(op, what, &len);
      if (e) return e;
      for (auto* m = reinterpret_cast<nlmsghdr*>(buf_.data()); NLMSG_OK(m, len); m = NLMSG_NEXT(m, len)) {
        if (m->nlmsg_seq != seq) continue;  // a late answer to an earlier request
        if (m->nlmsg_type != NLMSG_ERROR) continue;
        if (m->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return Fail(op.c_str(), EBADMSG, what + ": short NLMSG_ERROR");
        auto* err = static_cast<nlmsgerr*>(NLMSG_DATA(m));
        *kernelErr = -err->error;
        if (*kernelErr != 0 && extack != nullptr) *extack = ExtAck(m, err);
        return {};
      }
    }
  }

  // A dump (NLM_F_DUMP): fn sees every message of the answer. Redone when the kernel says the dump
  // was interrupted by a concurrent change (NLM_F_DUMP_INTR), so what fn saw is one consistent view.
  OsError Dump(uint16_t type, const void* hdr, size_t hdrLen, const std::string& what,
               const std::function<void()>& reset, const std::function<void(const nlmsghdr*)>& fn) {
    std::string op = std::string("rtnetlink ") + OpName(type);
    for (int attempt = 0;; attempt++) {
      reset();
      Request req(type, NLM_F_DUMP, hdr, hdrLen);
      uint32_t seq = ++seq_;
      OsError e = Send(req.Finish(seq), op, what);
      if (e) return e;
      bool done = false, interrupted = false;
      while (!done) {
        int len = 0;
        e = Receive(op, what, &len);
        if (e) return e;
        for (auto* m = reinterpret_cast<nlmsghdr*>(buf_.data()); NLMSG_OK(m, len); m = NLMSG_NEXT(m, len)) {
          if (m->nlmsg_seq != seq) continue;
          if (m->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = true;
          if (m->nlmsg_type == NLMSG_DONE) {
            done = true;
            break;
          }
          if (m->nlmsg_type == NLMSG_ERROR) {
            if (m->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return Fail(op.c_str(), EBADMSG, what + ": short NLMSG_ERROR");
            auto* err = static_cast<nlmsgerr*>(NLMSG_DATA(m));
            std::string x = ExtAck(m, err);
            return Fail(op.c_str(), err->error == 0 ? EBADMSG : -err->error, what + (x.empty() ? "" : ": " + x));
          }
          fn(m);
        }
      }
      if (!interrupted) return {};
      if (attempt + 1 >= kDumpRetries) return Fail(op.c_str(), EAGAIN, what + ": dump interrupted by changes " + std::to_string(kDumpRetries) + " times");
    }
  }

 private:
  OsError Send(nlmsghdr* n, const std::string& op, const std::string& what) {
    sockaddr_nl to{};
    to.nl_family = AF_NETLINK;
    ssize_t r;
    do {
      r = sendto(fd_, n, n->nlmsg_len, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    } while (r < 0 && errno == EINTR);
    if (r < 0) return Fail("sendto(2)", errno, op + " " + what);
    if (static_cast<size_t>(r) != n->nlmsg_len) return Fail("sendto(2)", EMSGSIZE, op + " " + what + ": short send");
    return {};
  }

  // One datagram from the kernel into buf_; anything else (another process writing to our port) is
  // dropped. A truncated datagram would lose messages: refused, not parsed.
  OsError Receive(const std::string& op, const std::string& what, int* len) {
    for (;;) {
      sockaddr_nl from{};
      iovec iov{buf_.data(), buf_.size()};
      msghdr mh{};
      mh.msg_name = &from;
      mh.msg_namelen = sizeof from;
      mh.msg_iov = &iov;
      mh.msg_iovlen = 1;
      ssize_t r = recvmsg(fd_, &mh, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return Fail("recvmsg(2)", ETIMEDOUT, op + " " + what + ": no answer in " + std::to_string(kAnswerTimeoutS) + "s");
      if (r < 0) return Fail("recvmsg(2)", errno, op + " " + what);
      if (mh.msg_flags & MSG_TRUNC) return Fail("recvmsg(2)", EMSGSIZE, op + " " + what + ": answer truncated");
      if (from.nl_pid != 0) continue;
      *len = static_cast<int>(r);
      return {};
    }
  }

  // The kernel's message from an extended ack (NLMSGERR_ATTR_MSG), or "".
  static std::string ExtAck(const nlmsghdr* m, const nlmsgerr* err) {
    if (!(m->nlmsg_flags & NLM_F_ACK_TLVS)) return "";
    size_t hlen = sizeof(nlmsgerr);
    if (!(m->nlmsg_flags & NLM_F_CAPPED)) hlen += err->msg.nlmsg_len - NLMSG_HDRLEN;  // the request, echoed
    hlen = NLMSG_ALIGN(hlen);
    size_t total = m->nlmsg_len - NLMSG_HDRLEN;
    if (hlen >= total) return "";
    auto* a = reinterpret_cast<const rtattr*>(reinterpret_cast<const uint8_t*>(err) + hlen);
    int len = static_cast<int>(total - hlen);
    for (; RTA_OK(a, len); a = RTA_NEXT(a, len)) {
      if (a->rta_type != NLMSGERR_ATTR_MSG || RTA_PAYLOAD(a) == 0) continue;
      const char* s = static_cast<const char*>(RTA_DATA(a));
      return std::string(s, strnlen(s, RTA_PAYLOAD(a)));
    }
    return "";
  }

  int fd_ = -1;
  uint32_t seq_ = 0;
  std::vector<uint8_t> buf_;
};

// An answer the caller did not accept, as an error naming the operation and what it was about.
OsError Refused(uint16_t type, int kernelErr, const std::string& what, const std::string& extack) {
  std::string op = std::string("rtnetlink ") + OpName(type);
  return Fail(op.c_str(), kernelErr, what + (extack.empty() ? "" : ": " + extack));
}

// The IPv4 rules whose priority is in `want`, as the kernel has them.
OsError DumpRules(Rtnl& nl, const std::set<uint32_t>& want, std::vector<RuleState>* out) {
  fib_rule_hdr hdr{};
  hdr.family = AF_INET;
  return nl.Dump(
      RTM_GETRULE, &hdr, sizeof hdr, "ipv4 rules", [&] { out->clear(); },
      [&](const nlmsghdr* m) {
        if (m->nlmsg_type != RTM_NEWRULE || m->nlmsg_len < NLMSG_LENGTH(sizeof(fib_rule_hdr))) return;
        auto* h = static_cast<const fib_rule_hdr*>(NLMSG_DATA(m));
        if (h->family != AF_INET) return;
        RuleState r;
        bool lookup = h->action == FR_ACT_TO_TBL, hasMask = false;
        r.table = lookup ? h->table : 0;
        ForEachAttr(m, sizeof(fib_rule_hdr), [&](const rtattr* a) {
          uint32_t v = 0;
          if (!AttrU32(a, &v)) return;
          if (a->rta_type == FRA_PRIORITY) {
            r.priority = v;  // absent: priority 0
          } else if (a->rta_type == FRA_FWMARK) {
            r.fwmark = v;
            r.hasMark = true;
          } else if (a->rta_type == FRA_FWMASK) {
            r.fwmask = v;
            hasMask = true;
          } else if (a->rta_type == FRA_TABLE && lookup) {
            r.table = v;
          }
        });
        if (r.hasMark && !hasMask) r.fwmask = 0xffffffffu;  // the kernel's default for a bare fwmark
        if (want.count(r.priority)) out->push_back(r);
      });
}

std::set<uint32_t> Priorities(const Spec& s) {
  std::set<uint32_t> p;
  for (const Rule& r : s.rules) p.insert(r.priority);
  return p;
}

// /proc/sys/net/... of the netns this thread is in (see the top of the file).
OsError WriteSysctl(const char* path, const char* value) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Fail("open(2)", errno, path);
  size_t n = strlen(value);
  ssize_t w;
  do {
    w = write(fd, value, n);
  } while (w < 0 && errno == EINTR);
  OsError e;
  if (w < 0) e = Fail("write(2)", errno, path);
  else if (static_cast<size_t>(w) != n) e = Fail("write(2)", EIO, std::string(path) + ": short write");
  close(fd);
  return e;
}

// Without accept_local the reverse-path check of the proxy's SYN (whose source, the client's
// address, is local through the table) drops it; tcp_fwmark_accept gives the app's accepted socket
// the mark of the SYN, so its replies take the marked rule.
const char* const kSysctls[] = {"/proc/sys/net/ipv4/conf/all/accept_local", "/proc/sys/net/ipv4/tcp_fwmark_accept"};

OsError SetSysctls(const char* value) {
  for (const char* p : kSysctls) {
    OsError e = WriteSysctl(p, value);
    if (e) return e;
  }
  return {};
}

OsError DoSetup(const Spec& s) {
  Rtnl nl;
  OsError e = nl.Open();
  if (e) return e;
  std::vector<RuleState> have;
  e = DumpRules(nl, Priorities(s), &have);
  if (e) return e;
  unsigned lo = if_nametoindex("lo");
  if (lo == 0) return Fail("if_nametoindex(3)", errno, "lo");

  // local 0.0.0.0/0 dev lo table T: replaced, so running twice leaves one route.
  {
    rtmsg hdr{};
    hdr.rtm_family = AF_INET;
    hdr.rtm_table = s.table < 256 ? static_cast<uint8_t>(s.table) : static_cast<uint8_t>(RT_TABLE_UNSPEC);
    hdr.rtm_protocol = RTPROT_BOOT;
    hdr.rtm_scope = RT_SCOPE_HOST;
    hdr.rtm_type = RTN_LOCAL;
    Request req(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &hdr, sizeof hdr);
    req.U32(RTA_TABLE, s.table);
    req.U32(RTA_OIF, lo);
    std::string what = "local 0.0.0.0/0 dev lo table " + std::to_string(s.table);
    int kerr = 0;
    std::string x;
    e = nl.Ask(req, what, &kerr, &x);
    if (e) return e;
    if (kerr != 0) return Refused(RTM_NEWROUTE, kerr, what, x);
  }

  // A rule is added only when no rule holds its priority: rules survive agent restarts, and a
  // second identical rule would be added by the kernel without complaint.
  std::set<uint32_t> taken;
  for (const RuleState& r : have) taken.insert(r.priority);
  for (const Rule& r : s.rules) {
    if (taken.count(r.priority)) continue;
    fib_rule_hdr hdr{};
    hdr.family = AF_INET;
    hdr.table = r.table < 256 ? static_cast<uint8_t>(r.table) : static_cast<uint8_t>(RT_TABLE_UNSPEC);
    hdr.action = FR_ACT_TO_TBL;
    Request req(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, &hdr, sizeof hdr);
    req.U32(FRA_PRIORITY, r.priority);
    req.U32(FRA_FWMARK, r.fwmark);
    req.U32(FRA_TABLE, r.table);
    int kerr = 0;
    std::string x;
    e = nl.Ask(req, Describe(r), &kerr, &x);
    if (e) return e;
    // EEXIST: this very rule (same priority, mark, table) was added since the dump; that is the
    // state wanted.
    if (kerr != 0 && kerr != EEXIST) return Refused(RTM_NEWRULE, kerr, Describe(r), x);
  }
  return SetSysctls("1\n");
}

// Every step is tried even when one fails (a missing piece must not keep the others in place);
// the first failure is reported. Already gone (ENOENT, ESRCH) is not a failure.
OsError DoClear(const Spec& s) {
  Rtnl nl;
  OsError e = nl.Open();
  if (e) return e;
  OsError first;
  auto keep = [&](OsError err) {
    if (err && !first) first = err;
  };

  for (const Rule& r : s.rules) {
    // Several rules may share a priority: delete until none is left (bounded, in case the kernel
    // kept answering yes).
    for (int i = 0; i < 64; i++) {
      fib_rule_hdr hdr{};
      hdr.family = AF_INET;
      Request req(RTM_DELRULE, 0, &hdr, sizeof hdr);
      req.U32(FRA_PRIORITY, r.priority);
      std::string what = "pref " + std::to_string(r.priority);
      int kerr = 0;
      std::string x;
      OsError asked = nl.Ask(req, what, &kerr, &x);
      if (asked) {
        keep(asked);
        break;
      }
      if (kerr == ENOENT) break;
      if (kerr != 0) {
        keep(Refused(RTM_DELRULE, kerr, what, x));
        break;
      }
    }
  }

  // Flush the table: dump the IPv4 routes, delete those of the table (sent back as they came).
  std::vector<std::vector<uint8_t>> routes;
  rtmsg dh{};
  dh.rtm_family = AF_INET;
  std::string tname = "table " + std::to_string(s.table);
  keep(nl.Dump(
      RTM_GETROUTE, &dh, sizeof dh, tname, [&] { routes.clear(); },
      [&](const nlmsghdr* m) {
        if (m->nlmsg_type != RTM_NEWROUTE || m->nlmsg_len < NLMSG_LENGTH(sizeof(rtmsg))) return;
        auto* h = static_cast<const rtmsg*>(NLMSG_DATA(m));
        if (h->rtm_family != AF_INET) return;
        uint32_t table = h->rtm_table;
        ForEachAttr(m, sizeof(rtmsg), [&](const rtattr* a) {
          if (a->rta_type == RTA_TABLE) AttrU32(a, &table);
        });
        if (table != s.table) return;
        const auto* b = reinterpret_cast<const uint8_t*>(m);
        routes.emplace_back(b, b + m->nlmsg_len);
      }));
  for (const auto& bytes : routes) {
    Request req(reinterpret_cast<const nlmsghdr*>(bytes.data()), RTM_DELROUTE, 0);
    int kerr = 0;
    std::string x;
    OsError asked = nl.Ask(req, tname, &kerr, &x);
    if (asked) keep(asked);
    else if (kerr != 0 && kerr != ESRCH && kerr != ENOENT) keep(Refused(RTM_DELROUTE, kerr, tname, x));
  }

  for (const char* p : kSysctls) keep(WriteSysctl(p, "0\n"));
  return first;
}

// ---- the calls ------------------------------------------------------------------------------

enum class Op { Setup, Clear, List };

class RoutingWorker : public Napi::AsyncWorker {
 public:
  RoutingWorker(Napi::Env env, Op op, std::string path, Spec spec)
      : Napi::AsyncWorker(env, "weft-netns-routing"), deferred_(Napi::Promise::Deferred::New(env)), op_(op),
        path_(std::move(path)), spec_(std::move(spec)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int ns = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0) {
      err_ = Fail("open(2)", errno);  // OnOK names the netns
      return;
    }
    err_ = WithNetns(ns, [&]() -> OsError {
      switch (op_) {
        case Op::Setup: return DoSetup(spec_);
        case Op::Clear: return DoClear(spec_);
        case Op::List: {
          Rtnl nl;
          OsError e = nl.Open();
          return e ? e : DumpRules(nl, Priorities(spec_), &rules_);
        }
      }
      return Fail("rtnetlink", EINVAL, "unknown operation");
    });
    close(ns);
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_) {
      std::string ctx = err_.context + (err_.context.empty() ? "" : ", ") + "netns " + path_;
      deferred_.Reject(SyscallErr(env, err_.syscall, err_.err, ctx).Value());
      return;
    }
    if (op_ != Op::List) {
      deferred_.Resolve(env.Undefined());
      return;
    }
    Napi::Array out = Napi::Array::New(env, rules_.size());
    for (size_t i = 0; i < rules_.size(); i++) {
      const RuleState& r = rules_[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("priority", Napi::Number::New(env, r.priority));
      if (r.hasMark) {
        o.Set("fwmark", Napi::Number::New(env, r.fwmark));
        o.Set("fwmask", Napi::Number::New(env, r.fwmask));
      }
      if (r.table != 0) o.Set("table", Napi::Number::New(env, r.table));
      out.Set(static_cast<uint32_t>(i), o);
    }
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Op op_;
  std::string path_;
  Spec spec_;
  OsError err_;
  std::vector<RuleState> rules_;
};

template <Op op>
Napi::Value Run(const Napi::CallbackInfo& info) {
  // Arguments are checked here, synchronously: a TypeError is thrown before anything is queued.
  std::string path = NetnsPathArg(info);
  Spec spec = SpecArg(info);
  auto* w = new RoutingWorker(info.Env(), op, std::move(path), std::move(spec));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitRoute(Napi::Env env, Napi::Object exports, AddonData*) {
  exports.Set("setupTransparentRouting", Napi::Function::New(env, Run<Op::Setup>, "setupTransparentRouting"));
  exports.Set("clearTransparentRouting", Napi::Function::New(env, Run<Op::Clear>, "clearTransparentRouting"));
  exports.Set("listRoutingRules", Napi::Function::New(env, Run<Op::List>, "listRoutingRules"));
}

}  // namespace weft
