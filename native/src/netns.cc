// SPDX-License-Identifier: Apache-2.0
// Network-namespace helpers. Sockets are created inside a target netns on a thread the addon owns
// (a joined std::thread for the synchronous calls, a libuv pool thread for connectInNetns) and the
// thread's original netns is always restored. The JS thread never calls setns(2).
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "weft.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif
#ifndef IP_FREEBIND
#define IP_FREEBIND 15
#endif
#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif

namespace weft {

namespace {

struct Addr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int family = 0;
};

bool ParseAddr(std::string host, int port, Addr* out) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (port < 0 || port > 65535) return false;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out->ss);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    out->len = sizeof(sockaddr_in);
    out->family = AF_INET;
    return true;
  }
  out->ss = {};
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out->ss);
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    out->len = sizeof(sockaddr_in6);
    out->family = AF_INET6;
    return true;
  }
  return false;
}

struct SockOpts {
  Addr addr;
  bool hasMark = false;
  uint32_t mark = 0;
  bool transparent = false, freebind = false;
  // listen
  int backlog = 511;
  bool reuseAddr = true;
  int ipv6Only = -1;  // -1: kernel default
  // connect
  bool hasLocal = false;
  Addr local;
  int timeoutMs = 10000;
};

bool OptBool(Napi::Object o, const char* k, bool dflt) {
  Napi::Value v = o.Get(k);
  if (v.IsUndefined()) return dflt;
  if (!v.IsBoolean()) throw UsageErr(o.Env(), std::string(k) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

// mark, transparent, freebind: what a socket must have before it is bound.
void ParseSocketFlags(Napi::Object o, SockOpts* s) {
  int64_t mark = 0;
  if (IntOption(o, "mark", 0, 0xffffffffLL, &mark)) {
    s->hasMark = true;
    s->mark = static_cast<uint32_t>(mark);
  }
  s->transparent = OptBool(o, "transparent", false);
  s->freebind = OptBool(o, "freebind", false);
}

SockOpts ParseSockOpts(const Napi::CallbackInfo& info, bool forListen) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[1].IsObject()) throw UsageErr(env, "options must be an object");
  Napi::Object o = info[1].As<Napi::Object>();
  SockOpts s;
  Napi::Value host = o.Get("host");
  if (!host.IsString()) throw UsageErr(env, "options.host must be a string");
  int64_t port = -1;
  if (!IntOption(o, "port", 0, 65535, &port)) throw UsageErr(env, "options.port must be an integer in 0..65535");
  std::string h = host.As<Napi::String>().Utf8Value();
  if (!ParseAddr(h, static_cast<int>(port), &s.addr)) throw UsageErr(env, "invalid address " + h + ":" + std::to_string(port));
  int64_t n = 0;
  ParseSocketFlags(o, &s);
  if (forListen) {
    if (IntOption(o, "backlog", 0, 0x7fffffff, &n)) s.backlog = static_cast<int>(n);
    s.reuseAddr = OptBool(o, "reuseAddr", true);
    Napi::Value v6 = o.Get("ipv6Only");
    if (!v6.IsUndefined()) s.ipv6Only = OptBool(o, "ipv6Only", false) ? 1 : 0;
  } else {
    Napi::Value la = o.Get("localAddress");
    int64_t lp = 0;
    bool hasLp = IntOption(o, "localPort", 0, 65535, &lp);
    if (!la.IsUndefined() || hasLp) {
      std::string lh;
      if (la.IsString()) lh = la.As<Napi::String>().Utf8Value();
      else if (!la.IsUndefined()) throw UsageErr(env, "options.localAddress must be a string");
      else lh = s.addr.family == AF_INET ? "0.0.0.0" : "::";
      if (!ParseAddr(lh, static_cast<int>(lp), &s.local)) throw UsageErr(env, "invalid local address " + lh);
      if (s.local.family != s.addr.family) throw UsageErr(env, "localAddress and host must be of the same family");
      s.hasLocal = true;
    }
    if (IntOption(o, "timeoutMs", 1, 0x7fffffff, &n)) s.timeoutMs = static_cast<int>(n);
  }
  return s;
}

std::string Describe(const Addr& a) {
  char buf[INET6_ADDRSTRLEN] = {0};
  int port;
  if (a.family == AF_INET) {
    auto* v4 = reinterpret_cast<const sockaddr_in*>(&a.ss);
    inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf);
    port = ntohs(v4->sin_port);
    return std::string(buf) + ":" + std::to_string(port);
  }
  auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a.ss);
  inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
  port = ntohs(v6->sin6_port);
  return "[" + std::string(buf) + "]:" + std::to_string(port);
}

OsError SetInt(int fd, int level, int opt, int val, const char* name) {
  if (setsockopt(fd, level, opt, &val, sizeof val) < 0) return Fail("setsockopt(2)", errno, name);
  return {};
}

// Common socket creation + options; on success *out is the fd (CLOEXEC, NONBLOCK).
OsError MakeSocket(const SockOpts& s, bool forListen, int* out) {
  int fd = socket(s.addr.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Fail("socket(2)", errno);
  OsError e;
  bool v6 = s.addr.family == AF_INET6;
  if (!e && s.hasMark) e = SetInt(fd, SOL_SOCKET, SO_MARK, static_cast<int>(s.mark), "SO_MARK");
  if (!e && s.transparent)
    e = v6 ? SetInt(fd, SOL_IPV6, IPV6_TRANSPARENT, 1, "IPV6_TRANSPARENT") : SetInt(fd, SOL_IP, IP_TRANSPARENT, 1, "IP_TRANSPARENT");
  if (!e && s.freebind)
    e = v6 ? SetInt(fd, SOL_IPV6, IPV6_FREEBIND, 1, "IPV6_FREEBIND") : SetInt(fd, SOL_IP, IP_FREEBIND, 1, "IP_FREEBIND");
  if (forListen) {
    if (!e && s.reuseAddr) e = SetInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
    if (!e && v6 && s.ipv6Only >= 0) e = SetInt(fd, IPPROTO_IPV6, IPV6_V6ONLY, s.ipv6Only, "IPV6_V6ONLY");
    if (!e && bind(fd, reinterpret_cast<const sockaddr*>(&s.addr.ss), s.addr.len) < 0)
      e = Fail("bind(2)", errno, Describe(s.addr));
    if (!e && listen(fd, s.backlog) < 0) e = Fail("listen(2)", errno, Describe(s.addr));
  } else if (!e && s.hasLocal) {
    if (bind(fd, reinterpret_cast<const sockaddr*>(&s.local.ss), s.local.len) < 0)
      e = Fail("bind(2)", errno, Describe(s.local));
  }
  if (e) {
    close(fd);
    return e;
  }
  *out = fd;
  return {};
}

OsError DoConnect(const SockOpts& s, int* out) {
  int fd = -1;
  OsError e = MakeSocket(s, false, &fd);
  if (e) return e;
  std::string what = Describe(s.addr);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&s.addr.ss), s.addr.len) < 0) {
    if (errno != EINPROGRESS) {
      e = Fail("connect(2)", errno, what);
    } else {
      pollfd p{fd, POLLOUT, 0};
      int r;
      do {
        r = poll(&p, 1, s.timeoutMs);
      } while (r < 0 && errno == EINTR);
      if (r < 0) {
        e = Fail("poll(2)", errno, what);
      } else if (r == 0) {
        e = Fail("connect(2)", ETIMEDOUT, what + " after " + std::to_string(s.timeoutMs) + "ms");
      } else {
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0) e = Fail("getsockopt(2)", errno, "SO_ERROR");
        else if (soerr != 0) e = Fail("connect(2)", soerr, what);
      }
    }
  }
  if (e) {
    close(fd);
    return e;
  }
  *out = fd;
  return {};
}

OsError NetnsCookieOf(uint64_t* out) {
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Fail("socket(2)", errno);
  socklen_t len = sizeof(*out);
  OsError e;
  if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, out, &len) < 0) e = Fail("getsockopt(2)", errno, "SO_NETNS_COOKIE");
  close(fd);
  return e;
}

Napi::Value NetnsCookie(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "netnsPath");
  int ns = OpenNetnsOrThrow(env, path);
  uint64_t cookie = 0;
  OsError e = RunInNetns(ns, [&] { return NetnsCookieOf(&cookie); });
  close(ns);
  if (e) throw SyscallErr(env, e.syscall, e.err, e.context.empty() ? "netns " + path : e.context + ", netns " + path);
  return Napi::BigInt::New(env, cookie);
}

Napi::Value CurrentNetnsCookie(const Napi::CallbackInfo& info) {
  uint64_t cookie = 0;
  OsError e = NetnsCookieOf(&cookie);
  if (e) throw SyscallErr(info.Env(), e.syscall, e.err, e.context);
  return Napi::BigInt::New(info.Env(), cookie);
}

Napi::Value ListenInNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "netnsPath");
  SockOpts s = ParseSockOpts(info, true);
  int ns = OpenNetnsOrThrow(env, path);
  int fd = -1;
  OsError e = RunInNetns(ns, [&] { return MakeSocket(s, true, &fd); });
  close(ns);
  if (e) throw SyscallErr(env, e.syscall, e.err, e.context + (e.context.empty() ? "" : ", ") + "netns " + path);
  return Napi::Number::New(env, fd);
}

class ConnectWorker : public Napi::AsyncWorker {
 public:
  ConnectWorker(Napi::Env env, std::string path, SockOpts s)
      : Napi::AsyncWorker(env, "weft-connect-in-netns"), deferred_(Napi::Promise::Deferred::New(env)),
        path_(std::move(path)), s_(s) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int ns = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0) {
      err_ = Fail("open(2)", errno, "netns " + path_);
      return;
    }
    err_ = WithNetns(ns, [&] { return DoConnect(s_, &fd_); });
    close(ns);
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (err_) {
      deferred_.Reject(SyscallErr(env, err_.syscall, err_.err, err_.context + ", netns " + path_).Value());
    } else {
      deferred_.Resolve(Napi::Number::New(env, fd_));
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string path_;
  SockOpts s_;
  OsError err_;
  int fd_ = -1;
};

Napi::Value ConnectInNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "netnsPath");
  SockOpts s = ParseSockOpts(info, false);
  auto* w = new ConnectWorker(env, path, s);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value SocketCookie(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) < 0)
    throw SyscallErr(env, "getsockopt(2)", errno, "SO_COOKIE fd " + std::to_string(fd));
  return Napi::BigInt::New(env, cookie);
}

int FdArg(const Napi::CallbackInfo& info) { return ArgFd(info, 0, "fd"); }

// `count` unconnected TCP sockets made inside a netns in one visit (one thread, one setns pair),
// with the options a socket must have before bind/connect. The caller binds and connects them
// wherever it likes: a socket belongs to the netns it was created in.
Napi::Value SocketsInNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "netnsPath");
  if (info.Length() < 2 || !info[1].IsObject()) throw UsageErr(env, "options must be an object");
  Napi::Object o = info[1].As<Napi::Object>();
  SockOpts s;
  Napi::Value fam = o.Get("family");
  if (!fam.IsString()) throw UsageErr(env, "options.family must be \"ipv4\" or \"ipv6\"");
  std::string f = fam.As<Napi::String>().Utf8Value();
  if (f != "ipv4" && f != "ipv6") throw UsageErr(env, "options.family must be \"ipv4\" or \"ipv6\"");
  s.addr.family = f == "ipv4" ? AF_INET : AF_INET6;
  int64_t d = 0;
  if (!IntOption(o, "count", 1, 1024, &d)) throw UsageErr(env, "options.count must be an integer in 1..1024");
  int count = static_cast<int>(d);
  ParseSocketFlags(o, &s);
  int ns = OpenNetnsOrThrow(env, path);
  std::vector<int> fds;
  OsError e = RunInNetns(ns, [&] {
    for (int i = 0; i < count; i++) {
      int fd = -1;
      OsError err = MakeSocket(s, false, &fd);
      if (err) return err;
      fds.push_back(fd);
    }
    return OsError{};
  });
  close(ns);
  if (e) {
    for (int fd : fds) close(fd);
    throw SyscallErr(env, e.syscall, e.err, e.context + (e.context.empty() ? "" : ", ") + "netns " + path);
  }
  Napi::Array out = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) out.Set(static_cast<uint32_t>(i), Napi::Number::New(env, fds[i]));
  return out;
}

// Every data byte ever queued on a TCP socket: sent once (retransmissions not counted again) or
// still waiting to be sent. Counts bytes the kernel put there on its own (an sk_msg redirect) too.
Napi::Value TcpQueuedBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info);
  struct tcp_info ti;
  std::memset(&ti, 0, sizeof ti);
  socklen_t len = sizeof ti;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
    throw SyscallErr(env, "getsockopt(2)", errno, "TCP_INFO fd " + std::to_string(fd));
  if (len < offsetof(struct tcp_info, tcpi_bytes_retrans) + sizeof ti.tcpi_bytes_retrans)
    throw SyscallErr(env, "getsockopt(2)", EOPNOTSUPP, "TCP_INFO too short for tcpi_bytes_sent");
  return Napi::BigInt::New(env, static_cast<uint64_t>(ti.tcpi_bytes_sent - ti.tcpi_bytes_retrans + ti.tcpi_notsent_bytes));
}

}  // namespace

void InitNetns(Napi::Env env, Napi::Object exports, AddonData*) {
  exports.Set("netnsCookie", Napi::Function::New(env, NetnsCookie, "netnsCookie"));
  exports.Set("currentNetnsCookie", Napi::Function::New(env, CurrentNetnsCookie, "currentNetnsCookie"));
  exports.Set("listenInNetns", Napi::Function::New(env, ListenInNetns, "listenInNetns"));
  exports.Set("connectInNetns", Napi::Function::New(env, ConnectInNetns, "connectInNetns"));
  exports.Set("socketCookie", Napi::Function::New(env, SocketCookie, "socketCookie"));
  exports.Set("socketsInNetns", Napi::Function::New(env, SocketsInNetns, "socketsInNetns"));
  exports.Set("tcpQueuedBytes", Napi::Function::New(env, TcpQueuedBytes, "tcpQueuedBytes"));
}

}  // namespace weft
