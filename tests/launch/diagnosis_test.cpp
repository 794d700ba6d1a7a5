// The supervisor's reading of failure records (launch/supervise.h: diagnose), from made-up
// records: who is dead, who is hung, and which region is partitioned when links are cut.
#include "launch_test_util.h"

#include <geopipe/launch/supervise.h>

#include <gtest/gtest.h>

namespace geopipe::launch {
namespace {

using testing::make_plan;

// One rank per region in pipeline order a, b, c, d (ranks 0..3).
Plan line_of_four() {
  const Topology t = load_topology(testing::src("examples/topologies/local4.json"));
  return make_plan(t, {{"us-east", 1}, {"us-west", 1}, {"eu-central", 1}, {"ap-southeast", 1}});
}

FailureRecord waited(int rank, int peer, const std::string& kind = "timeout", double waited_s = 5) {
  FailureRecord r;
  r.rank = rank;
  r.kind = kind;
  r.peer = peer;
  r.waited_s = waited_s;
  r.message = "rank " + std::to_string(rank) + " waited for rank " + std::to_string(peer);
  return r;
}

// The last region's links cut: ranks 2 and 3 wait for each other, ranks 0 and 1 wait down the
// pipeline. The one cut link (eu-central <-> ap-southeast) has ap-southeast alone on its far side.
TEST(Diagnosis, LastRegionCutOffIsPartitionedNotItsNeighbour) {
  const Diagnosis d = diagnose(line_of_four(), {waited(0, 1, "terminated"), waited(1, 2, "terminated"), waited(2, 3),
                                                waited(3, 2, "terminated")});
  EXPECT_EQ(d.lost_regions, std::vector<std::string>{"ap-southeast"});
  EXPECT_EQ(d.suspects, std::set<int>{3});
  EXPECT_NE(d.cause.find("rank 2 timed out waiting for rank 3, which waited for rank 2 (waits in a ring across regions: "
                         "cut link(s) ap-southeast <-> eu-central)"),
            std::string::npos)
      << d.cause;
  EXPECT_NE(d.cause.find("links cut: region ap-southeast is partitioned from the others"), std::string::npos) << d.cause;
  EXPECT_EQ(d.cause.find("hung"), std::string::npos) << d.cause;
}

// A middle region cut on both sides (two replicas per stage, so its two ranks each wait across
// one of its links): it is the one region at an end of every cut link.
TEST(Diagnosis, RegionAtTheEndOfEveryCutLinkIsPartitioned) {
  const Topology t = load_topology(testing::src("examples/topologies/local4.json"));
  const Plan plan = make_plan(t, {{"us-east", 2}, {"us-west", 2}, {"eu-central", 2}});  // ranks 0-1, 2-3, 4-5
  const Diagnosis d = diagnose(plan, {waited(0, 2), waited(2, 0, "terminated"), waited(5, 3), waited(3, 5, "terminated"),
                                      waited(1, 3, "terminated"), waited(4, 2, "terminated")});
  EXPECT_EQ(d.lost_regions, std::vector<std::string>{"us-west"});
  EXPECT_EQ(d.suspects, (std::set<int>{2, 3}));
  EXPECT_NE(d.cause.find("links cut: region us-west is partitioned from the others"), std::string::npos) << d.cause;
}

// One cut link: its downstream end. Cutting region X leaves the ring X-1 <-> X, every stage after
// it waiting upstream: the records of a cut of us-west (stage 1) in a line of four name us-west,
// not us-east, although us-east's side is the smaller; rings with no region in common name none.
TEST(Diagnosis, OneCutLinkBlamesItsDownstreamEndAndSeparateRingsBlameNone) {
  const Diagnosis middle = diagnose(line_of_four(), {waited(0, 1), waited(1, 0, "terminated"),
                                                     waited(2, 1, "terminated"), waited(3, 2, "terminated")});
  EXPECT_EQ(middle.lost_regions, std::vector<std::string>{"us-west"});
  EXPECT_NE(middle.cause.find("links cut: region us-west is partitioned from the others"), std::string::npos)
      << middle.cause;
  const Topology t = load_topology(testing::src("examples/topologies/local4.json"));
  const Diagnosis two = diagnose(make_plan(t, {{"us-east", 1}, {"us-west", 1}}), {waited(0, 1), waited(1, 0)});
  EXPECT_EQ(two.lost_regions, std::vector<std::string>{"us-west"});
  const Diagnosis apart = diagnose(line_of_four(), {waited(0, 1), waited(1, 0), waited(2, 3), waited(3, 2, "terminated")});
  EXPECT_TRUE(apart.lost_regions.empty());
  EXPECT_NE(apart.cause.find("links cut (ap-southeast <-> eu-central, us-east <-> us-west): no one region is partitioned"),
            std::string::npos)
      << apart.cause;
}

// A hung rank is still the end of a chain that does not come back.
TEST(Diagnosis, ChainEndingAtARankThatWasNotWaitingNamesItHung) {
  FailureRecord stopped = waited(1, -1, "terminated", 0);
  const Diagnosis d = diagnose(line_of_four(), {waited(0, 1), stopped, waited(2, 1, "terminated"), waited(3, 2, "terminated")});
  EXPECT_EQ(d.suspects, std::set<int>{1});
  EXPECT_EQ(d.lost_regions, std::vector<std::string>{"us-west"});
  EXPECT_NE(d.cause.find("rank 0 timed out waiting for rank 1 (which was not waiting: hung)"), std::string::npos) << d.cause;
}

// Ranks of one region waiting for each other blame no link and no region.
TEST(Diagnosis, RingInsideOneRegionNamesNoOne) {
  const Topology t = load_topology(testing::src("examples/topologies/local4.json"));
  const Plan plan = make_plan(t, {{"us-east", 2}, {"us-west", 1}});
  const Diagnosis d = diagnose(plan, {waited(0, 1), waited(1, 0, "terminated"), waited(2, 0, "terminated")});
  EXPECT_TRUE(d.suspects.empty());
  EXPECT_TRUE(d.lost_regions.empty());
  EXPECT_NE(d.cause.find("rank 0 timed out waiting for rank 1, which waited for rank 0 (a ring of waits: the failed "
                         "rank is not known)"),
            std::string::npos)
      << d.cause;
}

}  // namespace
}  // namespace geopipe::launch

namespace geopipe::launch {
namespace {

// Two hosts in us-east (one replica of stage 0 each), one in us-west: h2 dying loses the host,
// not the region; us-west dying whole is a lost region, and its host is not listed apart.
TEST(Diagnosis, HostWhoseEveryRankFailedIsLostWhileItsRegionKeepsItsOtherHosts) {
  const Topology t = load_topology(testing::src("examples/topologies/local4.json"));
  const Plan plan = make_plan(t, {{"us-east", 2}, {"us-west", 2}});  // ranks 0-1 us-east, 2-3 us-west
  Placement placed;
  placed.ranks = {{0, 0, "us-east", "h1"}, {1, 0, "us-east", "h2"}, {2, 1, "us-west", "h3"}, {3, 1, "us-west", "h3"}};
  placed.hosts = {{"h1", "us-east", 1}, {"h2", "us-east", 1}, {"h3", "us-west", 2}};
  const Diagnosis d = diagnose(plan, {waited(0, 1, "terminated"), waited(2, 0, "terminated"), waited(3, 1, "terminated")},
                               &placed);
  EXPECT_TRUE(d.lost_regions.empty());
  ASSERT_EQ(d.lost_hosts.size(), 1u);
  EXPECT_EQ(d.lost_hosts[0].host, "h2");
  EXPECT_EQ(d.lost_hosts[0].region, "us-east");
  EXPECT_EQ(d.lost_hosts[0].slots, 1);
  EXPECT_NE(d.cause.find("host h2 of region us-east is lost (every rank it ran failed: 1); the region keeps its other "
                         "hosts"),
            std::string::npos)
      << d.cause;
  const Diagnosis region = diagnose(plan, {waited(0, 2, "terminated"), waited(1, 3, "terminated")}, &placed);
  EXPECT_EQ(region.lost_regions, std::vector<std::string>{"us-west"});
  EXPECT_TRUE(region.lost_hosts.empty());
}

TEST(WithoutHosts, DropsTheHostAndItsGpusAndRefusesAHostTheRegionLacks) {
  Topology t = load_topology(testing::src("examples/topologies/local4.json"));
  Region& east = t.regions[static_cast<size_t>(t.region_index("us-east"))];
  east.hosts = {"h1", "h2"};
  east.gpus = 8;  // 4 a host; h2 ran only 2 ranks, but the region loses the 4 GPUs it offered
  const Topology left = without_hosts(t, {{"us-east", "h2", 2}});
  const Region& after = left.regions[static_cast<size_t>(left.region_index("us-east"))];
  EXPECT_EQ(after.hosts, std::vector<std::string>{"h1"});
  EXPECT_EQ(after.gpus, 4);
  east.gpus = 5;  // uneven: h1 offers 3, h2 2
  EXPECT_EQ(without_hosts(t, {{"us-east", "h1", 1}}).regions[static_cast<size_t>(t.region_index("us-east"))].gpus, 2);
  try {
    without_hosts(t, {{"us-east", "h9", 1}});
    ADD_FAILURE() << "dropped a host the region does not have";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("region us-east has no host h9 to drop"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace geopipe::launch
