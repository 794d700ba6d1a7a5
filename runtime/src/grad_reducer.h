// Averages one stage's gradients over the stage's data-parallel replicas, overlapped with the
// backward, as PyTorch DDP's reducer does (docs/ARCHITECTURE.md, "Stage replicas"):
//
// - Buckets of about kBucketBytes, parameters in reverse model order (the order the backward
//   finishes them), each a flat fp32 buffer on the stage's device.
// - A parameter is final for the step when its gradient was accumulated once per micro-batch of
//   this replica: autograd's accumulation hooks (B and I) and the weight-gradient stash (W) tell
//   on_accumulated(). A bucket starts when all of its parameters are final; buckets start in
//   index order on every replica (MPI and NCCL match collectives by order), so a bucket that is
//   ready waits for the ones before it.
// - finish() (OPT) starts what is left, waits, and divides by the replica count. Without
//   sharding the bucket is all-reduced and copied back into .grad. With ZeRO-1 it is
//   reduce-scattered: this replica gets the averaged gradient of its 1/R of the bucket
//   (shard_grads(), the slices shard() names), updates only those, then gather_parameters()
//   all-gathers the updated parameters.
#pragma once

#include <geopipe/comm/group.h>
#include <geopipe/core/plan.h>
#include <geopipe/runtime/gpt.h>
#include <geopipe/runtime/optim.h>

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace torch::autograd {
struct Node;
}

namespace geopipe::runtime {

inline constexpr int64_t kBucketBytes = kGradBucketBytes;  // core/plan.h: the scheduler times the same buckets

class GradReducer {
 public:
  // `micro_batches`: backward passes per parameter per step on this replica. `stage` names the
  // stage in errors. The group must outlive the reducer.
  GradReducer(const GptStage& model, int stage, comm::ProcessGroup& group, int micro_batches, bool shard,
              int64_t bucket_bytes = kBucketBytes);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  void begin_step();
  // A micro-batch's gradient was just added to `param`'s .grad (any thread).
  void on_accumulated(const at::Tensor& param);
  // OPT: starts the buckets not yet started, waits for all (TimeoutError names the group) and
  // averages. Returns the seconds it waited (the all-reduce time the backward did not hide).
  double finish(double timeout_s);

  // ZeRO-1: the parameter slices replica `replica` of `replicas` updates (what its AdamW is
  // built on; the same slices shard() names once the reducer exists).
  static std::vector<ParamSlice> shard_of(const GptStage& model, int replicas, int replica,
                                          int64_t bucket_bytes = kBucketBytes);
  // ZeRO-1: the parameter slices this replica updates, and their averaged gradients after finish().
  const std::vector<ParamSlice>& shard() const { return shard_; }
  std::vector<at::Tensor> shard_grads() const;
  // ZeRO-1: squared norm of the averaged gradient per unit over this replica's slices (the sum
  // over the replicas is the stage's).
  std::vector<std::pair<int, double>> shard_unit_sq_norms() const;
  // ZeRO-1: after the update, every replica's slices to every replica.
  void gather_parameters(double timeout_s);

  // The step's collectives: first start to last completion, and each bucket's span for the trace.
  struct Span {
    std::string name;
    double start_s = 0, end_s = 0;  // steady clock (comm's now_s)
  };
  double busy_s() const;
  const std::vector<Span>& spans() const { return spans_; }
  int num_buckets() const { return static_cast<int>(buckets_.size()); }

 private:
  struct Bucket {
    std::vector<size_t> params;     // indices into params_
    std::vector<int64_t> offsets;   // of each in the flat buffer
    int64_t numel = 0, padded = 0;  // padded: a multiple of the replica count (ZeRO-1)
    at::Tensor flat;                // gradients in, averaged out (all-gather buffer under ZeRO-1)
    at::Tensor shard;               // ZeRO-1: this replica's 1/R, reduced
    int pending = 0;                // parameters not yet final this step
    comm::GroupRequest request;
    double start_s = 0;
  };
  // The layout, without buffers: buckets of `params` (and which bucket each parameter is in);
  // ZeRO-1: replica `me`'s slices and where each sits in its bucket's block.
  static std::vector<Bucket> plan_buckets(const std::vector<NamedTensor>& params, int64_t bucket_bytes, int replicas,
                                          bool sharded, std::vector<size_t>* bucket_of);
  static void plan_shard(const std::vector<NamedTensor>& params, const std::vector<Bucket>& buckets, int replicas,
                         int me, std::vector<ParamSlice>* slices, std::vector<std::pair<size_t, int64_t>>* at);
  void start(size_t b);  // under mutex_
  std::string bucket_name(size_t b) const;

  const GptStage& model_;
  int stage_;
  comm::ProcessGroup& group_;
  int micro_batches_;
  bool sharded_;
  std::vector<NamedTensor> params_;
  std::vector<int> unit_of_;                     // per parameter
  std::map<const void*, size_t> index_of_;       // TensorImpl* -> parameter index
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;  // kept alive: hooks live on them
  std::vector<uintptr_t> hooks_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;                // per parameter
  std::vector<ParamSlice> shard_;
  std::vector<std::pair<size_t, int64_t>> shard_at_;  // per slice: (bucket, offset in its shard buffer)
  std::mutex mutex_;
  std::vector<int> counts_;                      // per parameter: accumulations this step
  size_t next_ = 0;                              // the next bucket to start
  std::vector<Span> spans_;
};

}  // namespace geopipe::runtime
