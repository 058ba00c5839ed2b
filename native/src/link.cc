// SPDX-License-Identifier: Apache-2.0
// BpfLink: an owned struct bpf_link* (from an attach or adopted from a pin with bpf_link__open).
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "weft.h"

namespace weft {

class BpfLink : public Napi::ObjectWrap<BpfLink>, public EnvCleanup {
 public:
  static Napi::Function Define(Napi::Env env) {
    Napi::Function f = DefineClass(env, "BpfLink",
                       {
                           StaticMethod<&BpfLink::Open>("open"),
                           InstanceMethod<&BpfLink::Info>("info"),
                           InstanceMethod<&BpfLink::Pin>("pin"),
                           InstanceMethod<&BpfLink::Unpin>("unpin"),
                           InstanceMethod<&BpfLink::UpdateProgram>("updateProgram"),
                           InstanceMethod<&BpfLink::Detach>("detach"),
                           InstanceMethod<&BpfLink::Close>("close"),
                       });
    DefineGetter<CheckedGetter<BpfLink, Kind::Link, &BpfLink::Fd>>(f, "fd");
    return f;
  }
  explicit BpfLink(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfLink>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw UsageErr(info.Env(), "BpfLink cannot be constructed directly; use BpfLink.open(pinPath) or an attach method");
    TagInstance(info.Env(), info.This().As<Napi::Object>(), Kind::Link);
    link_ = info[0].As<Napi::External<struct bpf_link>>().Data();
    RegisterCleanup(info.Env());
  }
  ~BpfLink() override { ReleaseNative(); }
  void ReleaseNative() override {
    if (link_ != nullptr) bpf_link__destroy(link_);  // closes the fd; a pinned link stays attached
    link_ = nullptr;
    UnregisterCleanup();
  }

 private:
  static Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = ArgString(info, 0, "pinPath");
    LibbpfLogClear();
    struct bpf_link* link = bpf_link__open(path.c_str());
    if (link == nullptr) throw SyscallErr(env, "bpf(2) OBJ_GET", errno, "link pin " + path, LibbpfLogTail());
    // libbpf adopts any pinned object here; a map or program pin is no link (its fd would be used
    // as one later).
    char target[64] = {0};
    std::string proc = "/proc/self/fd/" + std::to_string(bpf_link__fd(link));
    ssize_t n = readlink(proc.c_str(), target, sizeof(target) - 1);
    if (n <= 0 || strcmp(target, "anon_inode:bpf-link") != 0) {
      bpf_link__destroy(link);  // an adopted pin: closes the fd, detaches nothing
      throw BpfErr(env, "pin " + path + " is not a BPF link (" + std::string(n > 0 ? target : "unknown") + ")");
    }
    return NewLink(env, link);
  }

  struct bpf_link* Live(Napi::Env env) {
    if (link_ == nullptr) throw UsageErr(env, "BpfLink used after close()");
    return link_;
  }

  Napi::Value Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), bpf_link__fd(Live(info.Env()))); }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = bpf_link__fd(Live(env));
    struct bpf_link_info li {};
    uint32_t len = sizeof(li);
    int r = bpf_obj_get_info_by_fd(fd, &li, &len);
    if (r < 0) throw SyscallErr(env, "bpf(2) OBJ_GET_INFO_BY_FD", r, "link");
    Napi::Object out = Napi::Object::New(env);
    out.Set("id", Napi::Number::New(env, li.id));
    out.Set("progId", Napi::Number::New(env, li.prog_id));
    const char* type = libbpf_bpf_link_type_str(static_cast<enum bpf_link_type>(li.type));
    out.Set("type", Napi::String::New(env, type != nullptr ? type : "unknown"));
    if (li.type == BPF_LINK_TYPE_CGROUP) {
      out.Set("cgroupId", Napi::BigInt::New(env, static_cast<uint64_t>(li.cgroup.cgroup_id)));
      out.Set("attachType", Napi::Number::New(env, li.cgroup.attach_type));
    } else if (li.type == BPF_LINK_TYPE_NETNS) {
      out.Set("netnsIno", Napi::Number::New(env, li.netns.netns_ino));
      out.Set("attachType", Napi::Number::New(env, li.netns.attach_type));
    } else if (li.type == BPF_LINK_TYPE_TRACING) {
      out.Set("attachType", Napi::Number::New(env, li.tracing.attach_type));
    }
    return out;
  }

  void Pin(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = ArgString(info, 0, "path");
    LibbpfLogClear();
    int r = bpf_link__pin(Live(env), path.c_str());
    if (r < 0) throw SyscallErr(env, "bpf(2) OBJ_PIN", r, "link -> " + path, LibbpfLogTail());
  }

  void Unpin(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct bpf_link* l = Live(env);
    if (bpf_link__pin_path(l) == nullptr) throw UsageErr(env, "BpfLink is not pinned");
    std::string path = bpf_link__pin_path(l);
    int r = bpf_link__unpin(l);
    if (r < 0) throw SyscallErr(env, "unlink(2)", r, "link pin " + path);
  }

  void UpdateProgram(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct bpf_link* l = Live(env);
    if (info.Length() < 1) throw UsageErr(env, "updateProgram(program)");
    struct bpf_program* prog = ProgramHandle(env, UnwrapProgram(env, info[0]));
    int r = bpf_link__update_program(l, prog);
    if (r < 0) throw SyscallErr(env, "bpf(2) LINK_UPDATE", r, std::string("program ") + bpf_program__name(prog));
  }

  void Detach(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int r = bpf_link__detach(Live(env));
    if (r < 0) throw SyscallErr(env, "bpf(2) LINK_DETACH", r, "link");
  }

  void Close(const Napi::CallbackInfo&) { ReleaseNative(); }

  struct bpf_link* link_ = nullptr;
};

Napi::Object NewLink(Napi::Env env, struct bpf_link* link) {
  try {
    return Data(env)->bpfLinkCtor.New({Napi::External<struct bpf_link>::New(env, link)});
  } catch (...) {
    bpf_link__destroy(link);
    throw;
  }
}

void InitLink(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function f = BpfLink::Define(env);
  data->bpfLinkCtor = Napi::Persistent(f);
  exports.Set("BpfLink", f);
}

}  // namespace weft
