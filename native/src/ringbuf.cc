// SPDX-License-Identifier: Apache-2.0
// RingBufferConsumer: a dedicated thread drains a BPF ring buffer (ring_buffer__consume after an
// epoll wait on the ring's epoll fd plus an eventfd used to stop promptly), copies records into a
// batch and hands batches to JS through a bounded ThreadSafeFunction. When JS falls behind, the
// thread waits (the ring fills and the BPF side counts its own drops) instead of buffering without
// bound. On close(), a batch that cannot be queued is dropped and counted.
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "weft.h"

namespace weft {

namespace {

struct Counters {
  std::atomic<uint64_t> delivered{0};
  std::atomic<uint64_t> dropped{0};
};
using CountersPtr = std::shared_ptr<Counters>;

struct Batch {
  std::vector<uint8_t> data;
  std::vector<uint32_t> offsets;  // start of each record; end of the last = data.size()
};

constexpr size_t kMaxQueuedBatches = 16;

void CallJs(Napi::Env env, Napi::Function cb, CountersPtr* ctx, Batch* batch);
using Tsfn = Napi::TypedThreadSafeFunction<CountersPtr, Batch, CallJs>;

void CallJs(Napi::Env env, Napi::Function cb, CountersPtr* ctx, Batch* batch) {
  std::unique_ptr<Batch> b(batch);
  if (b == nullptr) return;
  size_t n = b->offsets.size();
  // Tearing down: Node runs the finalizer (which frees ctx) before it hands the batches still queued
  // back here with no env, so ctx must not be touched then; nobody can read the counters any more.
  if (env == nullptr) return;
  if (cb.IsEmpty()) {
    (*ctx)->dropped += n;
    return;
  }
  Napi::Buffer<uint8_t> buf;
  Napi::Uint32Array offs;
  try {
    buf = Napi::Buffer<uint8_t>::Copy(env, b->data.data(), b->data.size());
    offs = Napi::Uint32Array::New(env, n + 1);
    for (size_t i = 0; i < n; i++) offs[i] = b->offsets[i];
    offs[n] = static_cast<uint32_t>(b->data.size());
  } catch (const Napi::Error&) {
    // The environment is going away (a worker being terminated): nothing can be delivered. A C++
    // exception must not leave this callback: the runtime would call std::terminate.
    (*ctx)->dropped += n;
    return;
  }
  (*ctx)->delivered += n;
  try {
    cb.Call({buf, offs});
  } catch (const Napi::Error& e) {
    // An exception from the user's onBatch is the user's: surface it as uncaught, like an
    // EventEmitter listener throwing would.
    napi_fatal_exception(env, e.Value());
  } catch (...) {
    // Nothing else may escape either (see above).
  }
}

}  // namespace

class RingBufferConsumer : public Napi::ObjectWrap<RingBufferConsumer>, public EnvCleanup {
 public:
  static Napi::Function Define(Napi::Env env) {
    Napi::Function f = DefineClass(env, "RingBufferConsumer",
                                   {
                                       InstanceMethod<&RingBufferConsumer::Close>("close"),
                                   });
    DefineGetter<CheckedGetter<RingBufferConsumer, Kind::Ringbuf, &RingBufferConsumer::Delivered>>(f, "delivered");
    DefineGetter<CheckedGetter<RingBufferConsumer, Kind::Ringbuf, &RingBufferConsumer::Dropped>>(f, "dropped");
    return f;
  }

  // new RingBufferConsumer(map, onBatch(buf: Buffer, offsets: Uint32Array), maxBatch, pollMs)
  explicit RingBufferConsumer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RingBufferConsumer>(info) {
    Napi::Env env = info.Env();
    TagInstance(env, info.This().As<Napi::Object>(), Kind::Ringbuf);
    if (info.Length() < 2) throw UsageErr(env, "new RingBufferConsumer(map, onBatch, maxBatch?, pollMs?)");
    BpfMap* map = UnwrapMap(env, info[0]);
    if (!info[1].IsFunction()) throw UsageErr(env, "onBatch must be a function");
    // Checked, not converted: -1 must not become a 4-billion-record batch, 2^32 + 5 not 5 ms.
    if (info.Length() > 2 && !info[2].IsUndefined()) maxBatch_ = static_cast<uint32_t>(IntValue(env, info[2], "maxBatch", 1, 1 << 20));
    if (info.Length() > 3 && !info[3].IsUndefined()) pollMs_ = static_cast<int>(IntValue(env, info[3], "pollMs", 1, 60000));
    if (MapType(map) != BPF_MAP_TYPE_RINGBUF) throw UsageErr(env, "map " + MapName(map) + " is not a ringbuf");
    name_ = MapName(map);
    int fd = MapFd(env, map);
    try {
      mapFd_ = fcntl(fd, F_DUPFD_CLOEXEC, 3);
      if (mapFd_ < 0) throw SyscallErr(env, "fcntl(2) F_DUPFD_CLOEXEC", errno, Ctx());
      stopFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (stopFd_ < 0) throw SyscallErr(env, "eventfd(2)", errno, Ctx());
      LibbpfLogClear();
      rb_ = ring_buffer__new(mapFd_, &RingBufferConsumer::OnRecord, this, nullptr);
      if (rb_ == nullptr) throw SyscallErr(env, "ring_buffer__new", errno, Ctx(), LibbpfLogTail());
      epFd_ = epoll_create1(EPOLL_CLOEXEC);
      if (epFd_ < 0) throw SyscallErr(env, "epoll_create1(2)", errno, Ctx());
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u32 = 0;
      if (epoll_ctl(epFd_, EPOLL_CTL_ADD, ring_buffer__epoll_fd(rb_), &ev) < 0)
        throw SyscallErr(env, "epoll_ctl(2)", errno, Ctx());
      ev.data.u32 = 1;
      if (epoll_ctl(epFd_, EPOLL_CTL_ADD, stopFd_, &ev) < 0) throw SyscallErr(env, "epoll_ctl(2)", errno, Ctx());

      counters_ = std::make_shared<Counters>();
      tsfn_ = Tsfn::New(env, info[1].As<Napi::Function>(), "weft-ringbuf", kMaxQueuedBatches, 1,
                        new CountersPtr(counters_),
                        [](Napi::Env, void*, CountersPtr* ctx) { delete ctx; });
      haveTsfn_ = true;
      thread_ = std::thread([this] { Run(); });
    } catch (...) {
      FreeNative();
      throw;
    }
    // Registered after the TSFN so this hook runs before Node's own TSFN teardown.
    RegisterCleanup(env);
  }
  ~RingBufferConsumer() override { ReleaseNative(); }

  void ReleaseNative() override {
    if (thread_.joinable()) {
      stop_.store(true);
      uint64_t one = 1;
      ssize_t w = write(stopFd_, &one, sizeof one);
      (void)w;
      thread_.join();
    }
    FreeNative();
    UnregisterCleanup();
  }

 private:
  std::string Ctx() const { return "ringbuf " + name_; }

  void FreeNative() {
    if (rb_ != nullptr) ring_buffer__free(rb_);
    rb_ = nullptr;
    if (epFd_ >= 0) close(epFd_);
    if (stopFd_ >= 0) close(stopFd_);
    if (mapFd_ >= 0) close(mapFd_);
    epFd_ = stopFd_ = mapFd_ = -1;
    if (haveTsfn_) {
      haveTsfn_ = false;
      tsfn_.Release();  // queued batches are still delivered
    }
  }

  static int OnRecord(void* ctx, void* data, size_t size) {
    auto* self = static_cast<RingBufferConsumer*>(ctx);
    Batch& b = self->cur_;
    b.offsets.push_back(static_cast<uint32_t>(b.data.size()));
    const uint8_t* p = static_cast<const uint8_t*>(data);
    b.data.insert(b.data.end(), p, p + size);
    if (b.offsets.size() >= self->maxBatch_) self->Flush();
    return 0;
  }

  // Consumer thread only. Queues the current batch; waits (without blocking close()) while the
  // queue is full.
  void Flush() {
    if (cur_.offsets.empty()) return;
    auto* b = new Batch(std::move(cur_));
    cur_ = Batch{};
    cur_.data.reserve(b->data.size());
    cur_.offsets.reserve(b->offsets.size());
    for (;;) {
      napi_status s = tsfn_.NonBlockingCall(b);
      if (s == napi_ok) return;
      if (s == napi_queue_full && !stop_.load()) {
        pollfd p{stopFd_, POLLIN, 0};
        poll(&p, 1, 1);
        continue;
      }
      if (s == napi_closing) closing_ = true;
      counters_->dropped += b->offsets.size();
      delete b;
      return;
    }
  }

  void Run() {
    epoll_event evs[2];
    while (!stop_.load() && !closing_) {
      int n = epoll_wait(epFd_, evs, 2, pollMs_);
      if (n < 0 && errno != EINTR) break;
      if (stop_.load()) break;
      ring_buffer__consume(rb_);
      Flush();
    }
    // Hand over what is already in the ring (delivered if the queue has room, else counted).
    if (!closing_) {
      ring_buffer__consume(rb_);
      Flush();
    }
  }

  Napi::Value Delivered(const Napi::CallbackInfo& info) {
    return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(counters_ ? counters_->delivered.load() : 0));
  }
  Napi::Value Dropped(const Napi::CallbackInfo& info) {
    return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(counters_ ? counters_->dropped.load() : 0));
  }
  void Close(const Napi::CallbackInfo&) { ReleaseNative(); }

  std::string name_;
  uint32_t maxBatch_ = 4096;
  int pollMs_ = 100;
  int mapFd_ = -1, stopFd_ = -1, epFd_ = -1;
  struct ring_buffer* rb_ = nullptr;
  Tsfn tsfn_;
  bool haveTsfn_ = false;
  CountersPtr counters_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  bool closing_ = false;  // consumer thread only
  Batch cur_;             // consumer thread only
};

void InitRingbuf(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function f = RingBufferConsumer::Define(env);
  data->ringbufCtor = Napi::Persistent(f);
  exports.Set("RingBufferConsumer", f);
}

}  // namespace weft
