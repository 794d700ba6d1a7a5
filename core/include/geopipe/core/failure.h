// Failure records: the contract between a failing rank (geopipe-train writes one when it stops on
// an error, or is terminated by its launcher) and `geopipe launch --max-restarts`, whose
// supervisor reads them to tell a dead or hung rank — one that left no record, or that others
// timed out waiting for — from the ranks that merely stopped with it (docs/RELIABILITY.md).
//
//   DIR/rank-3.json   {"rank": 3, "region": "eu-central", "stage": 3, "kind": "timeout",
//                      "peer": 2, "waited_s": 10.0, "message": "stage 3 (rank 3) at 3F0 of step 15: ..."}
#pragma once

#include <string>
#include <vector>

namespace geopipe {

struct FailureRecord {
  int rank = 0;
  std::string region;
  int stage = -1;
  std::string kind;  // "timeout" (waited for `peer`), "error", "bad-input", "terminated" (by the launcher)
  int peer = -1;     // the rank it waited for (timed out, or when terminated); -1 none, -2 a collective
  double waited_s = 0;  // how long that wait had lasted
  std::string message;
};

std::string failure_record_path(const std::string& dir, int rank);  // DIR/rank-R.json
// Written atomically (temp file, rename): a reader sees a whole record or none. geopipe::Error
// naming the file when the folder, the temp file or the rename fails.
void write_failure_record(const std::string& dir, const FailureRecord& record);
// Every record in `dir` (none when it does not exist), by rank; a torn or foreign file is skipped.
std::vector<FailureRecord> read_failure_records(const std::string& dir);

}  // namespace geopipe
