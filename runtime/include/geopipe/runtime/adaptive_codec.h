// --codec adaptive: each directed link's codec steps up and down a ladder while training, as the
// link's measured busy time compares with the pipeline's compute (docs/ARCHITECTURE.md, "Adaptive
// codecs"). Pure bookkeeping on numbers every rank has after a step's all-reduce, so every rank
// (the sender and the receiver of a link among them) takes the same decision at the same step
// boundary; the messages' headers name their codec as well. The ladder is core's
// adaptive_codec_ladder() (plan.h), which the plan validator checks a link's start against.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace geopipe::runtime {

// A link's busy time barely scales with its bytes when latency and per-message costs dominate it,
// so the codec below cannot be predicted from the one in use: a link with room tries it (a probe)
// and steps back up if that makes it the bottleneck; each failed probe doubles the steps the next
// one waits for, so a link on the edge settles instead of flapping.
struct AdaptivePolicy {
  int window = 2;      // steps observed at one codec before it may step up
  double up = 1.2;     // step up when, in each of the last `window` steps, busy > up x compute
                       // (above 1: a link about as busy as the compute stays put, not flipping on noise)
  double down = 0.6;   // try the codec below when busy < down x compute on average over the last
                       // `wait` steps (`wait` starts at `window` and doubles after a failed try, to 64)
};

class AdaptiveCodec {
 public:
  // `start`: the plan's codec for this link and direction; it must be on the ladder.
  AdaptiveCodec(bool activations, const std::string& start, AdaptivePolicy policy = {});
  const std::string& codec() const { return ladder_[level_]; }
  // One step at the current codec: the seconds this link had a message in flight, and the
  // seconds the slowest stage computed (the pipeline's compute period times the micro-batches).
  // True when the codec changes for the next step; `reason` then says why, with the numbers.
  bool observe(double busy_s, double compute_s, std::string* reason);

 private:
  std::vector<std::string> ladder_;
  int level_ = 0;
  AdaptivePolicy policy_;
  std::vector<double> ratios_;  // busy / compute of the steps at this level
  int probe_wait_;              // steps with room before trying the codec below
  bool probing_ = false;        // the last change was a try of the codec below
};

}  // namespace geopipe::runtime
