// SPDX-License-Identifier: Apache-2.0
// BpfMap: either borrowed from a BpfObject (valid until the object is closed) or opened from a pin
// (owns its fd). Element operations go straight to the bpf(2) wrappers of libbpf.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "weft.h"

namespace weft {

struct MapInit {
  ObjectStatePtr st;        // borrowed form
  struct bpf_map* map;      // borrowed form
  int fd;                   // owned form (-1 if borrowed)
  struct bpf_map_info info; // owned form
};

static bool IsPerCpu(uint32_t type) {
  return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
         type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

class BpfMap : public Napi::ObjectWrap<BpfMap>, public EnvCleanup {
 public:
  static Napi::Function Define(Napi::Env env) {
    Napi::Function f = DefineClass(env, "BpfMap",
                       {
                           StaticMethod<&BpfMap::Open>("open"),
                           InstanceMethod<&BpfMap::Lookup>("lookup"),
                           InstanceMethod<&BpfMap::Update>("update"),
                           InstanceMethod<&BpfMap::UpdateSocket>("updateSocket"),
                           InstanceMethod<&BpfMap::Delete>("delete"),
                           InstanceMethod<&BpfMap::Keys>("keys"),
                           InstanceMethod<&BpfMap::Entries>("entries"),
                           InstanceMethod<&BpfMap::Pin>("pin"),
                           InstanceMethod<&BpfMap::Unpin>("unpin"),
                           InstanceMethod<&BpfMap::Close>("close"),
                       });
    DefineGetter<CheckedGetter<BpfMap, Kind::Map, &BpfMap::Name>>(f, "name");
    DefineGetter<CheckedGetter<BpfMap, Kind::Map, &BpfMap::Type>>(f, "type");
    DefineGetter<CheckedGetter<BpfMap, Kind::Map, &BpfMap::KeySize>>(f, "keySize");
    DefineGetter<CheckedGetter<BpfMap, Kind::Map, &BpfMap::ValueSize>>(f, "valueSize");
    DefineGetter<CheckedGetter<BpfMap, Kind::Map, &BpfMap::MaxEntries>>(f, "maxEntries");
    DefineGetter<CheckedGetter<BpfMap, Kind::Map, &BpfMap::Fd>>(f, "fd");
    return f;
  }

  explicit BpfMap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfMap>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw UsageErr(info.Env(), "BpfMap cannot be constructed directly; use BpfMap.open(pin) or BpfObject#map(name)");
    MapInit* init = info[0].As<Napi::External<MapInit>>().Data();
    TagInstance(info.Env(), info.This().As<Napi::Object>(), Kind::Map);
    st_ = init->st;
    map_ = init->map;
    ownedFd_ = init->fd;
    init->fd = -1;
    if (map_ != nullptr) {
      name_ = bpf_map__name(map_);
    } else {
      info_ = init->info;
      name_ = info_.name;
      RegisterCleanup(info.Env());
    }
  }
  ~BpfMap() override { ReleaseNative(); }
  void ReleaseNative() override {
    if (ownedFd_ >= 0) close(ownedFd_);
    ownedFd_ = -1;
    closed_ = true;
    UnregisterCleanup();
  }

  // Live fd or throw (closed handle, closed parent object, object not loaded).
  int LiveFd(Napi::Env env) {
    if (closed_) throw UsageErr(env, "BpfMap '" + name_ + "' used after close()");
    if (map_ == nullptr) return ownedFd_;
    if (!st_ || st_->obj == nullptr) throw UsageErr(env, "BpfMap '" + name_ + "' used after its BpfObject was closed");
    int fd = bpf_map__fd(map_);
    if (fd < 0) throw UsageErr(env, "BpfMap '" + name_ + "' is not loaded (call BpfObject#load first)");
    return fd;
  }
  void CheckMeta(Napi::Env env) {
    if (closed_) throw UsageErr(env, "BpfMap '" + name_ + "' used after close()");
    if (map_ != nullptr && (!st_ || st_->obj == nullptr))
      throw UsageErr(env, "BpfMap '" + name_ + "' used after its BpfObject was closed");
  }
  uint32_t type() const { return map_ ? static_cast<uint32_t>(bpf_map__type(map_)) : info_.type; }
  uint32_t keySize() const { return map_ ? bpf_map__key_size(map_) : info_.key_size; }
  uint32_t valueSize() const { return map_ ? bpf_map__value_size(map_) : info_.value_size; }
  uint32_t maxEntries() const { return map_ ? bpf_map__max_entries(map_) : info_.max_entries; }
  const std::string& name() const { return name_; }

 private:
  static Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = ArgString(info, 0, "pinPath");
    int fd = bpf_obj_get(path.c_str());
    if (fd < 0) throw SyscallErr(env, "bpf(2) OBJ_GET", errno, "map pin " + path);
    char link[64] = {0};
    std::string proc = "/proc/self/fd/" + std::to_string(fd);
    ssize_t n = readlink(proc.c_str(), link, sizeof(link) - 1);
    if (n <= 0 || strcmp(link, "anon_inode:bpf-map") != 0) {
      close(fd);
      throw BpfErr(env, "pin " + path + " is not a BPF map (" + std::string(n > 0 ? link : "unknown") + ")");
    }
    MapInit init{nullptr, nullptr, fd, {}};
    uint32_t len = sizeof(init.info);
    int r = bpf_obj_get_info_by_fd(fd, &init.info, &len);
    if (r < 0) {
      close(fd);
      throw SyscallErr(env, "bpf(2) OBJ_GET_INFO_BY_FD", r, "map pin " + path);
    }
    try {
      return Data(env)->bpfMapCtor.New({Napi::External<MapInit>::New(env, &init)});
    } catch (...) {
      if (init.fd >= 0) close(init.fd);
      throw;
    }
  }

  std::string Ctx() const { return "map " + name_; }

  std::vector<uint8_t> Key(Napi::Env env, const Napi::CallbackInfo& info, size_t i) {
    Napi::Buffer<uint8_t> b = ArgBuffer(info, i, "key");
    if (b.Length() != keySize())
      throw UsageErr(env, "map " + name_ + ": key is " + std::to_string(b.Length()) + " bytes, expected " +
                              std::to_string(keySize()));
    return std::vector<uint8_t>(b.Data(), b.Data() + b.Length());
  }
  size_t ValueBufSize() const {
    size_t vs = valueSize();
    if (IsPerCpu(type())) {
      int ncpu = libbpf_num_possible_cpus();
      return ((vs + 7) / 8) * 8 * static_cast<size_t>(ncpu > 0 ? ncpu : 1);
    }
    return vs;
  }

  Napi::Value Name(const Napi::CallbackInfo& info) {
    CheckMeta(info.Env());
    return Napi::String::New(info.Env(), name_);
  }
  Napi::Value Type(const Napi::CallbackInfo& info) {
    CheckMeta(info.Env());
    const char* s = libbpf_bpf_map_type_str(static_cast<enum bpf_map_type>(type()));
    return Napi::String::New(info.Env(), s != nullptr ? s : "unknown");
  }
  Napi::Value KeySize(const Napi::CallbackInfo& info) {
    CheckMeta(info.Env());
    return Napi::Number::New(info.Env(), keySize());
  }
  Napi::Value ValueSize(const Napi::CallbackInfo& info) {
    CheckMeta(info.Env());
    return Napi::Number::New(info.Env(), valueSize());
  }
  Napi::Value MaxEntries(const Napi::CallbackInfo& info) {
    CheckMeta(info.Env());
    return Napi::Number::New(info.Env(), maxEntries());
  }
  Napi::Value Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), LiveFd(info.Env())); }

  Napi::Value Lookup(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = LiveFd(env);
    std::vector<uint8_t> key = Key(env, info, 0);
    std::vector<uint8_t> val(ValueBufSize());
    int r = bpf_map_lookup_elem(fd, key.empty() ? nullptr : key.data(), val.data());
    if (r < 0) {
      if (r == -ENOENT) return env.Undefined();
      throw SyscallErr(env, "bpf(2) MAP_LOOKUP_ELEM", r, Ctx());
    }
    return Napi::Buffer<uint8_t>::Copy(env, val.data(), val.size());
  }

  void Update(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = LiveFd(env);
    std::vector<uint8_t> key = Key(env, info, 0);
    Napi::Buffer<uint8_t> val = ArgBuffer(info, 1, "value");
    if (val.Length() != ValueBufSize())
      throw UsageErr(env, "map " + name_ + ": value is " + std::to_string(val.Length()) + " bytes, expected " +
                              std::to_string(ValueBufSize()));
    uint64_t flags = BPF_ANY;
    if (info.Length() > 2 && !info[2].IsUndefined()) {
      std::string f = ArgString(info, 2, "flags");
      if (f == "any") flags = BPF_ANY;
      else if (f == "noexist") flags = BPF_NOEXIST;
      else if (f == "exist") flags = BPF_EXIST;
      else throw UsageErr(env, "flags must be 'any', 'noexist' or 'exist'");
    }
    int r = bpf_map_update_elem(fd, key.data(), val.Data(), flags);
    if (r < 0) throw SyscallErr(env, "bpf(2) MAP_UPDATE_ELEM", r, Ctx());
  }

  void UpdateSocket(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = LiveFd(env);
    std::vector<uint8_t> key = Key(env, info, 0);
    int64_t sock = ArgFd(info, 1, "socketFd");
    uint64_t v64 = static_cast<uint64_t>(sock);
    uint32_t v32 = static_cast<uint32_t>(sock);
    const void* val;
    if (valueSize() == 8) val = &v64;
    else if (valueSize() == 4) val = &v32;
    else throw UsageErr(env, "map " + name_ + " value size " + std::to_string(valueSize()) + " cannot hold a socket fd");
    int r = bpf_map_update_elem(fd, key.data(), val, BPF_ANY);
    if (r < 0) throw SyscallErr(env, "bpf(2) MAP_UPDATE_ELEM", r, Ctx());
  }

  Napi::Value Delete(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = LiveFd(env);
    std::vector<uint8_t> key = Key(env, info, 0);
    int r = bpf_map_delete_elem(fd, key.data());
    if (r < 0) {
      if (r == -ENOENT) return Napi::Boolean::New(env, false);
      throw SyscallErr(env, "bpf(2) MAP_DELETE_ELEM", r, Ctx());
    }
    return Napi::Boolean::New(env, true);
  }

  std::vector<std::vector<uint8_t>> CollectKeys(Napi::Env env, int fd) {
    std::vector<std::vector<uint8_t>> keys;
    size_t ks = keySize();
    std::vector<uint8_t> cur(ks), next(ks);
    bool first = true;
    for (;;) {
      int r = bpf_map_get_next_key(fd, first ? nullptr : cur.data(), next.data());
      if (r < 0) {
        if (r == -ENOENT) break;
        throw SyscallErr(env, "bpf(2) MAP_GET_NEXT_KEY", r, Ctx());
      }
      keys.push_back(next);
      cur.swap(next);
      first = false;
    }
    return keys;
  }

  Napi::Value Keys(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = LiveFd(env);
    auto keys = CollectKeys(env, fd);
    Napi::Array out = Napi::Array::New(env, keys.size());
    for (size_t i = 0; i < keys.size(); i++)
      out.Set(static_cast<uint32_t>(i), Napi::Buffer<uint8_t>::Copy(env, keys[i].data(), keys[i].size()));
    return out;
  }

  Napi::Value Entries(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = LiveFd(env);
    auto keys = CollectKeys(env, fd);
    Napi::Array out = Napi::Array::New(env);
    std::vector<uint8_t> val(ValueBufSize());
    uint32_t n = 0;
    for (auto& k : keys) {
      int r = bpf_map_lookup_elem(fd, k.data(), val.data());
      if (r == -ENOENT) continue;  // deleted while we walked
      if (r < 0) throw SyscallErr(env, "bpf(2) MAP_LOOKUP_ELEM", r, Ctx());
      Napi::Array pair = Napi::Array::New(env, 2);
      pair.Set(0u, Napi::Buffer<uint8_t>::Copy(env, k.data(), k.size()));
      pair.Set(1u, Napi::Buffer<uint8_t>::Copy(env, val.data(), val.size()));
      out.Set(n++, pair);
    }
    return out;
  }

  void Pin(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = LiveFd(env);
    std::string path = ArgString(info, 0, "path");
    LibbpfLogClear();
    int r = map_ != nullptr ? bpf_map__pin(map_, path.c_str()) : bpf_obj_pin(fd, path.c_str());
    if (r < 0) throw SyscallErr(env, "bpf(2) OBJ_PIN", r, Ctx() + " -> " + path, LibbpfLogTail());
  }

  void Unpin(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    LiveFd(env);
    std::string path = ArgString(info, 0, "path");
    int r;
    if (map_ != nullptr) {
      r = bpf_map__unpin(map_, path.c_str());
    } else {
      r = unlink(path.c_str()) == 0 ? 0 : -errno;
    }
    if (r < 0) throw SyscallErr(env, "unlink(2)", r, Ctx() + " pin " + path);
  }

  void Close(const Napi::CallbackInfo&) { ReleaseNative(); }

  ObjectStatePtr st_;
  struct bpf_map* map_ = nullptr;
  int ownedFd_ = -1;
  bool closed_ = false;
  struct bpf_map_info info_ {};
  std::string name_;
};

Napi::Object NewMap(Napi::Env env, ObjectStatePtr st, struct bpf_map* map) {
  MapInit init{std::move(st), map, -1, {}};
  return Data(env)->bpfMapCtor.New({Napi::External<MapInit>::New(env, &init)});
}

BpfMap* UnwrapMap(Napi::Env env, Napi::Value v) { return UnwrapKind<BpfMap>(env, v, Kind::Map, "BpfMap"); }

int MapFd(Napi::Env env, BpfMap* m) { return m->LiveFd(env); }
std::string MapName(BpfMap* m) { return m->name(); }
uint32_t MapType(BpfMap* m) { return m->type(); }

void InitMap(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function f = BpfMap::Define(env);
  data->bpfMapCtor = Napi::Persistent(f);
  exports.Set("BpfMap", f);
}

}  // namespace weft
