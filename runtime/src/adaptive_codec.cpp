#include <geopipe/core/error.h>
#include <geopipe/core/plan.h>
#include <geopipe/runtime/adaptive_codec.h>

#include <algorithm>
#include <cstdio>
#include <numeric>

namespace geopipe::runtime {

AdaptiveCodec::AdaptiveCodec(bool activations, const std::string& start, AdaptivePolicy policy)
    : ladder_(adaptive_codec_ladder(activations)), policy_(policy), probe_wait_(policy.window) {
  auto it = std::find(ladder_.begin(), ladder_.end(), start);
  if (it == ladder_.end()) {
    std::string steps;
    for (const auto& c : ladder_) steps += (steps.empty() ? "" : ", ") + c;
    throw InputError("--codec", "codec", std::string("adaptive ") + (activations ? "activations" : "gradients") +
                                             " step through " + steps + "; the plan's link starts at \"" + start + "\"");
  }
  level_ = static_cast<int>(it - ladder_.begin());
  if (policy_.window < 1 || !(policy_.up > policy_.down) || !(policy_.down > 0))
    throw InputError("--codec", "adaptive", "needs window >= 1 and up > down > 0");
}

bool AdaptiveCodec::observe(double busy_s, double compute_s, std::string* reason) {
  constexpr int kMaxProbeWait = 64;
  ratios_.push_back(compute_s > 0 ? busy_s / compute_s : 0.0);
  const int n = static_cast<int>(ratios_.size());
  // Up needs every step of the window over (one slow step is not a slow link); the try below
  // needs the window's mean under: a mean is steadier than any one step, so two runs with the
  // same link history cross the threshold at the same step more often.
  auto lowest = [&](int k) { return *std::min_element(ratios_.end() - k, ratios_.end()); };
  auto mean = [&](int k) { return std::accumulate(ratios_.end() - k, ratios_.end(), 0.0) / k; };
  char why[200];
  const int top = static_cast<int>(ladder_.size()) - 1;
  if (level_ < top && n >= policy_.window && lowest(policy_.window) > policy_.up) {
    std::snprintf(why, sizeof why, "busy %.2fx the compute over %d steps (> %.2f): the link holds the pipeline back",
                  lowest(policy_.window), policy_.window, policy_.up);
    if (probing_) probe_wait_ = std::min(2 * probe_wait_, kMaxProbeWait);  // the try failed
    probing_ = false;
    ++level_;
  } else if (level_ > 0 && n >= probe_wait_ && mean(probe_wait_) < policy_.down) {
    std::snprintf(why, sizeof why, "busy %.2fx the compute on average over %d steps (< %.2f): trying %s",
                  mean(probe_wait_), probe_wait_, policy_.down, ladder_[static_cast<size_t>(level_ - 1)].c_str());
    probing_ = true;
    --level_;
  } else {
    if (n >= policy_.window) probing_ = false;  // the try held for a window: it succeeded
    return false;
  }
  ratios_.clear();  // the next decision sees only steps at the new codec
  if (reason) *reason = why;
  return true;
}

}  // namespace geopipe::runtime
