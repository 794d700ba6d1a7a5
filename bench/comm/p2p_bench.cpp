// geopipe-p2p-bench: point-to-point bandwidth and latency between two ranks, in the manner of
// OSU osu_bw / osu_latency and nccl-tests (flags -b -e -f -n -w -W -c, a size sweep, one line
// per size). Run with mpirun -np 2.
//
//   --mode raw-mpi   plain MPI_Isend/MPI_Irecv (the reference)
//   --mode geopipe   the comm transport (headers, checksums, chunking, progress thread); each
//                    size is also measured with raw MPI and the ratio printed as x_raw
//   --mode nccl      the NCCL backend on GPU buffers (needs a GPU per rank)
//   --pattern bw       W messages in flight, then a 4-byte ack (osu_bw); MB/s = 1e6 B/s
//   --pattern latency  ping-pong; time_us is half the round trip (osu_latency)
//   --pattern exchange 2-stage pipeline: rank 0 sends -m activations, rank 1 answers each with a
//                      gradient of the same size; compared with the link shaper's ideal time
//   --emulate-link 200mbit,20ms  ranks 0 and 1 in two emulated regions joined by that link
//   --codec int8-block  (bw, host modes) each message is `size` bytes of fp32 activations,
//                    encoded by the kernels CPU codec before the send and decoded after the
//                    receive, both inside the timed loop; MB/s counts the uncompressed bytes
#include <geopipe/comm/auth.h>
#include <geopipe/comm/communicator.h>
#include <geopipe/comm/crc32c.h>
#include <geopipe/comm/nccl_transport.h>
#include <geopipe/core/error.h>
#include <geopipe/kernels/codec.h>

#include <CLI/CLI.hpp>
#include <mpi.h>
#include <nlohmann/json.hpp>

#if GEOPIPE_HAVE_NCCL
#include <cuda_runtime.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

using namespace geopipe;
using namespace geopipe::comm;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

size_t parse_size(const std::string& text, const std::string& flag) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  std::string unit(end);
  double mult = 1;
  if (unit == "" || unit == "B") mult = 1;
  else if (unit == "K" || unit == "k" || unit == "KiB") mult = 1024;
  else if (unit == "M" || unit == "m" || unit == "MiB") mult = 1024.0 * 1024;
  else if (unit == "G" || unit == "g" || unit == "GiB") mult = 1024.0 * 1024 * 1024;
  else throw InputError("", flag, "'" + text + "': expected a size such as 1K, 4M or 1G");
  if (end == text.c_str() || v < 0) throw InputError("", flag, "'" + text + "': expected a size");
  return static_cast<size_t>(v * mult);
}

std::string size_str(size_t n) {
  char buf[32];
  if (n >= (1u << 30) && n % (1u << 30) == 0) std::snprintf(buf, sizeof buf, "%zuG", n >> 30);
  else if (n >= (1u << 20) && n % (1u << 20) == 0) std::snprintf(buf, sizeof buf, "%zuM", n >> 20);
  else if (n >= 1024 && n % 1024 == 0) std::snprintf(buf, sizeof buf, "%zuK", n >> 10);
  else std::snprintf(buf, sizeof buf, "%zu", n);
  return buf;
}

struct Args {
  std::string min_size = "1K", max_size = "64M";
  int factor = 2;
  int iters = 20, warmup = 3, window = 16;
  bool check = false;
  std::string mode = "geopipe";
  std::string pattern = "bw";
  bool bidir = false;
  std::string emulate_link;
  int micro_batches = 16;
  bool checksum = true;
  std::string chunk = "1M";
  std::string json_path;
  std::string codec = "none";
  std::string auth_key_file;
};

// One way of moving bytes between rank 0 and rank 1.
class Mover {
 public:
  virtual ~Mover() = default;
  virtual void post_send(const uint8_t* buf, size_t n, int peer, int tag) = 0;
  virtual void post_recv(uint8_t* buf, size_t n, int peer, int tag) = 0;
  virtual void wait_all() = 0;
  virtual void begin_batch() {}
  virtual void end_batch() {}
};

class RawMpi final : public Mover {
 public:
  RawMpi() { MPI_Comm_dup(MPI_COMM_WORLD, &comm_); }
  ~RawMpi() override { MPI_Comm_free(&comm_); }
  void post_send(const uint8_t* buf, size_t n, int peer, int tag) override {
    reqs_.emplace_back();
    MPI_Isend(buf, static_cast<int>(n), MPI_BYTE, peer, tag, comm_, &reqs_.back());
  }
  void post_recv(uint8_t* buf, size_t n, int peer, int tag) override {
    reqs_.emplace_back();
    MPI_Irecv(buf, static_cast<int>(n), MPI_BYTE, peer, tag, comm_, &reqs_.back());
  }
  void wait_all() override {
    MPI_Waitall(static_cast<int>(reqs_.size()), reqs_.data(), MPI_STATUSES_IGNORE);
    reqs_.clear();
  }

 private:
  MPI_Comm comm_;
  std::vector<MPI_Request> reqs_;
};

class GeopipeMover final : public Mover {
 public:
  explicit GeopipeMover(Transport& t) : t_(t) {}
  void post_send(const uint8_t* buf, size_t n, int peer, int tag) override {
    MessageHeader h;
    h.kind = MessageKind::kBytes;
    reqs_.push_back(t_.isend(buf, n, peer, tag, h));
  }
  void post_recv(uint8_t* buf, size_t n, int peer, int tag) override {
    reqs_.push_back(t_.irecv(buf, n, peer, tag, {}));
  }
  void wait_all() override {
    comm::wait_all(reqs_, Seconds(600));
    reqs_.clear();
  }
  void begin_batch() override { t_.begin_batch(); }
  void end_batch() override { t_.end_batch(); }

 private:
  Transport& t_;
  std::vector<Request> reqs_;
};

// Host or device buffers.
struct Buffers {
  bool device = false;
  uint8_t* send = nullptr;
  uint8_t* recv = nullptr;
  std::vector<uint8_t> host_send, host_recv;
  Buffers(size_t n, bool on_device) : device(on_device) {
    host_send.resize(n);
    host_recv.resize(n);
    for (size_t i = 0; i < n; ++i) host_send[i] = static_cast<uint8_t>(i * 131 + 17);
    if (!device) {
      send = host_send.data();
      recv = host_recv.data();
      return;
    }
#if GEOPIPE_HAVE_NCCL
    cudaMalloc(reinterpret_cast<void**>(&send), n);
    cudaMalloc(reinterpret_cast<void**>(&recv), n);
    cudaMemcpy(send, host_send.data(), n, cudaMemcpyHostToDevice);
#endif
  }
  ~Buffers() {
#if GEOPIPE_HAVE_NCCL
    if (device) {
      cudaFree(send);
      cudaFree(recv);
    }
#endif
  }
  // Bytes of the first `n` received bytes that differ from what the peer sent.
  size_t wrong(size_t n) {
#if GEOPIPE_HAVE_NCCL
    if (device) cudaMemcpy(host_recv.data(), recv, n, cudaMemcpyDeviceToHost);
#endif
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) bad += host_recv[i] != static_cast<uint8_t>(i * 131 + 17);
    std::memset(host_recv.data(), 0, n);
#if GEOPIPE_HAVE_NCCL
    if (device) cudaMemset(recv, 0, n);
#endif
    return bad;
  }
};

struct Result {
  double seconds = 0;  // whole timed phase
  size_t wrong = 0;
};

// osu_bw / osu_bibw: `window` messages in flight, then an ack; returns the timed phase.
Result run_bw(Mover& m, Buffers& b, size_t n, const Args& a, int rank) {
  Result r;
  const int peer = 1 - rank;
  uint8_t ack_out[4] = {1, 2, 3, 4}, ack_in[4];
  for (int it = 0; it < a.warmup + a.iters; ++it) {
    if (it == a.warmup) {
      MPI_Barrier(MPI_COMM_WORLD);
      r.seconds = now_s();
    }
    const bool sends = rank == 0 || a.bidir;
    const bool recvs = rank == 1 || a.bidir;
    m.begin_batch();
    for (int w = 0; w < a.window; ++w) {
      if (recvs) m.post_recv(b.recv, n, peer, 1);
      if (sends) m.post_send(b.send, n, peer, 1);
    }
    m.end_batch();
    m.wait_all();
    if (a.check && recvs) r.wrong += b.wrong(n);
    // Ack on the host path (osu_bw does the same): the sender learns that all arrived.
    if (rank == 1) m.post_send(b.device ? nullptr : ack_out, 0, peer, 2);
    else m.post_recv(ack_in, 0, peer, 2);
    m.wait_all();
  }
  r.seconds = now_s() - r.seconds;
  return r;
}

// osu_bw with compression: `n` bytes of fp32 values per message, shape [n/4/256, 256] (or
// [n/4]); the sender encodes every message, the receiver decodes every message.
Result run_bw_codec(Mover& m, size_t n, const Args& a, int rank) {
  namespace k = geopipe::kernels;
  Result r;
  const int peer = 1 - rank;
  k::CodecSpec spec;
  spec.codec = k::codec_from_name(a.codec);
  const int64_t numel = static_cast<int64_t>(n / 4);
  std::vector<int64_t> shape = numel % 256 == 0 ? std::vector<int64_t>{numel / 256, 256}
                                                 : std::vector<int64_t>{numel};
  const size_t packed = k::packed_size(spec, k::DType::kFloat32, shape);
  std::vector<float> values(numel), decoded(numel);
  for (int64_t i = 0; i < numel; ++i) values[i] = static_cast<float>((i * 37) % 1000) * 0.01f - 5.0f;
  std::vector<std::vector<uint8_t>> wire(a.window, std::vector<uint8_t>(packed));
  uint8_t ack[4] = {};
  auto check = [](k::Status st, const char* what) {
    if (st != k::Status::kOk)
      throw Error(std::string("--codec: ") + what + " failed: " + k::status_string(st));
  };
  for (int it = 0; it < a.warmup + a.iters; ++it) {
    if (it == a.warmup) {
      MPI_Barrier(MPI_COMM_WORLD);
      r.seconds = now_s();
    }
    if (rank == 0) {
      for (int w = 0; w < a.window; ++w) {
        check(k::encode_cpu(spec, k::DType::kFloat32, shape.data(), static_cast<int>(shape.size()),
                            values.data(), nullptr, wire[w].data(), packed),
              "encode");
        m.post_send(wire[w].data(), packed, peer, 1);
      }
      m.wait_all();
      m.post_recv(ack, 0, peer, 2);
      m.wait_all();
    } else {
      for (int w = 0; w < a.window; ++w) m.post_recv(wire[w].data(), packed, peer, 1);
      m.wait_all();
      for (int w = 0; w < a.window; ++w)
        check(k::decode_cpu(wire[w].data(), packed, decoded.data(), decoded.size() * 4), "decode");
      m.post_send(ack, 0, peer, 2);
      m.wait_all();
    }
  }
  r.seconds = now_s() - r.seconds;
  return r;
}

// osu_latency: ping-pong.
Result run_latency(Mover& m, Buffers& b, size_t n, const Args& a, int rank) {
  Result r;
  const int peer = 1 - rank;
  for (int it = 0; it < a.warmup + a.iters; ++it) {
    if (it == a.warmup) {
      MPI_Barrier(MPI_COMM_WORLD);
      r.seconds = now_s();
    }
    if (rank == 0) {
      m.post_send(b.send, n, peer, 1);
      m.wait_all();
      m.post_recv(b.recv, n, peer, 1);
      m.wait_all();
    } else {
      m.post_recv(b.recv, n, peer, 1);
      m.wait_all();
      m.post_send(b.send, n, peer, 1);
      m.wait_all();
    }
    if (a.check) r.wrong += b.wrong(n);
  }
  r.seconds = now_s() - r.seconds;
  return r;
}

// Two pipeline stages: rank 0 sends `mb` activations back to back; rank 1 returns a gradient
// for each as soon as it arrived. Timed once per iteration; returns the mean.
Result run_exchange(Transport& t, size_t n, const Args& a, int rank) {
  Result r;
  const int peer = 1 - rank;
  std::vector<std::vector<uint8_t>> out(a.micro_batches, std::vector<uint8_t>(n, 7));
  std::vector<std::vector<uint8_t>> in(a.micro_batches, std::vector<uint8_t>(n));
  double total = 0;
  for (int it = 0; it < a.warmup + a.iters; ++it) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = now_s();
    std::vector<Request> sends, recvs;
    MessageHeader h;
    for (int mb = 0; mb < a.micro_batches; ++mb) {
      h.micro_batch = mb;
      if (rank == 0) {
        h.kind = MessageKind::kActivation;
        sends.push_back(t.isend(out[mb].data(), n, peer, 1, h));
        recvs.push_back(t.irecv(in[mb].data(), n, peer, 2, {}));
      } else {
        recvs.push_back(t.irecv(in[mb].data(), n, peer, 1, {}));
      }
    }
    if (rank == 1) {
      h.kind = MessageKind::kGradient;
      for (int mb = 0; mb < a.micro_batches; ++mb) {
        recvs[mb].wait(Seconds(600));
        h.micro_batch = mb;
        sends.push_back(t.isend(out[mb].data(), n, peer, 2, h));
      }
    }
    wait_all(sends, Seconds(600));
    wait_all(recvs, Seconds(600));
    if (it >= a.warmup) total += now_s() - t0;
  }
  r.seconds = total / a.iters;
  return r;
}

// The shaper's ideal time of run_exchange on one link (both directions the same).
double exchange_ideal(const LinkRate& rate, size_t n, int micro_batches) {
  LinkShaper s = LinkShaper::uniform({"A", "B"}, rate);
  const size_t wire = n + kHeaderWireBytes;
  double last = 0;
  std::vector<double> arrive(micro_batches);
  for (int mb = 0; mb < micro_batches; ++mb) arrive[mb] = s.schedule(0, 1, wire, 0.0);
  for (int mb = 0; mb < micro_batches; ++mb) last = s.schedule(1, 0, wire, arrive[mb]);
  return last;
}

int run(int argc, char** argv) {
  CLI::App app{"geopipe-p2p-bench: point-to-point bandwidth/latency (run with mpirun -np 2)"};
  Args a;
  app.add_option("-b,--minbytes", a.min_size, "smallest message (1K, 4M, ...)");
  app.add_option("-e,--maxbytes", a.max_size, "largest message");
  app.add_option("-f,--stepfactor", a.factor, "size multiplier")->check(CLI::Range(2, 1024));
  app.add_option("-n,--iters", a.iters, "timed iterations per size")->check(CLI::Range(1, 1000000));
  app.add_option("-w,--warmup_iters", a.warmup, "untimed iterations")->check(CLI::Range(0, 1000000));
  app.add_option("-W,--window", a.window, "messages in flight (bw)")->check(CLI::Range(1, 4096));
  app.add_option("-c,--check", a.check, "check received data (0/1)");
  app.add_option("--mode", a.mode, "raw-mpi | geopipe | nccl")
      ->check(CLI::IsMember({"raw-mpi", "geopipe", "nccl"}));
  app.add_option("--pattern", a.pattern, "bw | latency | exchange")
      ->check(CLI::IsMember({"bw", "latency", "exchange"}));
  app.add_flag("--bidir", a.bidir, "both ranks send at once (osu_bibw)");
  app.add_option("--emulate-link", a.emulate_link, "RATE,LATENCY e.g. 200mbit,20ms");
  app.add_option("-m,--micro-batches", a.micro_batches, "exchange: micro-batches")->check(CLI::Range(1, 4096));
  app.add_option("--checksum", a.checksum, "geopipe: CRC32C of every payload (0/1)");
  app.add_option("--chunk", a.chunk, "geopipe: chunk size");
  app.add_option("--json", a.json_path, "also write the results as JSON");
  app.add_option("--codec", a.codec, "bw: compress fp32 messages with a kernels codec (CPU)");
  app.add_option("--auth-key-file", a.auth_key_file,
                 "geopipe: authenticate every header with this per-job key (>= 32 bytes)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) app.exit(e);
    return e.get_exit_code() == 0 ? kExitOk : kExitBadInput;
  }
  const size_t min_size = parse_size(a.min_size, "-b");
  const size_t max_size = parse_size(a.max_size, "-e");
  if (max_size < min_size) throw InputError("", "-e", "largest size is below the smallest (-b)");
  if (max_size > (size_t(1) << 30)) throw InputError("", "-e", "at most 1G");

  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != 2)
    throw InputError("", "mpirun -np", "needs exactly 2 ranks (mpirun -np 2 geopipe-p2p-bench), got " +
                                           std::to_string(size));

  CommOptions o;
  o.region = rank == 0 ? "A" : "B";
  o.checksum = a.checksum;
  o.chunk_bytes = parse_size(a.chunk, "--chunk");
  o.emulate = EmulateMode::kNone;
  o.auth_key = std::vector<uint8_t>{};  // no key unless --auth-key-file (the environment is ignored)
  if (!a.auth_key_file.empty()) {
    if (a.mode != "geopipe")
      throw InputError("", "--auth-key-file", "authentication is part of the geopipe transport: use --mode geopipe");
    o.auth_key = read_auth_key_file(a.auth_key_file);
  }
  std::optional<LinkRate> link;
  if (!a.emulate_link.empty()) {
    link = parse_link_rate(a.emulate_link, "--emulate-link");
    o.emulate = EmulateMode::kSoftware;
    o.emulate_link = link;
    if (a.mode != "geopipe")
      throw InputError("", "--emulate-link", "link emulation is part of the geopipe transport: use --mode geopipe");
  }
  if (a.codec != "none") {
    geopipe::kernels::Codec parsed;
    if (!geopipe::kernels::parse_codec(a.codec, &parsed))
      throw InputError("", "--codec", "'" + a.codec + "': unknown codec");
    if (a.pattern != "bw" || a.mode == "nccl" || a.bidir)
      throw InputError("", "--codec", "compression is measured with --pattern bw on host modes, one way");
    if (min_size < 1024) throw InputError("", "-b", "--codec needs messages of at least 1K");
  }
  if (a.pattern == "exchange" && a.mode != "geopipe")
    throw InputError("", "--pattern", "exchange runs on the geopipe transport (--mode geopipe)");
  Communicator comm(o);
  std::unique_ptr<NcclTransport> nccl;
  if (a.mode == "nccl") {
    if (!NcclTransport::available())
      throw Error("--mode nccl needs a GPU on every rank and a build with NCCL");
    nccl = std::make_unique<NcclTransport>(comm, 0);
  }
  // What a checksum costs: CRC32C throughput on this core (best of 5 passes over 64 MiB).
  double crc_gbs = 0;
  {
    std::vector<uint8_t> block(64u << 20, 0x5A);
    double best = 1e9;
    uint32_t sink = 0;
    for (int i = 0; i < 5; ++i) {
      const double t0 = now_s();
      sink ^= crc32c(block.data(), block.size());
      best = std::min(best, now_s() - t0);
    }
    crc_gbs = block.size() / best / 1e9 + (sink == 1 ? 1e-12 : 0.0);
  }
  // What authentication costs per message and side: sealing (or checking) one header.
  double seal_us = 0;
  if (comm.authenticating()) {
    const AuthKey key(*o.auth_key);
    uint8_t wire[kHeaderWireBytes] = {0};
    double best = 1e9;
    for (int pass = 0; pass < 5; ++pass) {
      const double t0 = now_s();
      for (int i = 0; i < 10000; ++i) {
        wire[8] = static_cast<uint8_t>(i);
        seal_header(wire, key);
      }
      best = std::min(best, (now_s() - t0) / 10000);
    }
    seal_us = best * 1e6;
  }
  const bool measure_raw = a.mode == "geopipe" && !link && a.pattern != "exchange";
  nlohmann::json results = nlohmann::json::array();
  if (rank == 0) {
    std::printf("# geopipe-p2p-bench mode=%s pattern=%s%s window=%d iters=%d warmup=%d checksum=%s "
                "chunk=%s crc32c=%s(%.1f GB/s)%s%s%s%s\n",
                a.mode.c_str(), a.pattern.c_str(), a.bidir ? " bidir" : "", a.window, a.iters,
                a.warmup, a.checksum ? "on" : "off", size_str(comm.chunk_bytes()).c_str(),
                crc32c_implementation(), crc_gbs,
                link ? (" link=" + a.emulate_link).c_str() : "",
                a.pattern == "exchange" ? (" micro_batches=" + std::to_string(a.micro_batches)).c_str() : "",
                a.codec != "none" ? (" codec=" + a.codec).c_str() : "",
                comm.authenticating()
                    ? (" auth=hmac-sha256(" + std::to_string(seal_us).substr(0, 4) + " us/header," +
                       (sha256_hardware() ? "sha-ni)" : "portable)")).c_str()
                    : "");
    if (a.pattern == "exchange")
      std::printf("%12s %12s %12s %10s %8s\n", "size", "time_us", "ideal_us", "MB/s", "x_ideal");
    else
      std::printf("%12s %12s %12s %10s %8s%s%s\n", "size", "time_us", "MB/s", "GB/s",
                  link ? "x_link" : "x_raw", measure_raw ? "  raw_us" : "", a.check ? "  #wrong" : "");
  }
  double sum_ratio = 0;
  int sizes = 0;
  for (size_t n = min_size; n <= max_size; n *= a.factor) {
    nlohmann::json row;
    row["size"] = n;
    if (a.pattern == "exchange") {
      Result r = run_exchange(comm, n, a, rank);
      const double ideal = exchange_ideal(*link, n, a.micro_batches);
      const double bytes = 2.0 * a.micro_batches * n;
      row["time_us"] = r.seconds * 1e6;
      row["ideal_us"] = ideal * 1e6;
      row["mb_s"] = bytes / r.seconds / 1e6;
      row["x_ideal"] = r.seconds / ideal;
      sum_ratio += r.seconds / ideal;
      if (rank == 0)
        std::printf("%12s %12.1f %12.1f %10.2f %8.3f\n", size_str(n).c_str(), r.seconds * 1e6,
                    ideal * 1e6, bytes / r.seconds / 1e6, r.seconds / ideal);
    } else {
      Buffers bufs(std::max<size_t>(n, 1), a.mode == "nccl");
      auto measure = [&](Mover& m) {
        if (a.codec != "none") return run_bw_codec(m, n, a, rank);
        return a.pattern == "bw" ? run_bw(m, bufs, n, a, rank) : run_latency(m, bufs, n, a, rank);
      };
      Result raw;
      if (a.mode == "raw-mpi" || measure_raw) {
        RawMpi m;
        raw = measure(m);
      }
      Result mine = raw;
      if (a.mode != "raw-mpi") {
        GeopipeMover m(nccl ? static_cast<Transport&>(*nccl) : comm);
        mine = measure(m);
      }
      // Per message: bw counts window messages per iteration (both ways with --bidir).
      const double msgs = a.pattern == "bw" ? double(a.iters) * a.window * (a.bidir ? 2 : 1) : a.iters;
      const double per_msg = a.pattern == "bw" ? mine.seconds / msgs : mine.seconds / a.iters / 2;
      const double bw = a.pattern == "bw" ? n * msgs / mine.seconds : n / per_msg;
      const double raw_per_msg = a.pattern == "bw" ? raw.seconds / msgs : raw.seconds / a.iters / 2;
      double ratio = 0;
      if (link) ratio = bw / link->bytes_per_s;
      else if (a.pattern == "bw") ratio = raw.seconds / mine.seconds;  // bandwidth ratio
      else ratio = per_msg / raw_per_msg;                               // latency ratio
      size_t wrong = mine.wrong;
      MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_UNSIGNED_LONG, MPI_SUM, MPI_COMM_WORLD);
      row["time_us"] = per_msg * 1e6;
      row["mb_s"] = bw / 1e6;
      row["gb_s"] = bw / 1e9;
      row[link ? "x_link" : "x_raw"] = ratio;
      if (measure_raw) row["raw_time_us"] = raw_per_msg * 1e6;
      if (a.check) row["wrong"] = wrong;
      sum_ratio += ratio;
      if (rank == 0) {
        std::printf("%12s %12.2f %12.2f %10.4f %8.3f", size_str(n).c_str(), per_msg * 1e6, bw / 1e6,
                    bw / 1e9, ratio);
        if (measure_raw) std::printf(" %8.2f", raw_per_msg * 1e6);
        if (a.check) std::printf(" %7zu", wrong);
        std::printf("\n");
      }
    }
    results.push_back(row);
    ++sizes;
    if (n == 0) break;
  }
  if (rank == 0) {
    std::printf("# average %s: %.3f over %d sizes\n",
                a.pattern == "exchange" ? "x_ideal" : (link ? "x_link" : "x_raw"), sum_ratio / sizes,
                sizes);
    if (!a.json_path.empty()) {
      nlohmann::json doc;
      doc["bench"] = "geopipe-p2p-bench";
      doc["mode"] = a.mode;
      doc["pattern"] = a.pattern;
      doc["bidir"] = a.bidir;
      doc["window"] = a.window;
      doc["iters"] = a.iters;
      doc["warmup"] = a.warmup;
      doc["checksum"] = a.checksum;
      doc["chunk_bytes"] = comm.chunk_bytes();
      doc["emulate_link"] = a.emulate_link;
      doc["micro_batches"] = a.micro_batches;
      doc["crc32c_gb_s"] = crc_gbs;
      doc["codec"] = a.codec;
      doc["auth"] = comm.authenticating();
      doc["auth_seal_us"] = seal_us;
      doc["results"] = results;
      std::ofstream f(a.json_path);
      if (!f) throw InputError(a.json_path, "", "cannot write the JSON output");
      f << doc.dump(2) << "\n";
    }
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  int code = kExitOk;
  try {
    init_mpi(&argc, &argv);
    code = run(argc, argv);
  } catch (const Error& e) {
    std::fprintf(stderr, "geopipe-p2p-bench: %s\n", e.what());
    code = e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "geopipe-p2p-bench: %s\n", e.what());
    code = kExitFailure;
  }
  if (code != kExitOk) MPI_Abort(MPI_COMM_WORLD, code);
  finalize_mpi();
  return code;
}
