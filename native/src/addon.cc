// SPDX-License-Identifier: Apache-2.0
// Module init, error construction (SyscallError/WeftError handed in from TypeScript), the libbpf
// print callback that keeps recent warnings, netns switching helpers and the env-cleanup mixin.
#include "weft.h"

#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
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

// Error numbers the kernel uses inside (include/linux/errno.h) that bpf(2) still returns, e.g.
// ENOTSUPP for a lookup on a ring buffer; libc has no name for them.
struct KernelErrno {
  int err;
  const char* name;
  const char* text;
};
static const KernelErrno kKernelErrnos[] = {
    {512, "ERESTARTSYS", "Restart system call"},
    {513, "ERESTARTNOINTR", "Restart system call (no interrupt)"},
    {514, "ERESTARTNOHAND", "Restart if no handler"},
    {515, "ENOIOCTLCMD", "No ioctl command"},
    {516, "ERESTART_RESTARTBLOCK", "Restart by calling sys_restart_syscall"},
    {517, "EPROBE_DEFER", "Driver requests probe retry"},
    {518, "EOPENSTALE", "Open found a stale dentry"},
    {519, "ENOPARAM", "Parameter not supported"},
    {521, "EBADHANDLE", "Illegal NFS file handle"},
    {522, "ENOTSYNC", "Update synchronization mismatch"},
    {523, "EBADCOOKIE", "Cookie is stale"},
    {524, "ENOTSUPP", "Operation is not supported"},
    {525, "ETOOSMALL", "Buffer or request is too small"},
    {526, "ESERVERFAULT", "An untranslatable error occurred"},
    {527, "EBADTYPE", "Type not supported by server"},
    {528, "EJUKEBOX", "Request initiated, but will not complete before timeout"},
    {529, "EIOCBQUEUED", "iocb queued, will get completion event"},
    {530, "ERECALLCONFLICT", "Conflict with recalled state"},
};

static const KernelErrno* KernelErrnoOf(int err) {
  for (const KernelErrno& k : kKernelErrnos)
    if (k.err == err) return &k;
  return nullptr;
}

std::string ErrnoName(int err) {
  if (err < 0) err = -err;
  if (const KernelErrno* k = KernelErrnoOf(err)) return k->name;
  const char* n = strerrorname_np(err);
  return n ? std::string(n) : "E" + std::to_string(err);
}

static std::string StrError(int err) {
  if (const KernelErrno* k = KernelErrnoOf(err)) return k->text;
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
Napi::Error ArgTypeErr(Napi::Env env, const std::string& msg) {
  Napi::Error e = Napi::TypeError::New(env, msg);
  e.Set("code", Napi::String::New(env, "WEFT_ERR_NATIVE_USAGE"));
  return e;
}


std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString()) throw UsageErr(info.Env(), std::string(what) + " must be a string");
  std::string s = info[i].As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) throw UsageErr(info.Env(), std::string(what) + " must not contain NUL bytes");
  return s;
}

bool IsBytes(Napi::Value v) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array;
}

Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !IsBytes(info[i])) throw UsageErr(info.Env(), std::string(what) + " must be a Buffer");
  return info[i].As<Napi::Buffer<uint8_t>>();
}

int64_t IntValue(Napi::Env env, Napi::Value v, const std::string& what, int64_t lo, int64_t hi) {
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  // Compared as doubles before any cast: casting NaN or an out-of-range double to an integer is UB.
  if (!std::isfinite(d) || d != std::floor(d) || d < static_cast<double>(lo) || d > static_cast<double>(hi))
    throw UsageErr(env, what + " must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi));
  return static_cast<int64_t>(d);
}

bool IntOption(Napi::Object o, const char* key, int64_t lo, int64_t hi, int64_t* out) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return false;
  *out = IntValue(o.Env(), v, std::string("options.") + key, lo, hi);
  return true;
}

int ArgFd(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i) throw UsageErr(info.Env(), std::string(what) + " must be a number");
  return static_cast<int>(IntValue(info.Env(), info[i], what, 0, 0x7fffffff));
}

// ---- instance type tags -----------------------------------------------------------------------

static const napi_type_tag kTags[] = {
    {0x7765667420627066ULL, 0x6f626a6563740001ULL},  // Object
    {0x7765667420627066ULL, 0x70726f6772616d02ULL},  // Program
    {0x7765667420627066ULL, 0x6d61700000000003ULL},  // Map
    {0x7765667420627066ULL, 0x6c696e6b00000004ULL},  // Link
    {0x7765667420627066ULL, 0x7463000000000005ULL},  // Tc
    {0x7765667420627066ULL, 0x736f636b6d617006ULL},  // Sockmap
    {0x7765667420627066ULL, 0x72696e6762756607ULL},  // Ringbuf
};

void TagInstance(Napi::Env env, Napi::Object self, Kind kind) {
  napi_status s = napi_type_tag_object(env, self, &kTags[static_cast<int>(kind)]);
  if (s != napi_ok) throw UsageErr(env, "cannot tag a native handle");
}

bool HasKind(Napi::Env env, Napi::Value v, Kind kind) {
  if (!v.IsObject()) return false;
  bool result = false;
  if (napi_check_object_type_tag(env, v, &kTags[static_cast<int>(kind)], &result) != napi_ok) return false;
  return result;
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
// route.cc: policy routing in a pod's netns over rtnetlink.
void InitRoute(Napi::Env env, Napi::Object exports, AddonData* data);

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
  InitRoute(env, exports, data);
  return exports;
}

}  // namespace weft

static Napi::Object InitWeftNative(Napi::Env env, Napi::Object exports) { return weft::Init(env, exports); }
NODE_API_MODULE(weft_native, InitWeftNative)
