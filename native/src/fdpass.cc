// SPDX-License-Identifier: Apache-2.0
// File-descriptor handover between two agent processes (SCM_RIGHTS over a SOCK_SEQPACKET unix
// socket): the new agent receives the listening sockets of the old one, which then drains. Node
// cannot pass fds between unrelated processes, so both ends live here, each on a libuv pool thread.
//
// Wire protocol (both ends are this file): the sender connects, sends every message (data of
// 1..64 KiB plus 0..250 fds), shuts its write side down; the receiver reads until that EOF, answers
// with a one-byte acknowledgement and closes. The sender resolves only on that acknowledgement, so
// "sendFds resolved" means "the receiver holds every fd" (a sender that merely closed could not tell
// a receiver that refused the batch from one that took it). Empty data is refused on the sending
// side: on SOCK_SEQPACKET a zero-byte message without fds is indistinguishable from EOF.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "weft.h"

namespace weft {

namespace {

constexpr size_t kMaxData = 64 * 1024;  // bytes of data per message
constexpr size_t kMaxFds = 250;          // fds per message (the kernel's SCM_MAX_FD is 253)
constexpr double kMaxMessagesLimit = 1024;  // bounds the receiver's memory: 1024 x 64 KiB
constexpr uint32_t kDefaultMaxMessages = 64;
constexpr uint8_t kAck = 0x06;

// ---- argument checks (TypeError naming the argument, code WEFT_ERR_NATIVE_USAGE) ----------------

std::string SocketPathArg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw ArgTypeErr(env, "path must be a string");
  std::string p = info[0].As<Napi::String>().Utf8Value();
  if (p.empty() || p[0] != '/') throw ArgTypeErr(env, "path must be an absolute path");
  if (p.find('\0') != std::string::npos) throw ArgTypeErr(env, "path must not contain NUL bytes");
  if (p.size() >= sizeof(sockaddr_un{}.sun_path))
    throw ArgTypeErr(env, "path must be shorter than " + std::to_string(sizeof(sockaddr_un{}.sun_path)) + " bytes");
  return p;
}

Napi::Object OptionsArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsObject() || info[i].IsArray())
    throw ArgTypeErr(info.Env(), "options must be an object");
  return info[i].As<Napi::Object>();
}

// Integer in [lo, hi]; `name` is what the error says.
bool IntOpt(Napi::Object o, const char* key, const std::string& name, double lo, double hi, bool required, double* out) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() && !required) return false;
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!std::isfinite(d) || d != std::floor(d) || d < lo || d > hi)
    throw ArgTypeErr(o.Env(), name + " must be an integer in " + std::to_string(static_cast<int64_t>(lo)) + ".." +
                                  std::to_string(static_cast<int64_t>(hi)));
  *out = d;
  return true;
}

int TimeoutArg(Napi::Object o) {
  double d = 0;
  IntOpt(o, "timeoutMs", "options.timeoutMs", 1, 0x7fffffff, true, &d);
  return static_cast<int>(d);
}

// ---- time -----------------------------------------------------------------------------------

int64_t NowMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Waits for `events` on fd until the monotonic deadline: 1 ready, 0 timed out, -errno on failure.
int PollUntil(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - NowMs();
    if (left < 0) left = 0;
    pollfd p{fd, events, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r > 0) return 1;
    if (r == 0) return 0;
    if (errno != EINTR) return -errno;
  }
}

void CloseAll(std::vector<int>* fds) {
  for (int fd : *fds) close(fd);
  fds->clear();
}

std::string WithPath(const std::string& context, const std::string& path) {
  return context.empty() ? "socket " + path : context + ", socket " + path;
}

sockaddr_un UnixAddr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), path.size());  // length checked by SocketPathArg
  return a;
}

// ---- receive --------------------------------------------------------------------------------

struct Message {
  std::vector<uint8_t> data;
  std::vector<int> fds;
};

class ReceiveWorker : public Napi::AsyncWorker {
 public:
  ReceiveWorker(Napi::Env env, std::string path, int timeoutMs, uint32_t maxMessages)
      : Napi::AsyncWorker(env, "weft-receive-fds"), deferred_(Napi::Promise::Deferred::New(env)),
        path_(std::move(path)), timeoutMs_(timeoutMs), maxMessages_(maxMessages) {}
  // Messages never handed to JS (env torn down before OnOK) must not leak their fds.
  ~ReceiveWorker() override {
    for (Message& m : messages_) CloseAll(&m.fds);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    err_ = Run();
    if (lfd_ >= 0) close(lfd_);
    if (cfd_ >= 0) close(cfd_);
    RemoveSocketFile();
    if (err_) {
      for (Message& m : messages_) CloseAll(&m.fds);
      messages_.clear();
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_) {
      deferred_.Reject(SyscallErr(env, err_.syscall, err_.err, WithPath(err_.context, path_)).Value());
      return;
    }
    Napi::Array out = Napi::Array::New(env, messages_.size());
    for (size_t i = 0; i < messages_.size(); i++) {
      Message& m = messages_[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("data", Napi::Buffer<uint8_t>::Copy(env, m.data.data(), m.data.size()));
      Napi::Array fds = Napi::Array::New(env, m.fds.size());
      for (size_t j = 0; j < m.fds.size(); j++) fds.Set(static_cast<uint32_t>(j), Napi::Number::New(env, m.fds[j]));
      o.Set("fds", fds);
      out.Set(static_cast<uint32_t>(i), o);
    }
    messages_.clear();  // the fds belong to JS now
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  OsError Run() {
    OsError e = Listen();
    if (e) return e;
    e = AcceptRoot();
    if (e) return e;
    // One handover per socket: nobody else may connect once the peer is chosen.
    close(lfd_);
    lfd_ = -1;
    RemoveSocketFile();
    return ReadAll();
  }

  OsError Listen() {
    // A stale socket from a previous (crashed) receiver is replaced; anything else at the path is
    // somebody's file and stays.
    struct stat st{};
    if (lstat(path_.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) return Fail("bind(2)", EEXIST, "the path exists and is not a socket");
      if (unlink(path_.c_str()) < 0 && errno != ENOENT) return Fail("unlink(2)", errno, "stale socket");
    } else if (errno != ENOENT) {
      return Fail("lstat(2)", errno);
    }
    lfd_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (lfd_ < 0) return Fail("socket(2)", errno, "AF_UNIX SOCK_SEQPACKET");
    // Linux creates the socket file with the socket inode's mode (minus umask): 0600 from the first
    // instant, with no window in which another user could connect.
    if (fchmod(lfd_, 0600) < 0) return Fail("fchmod(2)", errno, "socket 0600");
    sockaddr_un a = UnixAddr(path_);
    if (bind(lfd_, reinterpret_cast<const sockaddr*>(&a), sizeof a) < 0) return Fail("bind(2)", errno);
    if (lstat(path_.c_str(), &st) == 0) {
      bound_ = true;
      dev_ = st.st_dev;
      ino_ = st.st_ino;
    }
    if (chmod(path_.c_str(), 0600) < 0) return Fail("chmod(2)", errno, "socket 0600");
    if (listen(lfd_, 8) < 0) return Fail("listen(2)", errno);
    return {};
  }

  OsError AcceptRoot() {
    const int64_t deadline = NowMs() + timeoutMs_;
    unsigned refused = 0;
    long lastUid = -1;
    for (;;) {
      int r = PollUntil(lfd_, POLLIN, deadline);
      if (r < 0) return Fail("poll(2)", -r, "listening socket");
      if (r == 0) {
        std::string ctx = "no connection within " + std::to_string(timeoutMs_) + "ms";
        if (refused > 0)
          ctx += " (refused " + std::to_string(refused) + " non-root peer(s), last uid " + std::to_string(lastUid) + ")";
        return Fail("accept(2)", ETIMEDOUT, ctx);
      }
      int c = accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (c < 0) {
        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) continue;
        return Fail("accept(2)", errno);
      }
      ucred cred{};
      socklen_t len = sizeof cred;
      if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        int err = errno;
        close(c);
        return Fail("getsockopt(2)", err, "SO_PEERCRED");
      }
      // Only root hands listening sockets over; anybody else is dropped and we keep waiting.
      if (cred.uid != 0) {
        close(c);
        refused++;
        lastUid = static_cast<long>(cred.uid);
        continue;
      }
      cfd_ = c;
      return {};
    }
  }

  OsError ReadAll() {
    std::vector<uint8_t> buf(kMaxData);
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * kMaxFds)];
    for (;;) {
      // timeoutMs also bounds each wait for the next message: a peer that stalls cannot pin a pool
      // thread forever.
      int r = PollUntil(cfd_, POLLIN, NowMs() + timeoutMs_);
      if (r < 0) return Fail("poll(2)", -r, "connection");
      if (r == 0)
        return Fail("recvmsg(2)", ETIMEDOUT,
                    "no message within " + std::to_string(timeoutMs_) + "ms after " + std::to_string(messages_.size()) +
                        " message(s)");
      iovec iov{buf.data(), buf.size()};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = ctrl;
      msg.msg_controllen = sizeof ctrl;
      ssize_t n = recvmsg(cfd_, &msg, MSG_CMSG_CLOEXEC);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        return Fail("recvmsg(2)", errno, "after " + std::to_string(messages_.size()) + " message(s)");
      }
      // Take every fd the kernel installed before judging the message, so an error path closes them.
      Message m;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char* p = CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
          int fd;
          std::memcpy(&fd, p + i * sizeof(int), sizeof fd);
          m.fds.push_back(fd);
        }
      }
      std::string which = "message " + std::to_string(messages_.size());
      if (msg.msg_flags & MSG_CTRUNC) {
        CloseAll(&m.fds);
        return Fail("recvmsg(2)", EMSGSIZE,
                    which + ": fds truncated (MSG_CTRUNC: more than " + std::to_string(kMaxFds) + " fds, or the fd table is full)");
      }
      if (msg.msg_flags & MSG_TRUNC) {
        CloseAll(&m.fds);
        return Fail("recvmsg(2)", EMSGSIZE, which + ": data truncated (MSG_TRUNC: more than " + std::to_string(kMaxData) + " bytes)");
      }
      if (n == 0 && m.fds.empty()) break;  // EOF: the sender shut its side down
      if (messages_.size() >= maxMessages_) {
        CloseAll(&m.fds);
        return Fail("recvmsg(2)", ENOBUFS, "more than maxMessages (" + std::to_string(maxMessages_) + ") messages");
      }
      m.data.assign(buf.begin(), buf.begin() + n);
      messages_.push_back(std::move(m));
    }
    // Tell the sender we hold everything. If it is already gone the fds are still ours: ignore.
    uint8_t ack = kAck;
    (void)!send(cfd_, &ack, 1, MSG_NOSIGNAL);
    return {};
  }

  // Unlinks the socket file only while it is still the one this worker bound (a later receiver may
  // have replaced it).
  void RemoveSocketFile() {
    if (!bound_) return;
    bound_ = false;
    struct stat st{};
    if (lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) unlink(path_.c_str());
  }

  Napi::Promise::Deferred deferred_;
  std::string path_;
  int timeoutMs_;
  uint32_t maxMessages_;
  int lfd_ = -1;
  int cfd_ = -1;
  bool bound_ = false;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  OsError err_;
  std::vector<Message> messages_;
};

Napi::Value ReceiveFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = SocketPathArg(info);
  Napi::Object o = OptionsArg(info, 1);
  int timeoutMs = TimeoutArg(o);
  double maxMessages = kDefaultMaxMessages;
  IntOpt(o, "maxMessages", "options.maxMessages", 1, kMaxMessagesLimit, false, &maxMessages);
  auto* w = new ReceiveWorker(env, path, timeoutMs, static_cast<uint32_t>(maxMessages));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// ---- send -----------------------------------------------------------------------------------

class SendWorker : public Napi::AsyncWorker {
 public:
  SendWorker(Napi::Env env, std::string path, std::vector<Message> messages, int timeoutMs)
      : Napi::AsyncWorker(env, "weft-send-fds"), deferred_(Napi::Promise::Deferred::New(env)),
        path_(std::move(path)), messages_(std::move(messages)), timeoutMs_(timeoutMs) {}
  // The fds here are this worker's duplicates, never the caller's.
  ~SendWorker() override {
    for (Message& m : messages_) CloseAll(&m.fds);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    err_ = Run();
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    for (Message& m : messages_) CloseAll(&m.fds);
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (err_) {
      deferred_.Reject(SyscallErr(env, err_.syscall, err_.err, WithPath(err_.context, path_)).Value());
    } else {
      deferred_.Resolve(env.Undefined());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  OsError Run() {
    OsError e = Connect();
    if (e) return e;
    for (size_t i = 0; i < messages_.size(); i++) {
      e = SendOne(i);
      if (e) return e;
    }
    if (shutdown(fd_, SHUT_WR) < 0) return Fail("shutdown(2)", errno, "SHUT_WR");
    return AwaitAck();
  }

  // The receiver may not be listening yet (both agents start side by side): a missing socket or a
  // refused connection is retried until the deadline.
  OsError Connect() {
    const int64_t deadline = NowMs() + timeoutMs_;
    sockaddr_un a = UnixAddr(path_);
    for (;;) {
      fd_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (fd_ < 0) return Fail("socket(2)", errno, "AF_UNIX SOCK_SEQPACKET");
      if (connect(fd_, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0) break;
      int err = errno;
      close(fd_);
      fd_ = -1;
      if (err != ENOENT && err != ECONNREFUSED && err != EAGAIN && err != EINTR) return Fail("connect(2)", err);
      int64_t left = deadline - NowMs();
      if (left <= 0)
        return Fail("connect(2)", ETIMEDOUT,
                    "no receiver within " + std::to_string(timeoutMs_) + "ms (last error " + ErrnoName(err) + ")");
      timespec pause{0, static_cast<long>((left < 20 ? left : 20) * 1000000)};
      nanosleep(&pause, nullptr);
    }
    // Listening sockets go to root only, the mirror image of the receiver's check.
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd_, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return Fail("getsockopt(2)", errno, "SO_PEERCRED");
    if (cred.uid != 0) return Fail("connect(2)", EPERM, "the receiver runs as uid " + std::to_string(cred.uid) + ", not root");
    return {};
  }

  OsError SendOne(size_t i) {
    Message& m = messages_[i];
    iovec iov{m.data.data(), m.data.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * kMaxFds)];
    if (!m.fds.empty()) {
      std::memset(ctrl, 0, sizeof ctrl);
      msg.msg_control = ctrl;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * m.fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * m.fds.size());
      std::memcpy(CMSG_DATA(c), m.fds.data(), sizeof(int) * m.fds.size());
    }
    for (;;) {
      if (sendmsg(fd_, &msg, MSG_NOSIGNAL) >= 0) return {};
      int err = errno;
      if (err == EINTR) continue;
      if (err != EAGAIN) return Fail("sendmsg(2)", err, "message " + std::to_string(i));
      int r = PollUntil(fd_, POLLOUT, NowMs() + timeoutMs_);
      if (r < 0) return Fail("poll(2)", -r, "connection");
      if (r == 0)
        return Fail("sendmsg(2)", ETIMEDOUT,
                    "message " + std::to_string(i) + ": receiver took nothing for " + std::to_string(timeoutMs_) + "ms");
    }
  }

  OsError AwaitAck() {
    const int64_t deadline = NowMs() + timeoutMs_;
    for (;;) {
      int r = PollUntil(fd_, POLLIN, deadline);
      if (r < 0) return Fail("poll(2)", -r, "connection");
      if (r == 0)
        return Fail("recvmsg(2)", ETIMEDOUT, "no acknowledgement within " + std::to_string(timeoutMs_) + "ms");
      uint8_t b = 0;
      ssize_t n = recv(fd_, &b, 1, 0);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        return Fail("recvmsg(2)", errno, "acknowledgement");
      }
      if (n == 1 && b == kAck) return {};
      return Fail("recvmsg(2)", ECONNRESET,
                  n == 0 ? "the receiver closed without acknowledging (it refused the batch or the peer)"
                         : "unexpected acknowledgement byte");
    }
  }

  Napi::Promise::Deferred deferred_;
  std::string path_;
  std::vector<Message> messages_;
  int timeoutMs_;
  int fd_ = -1;
  OsError err_;
};

Napi::Value SendFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = SocketPathArg(info);
  if (info.Length() < 2 || !info[1].IsArray()) throw ArgTypeErr(env, "messages must be an array");
  Napi::Array arr = info[1].As<Napi::Array>();
  if (arr.Length() > kMaxMessagesLimit)
    throw ArgTypeErr(env, "messages must hold at most " + std::to_string(static_cast<int>(kMaxMessagesLimit)) + " messages");
  int timeoutMs = TimeoutArg(OptionsArg(info, 2));

  // Shape first (TypeError, nothing opened yet), then the fds.
  std::vector<Message> messages(arr.Length());
  std::vector<std::vector<double>> rawFds(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    std::string at = "messages[" + std::to_string(i) + "]";
    Napi::Value v = arr.Get(i);
    if (!v.IsObject() || v.IsArray()) throw ArgTypeErr(env, at + " must be an object { data, fds }");
    Napi::Object o = v.As<Napi::Object>();
    Napi::Value data = o.Get("data");
    if (!IsBytes(data)) throw ArgTypeErr(env, at + ".data must be a Buffer");  // not a DataView or other view
    auto b = data.As<Napi::Buffer<uint8_t>>();
    if (b.Length() < 1 || b.Length() > kMaxData)
      throw ArgTypeErr(env, at + ".data must be 1.." + std::to_string(kMaxData) + " bytes (got " + std::to_string(b.Length()) + ")");
    messages[i].data.assign(b.Data(), b.Data() + b.Length());
    Napi::Value fds = o.Get("fds");
    if (!fds.IsArray()) throw ArgTypeErr(env, at + ".fds must be an array of fds");
    Napi::Array fa = fds.As<Napi::Array>();
    if (fa.Length() > kMaxFds) throw ArgTypeErr(env, at + ".fds must hold at most " + std::to_string(kMaxFds) + " fds");
    for (uint32_t j = 0; j < fa.Length(); j++) {
      Napi::Value f = fa.Get(j);
      double d = f.IsNumber() ? f.As<Napi::Number>().DoubleValue() : NAN;
      if (!std::isfinite(d) || d != std::floor(d) || d < 0 || d > 0x7fffffff)
        throw ArgTypeErr(env, at + ".fds[" + std::to_string(j) + "] must be a non-negative integer fd");
      rawFds[i].push_back(d);
    }
  }

  // Every fd must be open now; the worker sends duplicates made here, so what goes out is exactly
  // what the caller passed even if it closes (or reuses) its fds before the worker runs. All fds are
  // checked before the first duplicate exists: a duplicate takes the lowest free number and would
  // make a closed fd later in the list look open.
  Napi::Promise::Deferred failed = Napi::Promise::Deferred::New(env);
  auto fdName = [](size_t i, size_t j, int fd) {
    return "messages[" + std::to_string(i) + "].fds[" + std::to_string(j) + "] = " + std::to_string(fd);
  };
  for (size_t i = 0; i < messages.size(); i++) {
    for (size_t j = 0; j < rawFds[i].size(); j++) {
      int fd = static_cast<int>(rawFds[i][j]);
      if (fcntl(fd, F_GETFD) < 0) {
        failed.Reject(SyscallErr(env, "fcntl(2)", errno, "F_GETFD " + fdName(i, j, fd)).Value());
        return failed.Promise();
      }
    }
  }
  for (size_t i = 0; i < messages.size(); i++) {
    for (size_t j = 0; j < rawFds[i].size(); j++) {
      int fd = static_cast<int>(rawFds[i][j]);
      int dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
      if (dup < 0) {
        int err = errno;
        for (Message& m : messages) CloseAll(&m.fds);
        failed.Reject(SyscallErr(env, "fcntl(2)", err, "F_DUPFD_CLOEXEC " + fdName(i, j, fd)).Value());
        return failed.Promise();
      }
      messages[i].fds.push_back(dup);
    }
  }
  auto* w = new SendWorker(env, path, std::move(messages), timeoutMs);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitFdpass(Napi::Env env, Napi::Object exports, AddonData*) {
  exports.Set("receiveFds", Napi::Function::New(env, ReceiveFds, "receiveFds"));
  exports.Set("sendFds", Napi::Function::New(env, SendFds, "sendFds"));
}

}  // namespace weft
