// The transport interface: asynchronous point-to-point messages with a header, and the
// request handle every send and receive returns. Backends: Communicator (MPI, every peer,
// host memory) and NcclTransport (GPU memory, peers of the same region). router.h picks one.
//
// Contract (both backends):
// - isend/irecv return at once; the transfer progresses in the background (no polling needed).
// - Request::wait(timeout) returns when the operation completed, throws geopipe::TimeoutError
//   naming rank, peer, tag, bytes and the time waited, or geopipe::Error when the message was
//   bad (header mismatch, checksum, truncated): the message names both ranks and regions.
// - Buffers passed to isend/irecv must stay valid and unmodified until the request completes.
// - Messages between one (sender, receiver, tag) are received in the order they were sent.
#pragma once

#include <geopipe/comm/header.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace geopipe::comm {

using Seconds = std::chrono::duration<double>;

// Largest tag a caller may use (the MPI standard guarantees 32767).
inline constexpr int kMaxUserTag = 32767;

enum class Backend { kMpi, kNccl };

// The state behind a Request; implemented by each backend.
class RequestState {
 public:
  virtual ~RequestState() = default;
  virtual bool test() = 0;                     // true when complete; throws if it failed
  virtual void wait(Seconds timeout) = 0;      // throws TimeoutError or Error
  virtual void cancel() = 0;                   // receives not yet matched: abandon them
  virtual const MessageHeader& header() const = 0;   // sent header / received header once complete
  virtual std::vector<uint8_t>& payload() = 0;       // irecv_any_size: the received bytes
  virtual std::string describe() const = 0;          // "recv rank 1 <- rank 0 tag 5, 4096 B"
  virtual Seconds default_timeout() const = 0;
};

// A handle to one asynchronous send or receive. Cheap to copy (shared state).
class Request {
 public:
  Request() = default;
  explicit Request(std::shared_ptr<RequestState> state) : state_(std::move(state)) {}

  bool valid() const { return state_ != nullptr; }
  // Non-blocking: true once complete (also checks the header and checksum of a receive).
  bool test() { return state_->test(); }
  // Blocks until complete; throws geopipe::TimeoutError after `timeout`.
  void wait(Seconds timeout) { state_->wait(timeout); }
  // Waits with the transport's default timeout (GEOPIPE_COMM_TIMEOUT_S, default 300 s).
  void wait() { state_->wait(state_->default_timeout()); }
  // Abandons a receive whose message has not started to arrive (after a timeout, say); a
  // later wait() throws. Sends cannot be cancelled.
  void cancel() { state_->cancel(); }
  // Sender: the header as sent. Receiver: the header as received (valid after completion).
  const MessageHeader& header() const { return state_->header(); }
  // Receives posted with irecv_any_size: the payload (valid after completion; may be moved from).
  std::vector<uint8_t>& payload() { return state_->payload(); }
  std::string describe() const { return state_ ? state_->describe() : "(empty request)"; }

  // Keeps `object` alive until this request (and its copies) are destroyed, e.g. a tensor.
  void keep_alive(std::shared_ptr<void> object) { keep_.push_back(std::move(object)); }

  RequestState* state() const { return state_.get(); }

 private:
  std::shared_ptr<RequestState> state_;
  std::vector<std::shared_ptr<void>> keep_;
};

// Waits for every request (each with the same overall deadline).
void wait_all(std::vector<Request>& requests, Seconds timeout);

class Transport {
 public:
  virtual ~Transport() = default;
  virtual Backend backend() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Sends `bytes` bytes with `header` (payload_bytes, crc32c, flags, src_rank and seq are
  // filled in here). tag in [0, kMaxUserTag].
  virtual Request isend(const void* data, size_t bytes, int peer, int tag,
                        const MessageHeader& header) = 0;
  // Receives into `data` (capacity bytes). The header arrives first and is checked against
  // `expect` and against the capacity; a message larger than `capacity` is an error (its bytes
  // are drained so the stream stays usable). The received size is header().payload_bytes.
  virtual Request irecv(void* data, size_t capacity, int peer, int tag, const Expect& expect) = 0;

  // A batch: the sends and receives posted between begin_batch() and end_batch() are issued
  // together. NCCL needs it (one ncclGroupStart/End: the operations start at end_batch(), and a
  // rank's send to itself or a send and a receive at once must share a batch); MPI posts every
  // operation at once, so there it does nothing. Batches nest: only the outermost end_batch()
  // issues the operations. Every begin_batch() needs its end_batch() (TransportBatch). Do not
  // wait on a request of the current batch before its end_batch(): on NCCL it has not started.
  virtual void begin_batch() {}
  virtual void end_batch() {}
};

// Begins a batch on `transport` and ends it when it goes out of scope.
class TransportBatch {
 public:
  explicit TransportBatch(Transport& transport);
  ~TransportBatch() noexcept(false);
  TransportBatch(const TransportBatch&) = delete;
  TransportBatch& operator=(const TransportBatch&) = delete;

 private:
  Transport& transport_;
  int exceptions_at_begin_;
};

}  // namespace geopipe::comm
