// The MPI world of the runtime's multi-rank tests: one Communicator for the whole test binary
// (a gtest global environment), ranks in the first half of the world in us-east, the rest in
// eu-central, one compute thread per rank (several ranks share the machine's cores).
#pragma once

#include <geopipe/comm/communicator.h>
#include <geopipe/runtime/trainer.h>

#include <gtest/gtest.h>
#include <mpi.h>

#include <filesystem>
#include <memory>
#include <string>

namespace geopipe::testing_support {

inline int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

inline std::string region_of(int rank) { return rank < (world_size() + 1) / 2 ? "us-east" : "eu-central"; }

inline std::unique_ptr<comm::Communicator>& world() {
  static std::unique_ptr<comm::Communicator> w;
  return w;
}

class WorldEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    runtime::set_compute_threads(1);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    comm::CommOptions o;
    o.region = region_of(rank);
    o.default_timeout_s = 60;
    world() = std::make_unique<comm::Communicator>(o);
  }
  void TearDown() override { world().reset(); }
};

// A folder every rank of the test names the same, emptied by rank 0 before anyone uses it.
inline std::string shared_dir(const std::string& name) {
  const std::string d =
      std::string(GEOPIPE_BINARY_DIR) + "/tests/runtime_mpi_np" + std::to_string(world_size()) + "_" + name;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) std::filesystem::remove_all(d);
  MPI_Barrier(MPI_COMM_WORLD);
  return d;
}

}  // namespace geopipe::testing_support
