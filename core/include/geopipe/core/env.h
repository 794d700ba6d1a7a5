// Environment variables that are contracts between parts: `geopipe launch` sets them for every
// rank, the runtime and comm read them. One name, one place (docs/ARCHITECTURE.md lists them all).
#pragma once

namespace geopipe::env {

// How many ranks share this machine's cores. Set by `geopipe launch` when it emulates regions
// on one host (software or netns), where MPI cannot tell: every netns region runs its own
// Open MPI daemon, so MPI_COMM_TYPE_SHARED sees one rank per namespace. The runtime's default
// thread count is cores / this (runtime/trainer.h: default_threads_per_rank).
inline constexpr const char* kRanksOnHost = "GEOPIPE_RANKS_ON_HOST";

}  // namespace geopipe::env
