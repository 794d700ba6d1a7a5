// Placement: which host and region each rank gets, and the refusals for plans that do not fit.
#include <geopipe/core/error.h>
#include <geopipe/launch/placement.h>

#include "launch_test_util.h"

#include <gtest/gtest.h>

namespace geopipe::launch {
namespace {

using testing::aws6_with_hosts;
using testing::local4;
using testing::make_plan;

std::string input_error_text(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

TEST(LaunchPlacement, Local4PlanPutsRankRInItsStageRegionOnLocalhost) {
  Topology t = local4();
  Plan plan = make_plan(t, {{"us-east", 1}, {"us-west", 1}, {"eu-central", 1}, {"ap-southeast", 1}});
  Placement p = place_plan(plan, "plan.json", t, make_inventory(t, Emulation::kSoftware));
  ASSERT_EQ(p.world_size(), 4);
  const char* regions[] = {"us-east", "us-west", "eu-central", "ap-southeast"};
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(p.ranks[r].rank, r);
    EXPECT_EQ(p.ranks[r].stage, r);
    EXPECT_EQ(p.ranks[r].region, regions[r]);
    EXPECT_EQ(p.ranks[r].host, "localhost");
  }
  ASSERT_EQ(p.hosts.size(), 1u);  // one hostfile line for this machine
  EXPECT_EQ(p.hosts[0].slots, 4);
  EXPECT_EQ(p.regions_used(), std::vector<std::string>(regions, regions + 4));
}

TEST(LaunchPlacement, ShippedLocal4PlanFileIsPlacedInStageOrder) {
  Topology t = local4();
  Plan plan = load_plan(testing::src("tests/data/good/plan_local4_manual.json"));
  plan.provenance.topology_hash = t.hash();  // the fixture was written before the topology hash
  Placement p = place_plan(plan, "plan_local4_manual.json", t, make_inventory(t, Emulation::kNone));
  ASSERT_EQ(p.world_size(), 4);
  EXPECT_EQ(p.ranks[3].region, "ap-southeast");
}

TEST(LaunchPlacement, Aws6StageRanksFillOneHostBeforeTheNext) {
  Topology t = aws6_with_hosts();
  // Oregon's two hosts have 32 slots each: 40 ranks there take all of host 1 and 8 of host 2.
  Plan plan = make_plan(t, {{"us-west-2-oregon", 40}, {"us-east-1-virginia", 2}, {"eu-central-1-frankfurt", 1}});
  Placement p = place_plan(plan, "plan.json", t, make_inventory(t, Emulation::kNone));
  ASSERT_EQ(p.world_size(), 43);
  for (int r = 0; r < 32; ++r) EXPECT_EQ(p.ranks[r].host, "10.0.1.1") << r;
  for (int r = 32; r < 40; ++r) EXPECT_EQ(p.ranks[r].host, "10.0.1.2") << r;
  EXPECT_EQ(p.ranks[40].host, "10.0.2.1");
  EXPECT_EQ(p.ranks[40].stage, 1);
  EXPECT_EQ(p.ranks[42].region, "eu-central-1-frankfurt");
  ASSERT_EQ(p.hosts.size(), 4u);
  EXPECT_EQ(p.hosts[0].slots, 32);
  EXPECT_EQ(p.hosts[1].slots, 8);
  EXPECT_EQ(p.hosts[2].slots, 2);
}

TEST(LaunchPlacement, HostfileSlotsDecideHowRanksSpreadOverHosts) {
  Topology t = aws6_with_hosts();
  auto hostfile = parse_hostfile("# two small hosts\n10.0.1.1 slots=1\n10.0.1.2 slots=2 max_slots=4\n10.0.2.1\n",
                                 "hosts.txt");
  Plan plan = make_plan(t, {{"us-west-2-oregon", 3}, {"us-east-1-virginia", 1}});
  Placement p = place_plan(plan, "plan.json", t, make_inventory(t, Emulation::kNone, hostfile, "hosts.txt"));
  EXPECT_EQ(p.ranks[0].host, "10.0.1.1");
  EXPECT_EQ(p.ranks[1].host, "10.0.1.2");
  EXPECT_EQ(p.ranks[2].host, "10.0.1.2");
  EXPECT_EQ(p.ranks[3].host, "10.0.2.1");
}

TEST(LaunchPlacement, RefusesPlanWithMoreRanksThanTheRegionHasGpus) {
  Topology t = local4();
  Plan plan = make_plan(t, {{"us-east", 1}, {"us-west", 2}});
  std::string msg = input_error_text([&] { place_plan(plan, "plan.json", t, make_inventory(t, Emulation::kSoftware)); });
  EXPECT_NE(msg.find("region \"us-west\" is short of GPUs"), std::string::npos) << msg;
  EXPECT_NE(msg.find("places 2 ranks there but it has 1 GPU"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("us-east"), std::string::npos) << "only the short region is named: " << msg;
}

TEST(LaunchPlacement, RefusesPlanWithMoreRanksThanHostfileSlots) {
  Topology t = aws6_with_hosts();
  auto hostfile = parse_hostfile("10.0.1.1 slots=1\n10.0.1.2 slots=1\n10.0.2.1 slots=8\n", "hosts.txt");
  Plan plan = make_plan(t, {{"us-west-2-oregon", 3}, {"us-east-1-virginia", 1}});
  std::string msg = input_error_text(
      [&] { place_plan(plan, "plan.json", t, make_inventory(t, Emulation::kNone, hostfile, "hosts.txt")); });
  EXPECT_NE(msg.find("region \"us-west-2-oregon\" is short of slots: the plan plan.json places 3 ranks there but its "
                     "hosts have 2 slots"),
            std::string::npos)
      << msg;
}

TEST(LaunchPlacement, StageReplicasGoToTheHostsOfTheirStagesRegionInRankOrder) {
  // 2 stages x 2 replicas (the planner numbers a stage's replicas consecutively): Oregon's two
  // hosts have one slot each, so its replicas take one host each; Virginia's share its host.
  Topology t = aws6_with_hosts();
  auto hostfile = parse_hostfile("10.0.1.1 slots=1\n10.0.1.2 slots=1\n10.0.2.1 slots=2\n", "hosts.txt");
  Plan plan = make_plan(t, {{"us-west-2-oregon", 2}, {"us-east-1-virginia", 2}});
  ASSERT_EQ(plan.replicas(), 2);
  Placement p = place_plan(plan, "plan.json", t, make_inventory(t, Emulation::kNone, hostfile, "hosts.txt"));
  ASSERT_EQ(p.world_size(), 4);
  const char* hosts[] = {"10.0.1.1", "10.0.1.2", "10.0.2.1", "10.0.2.1"};
  for (int r = 0; r < 4; ++r) {
    SCOPED_TRACE(r);
    EXPECT_EQ(p.ranks[r].stage, r / 2);
    EXPECT_EQ(p.ranks[r].region, r < 2 ? "us-west-2-oregon" : "us-east-1-virginia");
    EXPECT_EQ(p.ranks[r].host, hosts[r]);
  }
}

TEST(LaunchPlacement, RefusesReplicasTheirRegionsHaveNoGpusFor) {
  Topology t = local4();  // one GPU a region
  Plan plan = make_plan(t, {{"us-east", 2}, {"us-west", 2}});
  std::string msg = input_error_text([&] { place_plan(plan, "plan.json", t, make_inventory(t, Emulation::kSoftware)); });
  EXPECT_NE(msg.find("regions[0] (\"us-east\"): region \"us-east\" is short of GPUs: the plan plan.json places 2 "
                     "ranks there but it has 1 GPU"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("regions[1] (\"us-west\"): region \"us-west\" is short of GPUs: the plan plan.json places 2 "
                     "ranks there but it has 1 GPU"),
            std::string::npos)
      << msg;
}

TEST(LaunchPlacement, RefusesHostMissingFromHostfile) {
  Topology t = aws6_with_hosts();
  auto hostfile = parse_hostfile("10.0.1.1 slots=4\n", "hosts.txt");
  Inventory inv = make_inventory(t, Emulation::kNone, hostfile, "hosts.txt");
  // Regions without a rank need not be in the hostfile; a short one names the missing hosts.
  Placement ok = place_plan(make_plan(t, {{"us-west-2-oregon", 4}}), "plan.json", t, inv);
  EXPECT_EQ(ok.ranks[3].host, "10.0.1.1");
  std::string msg = input_error_text([&] { place_plan(make_plan(t, {{"us-west-2-oregon", 5}}), "plan.json", t, inv); });
  EXPECT_NE(msg.find("short of slots: the plan plan.json places 5 ranks there but its hosts have 4 slots "
                     "(not in the hostfile hosts.txt: 10.0.1.2)"),
            std::string::npos)
      << msg;
}

TEST(LaunchPlacement, RefusesHostThatDoesNotResolve) {
  Topology t = aws6_with_hosts();
  t.regions[2].hosts = {"no-such-host.invalid"};
  std::string msg = input_error_text([&] { make_inventory(t, Emulation::kNone); });
  EXPECT_NE(msg.find("regions[2].hosts[0]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"no-such-host.invalid\" of region \"us-east-2-ohio\" does not resolve"), std::string::npos) << msg;
}

TEST(LaunchPlacement, HostThatDoesNotResolveIsPlacedWithANoteWhenAskedToWarn) {
  Topology t = aws6_with_hosts();
  t.regions[2].hosts = {"no-such-host.invalid"};
  Inventory inv = make_inventory(t, Emulation::kNone, std::nullopt, "", UnresolvedHosts::kWarn);
  ASSERT_EQ(inv.unresolved.size(), 1u);
  EXPECT_EQ(inv.unresolved[0].host, "no-such-host.invalid");
  EXPECT_EQ(inv.unresolved[0].note.path, "regions[2].hosts[0]");
  EXPECT_NE(inv.unresolved[0].note.message.find("\"no-such-host.invalid\" of region \"us-east-2-ohio\" does not "
                                                 "resolve on this machine"),
            std::string::npos)
      << inv.unresolved[0].note.message;
  Placement p = place_plan(make_plan(t, {{"us-east-2-ohio", 2}}), "plan.json", t, inv);
  EXPECT_EQ(p.ranks[1].host, "no-such-host.invalid");
}

TEST(LaunchPlacement, RefusesHostNameThatCouldBreakAGeneratedScriptEvenWhenWarning) {
  for (const std::string bad : {"a b", "x\nsrun evil", "-n", "h;rm", "h'q", ""}) {
    SCOPED_TRACE(bad);
    Topology t = aws6_with_hosts();
    t.regions[1].hosts = {bad};
    std::string msg =
        input_error_text([&] { make_inventory(t, Emulation::kNone, std::nullopt, "", UnresolvedHosts::kWarn); });
    EXPECT_NE(msg.find("regions[1].hosts[0]: host \"" + bad + "\" of region \"us-east-1-virginia\" is not a host name"),
              std::string::npos)
        << msg;
  }
}

TEST(LaunchPlacement, RefusesRegionWithoutHostsOnARealCluster) {
  Topology t = aws6_with_hosts();
  t.regions[5].hosts.clear();
  Plan plan = make_plan(t, {{"us-west-2-oregon", 1}, {"ap-southeast-1-singapore", 1}});
  std::string msg = input_error_text([&] { place_plan(plan, "plan.json", t, make_inventory(t, Emulation::kNone)); });
  EXPECT_NE(msg.find("region \"ap-southeast-1-singapore\" has no hosts"), std::string::npos) << msg;
}

TEST(LaunchPlacement, RefusesPlanForAnotherTopology) {
  Topology t = local4();
  Plan plan = make_plan(t, {{"us-east", 1}});
  plan.provenance.topology_hash = "0123456789abcdef";
  std::string msg = input_error_text([&] { place_plan(plan, "p.json", t, make_inventory(t, Emulation::kSoftware)); });
  EXPECT_NE(msg.find("provenance.topology_hash"), std::string::npos) << msg;
}

TEST(LaunchPlacement, RanksPerRegionStartsKRanksInEveryRegionInTopologyOrder) {
  Topology t = aws6_with_hosts();
  Placement p = place_per_region(t, 2, make_inventory(t, Emulation::kSoftware));
  ASSERT_EQ(p.world_size(), 12);
  for (int r = 0; r < 12; ++r) {
    EXPECT_EQ(p.ranks[r].region, t.regions[r / 2].name);
    EXPECT_EQ(p.ranks[r].stage, -1);
    EXPECT_EQ(p.ranks[r].host, "localhost");  // emulated: the topology's hosts are ignored
  }
  std::string msg = input_error_text([&] { place_per_region(local4(), 2, make_inventory(local4(), Emulation::kSoftware)); });
  EXPECT_NE(msg.find("short of GPUs: --ranks-per-region 2 places 2 ranks"), std::string::npos) << msg;
}

TEST(LaunchPlacement, HostfileParserNamesTheBadLine) {
  std::string msg = input_error_text([] { parse_hostfile("a slots=2\nb slots=zero\nc cpus=3\na\n", "h.txt"); });
  EXPECT_NE(msg.find("h.txt: line 2: slots must be a positive integer, got \"zero\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("h.txt: line 3: expected `host [slots=N] [max_slots=M]`"), std::string::npos) << msg;
  EXPECT_NE(msg.find("h.txt: line 4: host \"a\" is listed twice"), std::string::npos) << msg;
  EXPECT_NE(input_error_text([] { parse_hostfile("# nothing\n", "e.txt"); }).find("names no host"), std::string::npos);
}

TEST(LaunchPlacement, HostfileWithEmulationIsRefused) {
  Topology t = local4();
  std::vector<HostfileEntry> hf{{"10.0.0.1", 4}};
  std::string msg = input_error_text([&] { make_inventory(t, Emulation::kSoftware, hf, "h.txt"); });
  EXPECT_NE(msg.find("cannot be used with --emulate software"), std::string::npos) << msg;
}

TEST(LaunchPlacement, EmulationNamesRoundTrip) {
  for (Emulation e : {Emulation::kNone, Emulation::kSoftware, Emulation::kNetns})
    EXPECT_EQ(parse_emulation(emulation_name(e)), e);
  EXPECT_FALSE(parse_emulation("tc"));
}

}  // namespace
}  // namespace geopipe::launch
