// SPDX-License-Identifier: Apache-2.0
// BpfObject: bpf_object__open_file / load / close, globals patching via the BTF DATASECs, and
// hand-out of the BpfProgram/BpfMap handles that share the object's lifetime.
#include <cstring>
#include <vector>

#include "weft.h"

namespace weft {

class BpfObject : public Napi::ObjectWrap<BpfObject>, public EnvCleanup {
 public:
  static Napi::Function Define(Napi::Env env) {
    Napi::Function f = DefineClass(env, "BpfObject",
                       {
                           StaticMethod<&BpfObject::Open>("open"),
                           InstanceMethod<&BpfObject::SetGlobal>("setGlobal"),
                           InstanceMethod<&BpfObject::SetMaxEntries>("setMaxEntries"),
                           InstanceMethod<&BpfObject::Load>("load"),
                           InstanceMethod<&BpfObject::Program>("program"),
                           InstanceMethod<&BpfObject::Map>("map"),
                           InstanceMethod<&BpfObject::Close>("close"),
                       });
    DefineGetter<CheckedGetter<BpfObject, Kind::Object, &BpfObject::ProgramNames>>(f, "programNames");
    DefineGetter<CheckedGetter<BpfObject, Kind::Object, &BpfObject::MapNames>>(f, "mapNames");
    return f;
  }

  explicit BpfObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfObject>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw UsageErr(info.Env(), "BpfObject cannot be constructed directly; use BpfObject.open(path)");
    TagInstance(info.Env(), info.This().As<Napi::Object>(), Kind::Object);
    st_ = *info[0].As<Napi::External<ObjectStatePtr>>().Data();
    RegisterCleanup(info.Env());
  }
  ~BpfObject() override { ReleaseNative(); }

  void ReleaseNative() override {
    if (st_ && st_->obj != nullptr) {
      bpf_object__close(st_->obj);
      st_->obj = nullptr;
    }
    UnregisterCleanup();
  }

 private:
  static Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = ArgString(info, 0, "path");
    std::string pinRoot;
    if (info.Length() > 1 && info[1].IsObject()) {
      Napi::Value pr = info[1].As<Napi::Object>().Get("pinRoot");
      if (pr.IsString()) pinRoot = pr.As<Napi::String>().Utf8Value();
      else if (!pr.IsUndefined()) throw UsageErr(env, "options.pinRoot must be a string");
      if (pinRoot.find('\0') != std::string::npos) throw UsageErr(env, "options.pinRoot must not contain NUL bytes");
    } else if (info.Length() > 1 && !info[1].IsUndefined()) {
      throw UsageErr(env, "options must be an object");
    }
    bpf_object_open_opts opts{};
    opts.sz = sizeof(opts);
    if (!pinRoot.empty()) opts.pin_root_path = pinRoot.c_str();
    LibbpfLogClear();
    struct bpf_object* obj = bpf_object__open_file(path.c_str(), &opts);
    if (obj == nullptr) {
      int e = errno;
      throw SyscallErr(env, "bpf_object__open_file", e, path, LibbpfLogTail());
    }
    auto st = std::make_shared<ObjectState>();
    st->obj = obj;
    st->path = path;
    Napi::Function ctor = Data(env)->bpfObjectCtor.Value();
    try {
      return ctor.New({Napi::External<ObjectStatePtr>::New(env, &st)});
    } catch (...) {
      if (st->obj != nullptr) bpf_object__close(st->obj);
      st->obj = nullptr;
      throw;
    }
  }

  struct bpf_object* Live(Napi::Env env) {
    if (!st_ || st_->obj == nullptr) throw UsageErr(env, "BpfObject used after close()");
    return st_->obj;
  }

  void SetGlobal(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct bpf_object* obj = Live(env);
    std::string name = ArgString(info, 0, "name");
    Napi::Buffer<uint8_t> value = ArgBuffer(info, 1, "value");
    if (st_->loaded) throw UsageErr(env, "setGlobal('" + name + "') after load(): globals are frozen at load time");
    struct btf* btf = bpf_object__btf(obj);
    if (btf == nullptr) throw BpfErr(env, "object " + st_->path + " has no BTF; cannot find global '" + name + "'");

    std::string secName;
    uint32_t off = 0, size = 0;
    bool found = false;
    uint32_t n = btf__type_cnt(btf);
    for (uint32_t id = 1; id < n && !found; id++) {
      const struct btf_type* t = btf__type_by_id(btf, id);
      if (!btf_is_datasec(t)) continue;
      const struct btf_var_secinfo* vs = btf_var_secinfos(t);
      for (uint16_t i = 0; i < btf_vlen(t); i++) {
        const struct btf_type* var = btf__type_by_id(btf, vs[i].type);
        if (var == nullptr || !btf_is_var(var)) continue;
        if (name == btf__name_by_offset(btf, var->name_off)) {
          secName = btf__name_by_offset(btf, t->name_off);
          off = vs[i].offset;
          size = vs[i].size;
          found = true;
          break;
        }
      }
    }
    if (!found) throw BpfErr(env, "no global variable '" + name + "' in " + st_->path);
    if (value.Length() != size)
      throw UsageErr(env, "global '" + name + "' is " + std::to_string(size) + " bytes, got " +
                              std::to_string(value.Length()));
    struct bpf_map* target = nullptr;
    struct bpf_map* m;
    bpf_object__for_each_map(m, obj) {
      if (!bpf_map__is_internal(m)) continue;
      const char* dot = strchr(bpf_map__name(m), '.');
      if (dot != nullptr && secName == dot) {
        target = m;
        break;
      }
    }
    if (target == nullptr) throw BpfErr(env, "no internal map for section " + secName + " of global '" + name + "'");
    size_t mapSize = 0;
    const void* init = bpf_map__initial_value(target, &mapSize);
    if (init == nullptr || static_cast<size_t>(off) + size > mapSize)
      throw BpfErr(env, "section " + secName + " has no initial value covering '" + name + "'");
    std::vector<uint8_t> buf(static_cast<const uint8_t*>(init), static_cast<const uint8_t*>(init) + mapSize);
    memcpy(buf.data() + off, value.Data(), size);
    int err = bpf_map__set_initial_value(target, buf.data(), buf.size());
    if (err != 0) throw SyscallErr(env, "bpf_map__set_initial_value", err, "global " + name);
  }

  void SetMaxEntries(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Live(env);
    std::string name = ArgString(info, 0, "map");
    if (info.Length() < 2) throw UsageErr(env, "maxEntries must be a number");
    int64_t n = IntValue(env, info[1], "maxEntries", 0, 0xffffffffLL);
    if (st_->loaded) throw UsageErr(env, "setMaxEntries('" + name + "') after load()");
    struct bpf_map* m = bpf_object__find_map_by_name(st_->obj, name.c_str());
    if (m == nullptr) throw BpfErr(env, "no map '" + name + "' in " + st_->path);
    int err = bpf_map__set_max_entries(m, static_cast<uint32_t>(n));
    if (err != 0) throw SyscallErr(env, "bpf_map__set_max_entries", err, "map " + name);
  }

  void Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct bpf_object* obj = Live(env);
    if (st_->loaded) throw UsageErr(env, "BpfObject " + st_->path + " is already loaded");
    LibbpfLogClear();
    int err = bpf_object__load(obj);
    if (err != 0) throw SyscallErr(env, "bpf_object__load", err, "object " + st_->path, LibbpfLogTail());
    st_->loaded = true;
  }

  Napi::Value ProgramNames(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct bpf_object* obj = Live(env);
    Napi::Array out = Napi::Array::New(env);
    uint32_t i = 0;
    struct bpf_program* p;
    bpf_object__for_each_program(p, obj) out.Set(i++, Napi::String::New(env, bpf_program__name(p)));
    return out;
  }

  Napi::Value MapNames(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct bpf_object* obj = Live(env);
    Napi::Array out = Napi::Array::New(env);
    uint32_t i = 0;
    struct bpf_map* m;
    bpf_object__for_each_map(m, obj) {
      if (!bpf_map__is_internal(m)) out.Set(i++, Napi::String::New(env, bpf_map__name(m)));
    }
    return out;
  }

  Napi::Value Program(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct bpf_object* obj = Live(env);
    std::string name = ArgString(info, 0, "name");
    struct bpf_program* p = bpf_object__find_program_by_name(obj, name.c_str());
    if (p == nullptr) throw BpfErr(env, "no program '" + name + "' in " + st_->path);
    return NewProgram(env, st_, p);
  }

  Napi::Value Map(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct bpf_object* obj = Live(env);
    std::string name = ArgString(info, 0, "name");
    struct bpf_map* m = bpf_object__find_map_by_name(obj, name.c_str());
    if (m == nullptr) throw BpfErr(env, "no map '" + name + "' in " + st_->path);
    return NewMap(env, st_, m);
  }

  void Close(const Napi::CallbackInfo&) { ReleaseNative(); }

  ObjectStatePtr st_;
};

void InitObject(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function f = BpfObject::Define(env);
  data->bpfObjectCtor = Napi::Persistent(f);
  exports.Set("BpfObject", f);
}

}  // namespace weft
