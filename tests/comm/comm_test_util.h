// Small helpers shared by the MPI comm tests.
#pragma once

#include <geopipe/comm/header.h>

#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstdio>

namespace geopipe::comm::test_util {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

inline int world_size() {
  int s = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

// The header of an activation from this rank (as its stage) for micro-batch `mb`.
inline MessageHeader activation_header(int mb) {
  MessageHeader h;
  h.stage = world_rank();
  h.micro_batch = mb;
  h.kind = MessageKind::kActivation;
  return h;
}

// The MPI test main prints GoogleTest's report from rank 0 only; this prints the failed
// assertions of the other ranks (to stderr, with the rank), so their failures are not silent.
class OtherRankFailurePrinter : public ::testing::EmptyTestEventListener {
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed() || world_rank() == 0) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", world_rank(),
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.message());
  }
};
inline const bool kOtherRankFailuresPrinted = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new OtherRankFailurePrinter);
  return true;
}();

}  // namespace geopipe::comm::test_util
