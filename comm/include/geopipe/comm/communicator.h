// The MPI backend and the job's communicator: every rank creates one after MPI_Init_thread,
// collectively (all ranks of MPI_COMM_WORLD at once). It knows this rank, the world size and
// every rank's region (all-gathered at construction), moves messages between any two ranks
// (chunked, several chunks in flight, through the software WAN shaper when emulating), and
// offers the two collectives the runtime needs: a small all-reduce of doubles and a barrier,
// both with a timeout. Groups of ranks (a stage's replicas) get their own collectives: group.h.
//
// Threading: MPI must be initialised with MPI_THREAD_MULTIPLE (init_mpi() does it): a progress
// thread drives transfers in the background while the caller computes, and the caller's own
// thread posts sends/receives directly and drives progress itself while it is inside wait()
// (so small-message latency is that of MPI, not of a thread hand-off). All methods may be
// called from any thread; collectives from one thread at a time, in the same order on all ranks.
//
// Wire protocol (per message, on a private duplicate of MPI_COMM_WORLD):
// - payload <= kInlineBytes: one MPI message [144-byte header | payload];
// - otherwise a 144-byte header message, then the payload split into chunk_bytes pieces sent
//   on a second private communicator with the same tag; the receiver posts the pieces' receives
//   as soon as the header arrives, so up to max_chunks_in_flight pieces are in flight.
// The receiver learns the size from the header: irecv() into a buffer of known capacity, or
// irecv_any_size() when only the header knows it (compressed tensors).
//
// Emulated regions: this rank's region is CommOptions::region, else env GEOPIPE_REGION, else
// "local". The shaper (shaper.h) is active when CommOptions::emulate or env GEOPIPE_EMULATE says
// software (bandwidth + latency) or netns (latency only); its links come from
// CommOptions::topology, else the file named by env GEOPIPE_TOPOLOGY, else
// CommOptions::emulate_link (one link between any two different regions). A send is delayed so
// that it is delivered at shaper.schedule(...) time; a rank sending to itself is not shaped.
// Scripted link events (CommOptions::link_events, else env GEOPIPE_LINK_EVENTS; shaper.h) slow
// or stall a link for a while, timed from this Communicator's construction or in training steps
// (begin_step); they need the shaper (emulation on).
//
// Authentication (optional, auth.h): with a per-job key every header carries a truncated
// HMAC-SHA256 tag over its fields (the payload's CRC32C and the per-peer sequence number
// included). A receiver with a key refuses a message without a valid tag, or with a sequence
// number already received from that sender (a replay); one without a key refuses a message
// with a tag. The error names both ranks. A refused message's chunks are not drained (its
// header cannot be trusted): that (peer, tag) stream is unusable afterwards.
//
// After a TimeoutError the peers may be out of step; the job should stop (runtime's decision).
#pragma once

#include <geopipe/comm/shaper.h>
#include <geopipe/comm/transport.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace geopipe {
struct Topology;
}

namespace geopipe::comm {

// Calls MPI_Init_thread(MPI_THREAD_MULTIPLE) unless MPI is already initialised; throws
// geopipe::Error when the library cannot give MPI_THREAD_MULTIPLE.
void init_mpi(int* argc, char*** argv);
// MPI_Finalize if initialised and not yet finalised.
void finalize_mpi();

// Is this Open MPI built CUDA-aware (MPIX_Query_cuda_support)? When not, GPU buffers are staged
// through pinned host memory (staging.h: isend_device / irecv_device, used by the tensor adapter).
bool mpi_cuda_aware();

// Payloads up to this size travel inside the header message (one MPI message in all).
inline constexpr size_t kInlineBytes = 8192;

// Fault injection for tests: applies to the next isend of this communicator only.
enum class TestFault {
  kNone,
  kCorruptPayload,   // flips one payload byte after the checksum was computed
  kTruncatePayload,  // sends one byte less than the header announces
  kBadMagic,         // sends a header with a wrong magic number
  kTamperHeader,     // changes the micro-batch after the header was sealed, fixing the header
                     // CRC as a man in the middle would (only the authentication tag notices)
  kReplaySequence,   // reuses the previous message's sequence number (a replayed header)
};

struct CommOptions {
  std::string region;                     // empty: env GEOPIPE_REGION, else "local"
  std::shared_ptr<const Topology> topology;  // empty: env GEOPIPE_TOPOLOGY (when emulating)
  std::optional<EmulateMode> emulate;     // empty: env GEOPIPE_EMULATE (default none)
  std::optional<LinkRate> emulate_link;   // one link for every region pair (benchmarks)
  // "FROM>TO@START+DURATION=RATE;..." (shaper.h); empty optional: env GEOPIPE_LINK_EVENTS.
  std::optional<std::string> link_events;
  size_t chunk_bytes = 0;                 // 0: env GEOPIPE_CHUNK_BYTES, else 1 MiB
  int max_chunks_in_flight = 16;          // per message
  std::optional<bool> checksum;           // empty: env GEOPIPE_CHECKSUM (0 disables), else on
  bool progress_thread = true;            // false: progress only inside test()/wait()
  double default_timeout_s = 0;           // 0: env GEOPIPE_COMM_TIMEOUT_S, else 300
  // Per-job shared key that authenticates every message header (auth.h), >= 32 bytes; needs
  // checksums on. Empty optional: the file named by env GEOPIPE_AUTH_KEY_FILE, if set; an
  // empty vector: no key. Every rank of the job must use the same key, or none.
  std::optional<std::vector<uint8_t>> auth_key;
};

struct CommStats {
  uint64_t messages_sent = 0, messages_received = 0;
  uint64_t bytes_sent = 0, bytes_received = 0;  // payload bytes
  double shaper_delay_s = 0;                    // total time sends were held by the shaper
};

// What the engine holds right now (leak checks in tests, diagnostics). After every request was
// completed and dropped, all of it is zero/false.
struct CommQueues {
  size_t mpi_requests = 0;      // MPI requests in flight (header, inline and chunk pieces)
  size_t sends_queued = 0;      // sends with pieces not yet handed to MPI (shaper, window)
  size_t receives_queued = 0;   // receives whose header has not been processed yet
  int64_t live_messages = 0;    // send/receive records alive (held by the engine or a Request)
  size_t abandoned_collectives = 0;  // collectives given up after a timeout
  bool unexpected_messages = false;  // MPI holds a message of this transport nobody asked for
};

class Communicator final : public Transport {
 public:
  // Collective over MPI_COMM_WORLD. Throws InputError for a bad option/environment (unknown
  // GEOPIPE_EMULATE value, unreadable topology, a region missing from the topology).
  explicit Communicator(CommOptions options = {});
  ~Communicator() override;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  Backend backend() const override { return Backend::kMpi; }
  int rank() const override;
  int size() const override;
  const std::string& region() const;               // this rank's region
  const std::string& region_of(int rank) const;    // any rank's region
  const std::vector<std::string>& regions() const; // region of every rank, by rank
  bool emulating() const;                           // is the shaper active?
  // Training step `step` (0-based index) begins on this rank: link events timed in steps
  // (shaper.h) open and close here. A no-op without emulation.
  void begin_step(int64_t step);
  const LinkShaper* shaper() const;                 // nullptr when not emulating
  // Cuts every emulated link into and out of `region` from now on (LinkShaper::cut_region):
  // messages across them are never delivered, so the ranks on both sides time out. Throws
  // geopipe::Error without emulation or for a region the shaper does not know.
  void cut_region(const std::string& region);
  bool checksum_enabled() const;
  bool authenticating() const;                      // does every header carry a tag?
  size_t chunk_bytes() const;

  Request isend(const void* data, size_t bytes, int peer, int tag,
                const MessageHeader& header) override;
  Request irecv(void* data, size_t capacity, int peer, int tag, const Expect& expect) override;
  // Receives a message of any size: the transport allocates; read Request::payload().
  Request irecv_any_size(int peer, int tag, const Expect& expect = {});

  // Sum of `values` over all ranks, in place. Throws TimeoutError naming this rank.
  void allreduce_sum(double* values, int count, Seconds timeout);
  void allreduce_max(double* values, int count, Seconds timeout);
  void barrier(Seconds timeout);

  CommStats stats() const;
  CommQueues queues() const;
  // Requests must not outlive the communicator that made them.
  void inject_fault_for_testing(TestFault fault);

  class Engine;  // the MPI engine (comm/src/mpi_engine.h; settings: comm/src/comm_options.h)

 private:
  friend class MpiGroup;  // group.h: its collectives run on this engine's progress thread
  std::unique_ptr<Engine> engine_;
};

}  // namespace geopipe::comm
