// SPDX-License-Identifier: Apache-2.0
// Shared declarations of the weft native addon: per-env data, error helpers, the libbpf log buffer,
// netns switching helpers and the env-cleanup mixin every resource-owning ObjectWrap uses.
#pragma once

// A JS exception that cannot be thrown because the environment is going away (a worker being
// terminated while it is inside one of our calls) is dropped instead of becoming a C++ exception
// that escapes the callback and aborts the whole process. Defined here, before napi.h, so every
// translation unit sees the same inline functions.
#ifndef NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
#define NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
#endif
#include <napi.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <functional>
#include <memory>
#include <string>

namespace weft {

// Per-environment data (worker threads get their own).
struct AddonData {
  Napi::FunctionReference syscallError;  // agent/errors.ts SyscallError, set by setErrorClasses
  Napi::FunctionReference weftError;     // agent/errors.ts WeftError
  Napi::FunctionReference bpfObjectCtor;
  Napi::FunctionReference bpfProgramCtor;
  Napi::FunctionReference bpfMapCtor;
  Napi::FunctionReference bpfLinkCtor;
  Napi::FunctionReference tcCtor;
  Napi::FunctionReference sockmapCtor;
  Napi::FunctionReference ringbufCtor;
};
AddonData* Data(Napi::Env env);

// ---- errors ---------------------------------------------------------------------------------
std::string ErrnoName(int err);
// SyscallError instance: "<syscall>: <strerror> (<ENAME>) [context]\n<detail>". err may be negative.
Napi::Error SyscallErr(Napi::Env env, const std::string& syscall, int err, const std::string& context = "",
                       const std::string& detail = "");
Napi::Error UsageErr(Napi::Env env, const std::string& msg);  // WeftError WEFT_ERR_NATIVE_USAGE
Napi::Error BpfErr(Napi::Env env, const std::string& msg);    // WeftError WEFT_ERR_BPF
Napi::Error ArgTypeErr(Napi::Env env, const std::string& msg);  // TypeError, code WEFT_ERR_NATIVE_USAGE

// A failure captured off the JS thread, converted to a SyscallError on it.
struct OsError {
  std::string syscall;
  int err = 0;
  std::string context;
  explicit operator bool() const { return err != 0; }
};
inline OsError Fail(const char* syscall, int err, std::string context = "") {
  return OsError{syscall, err < 0 ? -err : err, std::move(context)};
}

// ---- libbpf log -----------------------------------------------------------------------------
void InstallLibbpfPrint();
void LibbpfLogClear();
std::string LibbpfLogTail(size_t max = 4096);  // last warnings (verifier log tail), may be empty

// ---- network namespaces ---------------------------------------------------------------------
// Enter the netns behind nsfd on the *current* thread, run fn, restore the thread's original netns
// (always; abort() if that fails, the thread would be poisoned). nsfd < 0: just run fn.
OsError WithNetns(int nsfd, const std::function<OsError()>& fn);
// Same, but on a fresh short-lived std::thread that is joined (never switches the calling thread).
OsError RunInNetns(int nsfd, const std::function<OsError()>& fn);
// open(2) a netns path O_RDONLY|O_CLOEXEC or throw SyscallError.
int OpenNetnsOrThrow(Napi::Env env, const std::string& path);

// ---- lifetime -------------------------------------------------------------------------------
// Mixin: registers an env cleanup hook so native resources are released at env teardown even if
// the finalizer never runs. Derived classes call RegisterCleanup once and UnregisterCleanup from
// their (idempotent) release routine.
class EnvCleanup {
 public:
  virtual ~EnvCleanup() = default;
  virtual void ReleaseNative() = 0;

 protected:
  void RegisterCleanup(napi_env env);
  void UnregisterCleanup();

 private:
  static void Hook(void* arg);
  napi_env env_ = nullptr;
  bool registered_ = false;
};

// State of one bpf_object shared with the BpfProgram/BpfMap handles borrowed from it: after the
// object is closed `obj` is null and the children throw WEFT_ERR_NATIVE_USAGE instead of touching
// freed memory.
struct ObjectState {
  struct bpf_object* obj = nullptr;
  bool loaded = false;
  std::string path;
};
using ObjectStatePtr = std::shared_ptr<ObjectState>;

// ---- constructors used across files -----------------------------------------------------------
Napi::Object NewProgram(Napi::Env env, ObjectStatePtr st, struct bpf_program* prog);
Napi::Object NewMap(Napi::Env env, ObjectStatePtr st, struct bpf_map* map);
Napi::Object NewLink(Napi::Env env, struct bpf_link* link);
// Unwrap helpers: throw WEFT_ERR_NATIVE_USAGE if the value is not an instance.
class BpfProgram;
class BpfMap;
BpfProgram* UnwrapProgram(Napi::Env env, Napi::Value v);
BpfMap* UnwrapMap(Napi::Env env, Napi::Value v);
struct bpf_program* ProgramHandle(Napi::Env env, BpfProgram* p);  // live libbpf program or throw
int MapFd(Napi::Env env, BpfMap* m);                                // live map fd or throw
std::string MapName(BpfMap* m);
uint32_t MapType(BpfMap* m);

void InitObject(Napi::Env env, Napi::Object exports, AddonData* data);
void InitProgram(Napi::Env env, Napi::Object exports, AddonData* data);
void InitLink(Napi::Env env, Napi::Object exports, AddonData* data);
void InitMap(Napi::Env env, Napi::Object exports, AddonData* data);
void InitRingbuf(Napi::Env env, Napi::Object exports, AddonData* data);
void InitNetns(Napi::Env env, Napi::Object exports, AddonData* data);
Napi::Object Init(Napi::Env env, Napi::Object exports);

// Argument helpers (throw WEFT_ERR_NATIVE_USAGE on wrong shapes).
// A string without NUL bytes (a NUL would silently cut a path or a name short in C).
std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what);
// A Buffer or another Uint8Array (other views are refused: their bytes are not what they show).
Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* what);
bool IsBytes(Napi::Value v);
// An integer in [lo, hi] given as a JS number (no NaN, no fraction, nothing wrapped modulo 2^32).
int64_t IntValue(Napi::Env env, Napi::Value v, const std::string& what, int64_t lo, int64_t hi);
// The same for an optional option: false when absent (undefined).
bool IntOption(Napi::Object o, const char* key, int64_t lo, int64_t hi, int64_t* out);
// A file descriptor argument: an integer in 0..INT32_MAX.
int ArgFd(const Napi::CallbackInfo& info, size_t i, const char* what);

// ---- instance type tags -----------------------------------------------------------------------
// Every ObjectWrap instance carries a type tag of its class, set in its constructor. napi_unwrap
// alone cannot tell a BpfMap from a BpfObject (both are wrapped by this addon), and a getter called
// on the wrong receiver (`Object.getOwnPropertyDescriptor(BpfMap.prototype, 'fd').get.call(obj)`)
// or an argument given a borrowed prototype (`Object.setPrototypeOf(prog, BpfMap.prototype)`) would
// otherwise reinterpret one C++ object as another.
enum class Kind { Object, Program, Map, Link, Tc, Sockmap, Ringbuf };
void TagInstance(Napi::Env env, Napi::Object self, Kind kind);
bool HasKind(Napi::Env env, Napi::Value v, Kind kind);

// The instance behind `v` when it is a T (tag checked), else WEFT_ERR_NATIVE_USAGE "expected a <what>".
template <typename T>
T* UnwrapKind(Napi::Env env, Napi::Value v, Kind kind, const char* what) {
  if (!HasKind(env, v, kind)) throw UsageErr(env, std::string("expected a ") + what);
  return T::Unwrap(v.As<Napi::Object>());
}

// A prototype getter that checks its receiver before touching it (V8 checks methods' receivers,
// not accessors'). Install with DefineGetter(ctor, "name", ...) after DefineClass.
template <typename T, Kind K, Napi::Value (T::*Getter)(const Napi::CallbackInfo&)>
Napi::Value CheckedGetter(const Napi::CallbackInfo& info) {
  if (!HasKind(info.Env(), info.This(), K)) throw Napi::TypeError::New(info.Env(), "Illegal invocation");
  return (T::Unwrap(info.This().As<Napi::Object>())->*Getter)(info);
}
template <Napi::PropertyDescriptor::GetterCallback Getter>
void DefineGetter(Napi::Function ctor, const char* name) {
  ctor.Get("prototype").As<Napi::Object>().DefineProperty(Napi::PropertyDescriptor::Accessor<Getter>(name, napi_configurable));
}

}  // namespace weft
