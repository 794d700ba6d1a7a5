// GPU buffers over an MPI that is not CUDA-aware: staged through pinned host memory on a
// dedicated CUDA stream. No LibTorch here: raw device pointers and a cudaStream_t passed as
// void* (nullptr = the legacy default stream), so this compiles with and without CUDA.
//
// Send (stage_out + isend_device):
//   caller stream --record(ready)--> staging stream waits on `ready` (no device-wide sync)
//   --> cudaMemcpyAsync device->pinned host --> record(copied); the stager's poster thread
//   waits for `copied` (cudaEventSynchronize on that event only) and then posts the MPI send
//   of the host buffer. Posts happen in the order of the isend_device calls (one FIFO), so
//   messages between one (sender, receiver, tag) keep their order among staged sends.
// Receive (irecv_device): MPI receives into a pinned host buffer; the first test()/wait() that
//   sees it complete issues cudaMemcpyAsync host->device on the staging stream, records `done`
//   and makes the caller's stream wait on `done`: work queued on that stream afterwards sees
//   the data, without blocking the host. The pinned buffer returns to the pool once `done`
//   has completed (when the request is destroyed).
// When Open MPI is CUDA-aware (mpi_cuda_aware()) or the transport is NCCL, device pointers go
// straight to the transport and nothing here is touched; CPU buffers never come here.
#pragma once

#include <geopipe/comm/transport.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

namespace geopipe::comm {

// A bounded pool of reusable host buffers. The allocator is replaceable (tests use plain
// malloc; the stager uses cudaHostAlloc/cudaFreeHost). acquire() reuses the smallest free
// buffer that is large enough, else allocates a new one of exactly `bytes`; a released buffer
// is kept for reuse while the pool's idle bytes stay within `max_idle_bytes` (largest idle
// buffers are freed first), else it is freed at once. Thread-safe.
class BufferPool {
 public:
  struct Allocator {
    std::function<void*(size_t)> allocate;     // throws or returns nullptr on failure
    std::function<void(void*)> deallocate;
  };
  struct Stats {
    uint64_t allocations = 0;  // calls to the allocator
    uint64_t reuses = 0;       // acquires served from idle buffers
    uint64_t frees = 0;        // calls to the deallocator
    size_t idle_bytes = 0;     // bytes held idle in the pool
    size_t in_use_bytes = 0;   // bytes handed out and not yet released
  };

  // A buffer on loan; returned to the pool when the lease is destroyed.
  class Lease {
   public:
    Lease() = default;
    ~Lease();
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    void* data() const { return data_; }
    size_t capacity() const { return capacity_; }

   private:
    friend class BufferPool;
    Lease(BufferPool* pool, void* data, size_t capacity) : pool_(pool), data_(data), capacity_(capacity) {}
    BufferPool* pool_ = nullptr;
    void* data_ = nullptr;
    size_t capacity_ = 0;
  };

  BufferPool(Allocator allocator, size_t max_idle_bytes);
  ~BufferPool();  // frees idle buffers; leases must not outlive the pool
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // A buffer of at least max(bytes, 1) bytes. Throws geopipe::Error when allocation fails.
  Lease acquire(size_t bytes);
  Stats stats() const;

 private:
  void release(void* data, size_t capacity);
  Allocator allocator_;
  size_t max_idle_bytes_;
  mutable std::mutex mutex_;
  std::multimap<size_t, void*> idle_;  // capacity -> buffer
  Stats stats_;
};

// Default bound on idle pinned memory kept by a stager (env GEOPIPE_STAGING_POOL_BYTES).
inline constexpr size_t kDefaultStagingPoolBytes = size_t{256} << 20;

// Pinned host buffers and a non-blocking stream on one GPU. Created lazily per device by
// for_device(); never created without a GPU (throws geopipe::Error when there is none or when
// the build has no CUDA).
class HostStager {
 public:
  struct Impl;
  explicit HostStager(int device, size_t max_idle_bytes = kDefaultStagingPoolBytes);
  ~HostStager();
  HostStager(const HostStager&) = delete;
  HostStager& operator=(const HostStager&) = delete;

  // The process-wide stager of `device` (created on first use; pool bound from the env).
  static HostStager& for_device(int device);

  int device() const;
  BufferPool::Stats pool_stats() const;

  // Copies `bytes` at `device_src` into a pinned buffer after the work queued so far on
  // `caller_stream`; blocks until the copy is done (a synchronous building block for tests
  // and for callers that need host bytes at once). Returns the leased buffer.
  BufferPool::Lease copy_to_host(const void* device_src, size_t bytes, void* caller_stream);
  // Copies `bytes` of `host_src` to `device_dst`; work queued on `caller_stream` afterwards is
  // ordered after the copy (the host does not block).
  void copy_to_device(void* device_dst, const void* host_src, size_t bytes, void* caller_stream);

  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Does `ptr` point to GPU memory (device or managed)? false without CUDA or without a GPU.
bool is_device_pointer(const void* ptr);

// Sends `bytes` of GPU memory at `device_data` once the work queued so far on `stream` is done.
// NCCL: the device pointer goes to the transport directly. CUDA-aware MPI: `stream` is
// synchronised (that stream only), then the device pointer goes to MPI directly. Otherwise: staged through
// HostStager::for_device(device) as described above. The request completes when the MPI send
// has completed; `device_data` may be reused once the request completed.
Request isend_device(Transport& transport, int device, const void* device_data, size_t bytes,
                     int peer, int tag, const MessageHeader& header, void* stream);
// Receives into GPU memory at `device_data` (capacity bytes). Staged: once the request
// completes (test() true or wait() returned), work queued on `stream` sees the data.
Request irecv_device(Transport& transport, int device, void* device_data, size_t capacity,
                     int peer, int tag, const Expect& expect, void* stream);

}  // namespace geopipe::comm
