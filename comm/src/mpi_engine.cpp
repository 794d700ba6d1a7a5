// The MPI engine: construction, posting, progress and completion of messages (mpi_engine.h).
#include "mpi_engine.h"

#include <geopipe/comm/crc32c.h>

#include <geopipe/core/error.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <sstream>

namespace geopipe::comm {

const char* thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
  }
  return "unknown";
}

namespace {

// A refused (unauthenticated) message's chunks are drained only up to this size: its header,
// and so its size, cannot be trusted.
constexpr uint64_t kMaxRefusedDrainBytes = uint64_t(1) << 30;

class MpiRequestState final : public RequestState {
 public:
  MpiRequestState(Communicator::Engine* engine, std::shared_ptr<Op> op)
      : engine_(engine), op_(std::move(op)) {}
  bool test() override { return engine_->test(op_); }
  void wait(Seconds timeout) override { engine_->wait(op_, timeout); }
  void cancel() override { engine_->cancel(op_); }
  const MessageHeader& header() const override { return op_->header; }
  std::vector<uint8_t>& payload() override { return op_->payload; }
  std::string describe() const override { return engine_->describe(*op_); }
  Seconds default_timeout() const override { return Seconds(engine_->default_timeout_s_); }

 private:
  Communicator::Engine* engine_;
  std::shared_ptr<Op> op_;
};

void check_mpi_ready(bool progress_thread) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized)
    throw Error("geopipe::comm::Communicator: MPI is not initialised (call comm::init_mpi first)");
  int provided = MPI_THREAD_SINGLE;
  MPI_Query_thread(&provided);
  if (progress_thread && provided < MPI_THREAD_MULTIPLE)
    throw Error(std::string("geopipe::comm::Communicator: MPI was initialised with ") +
                thread_level_name(provided) +
                "; the progress thread needs MPI_THREAD_MULTIPLE (use comm::init_mpi)");
}

}  // namespace

std::string Communicator::Engine::describe(const Op& op) const {
  std::ostringstream os;
  if (op.is_send)
    os << "send " << who(rank_) << " -> " << who(op.peer) << ", tag " << op.tag << ", " << op.bytes
       << " B";
  else
    os << "recv " << who(rank_) << " <- " << who(op.peer) << ", tag " << op.tag << ", "
       << (op.any_size ? std::string("any size") : std::to_string(op.capacity) + " B buffer");
  return os.str();
}

void Communicator::Engine::check_peer_tag(int peer, int tag, const char* what) const {
  if (peer < 0 || peer >= size_)
    throw Error(std::string(what) + " on " + who(rank_) + ": peer " + std::to_string(peer) +
                " is not a rank of this job (world size " + std::to_string(size_) + ")");
  if (tag < 0 || tag > kMaxUserTag)
    throw Error(std::string(what) + " on " + who(rank_) + " to/from " + who(peer) + ": tag " +
                std::to_string(tag) + " is outside [0, " + std::to_string(kMaxUserTag) + "]");
}

// ---- construction --------------------------------------------------------------------------

// Options are resolved after the regions' all-gather: a rank with a bad environment still takes
// part in that collective before its constructor throws.
Communicator::Engine::Engine(CommOptions options) {
  check_mpi_ready(options.progress_thread);
  open_communicators();
  region_ = resolve_region(options, process_environment);
  gather_regions();
  const ResolvedOptions resolved = resolve_options(options, process_environment);
  apply(resolved);
  EmulatedLinks links = make_emulated_links(resolved, regions_);
  shaper_ = std::move(links.shaper);
  region_index_ = std::move(links.region_index);
  // Scripted link events are timed from now: every rank is past the all-gather above.
  add_link_events(resolved, shaper_.get(), now_s());
  if (options.progress_thread) progress_ = std::thread([this] { progress_main(); });
}

void Communicator::Engine::open_communicators() {
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  for (MPI_Comm* c : {&hdr_comm_, &data_comm_, &coll_comm_}) {
    MPI_Comm_dup(MPI_COMM_WORLD, c);
    MPI_Comm_set_errhandler(*c, MPI_ERRORS_RETURN);
  }
  seq_.reset(new std::atomic<uint32_t>[size_]);
  for (int i = 0; i < size_; ++i) seq_[i] = 0;
  seen_.resize(static_cast<size_t>(size_));
}

// Every rank's region name, by rank (collective).
void Communicator::Engine::gather_regions() {
  int len = static_cast<int>(region_.size());
  std::vector<int> lens(size_), displs(size_);
  MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, coll_comm_);
  int total = 0;
  for (int i = 0; i < size_; ++i) {
    displs[i] = total;
    total += lens[i];
  }
  std::string all(static_cast<size_t>(total), '\0');
  MPI_Allgatherv(region_.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR,
                 coll_comm_);
  for (int i = 0; i < size_; ++i) regions_.push_back(all.substr(displs[i], lens[i]));
}

void Communicator::Engine::apply(const ResolvedOptions& options) {
  checksum_ = options.checksum;
  auth_ = options.auth;
  chunk_bytes_ = options.chunk_bytes;
  max_inflight_ = options.max_chunks_in_flight;
  default_timeout_s_ = options.default_timeout_s;
}

Communicator::Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (progress_.joinable()) progress_.join();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  for (size_t i = 0; i < reqs_.size(); ++i) {
    if (!slots_[i].op->is_send) MPI_Cancel(&reqs_[i]);
    MPI_Request_free(&reqs_[i]);
  }
  const bool collectives_done = settle_abandoned_collectives();
  for (MPI_Comm* c : {&hdr_comm_, &data_comm_, &coll_comm_})
    if (*c != MPI_COMM_NULL && (c != &coll_comm_ || collectives_done)) MPI_Comm_free(c);
}

// ---- posting -------------------------------------------------------------------------------

Request Communicator::Engine::isend(const void* data, size_t bytes, int peer, int tag,
                                    const MessageHeader& header) {
  check_peer_tag(peer, tag, "isend");
  auto op = std::make_shared<Op>(&live_ops_);
  op->is_send = true;
  op->peer = peer;
  op->tag = tag;
  op->start = now_s();
  op->data = static_cast<const uint8_t*>(data);
  op->bytes = bytes;
  encode_send(*op, header, fault_.exchange(TestFault::kNone));
  schedule_send(*op);
  {
    std::lock_guard<std::mutex> lock(mu_);
    sending_.push_back(op);
    post_due_locked(now_s());
    update_next_release_locked();
    cv_.notify_one();  // data moves now: wake the progress thread from any sleep (it polls faster)
  }
  sent_msgs_++;
  sent_bytes_ += bytes;
  return Request(std::make_shared<MpiRequestState>(this, op));
}

// Fills in the header (size, sender, sequence number, checksum, tag), encodes it with an inline
// payload or splits the payload into pieces, and applies a test fault.
void Communicator::Engine::encode_send(Op& op, const MessageHeader& header, TestFault fault) {
  const size_t bytes = op.bytes;
  MessageHeader& h = op.header;
  h = header;
  h.payload_bytes = bytes;
  h.src_rank = rank_;
  h.seq = fault == TestFault::kReplaySequence ? seq_[op.peer].load() - 1 : seq_[op.peer]++;
  const bool out_of_band = (header.flags & kFlagOutOfBand) != 0;
  h.flags = out_of_band ? kFlagOutOfBand : 0;
  if (auth_) h.flags |= kFlagAuthTag;
  if (!out_of_band && checksum_) {
    h.flags |= kFlagHasChecksum;
    h.crc32c = crc32c(op.data, bytes);
  } else {
    h.crc32c = 0;
  }
  if (fault == TestFault::kCorruptPayload && bytes > 0 && !out_of_band) {
    op.scratch.assign(op.data, op.data + bytes);  // corrupt a copy, never the caller's data
    op.scratch[bytes / 2] ^= 0x5A;
    op.data = op.scratch.data();
  }
  const bool inline_payload = out_of_band || bytes <= kInlineBytes;
  op.wire.resize(kHeaderWireBytes + (inline_payload && !out_of_band ? bytes : 0));
  encode_header(h, op.wire.data());
  if (auth_) seal_header(op.wire.data(), *auth_);
  if (fault == TestFault::kBadMagic) op.wire[0] ^= 0xFF;
  if (fault == TestFault::kTamperHeader) {
    op.wire[20] ^= 0x01;  // micro_batch's low byte (header.cpp layout)
    const uint32_t crc = crc32c(op.wire.data(), 140);
    for (int i = 0; i < 4; ++i) op.wire[140 + i] = static_cast<uint8_t>(crc >> (8 * i));
  }
  if (inline_payload) {
    if (!out_of_band && bytes) std::memcpy(op.wire.data() + kHeaderWireBytes, op.data, bytes);
    if (fault == TestFault::kTruncatePayload && bytes > 0 && !out_of_band) op.wire.pop_back();
    op.pieces = 1;
  } else {
    op.pieces = 1 + static_cast<int>((bytes + chunk_bytes_ - 1) / chunk_bytes_);
    if (fault == TestFault::kTruncatePayload) op.truncate_last = 1;
  }
}

// When each piece may leave: at once, or when the emulated link delivers it.
void Communicator::Engine::schedule_send(Op& op) {
  op.release.assign(op.pieces, 0.0);
  if (!shaper_ || op.peer == rank_) return;
  const int from = region_index_[rank_], to = region_index_[op.peer];
  for (int p = 0; p < op.pieces; ++p) {
    const size_t piece_bytes =
        p == 0 ? op.wire.size() : std::min(chunk_bytes_, op.bytes - (p - 1) * chunk_bytes_);
    op.release[p] = shaper_->schedule(from, to, piece_bytes, op.start);
  }
  if (!std::isfinite(op.release.back())) return;  // a cut link (shaper.h): held for good, not a delay
  double delay = shaper_delay_.load();
  while (!shaper_delay_.compare_exchange_weak(delay, delay + (op.release.back() - op.start))) {
  }
}

Request Communicator::Engine::irecv(void* data, size_t capacity, bool any_size, int peer, int tag,
                                    const Expect& expect) {
  check_peer_tag(peer, tag, "irecv");
  auto op = std::make_shared<Op>(&live_ops_);
  op->peer = peer;
  op->tag = tag;
  op->start = now_s();
  op->user = static_cast<uint8_t*>(data);
  op->capacity = capacity;
  op->any_size = any_size;
  op->expect = expect;
  op->wire.resize(kHeaderWireBytes + kInlineBytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    recv_order_.push_back(op);
    post_recv_locked(op, op->wire.data(), static_cast<int>(op->wire.size()), hdr_comm_, 0);
    if (idle_sleeping_) cv_.notify_one();
  }
  return Request(std::make_shared<MpiRequestState>(this, op));
}

void Communicator::Engine::post_recv_locked(const std::shared_ptr<Op>& op, void* buf, int count,
                                            MPI_Comm comm, int piece) {
  MPI_Request req;
  const int err = MPI_Irecv(buf, count, MPI_BYTE, op->peer, op->tag, comm, &req);
  if (err != MPI_SUCCESS) {
    fail_locked(*op, describe(*op) + ": MPI_Irecv failed: " + mpi_error_string(err));
    return;
  }
  op->inflight++;
  reqs_.push_back(req);
  slots_.push_back(Slot{op, piece});
}

void Communicator::Engine::post_piece_locked(const std::shared_ptr<Op>& op) {
  const int p = op->posted;
  const void* buf;
  size_t n;
  MPI_Comm comm;
  if (p == 0) {
    buf = op->wire.data();
    n = op->wire.size();
    comm = hdr_comm_;
  } else {
    const size_t offset = static_cast<size_t>(p - 1) * chunk_bytes_;
    buf = op->data + offset;
    n = std::min(chunk_bytes_, op->bytes - offset);
    if (p == op->pieces - 1) n -= std::min(n, op->truncate_last);
    comm = data_comm_;
  }
  MPI_Request req;
  const int err = MPI_Isend(buf, static_cast<int>(n), MPI_BYTE, op->peer, op->tag, comm, &req);
  op->posted++;
  if (err != MPI_SUCCESS) {
    fail_locked(*op, describe(*op) + ": MPI_Isend failed: " + mpi_error_string(err));
    return;
  }
  op->inflight++;
  reqs_.push_back(req);
  slots_.push_back(Slot{op, p});
}

// Posts every send piece whose release time has come, oldest message first. A later message to
// the same (peer, tag) waits until the earlier one has posted all its pieces, so that chunks on
// the data communicator stay in the order the receiver posts their receives.
bool Communicator::Engine::post_due_locked(double now) {
  bool posted = false;
  std::vector<std::pair<int, int>> blocked;
  for (auto it = sending_.begin(); it != sending_.end();) {
    const auto& op = *it;
    const std::pair<int, int> key{op->peer, op->tag};
    const bool is_blocked = std::find(blocked.begin(), blocked.end(), key) != blocked.end();
    while (!is_blocked && op->state.load() == kActive && op->posted < op->pieces &&
           op->release[op->posted] <= now && op->inflight < max_inflight_) {
      post_piece_locked(op);
      posted = true;
    }
    if (op->posted == op->pieces || op->state.load() == kFailed) {
      it = sending_.erase(it);
    } else {
      blocked.push_back(key);
      ++it;
    }
  }
  return posted;
}

void Communicator::Engine::update_next_release_locked() {
  double next = 0;
  for (const auto& op : sending_)
    if (op->posted < op->pieces) {
      const double r = op->release[op->posted];
      if (next == 0 || r < next) next = r;
    }
  next_release_.store(next);
}

// ---- progress ------------------------------------------------------------------------------

void Communicator::Engine::fail_locked(Op& op, const std::string& message) {
  if (op.state.load() >= kDone) return;
  op.error = message;
  op.state.store(kFailed, std::memory_order_release);
}

bool Communicator::Engine::progress_locked() {
  bool progressed = post_due_locked(now_s());
  progressed = progress_group_ops_locked() || progressed;
  if (!reqs_.empty()) {
    std::vector<int> indices(reqs_.size());
    std::vector<MPI_Status> statuses(reqs_.size());
    int count = 0;
    const int err = MPI_Testsome(static_cast<int>(reqs_.size()), reqs_.data(), &count,
                                 indices.data(), statuses.data());
    if (count != MPI_UNDEFINED && count > 0) {
      progressed = true;
      // statuses[i] belongs to indices[i]; handle the oldest request first.
      std::vector<std::pair<int, MPI_Status>> done;
      done.reserve(count);
      for (int i = 0; i < count; ++i) done.emplace_back(indices[i], statuses[i]);
      std::sort(done.begin(), done.end(),
                [](const auto& a, const auto& b) { return a.first < b.first; });
      for (auto& [index, status] : done) {
        const int status_err = err == MPI_ERR_IN_STATUS ? status.MPI_ERROR : MPI_SUCCESS;
        on_complete_locked(slots_[index], status, status_err);
        slots_[index].op.reset();
      }
      // Compact, keeping the posting order.
      size_t w = 0;
      for (size_t r = 0; r < reqs_.size(); ++r)
        if (slots_[r].op) {
          reqs_[w] = reqs_[r];
          slots_[w] = std::move(slots_[r]);
          ++w;
        }
      reqs_.resize(w);
      slots_.resize(w);
      process_headers_locked();
      post_due_locked(now_s());
    }
  }
  update_next_release_locked();
  return progressed;
}

void Communicator::Engine::on_complete_locked(Slot& slot, const MPI_Status& status, int err) {
  Op& op = *slot.op;
  op.inflight--;
  op.completed++;
  if (op.is_send) {
    if (err != MPI_SUCCESS) fail_locked(op, describe(op) + ": " + mpi_error_string(err));
    else if (op.completed == op.pieces) op.state.store(kDone, std::memory_order_release);
    return;
  }
  int cancelled = 0;
  MPI_Test_cancelled(&status, &cancelled);
  if (cancelled) {
    fail_locked(op, describe(op) + ": cancelled");
    op.header_done = true;
    op.cancelled = true;
    return;
  }
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  if (slot.piece == 0) {
    op.header_done = true;
    if (err != MPI_SUCCESS) {
      op.pending_error = "bad message (" + mpi_error_string(err) + ")";
      op.wire.resize(0);
    } else {
      op.wire.resize(static_cast<size_t>(count));
    }
    return;  // processed in posting order by process_headers_locked
  }
  // A chunk.
  const size_t offset = static_cast<size_t>(slot.piece - 1) * chunk_bytes_;
  const size_t want = std::min<uint64_t>(chunk_bytes_, op.header.payload_bytes - offset);
  if (err != MPI_SUCCESS && op.pending_error.empty())
    op.pending_error = "chunk " + std::to_string(slot.piece - 1) + ": " + mpi_error_string(err);
  else if (static_cast<size_t>(count) != want && op.pending_error.empty())
    op.pending_error = "truncated message: chunk " + std::to_string(slot.piece - 1) + " carried " +
                       std::to_string(count) + " of " + std::to_string(want) + " bytes";
  op.arrived_bytes += static_cast<size_t>(count);
  if (op.completed == op.pieces) {
    if (!op.pending_error.empty())
      fail_locked(op, describe(op) + ": " + op.pending_error + " [" + op.header.describe() + "]");
    else
      op.state.store(kArrived, std::memory_order_release);
  }
}

// Headers of one (peer, tag) are handled in the order their receives were posted: the chunk
// receives of the earlier message must be posted before those of the later one.
void Communicator::Engine::process_headers_locked() {
  std::vector<std::pair<int, int>> blocked;
  for (auto it = recv_order_.begin(); it != recv_order_.end();) {
    const auto& op = *it;
    const std::pair<int, int> key{op->peer, op->tag};
    const bool is_blocked = std::find(blocked.begin(), blocked.end(), key) != blocked.end();
    if (!is_blocked && op->header_done) {
      if (!op->cancelled) process_header_locked(op);
      op->header_processed = true;
      it = recv_order_.erase(it);
    } else {
      blocked.push_back(key);
      ++it;
    }
  }
}

void Communicator::Engine::process_header_locked(const std::shared_ptr<Op>& op_ptr) {
  Op& op = *op_ptr;
  const std::string prefix = describe(op) + ": ";
  if (!op.pending_error.empty()) {
    fail_locked(op, prefix + op.pending_error);
    return;
  }
  MessageHeader h;
  const std::string bad = decode_header(op.wire.data(), op.wire.size(), h);
  if (!bad.empty()) {
    fail_locked(op, prefix + bad);
    return;
  }
  // Authentication first: nothing of a header without a valid tag is believed.
  if (const std::string refusal = refusal_locked(op, h); !refusal.empty()) {
    // Its chunks are drained into scratch (never the caller's buffer) so that the sender is
    // not left hanging, unless the unauthenticated size is implausibly large.
    const bool chunked = !(h.flags & kFlagOutOfBand) && h.payload_bytes > kInlineBytes;
    if (!chunked || h.payload_bytes > kMaxRefusedDrainBytes) {
      fail_locked(op, prefix + refusal);
      return;
    }
    op.header = h;
    op.pending_error = refusal;
    op.scratch.resize(h.payload_bytes);
    op.dest = op.scratch.data();
    post_chunk_receives_locked(op_ptr);
    return;
  }
  op.header = h;
  const std::string problem = mismatch(op, h);
  recv_msgs_++;
  if (h.flags & kFlagOutOfBand) {  // the payload travels over another transport
    if (!problem.empty()) fail_locked(op, prefix + problem);
    else op.state.store(kArrived, std::memory_order_release);
    return;
  }
  if (h.payload_bytes <= kInlineBytes) accept_inline_locked(op, h, problem);
  else accept_chunked_locked(op_ptr, problem);
}

// Why an authenticated receiver refuses this header ("" when it does not).
std::string Communicator::Engine::refusal_locked(const Op& op, const MessageHeader& h) {
  if (auth_) {
    if (!(h.flags & kFlagAuthTag))
      return "refused: the message from " + who(op.peer) +
             " carries no authentication tag, but this job uses a key "
             "(GEOPIPE_AUTH_KEY_FILE must be set on every rank)";
    if (!header_tag_valid(op.wire.data(), *auth_))
      return "refused: the authentication tag of the message from " + who(op.peer) +
             " is wrong (another key, or the header was altered on the way)";
    if (!seen_[static_cast<size_t>(op.peer)].insert(h.seq))
      return "refused: replayed message from " + who(op.peer) + " (sequence number " +
             std::to_string(h.seq) + " was already received)";
  } else if (h.flags & kFlagAuthTag) {
    return "refused: the message from " + who(op.peer) +
           " carries an authentication tag, but this rank has no key "
           "(GEOPIPE_AUTH_KEY_FILE must be set on every rank, or on none)";
  }
  return "";
}

// How the header differs from what the receiver expects ("" when it matches).
std::string Communicator::Engine::mismatch(const Op& op, const MessageHeader& h) const {
  std::string problem = check_header(h, op.expect);
  auto add = [&problem](const std::string& p) { problem += (problem.empty() ? "" : "; ") + p; };
  if (h.src_rank != op.peer)
    add("header says it came from rank " + std::to_string(h.src_rank));
  if (!op.any_size && h.payload_bytes > op.capacity && !(h.flags & kFlagOutOfBand))
    add("payload of " + std::to_string(h.payload_bytes) + " bytes exceeds the receive buffer of " +
        std::to_string(op.capacity) + " bytes");
  if ((h.flags & kFlagOutOfBand) && !op.any_size && h.payload_bytes != op.capacity)
    add("payload of " + std::to_string(h.payload_bytes) + " bytes, receiver expects exactly " +
        std::to_string(op.capacity));
  if (!problem.empty())
    problem = "header does not match what the receiver expects: " + problem + " [received " +
              h.describe() + "]";
  return problem;
}

// The payload came inside the header message: copy it out.
void Communicator::Engine::accept_inline_locked(Op& op, const MessageHeader& h,
                                                const std::string& problem) {
  const std::string prefix = describe(op) + ": ";
  const size_t inline_bytes = op.wire.size() - kHeaderWireBytes;
  if (inline_bytes != h.payload_bytes) {
    fail_locked(op, prefix + "truncated message: " + std::to_string(inline_bytes) + " of " +
                        std::to_string(h.payload_bytes) + " payload bytes arrived [" +
                        h.describe() + "]");
    return;
  }
  if (!problem.empty()) {
    fail_locked(op, prefix + problem);
    return;
  }
  uint8_t* dest = op.user;
  if (op.any_size) {
    op.payload.resize(h.payload_bytes);
    dest = op.payload.data();
  }
  if (h.payload_bytes) std::memcpy(dest, op.wire.data() + kHeaderWireBytes, h.payload_bytes);
  op.dest = dest;
  op.arrived_bytes = h.payload_bytes;
  recv_bytes_ += h.payload_bytes;
  op.state.store(kArrived, std::memory_order_release);
}

// Chunked: post every chunk receive now (the sender keeps several in flight). A message that
// does not match is drained into scratch, so the next message on this tag is intact.
void Communicator::Engine::accept_chunked_locked(const std::shared_ptr<Op>& op_ptr,
                                                 const std::string& problem) {
  Op& op = *op_ptr;
  if (!problem.empty()) {
    op.pending_error = problem;
    op.scratch.resize(op.header.payload_bytes);
    op.dest = op.scratch.data();
  } else if (op.any_size) {
    op.payload.resize(op.header.payload_bytes);
    op.dest = op.payload.data();
  } else {
    op.dest = op.user;
  }
  post_chunk_receives_locked(op_ptr);
  recv_bytes_ += op.header.payload_bytes;
}

void Communicator::Engine::post_chunk_receives_locked(const std::shared_ptr<Op>& op_ptr) {
  Op& op = *op_ptr;
  const uint64_t total = op.header.payload_bytes;
  const int chunks = static_cast<int>((total + chunk_bytes_ - 1) / chunk_bytes_);
  op.pieces = 1 + chunks;
  for (int c = 0; c < chunks; ++c) {
    const size_t offset = static_cast<size_t>(c) * chunk_bytes_;
    const size_t n = std::min<uint64_t>(chunk_bytes_, total - offset);
    post_recv_locked(op_ptr, op.dest + offset, static_cast<int>(n), data_comm_, c + 1);
  }
}

// ---- completion ----------------------------------------------------------------------------

bool Communicator::Engine::finish(Op& op) {
  int s = op.state.load(std::memory_order_acquire);
  if (s == kArrived) {
    std::lock_guard<std::mutex> lock(op.verify_mu);
    s = op.state.load(std::memory_order_acquire);
    if (s == kArrived) {
      const MessageHeader& h = op.header;
      if ((h.flags & kFlagHasChecksum) && !(h.flags & kFlagOutOfBand)) {
        const uint32_t actual = crc32c(op.dest, h.payload_bytes);
        if (actual != h.crc32c) {
          char buf[96];
          std::snprintf(buf, sizeof buf, "checksum mismatch: CRC32C 0x%08x computed, 0x%08x sent",
                        actual, h.crc32c);
          op.error = describe(op) + ": " + buf + " [" + h.describe() + "]";
          op.state.store(kFailed, std::memory_order_release);
          s = kFailed;
        }
      }
      if (s == kArrived) {
        op.state.store(kDone, std::memory_order_release);
        s = kDone;
      }
    }
  }
  if (s == kFailed) throw Error(op.error);
  return s == kDone;
}

bool Communicator::Engine::test(const std::shared_ptr<Op>& op) {
  if (finish(*op)) return true;
  {
    std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
    if (lock.owns_lock()) progress_locked();
  }
  return finish(*op);
}

std::string Communicator::Engine::timeout_message(const Op& op, double waited) const {
  std::ostringstream os;
  os << describe(op) << ": timed out after " << fmt_seconds(waited) << "; ";
  if (op.is_send) {
    os << op.completed << " of " << op.pieces << " pieces delivered";
    if (op.posted < op.pieces) os << " (" << op.pieces - op.posted << " still held by the link shaper)";
  } else if (!op.header_done) {
    os << "no message arrived (is " << who(op.peer) << " alive and sending on tag " << op.tag
       << "?)";
  } else {
    os << op.arrived_bytes << " of " << op.header.payload_bytes << " payload bytes arrived";
  }
  return os.str();
}

void Communicator::Engine::wait(const std::shared_ptr<Op>& op, Seconds timeout) {
  if (finish(*op)) return;
  struct Waiter {
    Engine* e;
    explicit Waiter(Engine* engine) : e(engine) { e->waiters_++; }
    ~Waiter() { e->waiters_--; }  // the progress thread looks again within 1 ms
  } waiter(this);
  const double begin = now_s();
  const double deadline = begin + timeout.count();
  Backoff backoff(kWaiterSpinS, kWaiterSleepCapS);
  while (true) {
    bool progressed = false;
    {
      std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
      if (lock.owns_lock()) progressed = progress_locked();
    }
    if (finish(*op)) return;
    const double now = now_s();
    if (now >= deadline) {
      std::lock_guard<std::mutex> lock(mu_);  // the op's progress fields are guarded by mu_
      throw TimeoutError(timeout_message(*op, now - op->start));
    }
    if (progressed) {
      backoff.reset();
      continue;
    }
    double pause = backoff.next(now);
    const double release = next_release_.load();
    if (release > now) pause = std::max(pause, std::min(release - now, kWaiterSleepCapS));
    pause = std::min(pause, deadline - now);
    if (pause > 0) std::this_thread::sleep_for(Seconds(pause));
    else if (now - backoff.idle_since > 50e-6) std::this_thread::yield();
  }
}

void Communicator::Engine::cancel(const std::shared_ptr<Op>& op) {
  if (op->is_send) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (op->header_done || op->state.load() != kActive) return;
  for (size_t i = 0; i < slots_.size(); ++i)
    if (slots_[i].op == op && slots_[i].piece == 0) MPI_Cancel(&reqs_[i]);
  // Completion (as cancelled) is picked up by the next progress round.
  progress_locked();
}

bool Communicator::Engine::moving_locked() const {
  if (!sending_.empty() || !group_ops_.empty()) return true;
  for (const Slot& slot : slots_)
    if (slot.op->is_send || slot.piece > 0) return true;
  return false;
}

void Communicator::Engine::progress_main() {
  Backoff backoff(kProgressSpinS, kProgressSleepCapS);
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (waiters_.load() > 0) {  // a caller inside wait() drives progress; stay out of its way
      cv_.wait_for(lock, std::chrono::milliseconds(1));
      continue;
    }
    if (idle_locked()) {
      idle_sleeping_ = true;
      cv_.wait(lock, [this] { return stop_ || !idle_locked(); });
      idle_sleeping_ = false;
      backoff.reset();
      continue;
    }
    if (progress_locked()) {
      backoff.reset();
      lock.unlock();
      std::this_thread::yield();
      lock.lock();
      continue;
    }
    const double now = now_s();
    backoff.cap_s = moving_locked() ? kProgressSleepCapS : kProgressWaitingCapS;
    double pause = backoff.next(now);
    const double release = next_release_.load();
    if (release > now) pause = std::max(pause, std::min(release - now, kProgressSleepCapS));
    if (pause > 0) {
      cv_.wait_for(lock, Seconds(pause));
    } else {
      lock.unlock();
      std::this_thread::yield();
      lock.lock();
    }
  }
}

}  // namespace geopipe::comm
