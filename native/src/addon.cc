// SPDX-License-Identifier: Apache-2.0
// Module init, error construction (SyscallError/WeftError handed in from TypeScript), the libbpf
// print callback that keeps recent warnings, netns switching helpers and the env-cleanup mixin.
#include "weft.h"

#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace weft {

AddonData* Data(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

// ---- errors ---------------------------------------------------------------------------------

std::string ErrnoName(int err) {
  if (err < 0) err = -err;
  const char* n = strerrorname_np(err);
  return n ? std::string(n) : "E" + std::to_string(err);
}

static std::string StrError(int err) {
  char buf[256];
  return std::string(strerror_r(err, buf, sizeof buf));  // GNU variant
}

Napi::Error SyscallErr(Napi::Env env, const std::string& syscall, int err, const std::string& context,
                       const std::string& detail) {
  if (err < 0) err = -err;
  if (err == 0) err = EIO;  // never report "success" as a failure reason
  std::string name = ErrnoName(err);
  std::string msg = syscall + ": " + StrError(err) + " (" + name + ")";
  if (!context.empty()) msg += " [" + context + "]";
  if (!detail.empty()) msg += "\n" + detail;
  AddonData* d = Data(env);
  if (d != nullptr && !d->syscallError.IsEmpty()) {
    Napi::Object e = d->syscallError.New({Napi::String::New(env, msg), Napi::String::New(env, syscall),
                                          Napi::Number::New(env, err), Napi::String::New(env, name)});
    return Napi::Error(env, e);
  }
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, "WEFT_ERR_SYSCALL"));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("errnoName", Napi::String::New(env, name));
  return e;
}

static Napi::Error WeftErr(Napi::Env env, const char* code, const std::string& msg) {
  AddonData* d = Data(env);
  if (d != nullptr && !d->weftError.IsEmpty()) {
    Napi::Object e = d->weftError.New({Napi::String::New(env, code), Napi::String::New(env, msg)});
    return Napi::Error(env, e);
  }
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

Napi::Error UsageErr(Napi::Env env, const std::string& msg) { return WeftErr(env, "WEFT_ERR_NATIVE_USAGE", msg); }
Napi::Error BpfErr(Napi::Env env, const std::string& msg) { return WeftErr(env, "WEFT_ERR_BPF", msg); }

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString()) throw UsageErr(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsBuffer()) throw UsageErr(info.Env(), std::string(what) + " must be a Buffer");
  return info[i].As<Napi::Buffer<uint8_t>>();
}

// ---- libbpf log -----------------------------------------------------------------------------

static std::mutex g_logMu;
static std::string g_log;
static constexpr size_t kLogKeep = 256 * 1024;

static int PrintFn(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n <= 0) return 0;
  std::vector<char> buf(static_cast<size_t>(n) + 1);
  vsnprintf(buf.data(), buf.size(), fmt, args);
  static const bool echo = getenv("WEFT_LIBBPF_DEBUG") != nullptr;
  if (echo) fputs(buf.data(), stderr);
  std::lock_guard<std::mutex> lock(g_logMu);
  g_log.append(buf.data(), static_cast<size_t>(n));
  if (g_log.size() > 2 * kLogKeep) g_log.erase(0, g_log.size() - kLogKeep);
  return n;
}

void InstallLibbpfPrint() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(PrintFn); });
}

void LibbpfLogClear() {
  std::lock_guard<std::mutex> lock(g_logMu);
  g_log.clear();
}

std::string LibbpfLogTail(size_t max) {
  std::lock_guard<std::mutex> lock(g_logMu);
  std::string s = g_log;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  if (s.size() > max) {
    s = s.substr(s.size() - max);
    size_t nl = s.find('\n');
    if (nl != std::string::npos && nl + 1 < s.size()) s = s.substr(nl + 1);
    s = "...(libbpf log truncated)...\n" + s;
  }
  return s;
}

// ---- netns ----------------------------------------------------------------------------------

OsError WithNetns(int nsfd, const std::function<OsError()>& fn) {
  if (nsfd < 0) return fn();
  int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) return Fail("open(2)", errno, "/proc/thread-self/ns/net");
  if (setns(nsfd, CLONE_NEWNET) != 0) {
    int e = errno;
    close(self);
    return Fail("setns(2)", e);
  }
  OsError result;
  std::exception_ptr ex;
  try {
    result = fn();
  } catch (...) {
    ex = std::current_exception();
  }
  if (setns(self, CLONE_NEWNET) != 0) {
    // The thread cannot get back to its own netns: everything it did afterwards would happen in
    // the wrong namespace. Better dead than wrong.
    fprintf(stderr, "weft_native: cannot restore thread netns: %s\n", strerror(errno));
    abort();
  }
  close(self);
  if (ex) std::rethrow_exception(ex);
  return result;
}

OsError RunInNetns(int nsfd, const std::function<OsError()>& fn) {
  OsError result;
  std::exception_ptr ex;
  std::thread t([&] {
    try {
      result = WithNetns(nsfd, fn);
    } catch (...) {
      ex = std::current_exception();
    }
  });
  t.join();
  if (ex) std::rethrow_exception(ex);
  return result;
}

int OpenNetnsOrThrow(Napi::Env env, const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw SyscallErr(env, "open(2)", errno, "netns " + path);
  return fd;
}

// ---- env cleanup ----------------------------------------------------------------------------

void EnvCleanup::RegisterCleanup(napi_env env) {
  if (registered_) return;
  env_ = env;
  if (napi_add_env_cleanup_hook(env, &EnvCleanup::Hook, this) == napi_ok) registered_ = true;
}

void EnvCleanup::UnregisterCleanup() {
  if (!registered_) return;
  registered_ = false;
  napi_remove_env_cleanup_hook(env_, &EnvCleanup::Hook, this);
}

void EnvCleanup::Hook(void* arg) {
  auto* self = static_cast<EnvCleanup*>(arg);
  self->registered_ = false;  // the hook is consumed; ReleaseNative must not remove it again
  self->ReleaseNative();
}

// ---- module ---------------------------------------------------------------------------------

static Napi::Value SetErrorClasses(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw UsageErr(env, "setErrorClasses({ SyscallError, WeftError })");
  Napi::Object o = info[0].As<Napi::Object>();
  Napi::Value se = o.Get("SyscallError");
  Napi::Value we = o.Get("WeftError");
  if (!se.IsFunction() || !we.IsFunction()) throw UsageErr(env, "SyscallError and WeftError must be classes");
  AddonData* d = Data(env);
  d->syscallError = Napi::Persistent(se.As<Napi::Function>());
  d->weftError = Napi::Persistent(we.As<Napi::Function>());
  return env.Undefined();
}

static Napi::Value LibbpfVersion(const Napi::CallbackInfo& info) {
  std::string v = libbpf_version_string();
  if (!v.empty() && v[0] == 'v') v.erase(0, 1);
  return Napi::String::New(info.Env(), v);
}

// Give the C heap's free pages back to the kernel (glibc keeps them in its arenas otherwise: after a
// burst of traffic the process would stay at its peak). True when something was released.
static Napi::Value MallocTrim(const Napi::CallbackInfo& info) {
#ifdef __GLIBC__
  return Napi::Boolean::New(info.Env(), malloc_trim(0) != 0);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

// fdpass.cc: receiveFds/sendFds (SCM_RIGHTS handover between agents).
void InitFdpass(Napi::Env env, Napi::Object exports, AddonData* data);

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InstallLibbpfPrint();
  auto* data = new AddonData();
  env.SetInstanceData(data);
  exports.Set("setErrorClasses", Napi::Function::New(env, SetErrorClasses, "setErrorClasses"));
  exports.Set("libbpfVersion", Napi::Function::New(env, LibbpfVersion, "libbpfVersion"));
  exports.Set("mallocTrim", Napi::Function::New(env, MallocTrim, "mallocTrim"));
  InitObject(env, exports, data);
  InitProgram(env, exports, data);
  InitLink(env, exports, data);
  InitMap(env, exports, data);
  InitRingbuf(env, exports, data);
  InitNetns(env, exports, data);
  InitFdpass(env, exports, data);
  return exports;
}

}  // namespace weft

static Napi::Object InitWeftNative(Napi::Env env, Napi::Object exports) { return weft::Init(env, exports); }
NODE_API_MODULE(weft_native, InitWeftNative)
