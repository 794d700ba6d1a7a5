// Environment variables that are contracts between parts: `geopipe launch` sets them for every
// rank, the runtime and comm read them. One name, one place (docs/ARCHITECTURE.md lists them all).
#pragma once

namespace geopipe::env {

// How many ranks share this machine's cores. Set by `geopipe launch` when it emulates regions
// on one host (software or netns), where MPI cannot tell: every netns region runs its own
// Open MPI daemon, so MPI_COMM_TYPE_SHARED sees one rank per namespace. The runtime's default
// thread count is cores / this (runtime/trainer.h: default_threads_per_rank).
inline constexpr const char* kRanksOnHost = "GEOPIPE_RANKS_ON_HOST";

// Set by `geopipe launch` for every rank, read by comm (communicator.h) and the CLI.
// This rank's region (the plan's region of its stage); comm's default is "local".
inline constexpr const char* kRegion = "GEOPIPE_REGION";
// Path of the topology file: the links comm's shaper emulates.
inline constexpr const char* kTopology = "GEOPIPE_TOPOLOGY";
// Link emulation in comm: none, software (bandwidth + latency) or netns (latency only).
inline constexpr const char* kEmulate = "GEOPIPE_EMULATE";
// Path of the plan file, when the launch was given one.
inline constexpr const char* kPlan = "GEOPIPE_PLAN";

// Folder where a failing rank leaves its failure record (core/failure.h); set by `geopipe
// launch --max-restarts`, whose supervisor reads the records to decide how to restart.
inline constexpr const char* kFailureDir = "GEOPIPE_FAILURE_DIR";

// FOR TESTS ONLY: makes one rank fail on purpose (runtime/trainer.h: TestFault). The supervisor
// clears it for relaunches: a test's fault strikes the first attempt only.
inline constexpr const char* kTestFault = "GEOPIPE_TEST_FAULT";

// Comm settings that launch forwards to every rank when the caller set them.
// File holding the per-job message authentication key (comm/auth.h).
inline constexpr const char* kAuthKeyFile = "GEOPIPE_AUTH_KEY_FILE";
// Scripted link slowdowns and stalls, "FROM>TO@START+DURATION=RATE;..." (comm/shaper.h).
inline constexpr const char* kLinkEvents = "GEOPIPE_LINK_EVENTS";

// Comm settings read only by comm (defaults in communicator.h and staging.h).
// "0", "off" or "false" turns payload checksums off.
inline constexpr const char* kChecksum = "GEOPIPE_CHECKSUM";
// Size of the pieces a large message is sent in, bytes.
inline constexpr const char* kChunkBytes = "GEOPIPE_CHUNK_BYTES";
// Default timeout of Request::wait(), seconds.
inline constexpr const char* kCommTimeout = "GEOPIPE_COMM_TIMEOUT_S";
// Idle pinned staging memory kept per GPU, bytes.
inline constexpr const char* kStagingPoolBytes = "GEOPIPE_STAGING_POOL_BYTES";

}  // namespace geopipe::env
