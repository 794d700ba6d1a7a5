#include "comm_options.h"

#include <geopipe/core/config.h>
#include <geopipe/core/env.h>
#include <geopipe/core/error.h>

#include <algorithm>
#include <cstdlib>

namespace geopipe::comm {

std::string process_environment(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

namespace {

std::string env_or(const Environment& env, const char* name, const std::string& fallback) {
  const std::string v = env(name);
  return v.empty() ? fallback : v;
}

bool resolve_checksum(const CommOptions& options, const Environment& env) {
  if (options.checksum) return *options.checksum;
  const std::string v = env_or(env, env::kChecksum, "1");
  return !(v == "0" || v == "off" || v == "false");
}

// An empty key in the options means "no key", whatever the environment says.
std::shared_ptr<const AuthKey> resolve_auth(const CommOptions& options, const Environment& env) {
  if (options.auth_key) {
    if (options.auth_key->empty()) return nullptr;
    return std::make_shared<AuthKey>(*options.auth_key, "auth_key");
  }
  const std::string file = env(env::kAuthKeyFile);
  if (file.empty()) return nullptr;
  return std::make_shared<AuthKey>(AuthKey::from_file(file));
}

size_t resolve_chunk_bytes(const CommOptions& options, const Environment& env) {
  size_t chunk = options.chunk_bytes;
  if (chunk == 0) {
    const std::string v = env_or(env, env::kChunkBytes, "1048576");
    char* end = nullptr;
    const unsigned long long parsed = std::strtoull(v.c_str(), &end, 10);
    if (end == v.c_str() || *end != '\0' || parsed == 0)
      throw InputError(env::kChunkBytes, "", "'" + v + "': expected a positive byte count");
    chunk = static_cast<size_t>(parsed);
  }
  return std::min<size_t>(chunk, size_t(1) << 30);  // MPI counts are int
}

double resolve_timeout_s(const CommOptions& options, const Environment& env) {
  if (options.default_timeout_s > 0) return options.default_timeout_s;
  const std::string v = env_or(env, env::kCommTimeout, "300");
  char* end = nullptr;
  const double seconds = std::strtod(v.c_str(), &end);
  if (end == v.c_str() || *end != '\0' || seconds <= 0)
    throw InputError(env::kCommTimeout, "", "'" + v + "': expected seconds > 0");
  return seconds;
}

EmulateMode resolve_emulate(const CommOptions& options, const Environment& env) {
  if (options.emulate) return *options.emulate;
  const std::string v = env_or(env, env::kEmulate, "none");
  const auto parsed = parse_emulate_mode(v);
  if (!parsed) throw InputError(env::kEmulate, "", "'" + v + "': expected none, software or netns");
  return *parsed;
}

}  // namespace

std::string resolve_region(const CommOptions& options, const Environment& env) {
  if (!options.region.empty()) return options.region;
  return env_or(env, env::kRegion, "local");
}

ResolvedOptions resolve_options(const CommOptions& options, const Environment& env) {
  ResolvedOptions r;
  r.checksum = resolve_checksum(options, env);
  r.auth = resolve_auth(options, env);
  if (r.auth && !r.checksum)
    throw InputError(env::kChecksum, "",
                     "message authentication needs payload checksums: the header's tag covers the "
                     "payload through its CRC32C (do not set GEOPIPE_CHECKSUM=0 with a key)");
  r.chunk_bytes = resolve_chunk_bytes(options, env);
  r.max_chunks_in_flight = std::max(1, options.max_chunks_in_flight);
  r.default_timeout_s = resolve_timeout_s(options, env);
  r.progress_thread = options.progress_thread;
  r.emulate = resolve_emulate(options, env);
  r.topology = options.topology;
  r.topology_file = env(env::kTopology);
  r.emulate_link = options.emulate_link;
  r.link_events = options.link_events ? *options.link_events : env(env::kLinkEvents);
  r.link_events_what = options.link_events ? "link_events" : env::kLinkEvents;
  return r;
}

namespace {

// The topology wins over a uniform link; the file is read only when neither was given.
std::unique_ptr<LinkShaper> make_shaper(const ResolvedOptions& o,
                                        const std::vector<std::string>& regions,
                                        std::shared_ptr<const Topology>& topology) {
  topology = o.topology;
  if (!topology && !o.emulate_link && !o.topology_file.empty())
    topology = std::make_shared<Topology>(load_topology(o.topology_file));
  if (topology) return std::make_unique<LinkShaper>(LinkShaper::from_topology(*topology, o.emulate));
  if (!o.emulate_link)
    throw InputError(env::kTopology, "",
                     "link emulation is on but no topology was given (set GEOPIPE_TOPOLOGY)");
  std::vector<std::string> names;
  for (const auto& r : regions)
    if (std::find(names.begin(), names.end(), r) == names.end()) names.push_back(r);
  LinkRate rate = *o.emulate_link;
  if (o.emulate == EmulateMode::kLatencyOnly) rate.bytes_per_s = 0;
  return std::make_unique<LinkShaper>(LinkShaper::uniform(names, rate));
}

}  // namespace

EmulatedLinks make_emulated_links(const ResolvedOptions& options,
                                  const std::vector<std::string>& regions) {
  EmulatedLinks links;
  if (options.emulate == EmulateMode::kNone) return links;
  std::shared_ptr<const Topology> topology;
  links.shaper = make_shaper(options, regions, topology);
  for (size_t r = 0; r < regions.size(); ++r) {
    const int idx = links.shaper->region_index(regions[r]);
    if (idx < 0)
      throw InputError(topology ? topology->source : env::kTopology, "regions",
                       "rank " + std::to_string(r) + "'s region '" + regions[r] +
                           "' is not in the topology");
    links.region_index.push_back(idx);
  }
  return links;
}

void add_link_events(const ResolvedOptions& options, LinkShaper* shaper, double origin) {
  const auto events = parse_link_events(options.link_events, options.link_events_what);
  if (events.empty()) return;
  if (!shaper)
    throw InputError(options.link_events_what, "",
                     "link events need link emulation (set GEOPIPE_EMULATE=software)");
  shaper->add_events(events, origin, options.link_events_what);
}

}  // namespace geopipe::comm
