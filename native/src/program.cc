// SPDX-License-Identifier: Apache-2.0
// BpfProgram (borrowed from its BpfObject), its attach helpers, and the two non-link attachments:
// TcAttachment (clsact + bpf_tc_attach, optionally inside a netns) and SockmapAttachment.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "weft.h"

namespace weft {

// Largest testRun repeat count (the ring buffer tests use 100k).
static constexpr int64_t kMaxTestRunRepeat = 10000000;

static int DupFd(Napi::Env env, int fd, const std::string& what) {
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (d < 0) throw SyscallErr(env, "fcntl(2) F_DUPFD_CLOEXEC", errno, what);
  return d;
}

// ---- TcAttachment ---------------------------------------------------------------------------

struct TcInit {
  int nsfd;  // owned, -1 for the current netns
  bpf_tc_hook hook;
  bpf_tc_opts opts;
  std::string what;
};

class TcAttachment : public Napi::ObjectWrap<TcAttachment>, public EnvCleanup {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "TcAttachment",
                       {InstanceMethod<&TcAttachment::Detach>("detach"), InstanceMethod<&TcAttachment::Close>("close")});
  }
  explicit TcAttachment(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TcAttachment>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) throw UsageErr(info.Env(), "TcAttachment cannot be constructed directly");
    TcInit* init = info[0].As<Napi::External<TcInit>>().Data();
    TagInstance(info.Env(), info.This().As<Napi::Object>(), Kind::Tc);
    nsfd_ = init->nsfd;
    init->nsfd = -1;  // ownership moved
    hook_ = init->hook;
    handle_ = init->opts.handle;
    priority_ = init->opts.priority;
    what_ = init->what;
    attached_ = true;
    RegisterCleanup(info.Env());
  }
  ~TcAttachment() override { ReleaseNative(); }

  void ReleaseNative() override {
    DoDetach();  // best effort (env teardown / GC)
    Finish();
  }

 private:
  OsError DoDetach() {
    if (!attached_) return {};
    bpf_tc_hook hook = hook_;
    bpf_tc_opts opts{};
    opts.sz = sizeof(opts);
    opts.handle = handle_;
    opts.priority = priority_;
    OsError err = RunInNetns(nsfd_, [&]() -> OsError {
      int r = bpf_tc_detach(&hook, &opts);
      if (r < 0 && r != -ENOENT && r != -ENODEV) return Fail("bpf_tc_detach", r, what_);
      return {};
    });
    if (!err) attached_ = false;
    return err;
  }
  void Finish() {
    attached_ = false;
    if (nsfd_ >= 0) close(nsfd_);
    nsfd_ = -1;
    UnregisterCleanup();
  }
  void Detach(const Napi::CallbackInfo& info) {
    OsError err = DoDetach();
    if (err) throw SyscallErr(info.Env(), err.syscall, err.err, err.context);
    Finish();
  }
  void Close(const Napi::CallbackInfo& info) { Detach(info); }

  int nsfd_ = -1;
  bpf_tc_hook hook_{};
  uint32_t handle_ = 0, priority_ = 0;
  std::string what_;
  bool attached_ = false;
};

// ---- SockmapAttachment ----------------------------------------------------------------------

struct SockmapInit {
  int progFd, mapFd;  // owned dups
  std::string what;
};

class SockmapAttachment : public Napi::ObjectWrap<SockmapAttachment>, public EnvCleanup {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SockmapAttachment",
                       {InstanceMethod<&SockmapAttachment::Detach>("detach"),
                        InstanceMethod<&SockmapAttachment::Close>("close")});
  }
  explicit SockmapAttachment(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SockmapAttachment>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw UsageErr(info.Env(), "SockmapAttachment cannot be constructed directly");
    SockmapInit* init = info[0].As<Napi::External<SockmapInit>>().Data();
    TagInstance(info.Env(), info.This().As<Napi::Object>(), Kind::Sockmap);
    progFd_ = init->progFd;
    mapFd_ = init->mapFd;
    init->progFd = init->mapFd = -1;
    what_ = init->what;
    RegisterCleanup(info.Env());
  }
  ~SockmapAttachment() override { ReleaseNative(); }
  void ReleaseNative() override {
    if (progFd_ >= 0) bpf_prog_detach2(progFd_, mapFd_, BPF_SK_MSG_VERDICT);
    Finish();
  }

 private:
  void Finish() {
    if (progFd_ >= 0) close(progFd_);
    if (mapFd_ >= 0) close(mapFd_);
    progFd_ = mapFd_ = -1;
    UnregisterCleanup();
  }
  void Detach(const Napi::CallbackInfo& info) {
    if (progFd_ < 0) return;
    int r = bpf_prog_detach2(progFd_, mapFd_, BPF_SK_MSG_VERDICT);
    if (r < 0 && r != -ENOENT) throw SyscallErr(info.Env(), "bpf(2) PROG_DETACH", r, what_);
    Finish();
  }
  void Close(const Napi::CallbackInfo& info) { Detach(info); }

  int progFd_ = -1, mapFd_ = -1;
  std::string what_;
};

// ---- BpfProgram -----------------------------------------------------------------------------

struct ProgramInit {
  ObjectStatePtr st;
  struct bpf_program* prog;
};

class BpfProgram : public Napi::ObjectWrap<BpfProgram> {
 public:
  static Napi::Function Define(Napi::Env env) {
    Napi::Function f = DefineClass(env, "BpfProgram",
                       {
                           InstanceMethod<&BpfProgram::AttachCgroup>("attachCgroup"),
                           InstanceMethod<&BpfProgram::AttachNetns>("attachNetns"),
                           InstanceMethod<&BpfProgram::AttachTc>("attachTc"),
                           InstanceMethod<&BpfProgram::AttachSockmap>("attachSockmap"),
                           InstanceMethod<&BpfProgram::Pin>("pin"),
                           InstanceMethod<&BpfProgram::Unpin>("unpin"),
                           InstanceMethod<&BpfProgram::TestRun>("testRun"),
                       });
    DefineGetter<CheckedGetter<BpfProgram, Kind::Program, &BpfProgram::Name>>(f, "name");
    DefineGetter<CheckedGetter<BpfProgram, Kind::Program, &BpfProgram::Fd>>(f, "fd");
    DefineGetter<CheckedGetter<BpfProgram, Kind::Program, &BpfProgram::SectionName>>(f, "sectionName");
    return f;
  }
  explicit BpfProgram(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfProgram>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw UsageErr(info.Env(), "BpfProgram cannot be constructed directly; use BpfObject#program(name)");
    ProgramInit* init = info[0].As<Napi::External<ProgramInit>>().Data();
    TagInstance(info.Env(), info.This().As<Napi::Object>(), Kind::Program);
    st_ = init->st;
    prog_ = init->prog;
    name_ = bpf_program__name(prog_);
  }

  struct bpf_program* Live(Napi::Env env) {
    if (!st_ || st_->obj == nullptr)
      throw UsageErr(env, "BpfProgram '" + name_ + "' used after its BpfObject was closed");
    return prog_;
  }
  int LoadedFd(Napi::Env env) {
    int fd = bpf_program__fd(Live(env));
    if (fd < 0) throw UsageErr(env, "BpfProgram '" + name_ + "' is not loaded (call BpfObject#load first)");
    return fd;
  }
  const std::string& name() const { return name_; }

 private:
  Napi::Value Name(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }
  Napi::Value Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), bpf_program__fd(Live(info.Env()))); }
  Napi::Value SectionName(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), bpf_program__section_name(Live(info.Env())));
  }

  Napi::Value AttachCgroup(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = ArgString(info, 0, "cgroupPath");
    LoadedFd(env);
    int cg = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cg < 0) throw SyscallErr(env, "open(2)", errno, "cgroup " + path);
    LibbpfLogClear();
    struct bpf_link* link = bpf_program__attach_cgroup(prog_, cg);
    int e = errno;
    close(cg);
    if (link == nullptr)
      throw SyscallErr(env, "bpf(2) LINK_CREATE", e, "program " + name_ + " -> cgroup " + path, LibbpfLogTail());
    return NewLink(env, link);
  }

  Napi::Value AttachNetns(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = ArgString(info, 0, "netnsPath");
    LoadedFd(env);
    int ns = OpenNetnsOrThrow(env, path);
    LibbpfLogClear();
    struct bpf_link* link = bpf_program__attach_netns(prog_, ns);
    int e = errno;
    close(ns);
    if (link == nullptr)
      throw SyscallErr(env, "bpf(2) LINK_CREATE", e, "program " + name_ + " -> netns " + path, LibbpfLogTail());
    return NewLink(env, link);
  }

  Napi::Value AttachTc(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsNumber()) throw UsageErr(env, "attachTc(ifindex, direction, netnsPath?)");
    // Checked, not converted: 2^32 + 1 must not become ifindex 1 (lo).
    int ifindex = static_cast<int>(IntValue(env, info[0], "ifindex", 1, 0x7fffffff));
    std::string dir = ArgString(info, 1, "direction");
    if (dir != "ingress" && dir != "egress") throw UsageErr(env, "direction must be 'ingress' or 'egress'");
    std::string nsPath;
    if (info.Length() > 2 && !info[2].IsUndefined()) nsPath = ArgString(info, 2, "netnsPath");
    int progFd = LoadedFd(env);
    TcInit init{};
    init.nsfd = nsPath.empty() ? -1 : OpenNetnsOrThrow(env, nsPath);
    init.hook.sz = sizeof(init.hook);
    init.hook.ifindex = ifindex;
    init.hook.attach_point = dir == "ingress" ? BPF_TC_INGRESS : BPF_TC_EGRESS;
    init.opts.sz = sizeof(init.opts);
    init.opts.prog_fd = progFd;
    init.what = "program " + name_ + " -> ifindex " + std::to_string(ifindex) + " " + dir +
                (nsPath.empty() ? "" : " in " + nsPath);
    LibbpfLogClear();
    OsError err = RunInNetns(init.nsfd, [&]() -> OsError {
      // Only clsact: creating it is idempotent for us (EEXIST), other qdiscs are left alone.
      bpf_tc_hook qdisc = init.hook;
      qdisc.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
      int r = bpf_tc_hook_create(&qdisc);
      if (r < 0 && r != -EEXIST) return Fail("bpf_tc_hook_create", r, init.what);
      r = bpf_tc_attach(&init.hook, &init.opts);
      if (r < 0) return Fail("bpf_tc_attach", r, init.what);
      return {};
    });
    if (err) {
      if (init.nsfd >= 0) close(init.nsfd);
      throw SyscallErr(env, err.syscall, err.err, err.context, LibbpfLogTail());
    }
    init.opts.prog_fd = 0;
    init.opts.prog_id = 0;
    init.opts.flags = 0;
    try {
      return Data(env)->tcCtor.New({Napi::External<TcInit>::New(env, &init)});
    } catch (...) {
      if (init.nsfd >= 0) close(init.nsfd);
      throw;
    }
  }

  Napi::Value AttachSockmap(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1) throw UsageErr(env, "attachSockmap(map)");
    BpfMap* map = UnwrapMap(env, info[0]);
    int progFd = LoadedFd(env);
    int mapFd = MapFd(env, map);
    std::string what = "program " + name_ + " -> map " + MapName(map);
    int r = bpf_prog_attach(progFd, mapFd, BPF_SK_MSG_VERDICT, 0);
    if (r < 0) throw SyscallErr(env, "bpf(2) PROG_ATTACH", r, what);
    SockmapInit init{-1, -1, what};
    try {
      init.progFd = DupFd(env, progFd, what);
      init.mapFd = DupFd(env, mapFd, what);
      return Data(env)->sockmapCtor.New({Napi::External<SockmapInit>::New(env, &init)});
    } catch (...) {
      bpf_prog_detach2(progFd, mapFd, BPF_SK_MSG_VERDICT);
      if (init.progFd >= 0) close(init.progFd);
      if (init.mapFd >= 0) close(init.mapFd);
      throw;
    }
  }

  void Pin(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = ArgString(info, 0, "path");
    LoadedFd(env);
    LibbpfLogClear();
    int r = bpf_program__pin(prog_, path.c_str());
    if (r < 0) throw SyscallErr(env, "bpf(2) OBJ_PIN", r, "program " + name_ + " -> " + path, LibbpfLogTail());
  }

  void Unpin(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = ArgString(info, 0, "path");
    LoadedFd(env);
    int r = bpf_program__unpin(prog_, path.c_str());
    if (r < 0) throw SyscallErr(env, "unlink(2)", r, "program " + name_ + " pin " + path);
  }

  Napi::Value TestRun(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = LoadedFd(env);
    std::vector<uint8_t> data(64, 0);  // default: a zeroed 64-byte frame (>= ETH_HLEN for XDP/tc)
    uint32_t repeat = 1;
    if (info.Length() > 0 && !info[0].IsUndefined() && !info[0].IsObject()) throw UsageErr(env, "testRun: options must be an object");
    if (info.Length() > 0 && info[0].IsObject()) {
      Napi::Object o = info[0].As<Napi::Object>();
      Napi::Value d = o.Get("data");
      if (IsBytes(d)) {
        auto b = d.As<Napi::Buffer<uint8_t>>();
        data.assign(b.Data(), b.Data() + b.Length());
      } else if (!d.IsUndefined()) {
        throw UsageErr(env, "testRun: data must be a Buffer");
      }
      Napi::Value r = o.Get("repeat");
      // The kernel runs the program `repeat` times on this thread: bounded so a wild value cannot
      // hold the event loop for minutes.
      if (!r.IsUndefined()) repeat = static_cast<uint32_t>(IntValue(env, r, "testRun: repeat", 1, kMaxTestRunRepeat));
    }
    bpf_test_run_opts opts{};
    opts.sz = sizeof(opts);
    opts.data_in = data.data();
    opts.data_size_in = static_cast<uint32_t>(data.size());
    opts.repeat = repeat;
    int r = bpf_prog_test_run_opts(fd, &opts);
    if (r < 0) throw SyscallErr(env, "bpf(2) PROG_TEST_RUN", r, "program " + name_);
    Napi::Object out = Napi::Object::New(env);
    out.Set("retval", Napi::Number::New(env, opts.retval));
    out.Set("durationNs", Napi::Number::New(env, opts.duration));
    return out;
  }

  ObjectStatePtr st_;
  struct bpf_program* prog_ = nullptr;
  std::string name_;
};

Napi::Object NewProgram(Napi::Env env, ObjectStatePtr st, struct bpf_program* prog) {
  ProgramInit init{std::move(st), prog};
  return Data(env)->bpfProgramCtor.New({Napi::External<ProgramInit>::New(env, &init)});
}

BpfProgram* UnwrapProgram(Napi::Env env, Napi::Value v) { return UnwrapKind<BpfProgram>(env, v, Kind::Program, "BpfProgram"); }

struct bpf_program* ProgramHandle(Napi::Env env, BpfProgram* p) {
  p->LoadedFd(env);
  return p->Live(env);
}

void InitProgram(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function p = BpfProgram::Define(env);
  data->bpfProgramCtor = Napi::Persistent(p);
  exports.Set("BpfProgram", p);
  Napi::Function tc = TcAttachment::Define(env);
  data->tcCtor = Napi::Persistent(tc);
  exports.Set("TcAttachment", tc);
  Napi::Function sm = SockmapAttachment::Define(env);
  data->sockmapCtor = Napi::Persistent(sm);
  exports.Set("SockmapAttachment", sm);
}

}  // namespace weft
