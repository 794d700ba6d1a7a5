// StageCompute: split backward (I + W) against the full backward (B), activation recomputation,
// held bytes, refused action orders (one process, CPU, fp32 unless said).
#include <geopipe/core/error.h>
#include <geopipe/runtime/gpt.h>
#include <geopipe/runtime/stage_compute.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/version.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using namespace geopipe;
using namespace geopipe::runtime;

namespace {

GptConfig small() { return {4, 2, 32, 16, 256}; }
constexpr int64_t kB = 2, kT = 16, kC = 32, kV = 256;
constexpr double kMicroBatches = 2.0;  // the loss divisor

struct StageCase {
  const char* name;
  int begin, end;
};
const StageCase kStages[] = {{"first", 0, 2}, {"middle", 1, 3}, {"last", 2, 4}, {"single", 0, 4}};

GptStage make(const StageCase& c) { return GptStage(small(), c.begin, c.end, c.begin == 0, c.end == 4, 11); }

at::Generator gen(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

at::Tensor tokens(int mb, uint64_t salt) {
  at::Generator g = gen(1000 * salt + mb);
  return at::randint(kV, {kB, kT}, g, at::TensorOptions().dtype(at::kLong));
}
at::Tensor hidden(int mb, uint64_t salt) {
  at::Generator g = gen(1000 * salt + mb);
  return at::randn({kB, kT, kC}, g, at::TensorOptions().dtype(at::kFloat));
}
at::Tensor input_of(const GptStage& s, int mb) { return s.is_first() ? tokens(mb, 1) : hidden(mb, 1); }
at::Tensor targets_of(const GptStage& s, int mb) { return s.is_last() ? tokens(mb, 2) : at::Tensor(); }
at::Tensor grad_of(const GptStage& s, int mb) { return s.is_last() ? at::Tensor() : hidden(mb, 3); }

// Runs "F0 F1 I0 W0 ..." on `sc`; returns each micro-batch's input gradient (B or I).
std::map<int, at::Tensor> run(StageCompute& sc, const GptStage& s, const std::string& actions) {
  std::istringstream in(actions);
  std::map<int, at::Tensor> grad_in;
  for (std::string a; in >> a;) {
    const int mb = std::stoi(a.substr(1));
    if (a[0] == 'F') sc.forward(mb, input_of(s, mb), targets_of(s, mb), kMicroBatches);
    if (a[0] == 'B') grad_in[mb] = sc.backward(mb, grad_of(s, mb));
    if (a[0] == 'I') grad_in[mb] = sc.backward_input(mb, grad_of(s, mb));
    if (a[0] == 'W') sc.backward_weight(mb);
  }
  return grad_in;
}

// Today's executor path: model.forward under autograd, then loss / M or output.backward(grad).
std::map<int, at::Tensor> run_plain(const GptStage& s, int micro_batches) {
  std::vector<at::Tensor> roots, inputs;
  for (int mb = 0; mb < micro_batches; ++mb) {
    at::Tensor x = input_of(s, mb);
    if (!s.is_first()) x.set_requires_grad(true);
    at::Tensor out = s.forward(x);
    roots.push_back(s.is_last() ? GptStage::loss(out, targets_of(s, mb)) / kMicroBatches : out);
    inputs.push_back(x);
  }
  std::map<int, at::Tensor> grad_in;
  for (int mb = 0; mb < micro_batches; ++mb) {
    if (s.is_last()) roots[mb].backward();
    else roots[mb].backward(grad_of(s, mb));
    grad_in[mb] = s.is_first() ? at::Tensor() : inputs[mb].grad();
  }
  return grad_in;
}

std::map<std::string, at::Tensor> grads(const GptStage& s) {
  std::map<std::string, at::Tensor> m;
  for (const auto& p : s.named_parameters()) m[p.name] = p.tensor.grad();
  return m;
}

double max_relative(const at::Tensor& a, const at::Tensor& b) {
  const double scale = std::max(b.abs().max().item<double>(), 1e-30);
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() / scale;
}

// Every parameter has a gradient in both and they agree within `tol` (relative to the largest).
void expect_same_grads(const GptStage& a, const GptStage& b, double tol, const std::string& what) {
  auto ga = grads(a), gb = grads(b);
  for (const auto& [name, g] : gb) {
    ASSERT_TRUE(g.defined()) << what << ": " << name << " has no gradient in the reference";
    ASSERT_TRUE(ga.at(name).defined()) << what << ": " << name << " has no gradient";
    if (tol == 0) EXPECT_TRUE(at::equal(ga.at(name), g)) << what << ": " << name << " differs";
    else EXPECT_LE(max_relative(ga.at(name), g), tol) << what << ": " << name;
  }
}

void expect_same_inputs(const std::map<int, at::Tensor>& a, const std::map<int, at::Tensor>& b, double tol,
                        const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (const auto& [mb, g] : b) {
    if (!g.defined()) continue;
    if (tol == 0) EXPECT_TRUE(at::equal(a.at(mb), g)) << what << ": input gradient of micro-batch " << mb;
    else EXPECT_LE(max_relative(a.at(mb), g), tol) << what << ": input gradient of micro-batch " << mb;
  }
}

// Bf16 autocast on this thread's CPU for a scope (the executor's F), across LibTorch versions.
class CpuAutocast {
 public:
  CpuAutocast() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCPU, true);
#else
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(true);
#endif
  }
  ~CpuAutocast() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCPU, false);
#else
    at::autocast::set_cpu_enabled(false);
#endif
    at::autocast::clear_cache();
  }
};

}  // namespace

TEST(StageCompute, FullBackwardIsBitIdenticalToThePlainAutogradPath) {
  for (const StageCase& c : kStages) {
    GptStage plain = make(c), split_aware = make(c);
    auto want = run_plain(plain, 2);
    StageCompute sc(split_aware, Recompute::kNone);
    auto got = run(sc, split_aware, "F0 F1 B0 B1");
    expect_same_grads(split_aware, plain, 0, c.name);
    expect_same_inputs(got, want, 0, c.name);
  }
}

TEST(StageCompute, InputThenWeightGivesTheFullBackwardsGradients) {
  // The last order mixes a full backward with a split one, as ZB-H1's cool-down may.
  for (const char* order : {"F0 F1 I0 W0 I1 W1", "F0 F1 I1 I0 W0 W1", "F0 I0 F1 I1 W1 W0", "F0 F1 I1 B0 W1"}) {
    for (const StageCase& c : kStages) {
      const std::string what = std::string(c.name) + " stage, " + order;
      GptStage full = make(c), split = make(c);
      StageCompute b(full, Recompute::kNone), iw(split, Recompute::kNone);
      auto want = run(b, full, "F0 F1 B0 B1");
      auto got = run(iw, split, order);
      expect_same_grads(split, full, 1e-6, what);  // bit-identical on LibTorch 1.13
      expect_same_inputs(got, want, 0, what);
      EXPECT_EQ(iw.live_bytes(), 0) << what;
    }
  }
}

TEST(StageCompute, SplitLeavesLinearWeightsForWAndComputesTheRestInI) {
  GptStage s = make(kStages[3]);
  StageCompute sc(s, Recompute::kNone);
  run(sc, s, "F0 I0");
  auto g = grads(s);
  for (const char* name : {"transformer.h.1.attn.c_attn.weight", "transformer.h.1.attn.c_attn.bias",
                           "transformer.h.2.mlp.c_proj.weight", "lm_head.weight"})
    EXPECT_FALSE(g.at(name).defined()) << name << " must wait for W";
  for (const char* name : {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.1.ln_1.weight",
                           "transformer.ln_f.bias"})
    EXPECT_TRUE(g.at(name).defined()) << name << " is computed in I";
  run(sc, s, "W0");
  EXPECT_TRUE(grads(s).at("lm_head.weight").defined());
}

TEST(StageCompute, RecomputeFullGivesTheSameGradientsAsNone) {
  for (const std::string order : {"F0 F1 B0 B1", "F0 F1 I1 I0 W0 W1"}) {
    for (const StageCase& c : kStages) {
      const std::string what = std::string(c.name) + " stage, " + order;
      GptStage kept = make(c), recomputed = make(c);
      StageCompute none(kept, Recompute::kNone), full(recomputed, Recompute::kFull);
      auto want = run(none, kept, order);
      auto got = run(full, recomputed, order);
      expect_same_grads(recomputed, kept, 0, what);
      expect_same_inputs(got, want, 0, what);
      EXPECT_EQ(full.live_bytes(), 0) << what;
    }
  }
}

TEST(StageCompute, RecomputeFullForwardReturnsTheSameOutputsAndLoss) {
  for (const StageCase& c : kStages) {
    GptStage s = make(c);
    StageCompute none(s, Recompute::kNone), full(s, Recompute::kFull);
    at::Tensor a = none.forward(0, input_of(s, 0), targets_of(s, 0), kMicroBatches);
    at::Tensor b = full.forward(0, input_of(s, 0), targets_of(s, 0), kMicroBatches);
    EXPECT_TRUE(at::equal(a, b)) << c.name;
    EXPECT_FALSE(b.requires_grad()) << c.name << ": the result is detached";
  }
}

// Held bytes follow docs/ARCHITECTURE.md: recompute full keeps one [B, T, C] fp32 tensor per block
// (and one for the head) plus token ids / targets; after I only the linear stash is left
// (16 N C floats per block, N C + N V for lm_head); after W or B nothing.
TEST(StageCompute, HeldBytesFollowTheDocumentedFormulas) {
  const int64_t NC = kB * kT * kC * 4, ids = kB * kT * 8;
  for (const StageCase& c : kStages) {
    GptStage s = make(c);
    const int64_t blocks = c.end - c.begin;
    const bool first = c.begin == 0, last = c.end == 4;
    StageCompute none(s, Recompute::kNone), full(s, Recompute::kFull);
    run(none, s, "F0 F1");
    run(full, s, "F0 F1");
    const int64_t kept = (blocks + (last ? 1 : 0)) * NC + (first ? ids : 0) + (last ? ids : 0);
    EXPECT_EQ(full.live_bytes(0), kept) << c.name;
    EXPECT_EQ(full.live_bytes(), 2 * kept) << c.name;
    EXPECT_LT(full.live_bytes(0), none.live_bytes(0)) << c.name;
    EXPECT_GE(none.live_bytes(0), none.graph_bytes_estimate(kB, kT)) << c.name;
    // The backward rebuilds one block at a time: 16 N C + 4 N + B nh T^2 = 17,536 floats (N = 32;
    // the head's 2 N C + 2 N + N V = 10,304 is smaller). Nothing is rebuilt without recomputation.
    EXPECT_EQ(full.rebuild_bytes(0), 4 * 17536) << c.name;
    EXPECT_EQ(none.rebuild_bytes(0), 0) << c.name;
    EXPECT_EQ(full.rebuild_bytes(7), 0) << c.name;  // no such micro-batch
    const int64_t stash = blocks * 16 * NC + (last ? NC + kB * kT * kV * 4 : 0);
    run(none, s, "I0");
    run(full, s, "I0");
    EXPECT_EQ(none.live_bytes(0), stash) << c.name;
    EXPECT_EQ(full.live_bytes(0), stash) << c.name;
    run(none, s, "W0 B1");
    run(full, s, "B1 W0");
    EXPECT_EQ(none.live_bytes(), 0) << c.name;
    EXPECT_EQ(full.live_bytes(), 0) << c.name;
    EXPECT_TRUE(full.micro_batches().empty()) << c.name;
  }
}

#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
// live_bytes against what malloc really handed out and did not get back (glibc, all arenas):
// "holds no more memory than documented". Shapes large enough that chunk headers do not count.
TEST(StageCompute, HeldBytesAreWhatMallocSeesHeld) {
  auto in_use = [] {
    struct mallinfo2 m = mallinfo2();
    return static_cast<int64_t>(m.uordblks + m.hblkhd);
  };
  const GptConfig cfg{2, 2, 64, 32, 256};
  for (auto [begin, end] : {std::pair{0, 2}, std::pair{1, 2}}) {
    GptStage s(cfg, begin, end, begin == 0, end == 2, 3);
    at::Generator g = gen(9);
    at::Tensor x = begin == 0 ? at::randint(256, {4, 32}, g, at::TensorOptions().dtype(at::kLong))
                              : at::randn({4, 32, 64}, g);
    at::Tensor y = at::randint(256, {4, 32}, g, at::TensorOptions().dtype(at::kLong));
    at::Tensor dy = end == 2 ? at::Tensor() : at::randn({4, 32, 64}, g);
    for (Recompute r : {Recompute::kNone, Recompute::kFull}) {
      const std::string what = std::string(recompute_name(r)) + ", layers from " + std::to_string(begin);
      StageCompute sc(s, r);
      sc.forward(0, x, y, 1.0);  // every .grad and one-time state exist after this cycle
      sc.backward_input(0, dy);
      sc.backward_weight(0);
      const int64_t before = in_use();
      sc.forward(1, x, y, 1.0);
      const int64_t after_f = in_use() - before, held_f = sc.live_bytes(1);
      sc.backward_input(1, dy);
      const int64_t after_i = in_use() - before, held_i = sc.live_bytes(1);
      const int64_t callers = begin == 0 ? 0 : x.nbytes();  // held, but allocated by the caller
      if (r == Recompute::kFull) EXPECT_NEAR(after_f, held_f - callers, 0.05 * held_f) << what << " after F";
      else EXPECT_LE(after_f, held_f * 1.05) << what << ": the estimate is too low";
      EXPECT_NEAR(after_i, held_i, 0.05 * held_i) << what << " after I";
      sc.backward_weight(1);
      // A few KiB come and go in malloc's own caches; one leaked activation would be 32 KiB.
      EXPECT_LE(in_use() - before, 16384) << what << ": W left memory behind";
    }
  }
}
#endif

TEST(StageCompute, ActionsOutOfOrderAreRefusedNamingTheMicroBatch) {
  GptStage s = make(kStages[1]);
  StageCompute sc(s, Recompute::kNone);
  auto refused = [&](const std::string& actions, const std::string& says) {
    try {
      run(sc, s, actions);
      ADD_FAILURE() << actions << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("layers [1, 3)"), std::string::npos) << e.what();
    }
  };
  run(sc, s, "F3");
  refused("W3", "action W3 (micro-batch 3): W before I");
  refused("F3", "action F3 (micro-batch 3): F again");
  run(sc, s, "I3");
  refused("I3", "action I3 (micro-batch 3): its I already ran");
  refused("B3", "action B3 (micro-batch 3): its I already ran");
  run(sc, s, "W3");
  refused("W3", "action W3 (micro-batch 3): nothing pending");
  refused("B5", "action B5 (micro-batch 5): nothing pending");
  run(sc, s, "F4");
  EXPECT_THROW(sc.backward(4, at::zeros({kB, kT + 1, kC})), Error);  // wrong gradient shape
  EXPECT_THROW(sc.backward_input(4, at::Tensor()), Error);         // no gradient
  EXPECT_NO_THROW(run(sc, s, "B4"));
}

// The executor runs F inside a bf16 autocast scope and the backward outside it: a recomputed
// forward must see F's autocast state, and the split linears must compute in bf16 as autograd does.
TEST(StageCompute, Bf16AutocastIsRecomputedUnderTheForwardsState) {
  for (const StageCase& c : kStages) {
    const std::string what = std::string(c.name) + " stage, bf16";
    GptStage kept = make(c), recomputed = make(c), split = make(c), fp32 = make(c);
    StageCompute none(kept, Recompute::kNone), full(recomputed, Recompute::kFull), iw(split, Recompute::kNone);
    for (auto [sc, s] : {std::pair{&none, &kept}, std::pair{&full, &recomputed}, std::pair{&iw, &split}}) {
      CpuAutocast on;
      run(*sc, *s, "F0 F1");
    }
    auto want = run(none, kept, "B0 B1");
    expect_same_inputs(run(full, recomputed, "B0 B1"), want, 0, what + " recompute");
    expect_same_grads(recomputed, kept, 0, what + " recompute");
    expect_same_inputs(run(iw, split, "I0 I1 W0 W1"), want, 0, what + " split");
    expect_same_grads(split, kept, 1e-6, what + " split");
    StageCompute f32(fp32, Recompute::kNone);
    run(f32, fp32, "F0 F1 B0 B1");
    const std::string w = "transformer.h." + std::to_string(c.begin) + ".attn.c_attn.weight";
    EXPECT_FALSE(at::equal(grads(kept).at(w), grads(fp32).at(w))) << what << ": autocast had no effect";
    EXPECT_LE(max_relative(grads(kept).at(w), grads(fp32).at(w)), 0.05) << what;
  }
}

TEST(StageCompute, RecomputeFlagParses) {
  EXPECT_EQ(parse_recompute("none"), Recompute::kNone);
  EXPECT_EQ(parse_recompute("full"), Recompute::kFull);
  EXPECT_STREQ(recompute_name(Recompute::kFull), "full");
  EXPECT_THROW(parse_recompute("selective"), InputError);
}

// Not a check: the cost of the split and of recomputation on gpt-tiny's shapes (4 layers,
// d_model 128, 4 heads, T 64, micro-batch 8), one stage holding the whole model. Run with
// --gtest_also_run_disabled_tests --gtest_filter='*TimesOnGptTiny*' (docs/PERFORMANCE.md).
TEST(StageCompute, DISABLED_TimesOnGptTinyShapes) {
  const GptConfig tiny{4, 4, 128, 64, 256};
  GptStage s(tiny, 0, 4, true, true, 1);
  at::Generator g = gen(5);
  at::Tensor x = at::randint(256, {8, 64}, g, at::TensorOptions().dtype(at::kLong));
  at::Tensor y = at::randint(256, {8, 64}, g, at::TensorOptions().dtype(at::kLong));
  // Bytes malloc has handed out and not had back (all arenas), to check live_bytes against.
  auto in_use = []() -> int64_t {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
    struct mallinfo2 m = mallinfo2();
    return static_cast<int64_t>(m.uordblks + m.hblkhd);
#else
    return 0;
#endif
  };
  auto ms_since = [](auto t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  for (Recompute r : {Recompute::kNone, Recompute::kFull}) {
    StageCompute sc(s, r);
    std::vector<double> f, b, f2, i, w;
    int64_t held = 0, measured = 0;
    for (int rep = 0; rep < 12; ++rep) {
      const int64_t before = in_use();
      auto t0 = std::chrono::steady_clock::now();
      sc.forward(0, x, y, 1.0);
      f.push_back(ms_since(t0));
      measured = in_use() - before;
      held = sc.live_bytes(0);
      t0 = std::chrono::steady_clock::now();
      sc.backward(0);
      b.push_back(ms_since(t0));
      t0 = std::chrono::steady_clock::now();
      sc.forward(1, x, y, 1.0);
      f2.push_back(ms_since(t0));
      t0 = std::chrono::steady_clock::now();
      sc.backward_input(1);
      i.push_back(ms_since(t0));
      t0 = std::chrono::steady_clock::now();
      sc.backward_weight(1);
      w.push_back(ms_since(t0));
    }
    auto median = [](std::vector<double> v) {
      v.erase(v.begin(), v.begin() + 2);  // warm-up
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    std::printf("recompute %-4s  F %.2f ms  B %.2f ms  |  F %.2f ms  I %.2f ms  W %.2f ms  |  held after F %.2f MiB"
                " (malloc: %.2f MiB)\n",
                recompute_name(r), median(f), median(b), median(f2), median(i), median(w), held / 1048576.0,
                measured / 1048576.0);
  }
}
