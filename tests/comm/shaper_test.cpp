#include <geopipe/comm/router.h>
#include <geopipe/comm/shaper.h>
#include <geopipe/core/config.h>
#include <geopipe/core/error.h>

#include <gtest/gtest.h>

#include <limits>

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

// ---- scripted link events ------------------------------------------------------------------

TEST(LinkEvents, MessageStartedBeforeAStallFinishesAfterIt) {
  LinkShaper s = two_regions();
  s.add_event(0, 1, 0.005, 1.005, 0.0);  // a -> b stalled for one second from 5 ms
  // 1 MB at 100 MB/s: 0.5 MB leave before the stall, the other 0.5 MB after it, plus 10 ms.
  EXPECT_NEAR(s.schedule(0, 1, 1000000, 0.0), 1.010 + 0.010, 1e-12);
  // The next message queues behind it; the other direction never noticed.
  EXPECT_NEAR(s.schedule(0, 1, 100000, 0.5), 1.010 + 0.001 + 0.010, 1e-12);
  EXPECT_DOUBLE_EQ(s.schedule(1, 0, 1000000, 0.5), 0.5 + 0.020 + 0.020);
}

TEST(LinkEvents, NothingIsDeliveredDuringAStallNotEvenAnEmptyMessage) {
  LinkShaper s = two_regions();
  s.add_event(0, 1, 2.0, 3.0, 0.0);
  EXPECT_DOUBLE_EQ(s.schedule(0, 1, 0, 2.5), 3.0 + 0.010);
  EXPECT_DOUBLE_EQ(s.schedule(0, 1, 100000, 2.6), 3.0 + 0.001 + 0.010);
}

TEST(LinkEvents, SlowdownAppliesOnlyDuringTheEventThenTheTopologyRateReturns) {
  LinkShaper s = two_regions();
  s.add_event(0, 1, 0.0, 0.05, 10e6);  // 10 MB/s for 50 ms
  // 0.5 MB at 10 MB/s in the first 50 ms, the remaining 0.5 MB at 100 MB/s (5 ms).
  EXPECT_NEAR(s.schedule(0, 1, 1000000, 0.0), 0.055 + 0.010, 1e-12);
  // Well after the event: the topology's 100 MB/s.
  EXPECT_NEAR(s.schedule(0, 1, 1000000, 5.0), 5.010 + 0.010, 1e-12);
}

TEST(LinkEvents, SeveralEventsOnOneLinkAddUpPiecewise) {
  LinkShaper s = two_regions();
  s.add_event(0, 1, 0.02, 0.03, 0.0);     // stall 10 ms
  s.add_event(0, 1, 0.0, 0.01, 50e6);     // half rate first (added out of order)
  // 0..10 ms at 50 MB/s: 0.5 MB; 10..20 ms at 100 MB/s: 1 MB; stall; then 0.5 MB in 5 ms.
  EXPECT_NEAR(s.schedule(0, 1, 2000000, 0.0), 0.035 + 0.010, 1e-12);
}

TEST(LinkEvents, AFasterRateOnAnUnlimitedLinkShapesIt) {
  EXPECT_DOUBLE_EQ(transmit_end({}, 0.0, 1.0, 1e9), 1.0);  // unlimited: instant
  EXPECT_NEAR(transmit_end({{1.0, 2.0, 1e6}}, 0.0, 1.5, 1e6), 2.0, 1e-12);  // 0.5 MB, rest instant
}

TEST(LinkEvents, OverlappingEventsOnOneLinkAreRejected) {
  LinkShaper s = two_regions();
  s.add_event(0, 1, 1.0, 2.0, 0.0);
  EXPECT_THROW(s.add_event(0, 1, 1.5, 2.5, 0.0), Error);
  EXPECT_NO_THROW(s.add_event(0, 1, 2.0, 2.5, 0.0));  // touching is fine
  EXPECT_NO_THROW(s.add_event(1, 0, 1.5, 2.5, 0.0));  // another link
  EXPECT_THROW(s.add_event(0, 1, 3.0, 3.0, 0.0), Error);
}

TEST(LinkEvents, ParsesTheEnvironmentSyntax) {
  const auto events = parse_link_events("a>b@2+1.5=0; b>a@0.25+10=20mbit;;us-east>eu-central@0+1=500kbit");
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].from, "a");
  EXPECT_EQ(events[0].to, "b");
  EXPECT_DOUBLE_EQ(events[0].start_s, 2.0);
  EXPECT_DOUBLE_EQ(events[0].duration_s, 1.5);
  EXPECT_DOUBLE_EQ(events[0].bytes_per_s, 0.0);
  EXPECT_DOUBLE_EQ(events[1].start_s, 0.25);
  EXPECT_DOUBLE_EQ(events[1].bytes_per_s, 2.5e6);
  EXPECT_EQ(events[2].from, "us-east");
  EXPECT_EQ(events[2].to, "eu-central");
  EXPECT_DOUBLE_EQ(events[2].bytes_per_s, 62500.0);
  EXPECT_TRUE(parse_link_events("").empty());
}

TEST(LinkEvents, MalformedEventIsAnInputErrorNamingTheVariableAndTheEvent) {
  for (const char* bad : {"a>b@2+1.5", "a-b@2+1=0", ">b@1+1=0", "a>b@x+1=0", "a>b@-1+1=0",
                          "a>b@1+0=0", "a>b@1+2=fast", "a>b@1+2=20mb", "a>b@1+2=-3mbit"}) {
    try {
      parse_link_events(std::string("a>b@0+1=0;") + bad);
      FAIL() << bad;
    } catch (const InputError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("GEOPIPE_LINK_EVENTS"), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::string("'") + bad + "'"), std::string::npos) << msg;
    }
  }
}

TEST(LinkEvents, UnknownRegionOrMissingLinkNamesTheEvent) {
  std::vector<std::optional<LinkRate>> links(4);
  links[1] = LinkRate{1e6, 0.0};  // x -> y only
  LinkShaper s(2, links, {"x", "y"});
  EXPECT_NO_THROW(s.add_events(parse_link_events("x>y@1+1=0"), 100.0));
  EXPECT_DOUBLE_EQ(s.schedule(0, 1, 0, 101.0), 102.0);  // timed from the origin
  for (const char* bad : {"x>mars@0+1=0", "y>x@0+1=0", "x>y@1.5+1=0"}) {
    try {
      s.add_events(parse_link_events(bad), 100.0);
      FAIL() << bad;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos) << e.what();
    }
  }
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

TEST(LinkEvents, StepEventsSlowTheLinkFromTheirFirstStepToTheirLast) {
  auto events = parse_link_events("a>b@s5+10=10mbit");  // 10 Mbit/s = 1.25 MB/s
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].in_steps);
  EXPECT_EQ(events[0].start_step, 5);
  EXPECT_EQ(events[0].steps, 10);
  LinkShaper s = two_regions();
  s.add_events(events, 100.0);  // the origin does not matter to step events
  s.begin_step(4, 1.0);
  EXPECT_DOUBLE_EQ(s.schedule(0, 1, 1000000, 1.0), 1.0 + 0.010 + 0.010);  // step 4: 100 MB/s
  s.begin_step(5, 2.0);
  EXPECT_DOUBLE_EQ(s.schedule(0, 1, 1250000, 2.0), 2.0 + 1.0 + 0.010);    // steps 5-14: 1.25 MB/s
  EXPECT_DOUBLE_EQ(s.schedule(1, 0, 500000, 2.0), 2.0 + 0.010 + 0.020);   // the other direction keeps its rate
  s.begin_step(15, 10.0);
  EXPECT_DOUBLE_EQ(s.schedule(0, 1, 1000000, 10.0), 10.0 + 0.010 + 0.010);  // step 15: restored
  s.begin_step(15, 10.0);  // hearing a step twice changes nothing
  EXPECT_DOUBLE_EQ(s.schedule(0, 1, 1000000, 11.0), 11.0 + 0.010 + 0.010);
}

TEST(LinkEvents, StepEventsMustMoveDataAndCountWholeSteps) {
  for (const char* bad : {"a>b@s5+10=0", "a>b@s0+3=1mbit", "a>b@s2+1.5=1mbit", "a>b@sx+2=1mbit"}) {
    try {
      parse_link_events(bad, "GEOPIPE_LINK_EVENTS");
      ADD_FAILURE() << bad << " accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
  try {
    parse_link_events("a>b@s5+10=0");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("a stall (rate 0) must be timed in seconds"), std::string::npos) << e.what();
  }
}

TEST(LinkEvents, AnEventMaySetTheLatencyWhileItLasts) {
  auto events = parse_link_events("a>b@1+2=100mbit,80ms;b>a@s3+1=400mbit,0.5ms");
  ASSERT_EQ(events.size(), 2u);
  EXPECT_DOUBLE_EQ(events[0].latency_s, 0.080);
  EXPECT_DOUBLE_EQ(events[1].latency_s, 0.0005);
  LinkShaper s = two_regions();
  s.add_events(events, 0.0);
  // 1.25 MB at 12.5 MB/s from t = 1.5 leaves at 1.6, inside the event: delivered 80 ms later.
  EXPECT_DOUBLE_EQ(s.schedule(0, 1, 1250000, 1.5), 1.6 + 0.080);
  // After the event: the link's 100 MB/s and 10 ms again.
  EXPECT_DOUBLE_EQ(s.schedule(0, 1, 1000000, 4.0), 4.0 + 0.010 + 0.010);
  s.begin_step(3, 10.0);  // the step event: 50 MB/s -> 50 MB/s (400 mbit), 20 ms -> 0.5 ms
  EXPECT_DOUBLE_EQ(s.schedule(1, 0, 500000, 10.0), 10.0 + 0.010 + 0.0005);
  EXPECT_THROW(parse_link_events("a>b@1+2=100mbit,80parsecs"), InputError);
}

// A cut region (GEOPIPE_TEST_FAULT cut): its links never deliver again, both ways, whatever was
// scripted for later; links elsewhere and inside the region are untouched.
TEST(LinkShaper, CutRegionHoldsItsLinksBothWaysForGoodAndOnlyThose) {
  std::vector<std::optional<LinkRate>> links(9, LinkRate{100e6, 0.010});
  LinkShaper s(3, links, {"a", "b", "c"});
  s.add_events(parse_link_events("c>a@s20+5=2mbit;a>b@s20+5=2mbit"), 0.0);
  // Submitted before the cut: its delivery time was fixed then (a packet already on the wire).
  EXPECT_DOUBLE_EQ(s.schedule(2, 0, 1000000, 1.0), 1.0 + 0.010 + 0.010);
  s.cut_region(2, 1.005);
  constexpr double kNever = std::numeric_limits<double>::infinity();
  EXPECT_EQ(s.schedule(0, 2, 0, 2.0), kNever);
  EXPECT_EQ(s.schedule(2, 1, 1000, 2.0), kNever);
  EXPECT_EQ(s.schedule(2, 0, 1000, 2.0), kNever);
  EXPECT_EQ(s.link_free_at(2, 0, 2.0), kNever);
  s.begin_step(20, 3.0);                          // the scripted slowdown of c -> a stays cut
  EXPECT_EQ(s.schedule(2, 0, 1000, 4.0), kNever);
  EXPECT_DOUBLE_EQ(s.schedule(0, 1, 250, 4.0), 4.0 + 250 / 250e3 + 0.010);  // a -> b: 2 mbit
  EXPECT_DOUBLE_EQ(s.schedule(1, 0, 1000000, 4.0), 4.0 + 0.010 + 0.010);
  EXPECT_DOUBLE_EQ(s.schedule(2, 2, 1000000, 4.0), 4.0 + 0.010 + 0.010);
  EXPECT_THROW(s.cut_region(3, 5.0), Error);
}
