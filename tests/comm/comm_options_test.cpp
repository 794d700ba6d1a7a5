// How CommOptions and the environment resolve into the MPI engine's settings (comm_options.h):
// an option that is set wins over the environment, the environment over the default, and a bad
// value is an InputError naming the variable. No MPI: the environment is a map here.
#include "comm_options.h"

#include <geopipe/core/config.h>
#include <geopipe/core/env.h>
#include <geopipe/core/error.h>

#include <gtest/gtest.h>

#include <map>
#include <string>

using namespace geopipe;
using namespace geopipe::comm;

namespace {

Environment env_of(std::map<std::string, std::string> vars) {
  return [vars](const char* name) {
    auto it = vars.find(name);
    return it == vars.end() ? std::string() : it->second;
  };
}

const Environment kEmpty = env_of({});

std::string input_error_of(const CommOptions& options, const Environment& env) {
  try {
    resolve_options(options, env);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

#define CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

}  // namespace

TEST(CommOptions, DefaultsWithoutOptionsOrEnvironment) {
  EXPECT_EQ(resolve_region({}, kEmpty), "local");
  const ResolvedOptions r = resolve_options({}, kEmpty);
  EXPECT_TRUE(r.checksum);
  EXPECT_EQ(r.auth, nullptr);
  EXPECT_EQ(r.chunk_bytes, size_t(1) << 20);
  EXPECT_EQ(r.max_chunks_in_flight, 16);
  EXPECT_DOUBLE_EQ(r.default_timeout_s, 300);
  EXPECT_EQ(r.emulate, EmulateMode::kNone);
  EXPECT_EQ(r.link_events, "");
}

TEST(CommOptions, EnvironmentFillsWhatTheOptionsLeaveOpen) {
  const Environment env = env_of({{env::kRegion, "eu"},
                                  {env::kChecksum, "off"},
                                  {env::kChunkBytes, "65536"},
                                  {env::kCommTimeout, "2.5"},
                                  {env::kEmulate, "netns"},
                                  {env::kTopology, "/no/such/topology.json"},
                                  {env::kLinkEvents, "a>b@1+2=0"}});
  EXPECT_EQ(resolve_region({}, env), "eu");
  const ResolvedOptions r = resolve_options({}, env);
  EXPECT_FALSE(r.checksum);
  EXPECT_EQ(r.chunk_bytes, 65536u);
  EXPECT_DOUBLE_EQ(r.default_timeout_s, 2.5);
  EXPECT_EQ(r.emulate, EmulateMode::kLatencyOnly);
  EXPECT_EQ(r.topology_file, "/no/such/topology.json");
  EXPECT_EQ(r.link_events, "a>b@1+2=0");
  EXPECT_EQ(r.link_events_what, env::kLinkEvents);
}

TEST(CommOptions, AnOptionThatIsSetWinsOverTheEnvironment) {
  const Environment env = env_of({{env::kRegion, "eu"},
                                  {env::kChecksum, "0"},
                                  {env::kChunkBytes, "not a number"},
                                  {env::kCommTimeout, "-1"},
                                  {env::kEmulate, "wormhole"},
                                  {env::kLinkEvents, "also not parsed"},
                                  {env::kAuthKeyFile, "/no/such/key"}});
  CommOptions o;
  o.region = "us";
  o.checksum = true;
  o.chunk_bytes = 4096;
  o.default_timeout_s = 7;
  o.emulate = EmulateMode::kSoftware;
  o.link_events = "";
  o.auth_key = std::vector<uint8_t>{};  // empty: no key, whatever the environment says
  EXPECT_EQ(resolve_region(o, env), "us");
  const ResolvedOptions r = resolve_options(o, env);
  EXPECT_TRUE(r.checksum);
  EXPECT_EQ(r.chunk_bytes, 4096u);
  EXPECT_DOUBLE_EQ(r.default_timeout_s, 7);
  EXPECT_EQ(r.emulate, EmulateMode::kSoftware);
  EXPECT_EQ(r.link_events, "");
  EXPECT_EQ(r.link_events_what, "link_events");
  EXPECT_EQ(r.auth, nullptr);
}

TEST(CommOptions, AKeyInTheOptionsIsUsed) {
  CommOptions o;
  o.auth_key = std::vector<uint8_t>(32, 0x42);
  EXPECT_NE(resolve_options(o, kEmpty).auth, nullptr);
}

TEST(CommOptions, ChunksAreCappedAtOneGibibyte) {
  CommOptions o;
  o.chunk_bytes = size_t(8) << 30;
  EXPECT_EQ(resolve_options(o, kEmpty).chunk_bytes, size_t(1) << 30);
}

TEST(CommOptions, BadEnvironmentValuesAreRefusedNamingTheVariable) {
  const struct {
    const char* name;
    const char* value;
  } cases[] = {
      {env::kChunkBytes, "lots"}, {env::kChunkBytes, "0"},      {env::kChunkBytes, "12k"},
      {env::kCommTimeout, "0"},   {env::kCommTimeout, "soon"},  {env::kCommTimeout, "-3"},
      {env::kEmulate, "wormhole"},
  };
  for (const auto& c : cases) {
    const std::string error = input_error_of({}, env_of({{c.name, c.value}}));
    CONTAINS(error, c.name);
    CONTAINS(error, c.value);
  }
}

TEST(CommOptions, AKeyWithoutChecksumsIsRefused) {
  CommOptions o;
  o.auth_key = std::vector<uint8_t>(32, 0x42);
  CONTAINS(input_error_of(o, env_of({{env::kChecksum, "0"}})), env::kChecksum);
}

TEST(CommOptions, EmulationWithoutTopologyOrLinkIsRefusedNamingTheVariable) {
  CommOptions o;
  o.emulate = EmulateMode::kSoftware;
  try {
    make_emulated_links(resolve_options(o, kEmpty), {"a", "b"});
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    CONTAINS(e.what(), env::kTopology);
  }
}

TEST(CommOptions, AUniformLinkJoinsEveryRegionOfTheJob) {
  CommOptions o;
  o.emulate = EmulateMode::kSoftware;
  o.emulate_link = parse_link_rate("1gbit,1ms");
  const EmulatedLinks links = make_emulated_links(resolve_options(o, kEmpty), {"a", "b", "a"});
  ASSERT_NE(links.shaper, nullptr);
  EXPECT_EQ(links.region_index, (std::vector<int>{0, 1, 0}));
  EXPECT_TRUE(make_emulated_links(resolve_options({}, kEmpty), {"a", "b"}).region_index.empty());
}

TEST(CommOptions, LinkEventsNeedEmulationAndNameTheirSource) {
  const ResolvedOptions from_env = resolve_options({}, env_of({{env::kLinkEvents, "a>b@1+2=0"}}));
  try {
    add_link_events(from_env, nullptr, 0);
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    CONTAINS(e.what(), env::kLinkEvents);
  }
  CommOptions o;
  o.link_events = "a>b@1+2=0";
  try {
    add_link_events(resolve_options(o, kEmpty), nullptr, 0);
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    CONTAINS(e.what(), "link_events");
  }
  add_link_events(resolve_options({}, kEmpty), nullptr, 0);  // none: nothing to add
}
