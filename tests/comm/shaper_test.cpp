#include <geopipe/comm/router.h>
#include <geopipe/comm/shaper.h>
#include <geopipe/core/config.h>
#include <geopipe/core/error.h>

#include <gtest/gtest.h>

using namespace geopipe;
using namespace geopipe::comm;

namespace {
std::string src(const std::string& rel) { return std::string(GEOPIPE_SOURCE_DIR) + "/" + rel; }

// Two regions, 100 MB/s and 10 ms from 0 to 1, 50 MB/s and 20 ms back.
LinkShaper two_regions() {
  std::vector<std::optional<LinkRate>> links(4);
  links[0] = LinkRate{};
  links[3] = LinkRate{};
  links[1] = LinkRate{100e6, 0.010};
  links[2] = LinkRate{50e6, 0.020};
  return LinkShaper(2, links, {"a", "b"});
}
}  // namespace

TEST(LinkShaper, DeliversAfterSerialisationPlusLatency) {
  LinkShaper s = two_regions();
  // 1 MB at 100 MB/s = 10 ms, plus 10 ms latency.
  EXPECT_DOUBLE_EQ(s.schedule(0, 1, 1000000, 5.0), 5.0 + 0.010 + 0.010);
}

TEST(LinkShaper, QueuesMessagesFifoPerLink) {
  LinkShaper s = two_regions();
  const double first = s.schedule(0, 1, 1000000, 0.0);   // link busy until 0.010
  const double second = s.schedule(0, 1, 500000, 0.002); // starts at 0.010, busy until 0.015
  EXPECT_DOUBLE_EQ(first, 0.020);
  EXPECT_DOUBLE_EQ(second, 0.015 + 0.010);
  // After the link drained, a new message starts at its own submit time.
  EXPECT_DOUBLE_EQ(s.schedule(0, 1, 100000, 1.0), 1.0 + 0.001 + 0.010);
}

TEST(LinkShaper, DirectionsAreIndependentLinks) {
  LinkShaper s = two_regions();
  s.schedule(0, 1, 100000000, 0.0);  // a -> b busy for one second
  EXPECT_DOUBLE_EQ(s.schedule(1, 0, 1000000, 0.0), 0.020 + 0.020);  // b -> a unaffected
  EXPECT_DOUBLE_EQ(s.link_free_at(0, 1, 0.5), 1.0);
}

TEST(LinkShaper, LongRunRateEqualsLinkBandwidth) {
  LinkShaper s = two_regions();
  double delivered = 0;
  for (int i = 0; i < 1000; ++i) delivered = s.schedule(0, 1, 65536, 0.0);
  const double expected = 1000 * 65536 / 100e6 + 0.010;
  EXPECT_NEAR(delivered, expected, 1e-9);
}

TEST(LinkShaper, LatencyOnlyModeIgnoresBandwidth) {
  Topology t = load_topology(src("examples/topologies/local4.json"));
  LinkShaper s = LinkShaper::from_topology(t, EmulateMode::kLatencyOnly);
  const int east = s.region_index("us-east"), asia = s.region_index("ap-southeast");
  ASSERT_GE(east, 0);
  ASSERT_GE(asia, 0);
  EXPECT_DOUBLE_EQ(s.schedule(east, asia, 1 << 30, 2.0), 2.0 + 0.040);
}

TEST(LinkShaper, TopologyGivesEveryDirectedLinkAndIntraRegion) {
  Topology t = load_topology(src("examples/topologies/local4.json"));
  LinkShaper s = LinkShaper::from_topology(t, EmulateMode::kSoftware);
  const int east = s.region_index("us-east"), west = s.region_index("us-west");
  EXPECT_DOUBLE_EQ(s.link(east, west).bytes_per_s, 0.4e9 / 8);
  EXPECT_DOUBLE_EQ(s.link(west, east).latency_s, 0.005);
  EXPECT_DOUBLE_EQ(s.link(east, east).bytes_per_s, 10e9 / 8);
  EXPECT_EQ(s.region_index("mars"), -1);
}

TEST(LinkShaper, SchedulingOnAMissingLinkNamesBothRegions) {
  std::vector<std::optional<LinkRate>> links(4);
  links[0] = LinkRate{};
  LinkShaper s(2, links, {"x", "y"});
  try {
    s.schedule(0, 1, 10, 0.0);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("from region x to region y"), std::string::npos) << e.what();
  }
}

TEST(LinkShaper, UniformLinkJoinsEveryPairOfDifferentRegions) {
  LinkShaper s = LinkShaper::uniform({"p", "q", "r"}, LinkRate{25e6, 0.02});
  EXPECT_DOUBLE_EQ(s.schedule(0, 2, 250000, 0.0), 0.01 + 0.02);
  EXPECT_DOUBLE_EQ(s.schedule(1, 1, 250000, 0.0), 0.0);  // inside a region: free
}

TEST(LinkRateText, ParsesTcStyleRatesAndLatencies) {
  LinkRate r = parse_link_rate("200mbit,20ms");
  EXPECT_DOUBLE_EQ(r.bytes_per_s, 25e6);
  EXPECT_DOUBLE_EQ(r.latency_s, 0.020);
  r = parse_link_rate("1gbit,500us");
  EXPECT_DOUBLE_EQ(r.bytes_per_s, 125e6);
  EXPECT_DOUBLE_EQ(r.latency_s, 0.0005);
  EXPECT_DOUBLE_EQ(parse_link_rate("800kbit").latency_s, 0.0);
}

TEST(LinkRateText, RejectsUnknownUnitsNamingTheFlag) {
  for (const char* bad : {"200mb,20ms", "fast,20ms", "200mbit,20 parsecs", "-5mbit,1ms"}) {
    try {
      parse_link_rate(bad, "--emulate-link");
      FAIL() << bad;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("--emulate-link"), std::string::npos) << e.what();
    }
  }
}

TEST(EmulateMode, ParsesTheLaunchEnvironmentValues) {
  EXPECT_EQ(parse_emulate_mode(""), EmulateMode::kNone);
  EXPECT_EQ(parse_emulate_mode("none"), EmulateMode::kNone);
  EXPECT_EQ(parse_emulate_mode("software"), EmulateMode::kSoftware);
  EXPECT_EQ(parse_emulate_mode("netns"), EmulateMode::kLatencyOnly);
  EXPECT_FALSE(parse_emulate_mode("tc"));
}

TEST(Router, NcclOnlyForGpuPeersOfTheSameRegion) {
  EXPECT_EQ(choose_backend("a", "a", true, true), Backend::kNccl);
  EXPECT_EQ(choose_backend("a", "b", true, true), Backend::kMpi);   // across regions
  EXPECT_EQ(choose_backend("a", "a", false, true), Backend::kMpi);  // CPU tensors
  EXPECT_EQ(choose_backend("a", "a", true, false), Backend::kMpi);  // no NCCL / no GPU
}
