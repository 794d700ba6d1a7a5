// geopipe-codec-bench: quantize/dequantize throughput of the codecs.
//
//   geopipe-codec-bench --device cuda                      # CUDA events, L2 flushed, median of -n runs
//   geopipe-codec-bench --device cpu -n 5 --json out.json  # CPU twins on one core against memcpy
//   geopipe-codec-bench --device cpu --cpu-path both       # AVX2 loops and portable loops, same run
//
// GB/s counts bytes read + written (input + wire buffer for quantize, wire buffer + output for
// dequantize), 1 GB = 1e9 B. The reference columns: on CUDA the device's HBM peak and a measured
// device-to-device copy (same byte counting); on CPU a one-core memcpy of the input. The "eager"
// column is the same int8-block codec written as LibTorch eager ops (abs/amax/div/round/clamp/to),
// on the same device and threads. #wrong: on CUDA, bytes of the wire buffer that differ from the
// CPU twin's; relL2: relative L2 error of the round trip.
#include <geopipe/kernels/codec.h>
#include <geopipe/kernels/device.h>
#include <geopipe/kernels/torch_codec.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#ifdef GEOPIPE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

using namespace geopipe::kernels;

namespace {

struct Options {
  std::string device = "cpu";
  std::vector<std::string> codecs{"int8-block", "fp8-e4m3-block", "fp8-e5m2-block", "int4-block"};
  std::vector<std::string> shapes{"1x1024x1600", "1x2048x4096", "4x4096x8192", "32768x4096"};
  std::string dtype = "bf16";
  int iters = 0;   // 0: 100 on CUDA, 5 on CPU
  int warmup = 2;
  bool eager = true;
  std::string cpu_path = "auto";  // auto, portable, avx2 or both (each codec timed with both loops)
  std::string json;
};

struct Row {
  std::string shape, codec, op, dtype, path;
  int64_t numel = 0;
  size_t bytes_moved = 0;
  double time_us = 0, gbps = 0, ref_pct = 0, copy_pct = 0, eager_us = -1;
  double rel_l2 = 0;
  int64_t wrong = -1;
};

std::vector<int64_t> parse_shape(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, 'x')) out.push_back(std::stoll(part));
  if (out.empty()) throw std::invalid_argument("bad shape \"" + s + "\" (expected e.g. 4x4096x8192)");
  return out;
}

at::ScalarType parse_dtype(const std::string& s) {
  if (s == "bf16" || s == "bfloat16") return at::kBFloat16;
  if (s == "fp16" || s == "float16") return at::kHalf;
  if (s == "fp32" || s == "float32") return at::kFloat;
  throw std::invalid_argument("bad --dtype \"" + s + "\" (bf16, fp16 or fp32)");
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

double rel_l2(const at::Tensor& x, const at::Tensor& y) {
  const at::Tensor xf = x.to(at::kFloat), yf = y.to(at::kFloat);
  return (xf - yf).norm().item<double>() / std::max(1e-30, xf.norm().item<double>());
}

// The int8-block codec as LibTorch eager ops (the baseline). Rows must be a multiple of 128.
struct EagerInt8 {
  at::Tensor q, scale;
  void quantize(const at::Tensor& x) {
    const at::Tensor xf = x.to(at::kFloat).view({-1, 128});
    scale = xf.abs().amax(-1, true).div(127.0);
    q = xf.div(scale).round().clamp(-127, 127).to(at::kChar);
  }
  at::Tensor dequantize(at::ScalarType t) const { return q.to(at::kFloat).mul(scale).to(t); }
};

// ---- CPU -------------------------------------------------------------------------------------
// Wall clock by default; --clock thread uses this thread's CPU time (steadier on a shared machine).
bool g_thread_clock = false;

double now_us() {
  if (g_thread_clock) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
  }
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double time_cpu_us(const std::function<void()>& f, int iters, int warmup) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    const double a = now_us();
    f();
    t.push_back(now_us() - a);
  }
  return median(t);
}

void run_cpu(const Options& o, std::vector<Row>& rows) {
  at::set_num_threads(1);  // one core for everyone: the twin, memcpy and the eager baseline
  const at::ScalarType st = parse_dtype(o.dtype);
  const DType dt = to_codec_dtype(st);
  const int iters = o.iters > 0 ? o.iters : 5;
  for (const auto& shape_s : o.shapes) {
    const std::vector<int64_t> shape = parse_shape(shape_s);
    const at::Tensor x = at::randn(shape, at::TensorOptions().dtype(at::kFloat)).to(st);
    const size_t in_bytes = static_cast<size_t>(x.nbytes());
    std::vector<uint8_t> copy(in_bytes);
    const double memcpy_us = time_cpu_us([&] { std::memcpy(copy.data(), x.data_ptr(), in_bytes); }, iters, o.warmup);
    const double memcpy_gbps = 2.0 * in_bytes / memcpy_us / 1e3;
    double eager_q = -1, eager_d = -1;
    if (o.eager && shape.back() % 128 == 0) {
      EagerInt8 e;
      eager_q = time_cpu_us([&] { e.quantize(x); }, std::max(1, iters / 2), 1);
      eager_d = time_cpu_us([&] { (void)e.dequantize(st); }, std::max(1, iters / 2), 1);
    }
    std::vector<CpuPath> paths{CpuPath::kPortable, CpuPath::kAvx2};
    if (o.cpu_path != "both")
      paths = {o.cpu_path == "portable" ? CpuPath::kPortable : o.cpu_path == "avx2" ? CpuPath::kAvx2 : CpuPath::kAuto};
    for (const auto& name : o.codecs) {
      for (const CpuPath path : paths) {
        if (!set_cpu_path(path)) throw std::invalid_argument("--cpu-path avx2: this CPU or build has no AVX2 loops");
        const CodecSpec spec{codec_from_name(name)};
        const size_t bytes = packed_size(spec, dt, shape);
        std::vector<uint8_t> buf(bytes);
        at::Tensor out = at::empty(shape, x.options());
        const double q_us = time_cpu_us(
            [&] {
              if (encode_cpu(spec, dt, shape.data(), static_cast<int>(shape.size()), x.data_ptr(), nullptr, buf.data(), bytes) != Status::kOk)
                throw std::runtime_error("encode_cpu failed");
            },
            iters, o.warmup);
        const double d_us = time_cpu_us(
            [&] {
              if (decode_cpu(buf.data(), bytes, out.data_ptr(), static_cast<size_t>(out.nbytes())) != Status::kOk)
                throw std::runtime_error("decode_cpu failed");
            },
            iters, o.warmup);
        const double err = rel_l2(x, out);
        for (int op = 0; op < 2; ++op) {
          Row r;
          r.shape = shape_s;
          r.codec = name;
          r.op = op == 0 ? "quantize" : "dequantize";
          r.dtype = o.dtype;
          r.path = cpu_path_name(cpu_path());
          r.numel = x.numel();
          r.bytes_moved = in_bytes + bytes;
          r.time_us = op == 0 ? q_us : d_us;
          r.gbps = r.bytes_moved / r.time_us / 1e3;
          r.ref_pct = 100.0 * r.gbps / memcpy_gbps;
          r.copy_pct = r.ref_pct;
          if (name == "int8-block") r.eager_us = op == 0 ? eager_q : eager_d;
          r.rel_l2 = err;
          rows.push_back(r);
        }
      }
    }
    set_cpu_path(CpuPath::kAuto);
    std::printf("# %s: one-core memcpy of %zu B: %.1f us, %.2f GB/s (read + written)\n", shape_s.c_str(), in_bytes, memcpy_us,
                memcpy_gbps);
  }
}

// ---- CUDA ------------------------------------------------------------------------------------
#ifdef GEOPIPE_HAVE_CUDA
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
void check(Status s, const char* what) {
  if (s != Status::kOk) throw std::runtime_error(std::string(what) + ": " + status_string(s) + " " + last_cuda_error());
}

struct GpuTimer {
  cudaEvent_t a, b;
  void* flush = nullptr;
  size_t flush_bytes = 0;
  GpuTimer() {
    check(cudaEventCreate(&a), "cudaEventCreate");
    check(cudaEventCreate(&b), "cudaEventCreate");
    int l2 = 0;
    cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0);
    flush_bytes = static_cast<size_t>(std::max(l2, 1 << 20)) * 2;
    check(cudaMalloc(&flush, flush_bytes), "cudaMalloc(L2 flush)");
  }
  ~GpuTimer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaFree(flush);
  }
  // median over `iters` runs, each preceded by an L2 flush (a memset twice the L2 size)
  double time_us(const std::function<void()>& f, int iters, int warmup) {
    for (int i = 0; i < warmup; ++i) f();
    std::vector<double> t;
    for (int i = 0; i < iters; ++i) {
      check(cudaMemsetAsync(flush, i & 0xff, flush_bytes, nullptr), "L2 flush");
      check(cudaEventRecord(a, nullptr), "cudaEventRecord");
      f();
      check(cudaEventRecord(b, nullptr), "cudaEventRecord");
      check(cudaEventSynchronize(b), "cudaEventSynchronize");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
      t.push_back(ms * 1e3);
    }
    return median(t);
  }
};

double hbm_peak_gbps() {
  int clock_khz = 0, bus_bits = 0;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, 0);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0);
  return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;  // double data rate
}

void run_cuda(const Options& o, std::vector<Row>& rows) {
  if (cuda_device_count() == 0) throw std::runtime_error("--device cuda: " + cuda_describe());
  const at::ScalarType st = parse_dtype(o.dtype);
  const DType dt = to_codec_dtype(st);
  const int iters = o.iters > 0 ? o.iters : 100;
  const double peak = hbm_peak_gbps();
  std::printf("# %s; HBM peak %.0f GB/s (memory clock x bus width)\n", cuda_describe().c_str(), peak);
  GpuTimer timer;
  for (const auto& shape_s : o.shapes) {
    const std::vector<int64_t> shape = parse_shape(shape_s);
    const at::Tensor x = at::randn(shape, at::TensorOptions().dtype(at::kFloat)).to(st);  // host
    const size_t in_bytes = static_cast<size_t>(x.nbytes());
    void *src = nullptr, *copy = nullptr, *out = nullptr;
    check(cudaMalloc(&src, in_bytes), "cudaMalloc");
    check(cudaMalloc(&copy, in_bytes), "cudaMalloc");
    check(cudaMalloc(&out, in_bytes), "cudaMalloc");
    check(cudaMemcpy(src, x.data_ptr(), in_bytes, cudaMemcpyHostToDevice), "upload");
    const double copy_us = timer.time_us([&] { check(cudaMemcpyAsync(copy, src, in_bytes, cudaMemcpyDeviceToDevice, nullptr), "d2d"); },
                                         iters, o.warmup);
    const double copy_gbps = 2.0 * in_bytes / copy_us / 1e3;
    std::printf("# %s: device-to-device copy of %zu B: %.1f us, %.0f GB/s (read + written)\n", shape_s.c_str(), in_bytes, copy_us,
                copy_gbps);
    double eager_q = -1, eager_d = -1;
#ifdef GEOPIPE_TORCH_HAS_CUDA
    if (o.eager && shape.back() % 128 == 0 && at::hasCUDA()) {
      const at::Tensor xd = at::from_blob(src, shape, at::TensorOptions().dtype(st).device(at::kCUDA, 0));
      EagerInt8 e;
      eager_q = timer.time_us([&] { e.quantize(xd); }, std::max(10, iters / 10), 2);
      eager_d = timer.time_us([&] { (void)e.dequantize(st); }, std::max(10, iters / 10), 2);
    }
#endif
    for (const auto& name : o.codecs) {
      const CodecSpec spec{codec_from_name(name)};
      const size_t bytes = packed_size(spec, dt, shape);
      void* buf = nullptr;
      check(cudaMalloc(&buf, bytes), "cudaMalloc");
      const int nd = static_cast<int>(shape.size());
      const double q_us = timer.time_us(
          [&] { check(encode_cuda(spec, dt, shape.data(), nd, src, nullptr, buf, bytes, nullptr), "encode_cuda"); }, iters, o.warmup);
      // the wire buffer is checked against the CPU twin, byte for byte
      std::vector<uint8_t> gpu(bytes), cpu(bytes);
      check(cudaMemcpy(gpu.data(), buf, bytes, cudaMemcpyDeviceToHost), "download");
      check(encode_cpu(spec, dt, shape.data(), nd, x.data_ptr(), nullptr, cpu.data(), bytes), "encode_cpu");
      int64_t wrong = 0;
      for (size_t i = 0; i < bytes; ++i) wrong += gpu[i] != cpu[i];
      WireHeader h;
      check(read_header(gpu.data(), bytes, &h), "read_header");
      const double d_us = timer.time_us([&] { check(decode_cuda(h, buf, out, in_bytes, nullptr), "decode_cuda"); }, iters, o.warmup);
      at::Tensor y = at::empty(shape, x.options());
      check(cudaMemcpy(y.data_ptr(), out, in_bytes, cudaMemcpyDeviceToHost), "download");
      const double err = rel_l2(x, y);
      for (int op = 0; op < 2; ++op) {
        Row r;
        r.shape = shape_s;
        r.codec = name;
        r.op = op == 0 ? "quantize" : "dequantize";
        r.dtype = o.dtype;
        r.numel = x.numel();
        r.bytes_moved = in_bytes + bytes;
        r.time_us = op == 0 ? q_us : d_us;
        r.gbps = r.bytes_moved / r.time_us / 1e3;
        r.ref_pct = 100.0 * r.gbps / peak;
        r.copy_pct = 100.0 * r.gbps / copy_gbps;
        if (name == "int8-block") r.eager_us = op == 0 ? eager_q : eager_d;
        r.rel_l2 = err;
        r.wrong = wrong;
        rows.push_back(r);
      }
      cudaFree(buf);
    }
    cudaFree(src);
    cudaFree(copy);
    cudaFree(out);
  }
}
#endif

void print_table(const Options& o, const std::vector<Row>& rows) {
  const bool gpu = o.device == "cuda";
  std::printf("#\n# %14s %11s %5s %15s %8s %10s %11s %9s %8s %8s %11s %8s %8s %7s\n", "shape", "numel", "type", "codec", "path", "op",
              "time(us)", "GB/s", gpu ? "%peak" : "%memcpy", gpu ? "%d2d" : "", "eager(us)", "speedup", "relL2", "#wrong");
  for (const Row& r : rows) {
    char eager[32] = "-", speedup[32] = "-", wrong[32] = "-", copy[32] = "";
    if (r.eager_us > 0) {
      std::snprintf(eager, sizeof eager, "%.1f", r.eager_us);
      std::snprintf(speedup, sizeof speedup, "%.1fx", r.eager_us / r.time_us);
    }
    if (r.wrong >= 0) std::snprintf(wrong, sizeof wrong, "%lld", static_cast<long long>(r.wrong));
    if (gpu) std::snprintf(copy, sizeof copy, "%.1f", r.copy_pct);
    std::printf("  %14s %11lld %5s %15s %8s %10s %11.1f %9.2f %8.1f %8s %11s %8s %8.5f %7s\n", r.shape.c_str(),
                static_cast<long long>(r.numel), r.dtype.c_str(), r.codec.c_str(),
                r.path.empty() ? "cuda" : r.path.c_str(), r.op.c_str(), r.time_us, r.gbps, r.ref_pct,
                copy, eager, speedup, r.rel_l2, wrong);
  }
  double sum = 0;
  for (const Row& r : rows) sum += r.gbps;
  std::printf("# Avg GB/s: %.2f over %zu rows\n", rows.empty() ? 0.0 : sum / rows.size(), rows.size());
}

void write_json(const Options& o, const std::vector<Row>& rows) {
  nlohmann::json j;
  j["benchmark"] = "geopipe-codec-bench";
  j["device"] = o.device == "cuda" ? cuda_describe() : "cpu (1 thread)";
  j["clock"] = o.device == "cuda" ? "cuda events" : (g_thread_clock ? "thread cpu time" : "wall");
  j["iters"] = o.iters;
  j["rows"] = nlohmann::json::array();
  for (const Row& r : rows) {
    j["rows"].push_back({{"shape", r.shape},   {"numel", r.numel},     {"dtype", r.dtype},       {"codec", r.codec}, {"path", r.path},
                         {"op", r.op},         {"time_us", r.time_us}, {"bytes", r.bytes_moved}, {"gbps", r.gbps},
                         {"ref_pct", r.ref_pct}, {"copy_pct", r.copy_pct}, {"eager_us", r.eager_us}, {"rel_l2", r.rel_l2},
                         {"wrong", r.wrong}});
  }
  std::ofstream f(o.json);
  if (!f) throw std::runtime_error("cannot write --json file " + o.json);
  f << j.dump(2) << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"geopipe-codec-bench: codec quantize/dequantize throughput (GB/s = bytes read + written / time)"};
  app.add_option("--device", o.device, "cpu (CPU twins, one core) or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--codec", o.codecs, "codecs to time (comma separated)")->delimiter(',');
  app.add_option("--shapes", o.shapes, "tensor shapes, e.g. 1x1024x1600,32768x4096")->delimiter(',');
  app.add_option("--dtype", o.dtype, "bf16, fp16 or fp32");
  app.add_option("-n,--iters", o.iters, "timed runs per measurement, median reported (default 100 cuda, 5 cpu)");
  app.add_option("-w,--warmup", o.warmup, "untimed runs first");
  std::string clock = "wall";
  app.add_option("--clock", clock, "CPU timing: wall (default) or thread (CPU time of this thread)")
      ->check(CLI::IsMember({"wall", "thread"}));
  app.add_option("--cpu-path", o.cpu_path, "CPU loops: auto, portable, avx2, or both (each codec with both)")
      ->check(CLI::IsMember({"auto", "portable", "avx2", "both"}));
  app.add_flag("!--no-eager", o.eager, "skip the LibTorch eager baseline");
  app.add_option("--json", o.json, "also write the rows as JSON to this file");
  CLI11_PARSE(app, argc, argv);
  g_thread_clock = clock == "thread";
  try {
    for (const auto& c : o.codecs) codec_from_name(c);
    std::vector<Row> rows;
    if (o.device == "cpu") {
      run_cpu(o, rows);
    } else {
#ifdef GEOPIPE_HAVE_CUDA
      run_cuda(o, rows);
#else
      throw std::runtime_error("--device cuda: this build has no CUDA kernels");
#endif
    }
    print_table(o, rows);
    if (!o.json.empty()) write_json(o, rows);
  } catch (const CodecError& e) {
    std::fprintf(stderr, "geopipe-codec-bench: %s\n", e.what());
    return 2;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "geopipe-codec-bench: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "geopipe-codec-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
