// Private to geopipe_comm: CommOptions and the environment resolved into the settings the MPI
// engine runs with. The rules (communicator.h, CommOptions): an option that is set wins over
// the environment, the environment over the default; a bad value is an InputError naming the
// variable. Pure functions of their inputs (the environment is passed in), so that the rules
// are unit-tested without MPI.
#pragma once

#include <geopipe/comm/auth.h>
#include <geopipe/comm/communicator.h>
#include <geopipe/comm/shaper.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace geopipe::comm {

// The value of an environment variable, "" when it is unset or empty.
using Environment = std::function<std::string(const char* name)>;
// This process's environment.
std::string process_environment(const char* name);

struct ResolvedOptions {
  bool checksum = true;
  std::shared_ptr<const AuthKey> auth;  // null: messages carry no tag
  size_t chunk_bytes = size_t(1) << 20;  // at most 1 GiB (MPI counts are int)
  int max_chunks_in_flight = 16;
  double default_timeout_s = 300;
  bool progress_thread = true;
  // Emulation: the shaper's inputs (make_shaper).
  EmulateMode emulate = EmulateMode::kNone;
  std::shared_ptr<const Topology> topology;  // CommOptions::topology
  std::string topology_file;                 // else this file (env), unless emulate_link is set
  std::optional<LinkRate> emulate_link;
  std::string link_events;       // "FROM>TO@START+DURATION=RATE;..." or ""
  std::string link_events_what;  // where they came from, for messages
};

// This rank's region: CommOptions::region, else env GEOPIPE_REGION, else "local". Resolved
// before the collective that gathers every rank's region; everything else after it.
std::string resolve_region(const CommOptions& options, const Environment& env);
ResolvedOptions resolve_options(const CommOptions& options, const Environment& env);

// The emulated links between the job's regions; shaper null when emulation is off.
struct EmulatedLinks {
  std::unique_ptr<LinkShaper> shaper;
  std::vector<int> region_index;  // shaper region of each rank (empty without a shaper)
};
// `regions`: every rank's region, by rank. Throws InputError for a missing or unreadable
// topology, or a rank whose region the topology lacks.
EmulatedLinks make_emulated_links(const ResolvedOptions& options,
                                  const std::vector<std::string>& regions);
// Adds the scripted link events to `shaper` (null without emulation), timed from `origin`
// (now_s() clock). Throws InputError naming the variable for bad events, or events without
// emulation.
void add_link_events(const ResolvedOptions& options, LinkShaper* shaper, double origin);

}  // namespace geopipe::comm
