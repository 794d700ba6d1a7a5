#include <geopipe/comm/staging.h>

#include <geopipe/comm/communicator.h>
#include <geopipe/core/env.h>
#include <geopipe/core/error.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#ifdef GEOPIPE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace geopipe::comm {

// ---- BufferPool (no CUDA) ------------------------------------------------------------------

BufferPool::Lease::~Lease() {
  if (pool_ && data_) pool_->release(data_, capacity_);
}
BufferPool::Lease::Lease(Lease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)), data_(std::exchange(other.data_, nullptr)),
      capacity_(std::exchange(other.capacity_, 0)) {}
BufferPool::Lease& BufferPool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (pool_ && data_) pool_->release(data_, capacity_);
    pool_ = std::exchange(other.pool_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

BufferPool::BufferPool(Allocator allocator, size_t max_idle_bytes)
    : allocator_(std::move(allocator)), max_idle_bytes_(max_idle_bytes) {
  if (!allocator_.allocate || !allocator_.deallocate)
    throw Error("BufferPool: the allocator needs both allocate and deallocate");
}

BufferPool::~BufferPool() {
  for (auto& [capacity, data] : idle_) allocator_.deallocate(data);
}

BufferPool::Lease BufferPool::acquire(size_t bytes) {
  const size_t want = bytes ? bytes : 1;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = idle_.lower_bound(want);  // smallest idle buffer that is large enough
    if (it != idle_.end()) {
      const size_t capacity = it->first;
      void* data = it->second;
      idle_.erase(it);
      stats_.idle_bytes -= capacity;
      stats_.in_use_bytes += capacity;
      ++stats_.reuses;
      return Lease(this, data, capacity);
    }
  }
  // Allocate outside the lock (cudaHostAlloc can take milliseconds).
  void* data = allocator_.allocate(want);
  if (!data) throw Error("BufferPool: could not allocate a host buffer of " + std::to_string(want) + " B");
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.allocations;
  stats_.in_use_bytes += want;
  return Lease(this, data, want);
}

void BufferPool::release(void* data, size_t capacity) {
  std::vector<void*> to_free;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.in_use_bytes -= capacity;
    idle_.emplace(capacity, data);
    stats_.idle_bytes += capacity;
    // Over the bound: free the largest idle buffers first (the rare big ones).
    while (stats_.idle_bytes > max_idle_bytes_ && !idle_.empty()) {
      auto last = std::prev(idle_.end());
      stats_.idle_bytes -= last->first;
      to_free.push_back(last->second);
      idle_.erase(last);
      ++stats_.frees;
    }
  }
  for (void* p : to_free) allocator_.deallocate(p);
}

BufferPool::Stats BufferPool::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

// ---- HostStager ------------------------------------------------------------------------------

#ifdef GEOPIPE_HAVE_CUDA

namespace {

void cuda_check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw Error(std::string("comm staging: ") + what + ": " + cudaGetErrorString(rc));
}

// Makes `device` current for the scope, restoring the caller's device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    cuda_check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) cuda_check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

cudaEvent_t new_event() {
  cudaEvent_t e = nullptr;
  cuda_check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
  return e;
}

size_t pool_bytes_from_env() {
  if (const char* v = std::getenv(env::kStagingPoolBytes)) {
    char* end = nullptr;
    const unsigned long long n = std::strtoull(v, &end, 10);
    if (end == v || *end != '\0')
      throw InputError(env::kStagingPoolBytes, "", "'" + std::string(v) + "': expected a byte count");
    return static_cast<size_t>(n);
  }
  return kDefaultStagingPoolBytes;
}

}  // namespace

// A staged send: the device->host copy is queued at once; the poster thread posts the MPI send
// when the copy's event completed. test()/wait() look at `inner` once it exists.
class StagedSend final : public RequestState {
 public:
  StagedSend(Transport& transport, BufferPool::Lease host, size_t bytes, int peer, int tag,
             MessageHeader header, cudaEvent_t copied)
      : transport_(transport), host_(std::move(host)), bytes_(bytes), peer_(peer), tag_(tag),
        header_(std::move(header)), copied_(copied) {}
  ~StagedSend() override {
    if (copied_) cudaEventDestroy(copied_);
  }

  // Poster thread: waits for the copy, then posts the send of the host buffer.
  void post() {
    Request inner;
    std::exception_ptr error;
    try {
      cuda_check(cudaEventSynchronize(copied_), "device->host copy");
      inner = transport_.isend(host_.data(), bytes_, peer_, tag_, header_);
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    inner_ = std::move(inner);
    error_ = error;
    posted_ = true;
    cv_.notify_all();
  }

  bool test() override {
    Request inner;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (error_) std::rethrow_exception(error_);
      if (!posted_) return false;
      inner = inner_;
    }
    return inner.test();
  }
  void wait(Seconds timeout) override {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
    Request inner;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (!cv_.wait_until(lock, deadline, [&] { return posted_; }))
        throw TimeoutError("comm: " + describe_locked() + ": the device->host staging copy did not finish within " +
                           std::to_string(timeout.count()) + " s");
      if (error_) std::rethrow_exception(error_);
      inner = inner_;
    }
    const Seconds left = std::chrono::duration_cast<Seconds>(deadline - std::chrono::steady_clock::now());
    inner.wait(left.count() > 0 ? left : Seconds(0));
  }
  void cancel() override {}  // sends cannot be cancelled
  const MessageHeader& header() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return posted_ && inner_.valid() ? inner_.header() : header_;
  }
  std::vector<uint8_t>& payload() override { return empty_; }
  std::string describe() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return describe_locked();
  }
  // Before the send is posted the transport's default is not reachable: the contract's 300 s.
  Seconds default_timeout() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return posted_ && inner_.valid() ? inner_.state()->default_timeout() : Seconds(300);
  }

 private:
  std::string describe_locked() const {
    if (posted_ && inner_.valid()) return inner_.describe() + " (staged through host)";
    return "send rank " + std::to_string(transport_.rank()) + " -> rank " + std::to_string(peer_) +
           " tag " + std::to_string(tag_) + ", " + std::to_string(bytes_) + " B (staging to host)";
  }
  Transport& transport_;
  BufferPool::Lease host_;
  size_t bytes_;
  int peer_, tag_;
  MessageHeader header_;
  cudaEvent_t copied_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool posted_ = false;
  Request inner_;
  std::exception_ptr error_;
  std::vector<uint8_t> empty_;
};

// A staged receive: MPI fills the pinned buffer; on completion the host->device copy is queued
// on the staging stream and the caller's stream waits on its event.
class StagedRecv final : public RequestState {
 public:
  StagedRecv(HostStager& stager, Request inner, BufferPool::Lease host, void* device_dst,
             void* caller_stream)
      : stager_(stager), inner_(std::move(inner)), host_(std::move(host)), dst_(device_dst),
        caller_stream_(caller_stream) {}
  ~StagedRecv() override;

  bool test() override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (copied_) return true;
    if (!inner_.test()) return false;
    copy_in();
    return true;
  }
  void wait(Seconds timeout) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (copied_) return;
    inner_.wait(timeout);
    copy_in();
  }
  void cancel() override { inner_.cancel(); }
  const MessageHeader& header() const override { return inner_.header(); }
  std::vector<uint8_t>& payload() override { return inner_.payload(); }
  std::string describe() const override { return inner_.describe() + " (staged through host)"; }
  Seconds default_timeout() const override { return inner_.state()->default_timeout(); }

 private:
  void copy_in();
  HostStager& stager_;
  Request inner_;
  BufferPool::Lease host_;
  void* dst_;
  void* caller_stream_;
  std::mutex mutex_;
  bool copied_ = false;
  cudaEvent_t done_ = nullptr;
};

struct HostStager::Impl {
  int device = 0;
  cudaStream_t stream = nullptr;
  std::unique_ptr<BufferPool> pool;

  // The poster thread: one FIFO, so staged sends are posted in the order they were made.
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::shared_ptr<StagedSend>> pending;
  bool stop = false;
  std::thread poster;

  void poster_loop() {
    for (;;) {
      std::shared_ptr<StagedSend> next;
      {
        std::unique_lock<std::mutex> lock(mutex);
        cv.wait(lock, [&] { return stop || !pending.empty(); });
        if (pending.empty()) return;  // stop requested and nothing left to post
        next = std::move(pending.front());
        pending.pop_front();
      }
      next->post();
    }
  }

  // Queues device->host of `bytes` after the work queued so far on `caller_stream`; returns
  // the event recorded after the copy on the staging stream.
  cudaEvent_t queue_copy_out(void* host, const void* src, size_t bytes, void* caller_stream) {
    DeviceGuard guard(device);
    cudaEvent_t ready = new_event();
    cudaEvent_t copied = nullptr;
    try {
      cuda_check(cudaEventRecord(ready, static_cast<cudaStream_t>(caller_stream)), "cudaEventRecord");
      cuda_check(cudaStreamWaitEvent(stream, ready, 0), "cudaStreamWaitEvent");
      if (bytes) cuda_check(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream),
                            "cudaMemcpyAsync device->host");
      copied = new_event();
      cuda_check(cudaEventRecord(copied, stream), "cudaEventRecord");
    } catch (...) {
      cudaEventDestroy(ready);
      if (copied) cudaEventDestroy(copied);
      throw;
    }
    cudaEventDestroy(ready);  // safe: released once the stream wait has consumed it
    return copied;
  }

  // Queues host->device on the staging stream; `caller_stream` waits on the returned event.
  cudaEvent_t queue_copy_in(void* dst, const void* host, size_t bytes, void* caller_stream) {
    DeviceGuard guard(device);
    cudaEvent_t done = new_event();
    try {
      if (bytes) cuda_check(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream),
                            "cudaMemcpyAsync host->device");
      cuda_check(cudaEventRecord(done, stream), "cudaEventRecord");
      cuda_check(cudaStreamWaitEvent(static_cast<cudaStream_t>(caller_stream), done, 0),
                 "cudaStreamWaitEvent");
    } catch (...) {
      cudaEventDestroy(done);
      throw;
    }
    return done;
  }
};

StagedRecv::~StagedRecv() {
  // The pinned buffer goes back to the pool only when no copy reads it any more.
  if (done_) {
    cudaEventSynchronize(done_);
    cudaEventDestroy(done_);
  }
}

void StagedRecv::copy_in() {
  const size_t bytes = inner_.header().payload_bytes;
  done_ = stager_.impl().queue_copy_in(dst_, host_.data(), bytes, caller_stream_);
  copied_ = true;
}

HostStager::HostStager(int device, size_t max_idle_bytes) : impl_(std::make_unique<Impl>()) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0)
    throw Error("comm staging: no CUDA device is available");
  if (device < 0 || device >= count)
    throw Error("comm staging: device " + std::to_string(device) + " does not exist (" +
                std::to_string(count) + " devices)");
  impl_->device = device;
  {
    DeviceGuard guard(device);
    cuda_check(cudaStreamCreateWithFlags(&impl_->stream, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  BufferPool::Allocator pinned{
      [device](size_t bytes) -> void* {
        DeviceGuard guard(device);
        void* p = nullptr;
        cuda_check(cudaHostAlloc(&p, bytes, cudaHostAllocPortable), "cudaHostAlloc");
        return p;
      },
      [](void* p) { cudaFreeHost(p); }};
  impl_->pool = std::make_unique<BufferPool>(std::move(pinned), max_idle_bytes);
  impl_->poster = std::thread([im = impl_.get()] { im->poster_loop(); });
}

HostStager::~HostStager() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  if (impl_->poster.joinable()) impl_->poster.join();
  if (impl_->stream) {
    cudaStreamSynchronize(impl_->stream);
    cudaStreamDestroy(impl_->stream);
  }
}

HostStager& HostStager::for_device(int device) {
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<HostStager>> stagers;
  std::lock_guard<std::mutex> lock(mutex);
  auto& s = stagers[device];
  if (!s) s = std::make_unique<HostStager>(device, pool_bytes_from_env());
  return *s;
}

int HostStager::device() const { return impl_->device; }
BufferPool::Stats HostStager::pool_stats() const { return impl_->pool->stats(); }

BufferPool::Lease HostStager::copy_to_host(const void* device_src, size_t bytes, void* caller_stream) {
  BufferPool::Lease host = impl_->pool->acquire(bytes);
  cudaEvent_t copied = impl_->queue_copy_out(host.data(), device_src, bytes, caller_stream);
  const cudaError_t rc = cudaEventSynchronize(copied);
  cudaEventDestroy(copied);
  cuda_check(rc, "device->host copy");
  return host;
}

void HostStager::copy_to_device(void* device_dst, const void* host_src, size_t bytes, void* caller_stream) {
  cudaEvent_t done = impl_->queue_copy_in(device_dst, host_src, bytes, caller_stream);
  cudaEventDestroy(done);  // the caller's stream already waits on it
}

bool is_device_pointer(const void* ptr) {
  if (!ptr) return false;
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error of an unknown pointer
    return false;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

Request isend_device(Transport& transport, int device, const void* device_data, size_t bytes,
                     int peer, int tag, const MessageHeader& header, void* stream) {
  if (transport.backend() == Backend::kNccl)
    return transport.isend(device_data, bytes, peer, tag, header);
  if (mpi_cuda_aware()) {
    DeviceGuard guard(device);
    cuda_check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "cudaStreamSynchronize");
    return transport.isend(device_data, bytes, peer, tag, header);
  }
  HostStager& stager = HostStager::for_device(device);
  HostStager::Impl& im = stager.impl();
  BufferPool::Lease host = im.pool->acquire(bytes);
  void* host_data = host.data();
  cudaEvent_t copied = im.queue_copy_out(host_data, device_data, bytes, stream);
  auto state = std::make_shared<StagedSend>(transport, std::move(host), bytes, peer, tag, header, copied);
  {
    std::lock_guard<std::mutex> lock(im.mutex);
    im.pending.push_back(state);
  }
  im.cv.notify_one();
  return Request(state);
}

Request irecv_device(Transport& transport, int device, void* device_data, size_t capacity,
                     int peer, int tag, const Expect& expect, void* stream) {
  if (transport.backend() == Backend::kNccl || mpi_cuda_aware())
    return transport.irecv(device_data, capacity, peer, tag, expect);
  HostStager& stager = HostStager::for_device(device);
  BufferPool::Lease host = stager.impl().pool->acquire(capacity);
  void* host_data = host.data();
  Request inner = transport.irecv(host_data, capacity, peer, tag, expect);
  return Request(std::make_shared<StagedRecv>(stager, std::move(inner), std::move(host), device_data, stream));
}

#else  // !GEOPIPE_HAVE_CUDA: nothing can be on a GPU.

struct HostStager::Impl {};

namespace {
[[noreturn]] void no_cuda() { throw Error("comm staging: this build has no CUDA support"); }
}  // namespace

HostStager::HostStager(int, size_t) { no_cuda(); }
HostStager::~HostStager() = default;
HostStager& HostStager::for_device(int) { no_cuda(); }
int HostStager::device() const { no_cuda(); }
BufferPool::Stats HostStager::pool_stats() const { no_cuda(); }
BufferPool::Lease HostStager::copy_to_host(const void*, size_t, void*) { no_cuda(); }
void HostStager::copy_to_device(void*, const void*, size_t, void*) { no_cuda(); }
bool is_device_pointer(const void*) { return false; }
Request isend_device(Transport&, int, const void*, size_t, int, int, const MessageHeader&, void*) { no_cuda(); }
Request irecv_device(Transport&, int, void*, size_t, int, int, const Expect&, void*) { no_cuda(); }

#endif

}  // namespace geopipe::comm
