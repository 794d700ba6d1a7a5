// A measured compute profile: seconds per micro-batch of one transformer block, the embedding and
// the LM head (+ loss), forward and backward, for one model shape and micro-batch size on one
// device. The runtime writes it; `geopipe plan --profile` reads it.
//
// File format (JSON, version 1; unknown keys are errors):
//   {"version": 1, "device": "cpu",
//    "model": {"layers": 4, "d_model": 128, "heads": 4, "seq_len": 64, "vocab": 256, "dtype": "fp32"},
//    "micro_batch": 8,
//    "layer":     {"forward_s": 0.010, "backward_s": 0.021,    // mean over the measured blocks
//                  "input_grad_s": 0.011, "weight_grad_s": 0.010},  // optional: the split backward
//    "embedding": {"forward_s": 0.001, "backward_s": 0.001},
//    "head":      {"forward_s": 0.004, "backward_s": 0.008},
//    "note": "optional free text"}
//
// Rule: for a region whose gpu_type equals `device` (exact, case-sensitive), the profile's times
// replace FLOPs / (gpu_tflops * efficiency). The profile must describe the job's shape: d_model,
// heads, seq_len, vocab, dtype and micro_batch equal (the layer count may differ, times are per
// block); otherwise check_profile_matches() rejects it. Regions of other GPU types keep the FLOPs model.
#pragma once

#include <geopipe/core/config.h>

#include <nlohmann/json_fwd.hpp>

#include <map>
#include <string>

namespace geopipe::scheduler {

struct PhaseTimes {
  double forward_s = 0;
  double backward_s = 0;
  // The backward split as zero-bubble schedules run it; 0 and 0: not measured (cost_model.h splits).
  double input_grad_s = 0;
  double weight_grad_s = 0;
  double total() const { return forward_s + backward_s; }
};

struct Profile {
  std::string device;
  ModelSpec model;
  int micro_batch = 1;
  PhaseTimes layer, embedding, head;
  std::string note;
  std::string source;  // file it came from (for messages)
};

Profile parse_profile(const nlohmann::json& doc, const std::string& file);
Profile load_profile(const std::string& path);
nlohmann::json to_json(const Profile& profile);
void save_profile(const Profile& profile, const std::string& path);  // atomic: temp file + rename

// Throws InputError naming the profile file and field when the profile's shape is not the job's.
void check_profile_matches(const Profile& profile, const JobSpec& job);
// True when the profile applies to this region (its gpu_type equals the profile's device).
bool profile_applies(const Profile& profile, const Region& region);

// ---- Codec profile ---------------------------------------------------------------------------
// A codec's measured speed on one device, in bytes read + written per second (the input tensor and
// the wire buffer), as geopipe-codec-bench counts them.
struct CodecRates {
  double encode_bps = 0;  // quantize
  double decode_bps = 0;  // dequantize
};

// geopipe-codec-bench's --json output read as a profile: per codec, the rates of its largest
// tensor (the pipeline's messages are megabytes; small tensors measure launch overhead), the
// fastest path where a shape was timed with several. `device` is the bench's device line
// ("cpu (1 thread)", or the CUDA device's name).
struct CodecProfile {
  std::string device;
  std::map<std::string, CodecRates> codecs;
  std::string source;  // file it came from (for messages)
};
CodecProfile parse_codec_profile(const nlohmann::json& doc, const std::string& file);
CodecProfile load_codec_profile(const std::string& path);
// True when the profile was measured on this region's kind of device: the region's gpu_type
// appears in the profile's device line, case-insensitively ("H100" in "NVIDIA H100 80GB HBM3",
// "cpu" in "cpu (1 thread)").
bool codec_profile_applies(const CodecProfile& profile, const Region& region);

}  // namespace geopipe::scheduler
