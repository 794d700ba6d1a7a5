// The MPI backend. One Engine per Communicator owns every MPI request of the transport; all of
// them are created, tested and retired under one mutex (mu_), by whichever thread holds it: the
// caller inside isend/irecv/test/wait, or the progress thread when nobody waits.
#include <geopipe/comm/auth.h>
#include <geopipe/comm/communicator.h>
#include <geopipe/comm/crc32c.h>

#include <geopipe/core/config.h>
#include <geopipe/core/error.h>

#include <mpi.h>
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>
#endif

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

namespace geopipe::comm {

const char* backend_name(Backend backend) { return backend == Backend::kMpi ? "mpi" : "nccl"; }

void wait_all(std::vector<Request>& requests, Seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (auto& r : requests) {
    const Seconds left = deadline - std::chrono::steady_clock::now();
    r.wait(left.count() > 0 ? left : Seconds(0));
  }
}

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string fmt_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f s", s);
  return buf;
}

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, static_cast<size_t>(len));
}

const char* thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
  }
  return "unknown";
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

// Polling policy shared by waiting callers and the progress thread: spin while things move,
// then sleep in growing steps so that an idle rank leaves the CPU to compute.
struct Backoff {
  double spin_s;  // poll without sleeping this long after the last progress
  double cap_s;   // longest sleep between polls afterwards
  double idle_since = -1;
  double sleep_s = 0;
  Backoff(double spin, double cap) : spin_s(spin), cap_s(cap) {}
  void reset() { idle_since = -1; sleep_s = 0; }
  // Seconds to sleep before polling again (0: poll at once).
  double next(double now) {
    if (idle_since < 0) idle_since = now;
    if (now - idle_since < spin_s) return 0;
    sleep_s = sleep_s == 0 ? 2e-6 : std::min(sleep_s * 2, cap_s);
    return sleep_s;
  }
};

// A caller inside wait() polls like MPI_Wait for up to 1 ms (yielding the core to any other
// runnable thread between polls), then sleeps in growing steps of at most 100 us. The progress
// thread spins only 50 us, then sleeps up to 200 us, or until the shaper releases a piece.
constexpr double kWaiterSpinS = 1e-3, kWaiterSleepCapS = 100e-6;
constexpr double kProgressSpinS = 50e-6, kProgressSleepCapS = 200e-6;

enum OpState : int { kActive = 0, kArrived = 1, kDone = 2, kFailed = 3 };

// A refused (unauthenticated) message's chunks are drained only up to this size: its header,
// and so its size, cannot be trusted.
constexpr uint64_t kMaxRefusedDrainBytes = uint64_t(1) << 30;

}  // namespace

// One message (a send or a receive) and everything the engine needs to move it.
struct Op {
  // Counts the engine's live records (CommQueues::live_messages).
  explicit Op(std::atomic<int64_t>* live_counter) : live(live_counter) { ++*live; }
  ~Op() { --*live; }
  Op(const Op&) = delete;
  Op& operator=(const Op&) = delete;
  std::atomic<int64_t>* live;

  bool is_send = false;
  int peer = 0;
  int tag = 0;
  MessageHeader header;  // send: as sent; receive: as received (valid from kArrived)
  std::atomic<int> state{kActive};
  std::string error;     // written before state becomes kFailed
  double start = 0;
  std::mutex verify_mu;

  // Pieces: piece 0 is the header message (with an inline payload), pieces 1.. the chunks.
  int pieces = 1;
  int posted = 0;        // pieces posted so far (sends) / chunk receives posted (receives)
  int completed = 0;     // pieces completed
  int inflight = 0;
  std::vector<double> release;  // send: when each piece may be posted (shaper)
  std::vector<uint8_t> wire;    // send: encoded header (+ inline payload); receive: header buffer
  const uint8_t* data = nullptr;  // send: the payload
  size_t bytes = 0;               // send: payload bytes
  size_t truncate_last = 0;       // fault injection: bytes left out of the last chunk

  // Receive side.
  uint8_t* user = nullptr;
  size_t capacity = 0;
  bool any_size = false;
  Expect expect;
  std::vector<uint8_t> payload;   // irecv_any_size
  std::vector<uint8_t> scratch;   // drains a rejected message's chunks
  uint8_t* dest = nullptr;
  bool header_done = false;       // header message completed (maybe not yet processed)
  bool header_processed = false;
  std::string pending_error;      // found at the header: drain the chunks, then fail
  size_t arrived_bytes = 0;
  bool cancelled = false;
};

class Communicator::Engine {
 public:
  explicit Engine(CommOptions options);
  ~Engine();

  int rank_ = 0, size_ = 1;
  std::string region_;
  std::vector<std::string> regions_;
  std::vector<int> region_index_;  // shaper region of each rank
  std::unique_ptr<LinkShaper> shaper_;
  bool checksum_ = true;
  std::unique_ptr<AuthKey> auth_;  // null: messages carry no tag
  // Authenticated sequence numbers received from each peer (under mu_): all below `low`, and
  // those above it in `above` (messages on different tags complete out of order).
  struct SeenSequences {
    uint32_t low = 0;
    std::set<uint32_t> above;
    bool insert(uint32_t seq) {  // false: already seen (a replay)
      if (seq < low || !above.insert(seq).second) return false;
      while (!above.empty() && *above.begin() == low) {
        above.erase(above.begin());
        ++low;
      }
      return true;
    }
  };
  std::vector<SeenSequences> seen_;
  size_t chunk_bytes_ = 1 << 20;
  int max_inflight_ = 16;
  double default_timeout_s_ = 300;
  MPI_Comm hdr_comm_ = MPI_COMM_NULL, data_comm_ = MPI_COMM_NULL, coll_comm_ = MPI_COMM_NULL;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool idle_sleeping_ = false;  // the progress thread waits for work (needs a notify)
  std::atomic<int> waiters_{0};
  std::thread progress_;
  std::atomic<TestFault> fault_{TestFault::kNone};
  std::unique_ptr<std::atomic<uint32_t>[]> seq_;

  // Under mu_.
  struct Slot {
    std::shared_ptr<Op> op;
    int piece;  // 0 header, >= 1 chunk
  };
  std::vector<MPI_Request> reqs_;
  std::vector<Slot> slots_;
  std::deque<std::shared_ptr<Op>> sending_;    // sends with pieces not yet posted, in order
  std::deque<std::shared_ptr<Op>> recv_order_; // receives whose header is not yet processed
  std::atomic<double> next_release_{0};        // earliest pending shaper release (0: none)

  std::atomic<uint64_t> sent_msgs_{0}, recv_msgs_{0}, sent_bytes_{0}, recv_bytes_{0};
  std::atomic<int64_t> live_ops_{0};
  std::atomic<double> shaper_delay_{0};
  // Collectives given up after a timeout: MPI still owns them, so their communicator is never
  // freed (freeing it under a pending collective crashes Open MPI's progress engine).
  // Their buffers stay alive here too: MPI may still write into them.
  struct Abandoned {
    MPI_Request request;
    std::unique_ptr<std::vector<double>> buffer;
  };
  std::vector<Abandoned> abandoned_;

  std::string who(int rank) const {
    return "rank " + std::to_string(rank) + " (region " + regions_[rank] + ")";
  }
  std::string describe(const Op& op) const {
    std::ostringstream os;
    if (op.is_send)
      os << "send " << who(rank_) << " -> " << who(op.peer) << ", tag " << op.tag << ", " << op.bytes
         << " B";
    else
      os << "recv " << who(rank_) << " <- " << who(op.peer) << ", tag " << op.tag << ", "
         << (op.any_size ? std::string("any size") : std::to_string(op.capacity) + " B buffer");
    return os.str();
  }

  void check_peer_tag(int peer, int tag, const char* what) const {
    if (peer < 0 || peer >= size_)
      throw Error(std::string(what) + " on " + who(rank_) + ": peer " + std::to_string(peer) +
                  " is not a rank of this job (world size " + std::to_string(size_) + ")");
    if (tag < 0 || tag > kMaxUserTag)
      throw Error(std::string(what) + " on " + who(rank_) + " to/from " + who(peer) + ": tag " +
                  std::to_string(tag) + " is outside [0, " + std::to_string(kMaxUserTag) + "]");
  }

  Request isend(const void* data, size_t bytes, int peer, int tag, const MessageHeader& header);
  Request irecv(void* data, size_t capacity, bool any_size, int peer, int tag, const Expect& expect);

  bool finish(Op& op);
  bool test(const std::shared_ptr<Op>& op);
  void wait(const std::shared_ptr<Op>& op, Seconds timeout);
  void cancel(const std::shared_ptr<Op>& op);
  std::string timeout_message(const Op& op, double waited) const;

  // Under mu_.
  bool progress_locked();
  bool post_due_locked(double now);
  void post_piece_locked(const std::shared_ptr<Op>& op);
  void post_recv_locked(const std::shared_ptr<Op>& op, void* buf, int count, MPI_Comm comm, int piece);
  void on_complete_locked(Slot& slot, const MPI_Status& status, int err);
  void process_headers_locked();
  void process_header_locked(const std::shared_ptr<Op>& op);
  void post_chunk_receives_locked(const std::shared_ptr<Op>& op);
  void fail_locked(Op& op, const std::string& message);
  void update_next_release_locked();
  bool idle_locked() const { return reqs_.empty() && sending_.empty(); }

  void progress_main();
  // On a timeout, `buffer` moves into abandoned_ (MPI may still write into it).
  void collective_wait(MPI_Request& req, std::unique_ptr<std::vector<double>>& buffer,
                       Seconds timeout, const std::string& what);
  void allreduce(double* values, int count, MPI_Op op, Seconds timeout, const char* name);
};

namespace {

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

}  // namespace

// ---- construction --------------------------------------------------------------------------

Communicator::Engine::Engine(CommOptions options) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized)
    throw Error("geopipe::comm::Communicator: MPI is not initialised (call comm::init_mpi first)");
  int provided = MPI_THREAD_SINGLE;
  MPI_Query_thread(&provided);
  if (options.progress_thread && provided < MPI_THREAD_MULTIPLE)
    throw Error(std::string("geopipe::comm::Communicator: MPI was initialised with ") +
                thread_level_name(provided) +
                "; the progress thread needs MPI_THREAD_MULTIPLE (use comm::init_mpi)");
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  for (MPI_Comm* c : {&hdr_comm_, &data_comm_, &coll_comm_}) {
    MPI_Comm_dup(MPI_COMM_WORLD, c);
    MPI_Comm_set_errhandler(*c, MPI_ERRORS_RETURN);
  }
  seq_.reset(new std::atomic<uint32_t>[size_]);
  for (int i = 0; i < size_; ++i) seq_[i] = 0;

  // Regions: all-gather every rank's name.
  region_ = !options.region.empty() ? options.region : env_or("GEOPIPE_REGION", "local");
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

  // Options from the environment.
  checksum_ = options.checksum.value_or(true);
  if (!options.checksum) {
    const std::string v = env_or("GEOPIPE_CHECKSUM", "1");
    checksum_ = !(v == "0" || v == "off" || v == "false");
  }
  if (options.auth_key) {
    if (!options.auth_key->empty()) auth_ = std::make_unique<AuthKey>(*options.auth_key, "auth_key");
  } else if (const std::string file = env_or("GEOPIPE_AUTH_KEY_FILE", ""); !file.empty()) {
    auth_ = std::make_unique<AuthKey>(AuthKey::from_file(file));
  }
  if (auth_ && !checksum_)
    throw InputError("GEOPIPE_CHECKSUM", "",
                     "message authentication needs payload checksums: the header's tag covers the "
                     "payload through its CRC32C (do not set GEOPIPE_CHECKSUM=0 with a key)");
  seen_.resize(static_cast<size_t>(size_));
  chunk_bytes_ = options.chunk_bytes;
  if (chunk_bytes_ == 0) {
    const std::string v = env_or("GEOPIPE_CHUNK_BYTES", "1048576");
    char* end = nullptr;
    const unsigned long long parsed = std::strtoull(v.c_str(), &end, 10);
    if (end == v.c_str() || *end != '\0' || parsed == 0)
      throw InputError("GEOPIPE_CHUNK_BYTES", "", "'" + v + "': expected a positive byte count");
    chunk_bytes_ = static_cast<size_t>(parsed);
  }
  chunk_bytes_ = std::min<size_t>(chunk_bytes_, size_t(1) << 30);  // MPI counts are int
  max_inflight_ = std::max(1, options.max_chunks_in_flight);
  default_timeout_s_ = options.default_timeout_s;
  if (default_timeout_s_ <= 0) {
    const std::string v = env_or("GEOPIPE_COMM_TIMEOUT_S", "300");
    char* end = nullptr;
    default_timeout_s_ = std::strtod(v.c_str(), &end);
    if (end == v.c_str() || *end != '\0' || default_timeout_s_ <= 0)
      throw InputError("GEOPIPE_COMM_TIMEOUT_S", "", "'" + v + "': expected seconds > 0");
  }

  // Emulation.
  EmulateMode mode = EmulateMode::kNone;
  if (options.emulate) {
    mode = *options.emulate;
  } else {
    const std::string v = env_or("GEOPIPE_EMULATE", "none");
    auto parsed = parse_emulate_mode(v);
    if (!parsed)
      throw InputError("GEOPIPE_EMULATE", "", "'" + v + "': expected none, software or netns");
    mode = *parsed;
  }
  if (mode != EmulateMode::kNone) {
    std::shared_ptr<const Topology> topo = options.topology;
    const std::string topo_file = env_or("GEOPIPE_TOPOLOGY", "");
    if (!topo && !options.emulate_link && !topo_file.empty())
      topo = std::make_shared<Topology>(load_topology(topo_file));
    if (topo) {
      shaper_ = std::make_unique<LinkShaper>(LinkShaper::from_topology(*topo, mode));
    } else if (options.emulate_link) {
      std::vector<std::string> names;
      for (const auto& r : regions_)
        if (std::find(names.begin(), names.end(), r) == names.end()) names.push_back(r);
      LinkRate rate = *options.emulate_link;
      if (mode == EmulateMode::kLatencyOnly) rate.bytes_per_s = 0;
      shaper_ = std::make_unique<LinkShaper>(LinkShaper::uniform(names, rate));
    } else {
      throw InputError("GEOPIPE_TOPOLOGY", "",
                       "link emulation is on but no topology was given (set GEOPIPE_TOPOLOGY)");
    }
    for (int r = 0; r < size_; ++r) {
      const int idx = shaper_->region_index(regions_[r]);
      if (idx < 0)
        throw InputError(topo ? topo->source : "GEOPIPE_TOPOLOGY", "regions",
                         "rank " + std::to_string(r) + "'s region '" + regions_[r] +
                             "' is not in the topology");
      region_index_.push_back(idx);
    }
  }
  // Scripted link events, timed from now (every rank is past the all-gather above).
  const bool events_from_env = !options.link_events;
  const std::string events_text =
      options.link_events ? *options.link_events : env_or("GEOPIPE_LINK_EVENTS", "");
  const std::string events_what = events_from_env ? "GEOPIPE_LINK_EVENTS" : "link_events";
  const auto events = parse_link_events(events_text, events_what);
  if (!events.empty()) {
    if (!shaper_)
      throw InputError(events_what, "",
                       "link events need link emulation (set GEOPIPE_EMULATE=software)");
    shaper_->add_events(events, now_s(), events_what);
  }
  if (options.progress_thread) progress_ = std::thread([this] { progress_main(); });
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
  bool collectives_done = true;
  for (Abandoned& a : abandoned_) {
    int flag = 0;
    MPI_Test(&a.request, &flag, MPI_STATUS_IGNORE);
    collectives_done = collectives_done && flag;
    if (!flag) (void)a.buffer.release();  // MPI may still write into it: leak it on purpose
  }
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
  const TestFault fault = fault_.exchange(TestFault::kNone);
  MessageHeader& h = op->header;
  h = header;
  h.payload_bytes = bytes;
  h.src_rank = rank_;
  h.seq = fault == TestFault::kReplaySequence ? seq_[peer].load() - 1 : seq_[peer]++;
  const bool out_of_band = (header.flags & kFlagOutOfBand) != 0;
  h.flags = out_of_band ? kFlagOutOfBand : 0;
  if (auth_) h.flags |= kFlagAuthTag;
  if (!out_of_band && checksum_) {
    h.flags |= kFlagHasChecksum;
    h.crc32c = crc32c(data, bytes);
  } else {
    h.crc32c = 0;
  }
  if (fault == TestFault::kCorruptPayload && bytes > 0 && !out_of_band) {
    op->scratch.assign(op->data, op->data + bytes);  // corrupt a copy, never the caller's data
    op->scratch[bytes / 2] ^= 0x5A;
    op->data = op->scratch.data();
  }
  const bool inline_payload = out_of_band || bytes <= kInlineBytes;
  op->wire.resize(kHeaderWireBytes + (inline_payload && !out_of_band ? bytes : 0));
  encode_header(h, op->wire.data());
  if (auth_) seal_header(op->wire.data(), *auth_);
  if (fault == TestFault::kBadMagic) op->wire[0] ^= 0xFF;
  if (fault == TestFault::kTamperHeader) {
    op->wire[20] ^= 0x01;  // micro_batch's low byte (header.cpp layout)
    const uint32_t crc = crc32c(op->wire.data(), 140);
    for (int i = 0; i < 4; ++i) op->wire[140 + i] = static_cast<uint8_t>(crc >> (8 * i));
  }
  if (inline_payload) {
    if (!out_of_band && bytes) std::memcpy(op->wire.data() + kHeaderWireBytes, op->data, bytes);
    if (fault == TestFault::kTruncatePayload && bytes > 0 && !out_of_band) op->wire.pop_back();
    op->pieces = 1;
  } else {
    op->pieces = 1 + static_cast<int>((bytes + chunk_bytes_ - 1) / chunk_bytes_);
    if (fault == TestFault::kTruncatePayload) op->truncate_last = 1;
  }
  // When each piece may leave: at once, or when the emulated link delivers it.
  op->release.assign(op->pieces, 0.0);
  if (shaper_ && peer != rank_) {
    const int from = region_index_[rank_], to = region_index_[peer];
    for (int p = 0; p < op->pieces; ++p) {
      const size_t piece_bytes =
          p == 0 ? op->wire.size() : std::min(chunk_bytes_, bytes - (p - 1) * chunk_bytes_);
      op->release[p] = shaper_->schedule(from, to, piece_bytes, op->start);
    }
    double delay = shaper_delay_.load();
    while (!shaper_delay_.compare_exchange_weak(delay, delay + (op->release.back() - op->start))) {
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    sending_.push_back(op);
    post_due_locked(now_s());
    update_next_release_locked();
    if (idle_sleeping_) cv_.notify_one();
  }
  sent_msgs_++;
  sent_bytes_ += bytes;
  return Request(std::make_shared<MpiRequestState>(this, op));
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
  std::string refusal;
  if (auth_) {
    if (!(h.flags & kFlagAuthTag))
      refusal = "refused: the message from " + who(op.peer) +
                " carries no authentication tag, but this job uses a key "
                "(GEOPIPE_AUTH_KEY_FILE must be set on every rank)";
    else if (!header_tag_valid(op.wire.data(), *auth_))
      refusal = "refused: the authentication tag of the message from " + who(op.peer) +
                " is wrong (another key, or the header was altered on the way)";
    else if (!seen_[static_cast<size_t>(op.peer)].insert(h.seq))
      refusal = "refused: replayed message from " + who(op.peer) + " (sequence number " +
                std::to_string(h.seq) + " was already received)";
  } else if (h.flags & kFlagAuthTag) {
    refusal = "refused: the message from " + who(op.peer) +
              " carries an authentication tag, but this rank has no key "
              "(GEOPIPE_AUTH_KEY_FILE must be set on every rank, or on none)";
  }
  if (!refusal.empty()) {
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
  recv_msgs_++;
  if (h.flags & kFlagOutOfBand) {  // the payload travels over another transport
    if (!problem.empty()) fail_locked(op, prefix + problem);
    else op.state.store(kArrived, std::memory_order_release);
    return;
  }
  const size_t inline_bytes = op.wire.size() - kHeaderWireBytes;
  if (h.payload_bytes <= kInlineBytes) {
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
    return;
  }
  // Chunked: post every chunk receive now (the sender keeps several in flight).
  if (!problem.empty()) {
    op.pending_error = problem;
    op.scratch.resize(h.payload_bytes);  // drain, so the next message on this tag is intact
    op.dest = op.scratch.data();
  } else if (op.any_size) {
    op.payload.resize(h.payload_bytes);
    op.dest = op.payload.data();
  } else {
    op.dest = op.user;
  }
  post_chunk_receives_locked(op_ptr);
  recv_bytes_ += h.payload_bytes;
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

void Communicator::Engine::collective_wait(MPI_Request& req,
                                           std::unique_ptr<std::vector<double>>& buffer,
                                           Seconds timeout, const std::string& what) {
  const double begin = now_s();
  Backoff backoff(kWaiterSpinS, kWaiterSleepCapS);
  while (true) {
    int flag = 0;
    const int err = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
    if (err != MPI_SUCCESS) throw Error(who(rank_) + ": " + what + " failed: " + mpi_error_string(err));
    if (flag) return;
    const double now = now_s();
    if (now - begin >= timeout.count()) {
      abandoned_.push_back(Abandoned{req, std::move(buffer)});
      throw TimeoutError(who(rank_) + ": " + what + " timed out after " + fmt_seconds(now - begin) +
                         " waiting for all " + std::to_string(size_) +
                         " ranks (a rank is missing, dead or stuck)");
    }
    const double pause = std::min(backoff.next(now), begin + timeout.count() - now);
    if (pause > 0) std::this_thread::sleep_for(Seconds(pause));
  }
}

// ---- Communicator ---------------------------------------------------------------------------

void init_mpi(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
  else MPI_Query_thread(&provided);
  if (provided < MPI_THREAD_MULTIPLE)
    throw Error(std::string("MPI provides only ") + thread_level_name(provided) +
                "; geopipe needs MPI_THREAD_MULTIPLE (Open MPI >= 3 provides it)");
}

void finalize_mpi() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Finalize();
}

bool mpi_cuda_aware() {
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
  return MPIX_Query_cuda_support() == 1;
#else
  return false;
#endif
}

Communicator::Communicator(CommOptions options) : engine_(std::make_unique<Engine>(std::move(options))) {}
Communicator::~Communicator() = default;

int Communicator::rank() const { return engine_->rank_; }
int Communicator::size() const { return engine_->size_; }
const std::string& Communicator::region() const { return engine_->region_; }
const std::string& Communicator::region_of(int rank) const {
  if (rank < 0 || rank >= engine_->size_)
    throw Error("region_of: rank " + std::to_string(rank) + " is not in [0, " +
                std::to_string(engine_->size_) + ")");
  return engine_->regions_[rank];
}
const std::vector<std::string>& Communicator::regions() const { return engine_->regions_; }
bool Communicator::emulating() const { return engine_->shaper_ != nullptr; }
const LinkShaper* Communicator::shaper() const { return engine_->shaper_.get(); }
bool Communicator::checksum_enabled() const { return engine_->checksum_; }
bool Communicator::authenticating() const { return engine_->auth_ != nullptr; }
size_t Communicator::chunk_bytes() const { return engine_->chunk_bytes_; }

Request Communicator::isend(const void* data, size_t bytes, int peer, int tag,
                            const MessageHeader& header) {
  return engine_->isend(data, bytes, peer, tag, header);
}
Request Communicator::irecv(void* data, size_t capacity, int peer, int tag, const Expect& expect) {
  return engine_->irecv(data, capacity, false, peer, tag, expect);
}
Request Communicator::irecv_any_size(int peer, int tag, const Expect& expect) {
  return engine_->irecv(nullptr, 0, true, peer, tag, expect);
}

// The collective works on a heap copy: after a timeout MPI may still write into it.
void Communicator::Engine::allreduce(double* values, int count, MPI_Op op, Seconds timeout,
                                     const char* name) {
  auto buffer = std::make_unique<std::vector<double>>(values, values + count);
  MPI_Request req;
  const int err = MPI_Iallreduce(MPI_IN_PLACE, buffer->data(), count, MPI_DOUBLE, op, coll_comm_, &req);
  if (err != MPI_SUCCESS) throw Error(who(rank_) + ": " + name + " failed: " + mpi_error_string(err));
  collective_wait(req, buffer, timeout, std::string(name) + " of " + std::to_string(count) + " doubles");
  std::copy(buffer->begin(), buffer->end(), values);
}

void Communicator::allreduce_sum(double* values, int count, Seconds timeout) {
  engine_->allreduce(values, count, MPI_SUM, timeout, "allreduce_sum");
}
void Communicator::allreduce_max(double* values, int count, Seconds timeout) {
  engine_->allreduce(values, count, MPI_MAX, timeout, "allreduce_max");
}
void Communicator::barrier(Seconds timeout) {
  MPI_Request req;
  MPI_Ibarrier(engine_->coll_comm_, &req);
  std::unique_ptr<std::vector<double>> none;
  engine_->collective_wait(req, none, timeout, "barrier");
}

CommStats Communicator::stats() const {
  CommStats s;
  s.messages_sent = engine_->sent_msgs_;
  s.messages_received = engine_->recv_msgs_;
  s.bytes_sent = engine_->sent_bytes_;
  s.bytes_received = engine_->recv_bytes_;
  s.shaper_delay_s = engine_->shaper_delay_;
  return s;
}

CommQueues Communicator::queues() const {
  Engine& e = *engine_;
  CommQueues q;
  std::lock_guard<std::mutex> lock(e.mu_);
  q.mpi_requests = e.reqs_.size();
  q.sends_queued = e.sending_.size();
  q.receives_queued = e.recv_order_.size();
  q.live_messages = e.live_ops_.load();
  q.abandoned_collectives = e.abandoned_.size();
  for (MPI_Comm c : {e.hdr_comm_, e.data_comm_}) {
    int flag = 0;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, c, &flag, MPI_STATUS_IGNORE);
    q.unexpected_messages = q.unexpected_messages || flag != 0;
  }
  return q;
}

void Communicator::inject_fault_for_testing(TestFault fault) { engine_->fault_ = fault; }

}  // namespace geopipe::comm
