// The run directory: the files `geopipe-train --run-dir DIR` writes and `geopipe report DIR`
// reads. One name, one place, so the writer and the reader cannot drift apart.
#pragma once

namespace geopipe::run_dir {

inline constexpr const char* kPlan = "plan.json";          // copy of --plan
inline constexpr const char* kTopology = "topology.json";  // copy of --topology (when given)
inline constexpr const char* kRunInfo = "run.json";        // command, start time, plan hash, world size, link codecs
inline constexpr const char* kStepLog = "train.jsonl";     // one JSON object per step
inline constexpr const char* kTrace = "trace.json";        // merged Chrome trace, otherData.plan_hash
inline constexpr const char* kSummary = "summary.txt";     // the end-of-run summary
inline constexpr const char* kCheckpoints = "checkpoint";  // folder with manifest.json
inline constexpr const char* kManifest = "manifest.json";  // inside kCheckpoints
inline constexpr const char* kReport = "report.html";      // geopipe report's default output

}  // namespace geopipe::run_dir
