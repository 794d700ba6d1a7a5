#include <geopipe/core/config.h>
#include <geopipe/core/error.h>
#include <geopipe/core/plan.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>

using namespace geopipe;

namespace {
std::string src(const std::string& rel) { return std::string(GEOPIPE_SOURCE_DIR) + "/" + rel; }
const char* kGoodPlan = "tests/data/good/plan_local4_manual.json";
}  // namespace

TEST(Plan, GoodPlanParsesWithItsStagesLinksAndSchedule) {
  Plan p = load_plan(src(kGoodPlan));
  ASSERT_EQ(p.num_stages(), 4);
  EXPECT_EQ(p.world_size(), 4);
  EXPECT_EQ(p.stage_of_rank(2), 2);
  EXPECT_EQ(p.stage_of_rank(9), -1);
  EXPECT_EQ(p.stages[1].layer_begin, 1);
  EXPECT_EQ(p.stages[1].layer_end, 2);
  ASSERT_NE(p.link_between(1, 2), nullptr);
  EXPECT_EQ(p.link_between(1, 2)->from_region, "us-west");
  EXPECT_EQ(p.link_between(0, 2), nullptr);
  EXPECT_EQ(p.schedule.kind, "1f1b");
  EXPECT_EQ(p.schedule.warmup, (std::vector<int>{3, 2, 1, 0}));
}

// The report matches a run's trace to its plan by this hash: a copy (reformatted, saved again)
// hashes alike, any change of content does not.
TEST(Plan, HashIsTheContentsNotTheFormatting) {
  const Plan p = load_plan(src(kGoodPlan));
  EXPECT_EQ(p.hash().size(), 16u);
  const std::string path = std::string(GEOPIPE_BINARY_DIR) + "/plan_hash_test.json";
  save_plan(p, path);  // indented differently from the checked-in file
  EXPECT_EQ(load_plan(path).hash(), p.hash());
  std::remove(path.c_str());
  Plan q = p;
  q.links[0].codec_forward = "int8-block";
  EXPECT_NE(q.hash(), p.hash());
  q = p;
  q.predicted.iteration_s += 1e-9;
  EXPECT_NE(q.hash(), p.hash());
}

TEST(Plan, SaveThenLoadGivesTheSamePlan) {
  Plan p = load_plan(src(kGoodPlan));
  p.links[1].codec_forward = "int8-block";
  p.links[1].codec_backward = "fp8-e5m2-block";
  const std::string path = std::string(GEOPIPE_BINARY_DIR) + "/plan_roundtrip_test.json";
  save_plan(p, path);
  Plan q = load_plan(path);
  EXPECT_EQ(to_json(q).dump(), to_json(p).dump());
  std::remove(path.c_str());
}

// Plans written before egress was priced carry only cost_usd: all of it was electricity.
TEST(Plan, WithoutCostPartsReadsTheCostAsElectricity) {
  Plan p = load_plan(src(kGoodPlan));  // predicted: cost_usd 0.01 and neither part
  EXPECT_DOUBLE_EQ(p.predicted.cost_usd, 0.01);
  EXPECT_DOUBLE_EQ(p.predicted.electricity_usd, 0.01);
  EXPECT_DOUBLE_EQ(p.predicted.egress_usd, 0.0);
  const nlohmann::json written = to_json(p);
  EXPECT_EQ(written["predicted"]["electricity_usd"], 0.01);
  EXPECT_EQ(written["predicted"]["egress_usd"], 0.0);
  EXPECT_EQ(to_json(parse_plan(written, "again.json")), written);
}

// Written by `geopipe plan` for the demo job on local4 (priced links): ap-southeast -> eu-central
// -> us-east -> us-west, no codec, 8 x 64 x 128 fp32 = 262,144 bytes a message, 8 micro-batches,
// 300 iterations; per-GB prices both ways 0.09 + 0.02, 0.02 + 0.02, 0.02 + 0.02.
TEST(Plan, PlannerWrittenPlanCarriesBothPartsOfItsCost) {
  const Plan p = load_plan(src("tests/data/good/plan_local4_priced.json"));
  EXPECT_EQ(p.stages.front().region, "ap-southeast");
  EXPECT_NEAR(p.predicted.egress_usd, 262144 * (0.11 + 0.04 + 0.04) * 8 * 300 / 1e9, 1e-15);
  EXPECT_NEAR(p.predicted.egress_usd, 0.119537664, 1e-15);
  EXPECT_DOUBLE_EQ(p.predicted.cost_usd, p.predicted.electricity_usd + p.predicted.egress_usd);
  EXPECT_EQ(to_json(parse_plan(to_json(p), "again.json")), to_json(p));
}

TEST(Plan, ElectricityAndEgressRoundTripThroughJson) {
  Plan p = load_plan(src(kGoodPlan));
  p.predicted.electricity_usd = 1.25;
  p.predicted.egress_usd = 0.0054525952;
  p.predicted.cost_usd = p.predicted.electricity_usd + p.predicted.egress_usd;
  const nlohmann::json written = to_json(p);
  EXPECT_EQ(written["predicted"]["electricity_usd"], 1.25);
  EXPECT_EQ(written["predicted"]["egress_usd"], 0.0054525952);
  EXPECT_DOUBLE_EQ(written["predicted"]["cost_usd"].get<double>(), 1.2554525952);
  Plan back = parse_plan(nlohmann::json::parse(written.dump()), "back.json");
  EXPECT_EQ(back.predicted.electricity_usd, 1.25);
  EXPECT_EQ(back.predicted.egress_usd, 0.0054525952);
  EXPECT_EQ(back.predicted.cost_usd, p.predicted.cost_usd);
  EXPECT_EQ(to_json(back), written);
  EXPECT_EQ(back.hash(), p.hash());
  // A negative part is refused like any other prediction, naming it.
  nlohmann::json bad = written;
  bad["predicted"]["egress_usd"] = -1;
  try {
    parse_plan(bad, "bad.json");
    ADD_FAILURE() << "accepted a negative egress_usd";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json: predicted.egress_usd: expected a number >= 0, got -1"),
              std::string::npos)
        << e.what();
  }
}

// Found by the plan fuzz target: a plan without the optional provenance fields wrote them as empty
// strings, which its own reader then refused.
TEST(Plan, WithoutOptionalProvenanceReadsBackFromItsOwnJson) {
  auto doc = read_json_file(src(kGoodPlan));
  doc["provenance"] = {{"topology_hash", doc["provenance"]["topology_hash"]}};
  const Plan p = parse_plan(doc, "p.json");
  EXPECT_EQ(p.provenance.job_hash, "");
  const auto written = to_json(p);
  EXPECT_FALSE(written["provenance"].contains("job_hash"));
  EXPECT_FALSE(written["provenance"].contains("policy"));
  EXPECT_EQ(to_json(parse_plan(written, "q.json")).dump(), written.dump());
}

TEST(Plan, CodecGivenAsOneStringAppliesBothWays) {
  auto doc = read_json_file(src(kGoodPlan));
  doc["links"][0]["codec"] = "int8-block";
  Plan p = parse_plan(doc, "p.json");
  EXPECT_EQ(p.links[0].codec_forward, "int8-block");
  EXPECT_EQ(p.links[0].codec_backward, "int8-block");
}

TEST(Plan, RefusedForAnotherTopology) {
  Plan p = load_plan(src(kGoodPlan));  // its hash is a placeholder, so it matches no topology
  Topology t = load_topology(src("examples/topologies/local4.json"));
  try {
    check_plan_against(p, t, "plan.json");
    FAIL() << "a plan for another topology was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("plan.json: provenance.topology_hash"), std::string::npos) << e.what();
  }
  p.provenance.topology_hash = t.hash();
  EXPECT_NO_THROW(check_plan_against(p, t, "plan.json", 4));
}

TEST(Plan, RefusedForAnotherWorldSize) {
  Plan p = load_plan(src(kGoodPlan));
  Topology t = load_topology(src("examples/topologies/local4.json"));
  p.provenance.topology_hash = t.hash();
  try {
    check_plan_against(p, t, "plan.json", 3);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("needs 4 ranks but the job was started with 3"), std::string::npos) << e.what();
  }
}

TEST(Plan, RefusedWhenAStageNamesARegionTheTopologyLacks) {
  Plan p = load_plan(src(kGoodPlan));
  Topology t = load_topology(src("examples/topologies/aws6.json"));
  p.provenance.topology_hash = t.hash();
  try {
    check_plan_against(p, t, "plan.json");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("stages[0].region"), std::string::npos) << e.what();
  }
}

namespace {

// The 4-stage good plan turned into stages on 2 ranks: rank of stage s from `ranks`, every stage
// in `regions`, schedule `kind` with `V` stages per rank.
nlohmann::json virtual_stage_plan(const std::vector<int>& ranks, const std::vector<std::string>& regions,
                                  const std::string& kind, int V) {
  auto doc = read_json_file(src(kGoodPlan));
  for (size_t s = 0; s < 4; ++s) {
    doc["stages"][s]["ranks"] = {ranks[s]};
    doc["stages"][s]["region"] = regions[s];
  }
  for (size_t l = 0; l < 3; ++l) doc["links"][l]["region_pair"] = {regions[l], regions[l + 1]};
  doc["schedule"] = {{"kind", kind}, {"virtual_stages", V}};
  return doc;
}

}  // namespace

TEST(Plan, AdaptiveLinksRoundTripAndStartOnTheirLadder) {
  auto doc = read_json_file(src(kGoodPlan));
  doc["links"][1]["codec"] = {{"forward", "int8-block"}, {"backward", "none"}, {"adaptive", true}};
  Plan p = parse_plan(doc, "a.json");
  EXPECT_TRUE(p.links[1].adaptive);
  EXPECT_FALSE(p.links[0].adaptive);
  Plan back = parse_plan(to_json(p), "a.json");
  EXPECT_TRUE(back.links[1].adaptive);
  EXPECT_EQ(back.links[1].codec_forward, "int8-block");
  EXPECT_EQ(to_json(back)["links"][0]["codec"].count("adaptive"), 0u);  // fixed links stay as they were written
  doc["links"][1]["codec"] = {{"forward", "fp8-e4m3-block"}, {"backward", "int8-block"}, {"adaptive", true}};
  try {
    parse_plan(doc, "a.json");
    FAIL() << "accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("a.json: links[1].codec.forward: an adaptive link starts on its ladder"),
              std::string::npos) << e.what();
  }
  doc["links"][1]["codec"] = {{"forward", "none"}, {"backward", "none"}, {"adaptive", "yes"}};
  try {
    parse_plan(doc, "a.json");
    FAIL() << "accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("links[1].codec.adaptive: expected true or false"), std::string::npos) << e.what();
  }
}

TEST(Plan, VirtualStagesPutSeveralStagesOnARankAsTheScheduleKindPlacesThem) {
  const std::vector<std::string> two = {"us-east", "us-west", "us-east", "us-west"};
  Plan looped = parse_plan(virtual_stage_plan({0, 1, 0, 1}, two, "interleaved", 2), "p.json");
  EXPECT_EQ(looped.world_size(), 2);
  EXPECT_EQ(looped.stages_of_rank(0), (std::vector<int>{0, 2}));
  EXPECT_EQ(looped.stages_of_rank(1), (std::vector<int>{1, 3}));
  EXPECT_EQ(looped.schedule.virtual_stages, 2);
  EXPECT_EQ(parse_plan(to_json(looped), "q.json").schedule.virtual_stages, 2);  // saved and read back
  const std::vector<std::string> vee = {"us-east", "us-west", "us-west", "us-east"};
  Plan zbv = parse_plan(virtual_stage_plan({0, 1, 1, 0}, vee, "zbv", 2), "p.json");
  EXPECT_EQ(zbv.stages_of_rank(0), (std::vector<int>{0, 3}));
}

TEST(Plan, VirtualStagesOutOfPlaceInTwoRegionsOrWithAnotherKindAreRefusedNamingTheField) {
  auto refused_at = [](const nlohmann::json& doc, const std::string& field) {
    try {
      parse_plan(doc, "p.json");
      ADD_FAILURE() << "accepted; expected an error at " << field;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("p.json: " + field), std::string::npos) << e.what();
    }
  };
  const std::vector<std::string> two = {"us-east", "us-west", "us-east", "us-west"};
  // interleaved places stage s on rank s % 2: stage 2 on rank 1 is out of place.
  refused_at(virtual_stage_plan({0, 1, 1, 0}, two, "interleaved", 2), "stages[2].ranks");
  // Rank 0's two stages in two regions.
  refused_at(virtual_stage_plan({0, 1, 0, 1}, {"us-east", "us-west", "eu-central", "us-west"}, "interleaved", 2),
             "stages[2].region");
  refused_at(virtual_stage_plan({0, 1, 0, 1}, two, "1f1b", 2), "schedule.virtual_stages");
  refused_at(virtual_stage_plan({0, 1, 1, 0}, two, "zbv", 3), "schedule.virtual_stages");
  refused_at(virtual_stage_plan({0, 1, 0, 1}, two, "2f2b", 2), "schedule.kind");
  // Without virtual stages a rank in two stages stays an error.
  refused_at(virtual_stage_plan({0, 1, 0, 1}, two, "1f1b", 1), "stages[2].ranks[0]");
  // A stage index past the end is reported, never used to look anything up (it crashed once).
  auto far = virtual_stage_plan({0, 1, 0, 1}, two, "interleaved", 2);
  far["stages"][3]["index"] = 40;
  refused_at(far, "stages[3].index");
}

TEST(Plan, RecomputeRoundTripsAndIsWrittenOnlyWhenSet) {
  const Plan p = load_plan(src(kGoodPlan));
  EXPECT_FALSE(p.schedule.recompute);
  EXPECT_EQ(to_json(p)["schedule"].count("recompute"), 0u);  // older plans keep their JSON and hash
  auto doc = read_json_file(src(kGoodPlan));
  doc["schedule"]["recompute"] = true;
  Plan q = parse_plan(doc, "r.json");
  EXPECT_TRUE(q.schedule.recompute);
  EXPECT_TRUE(parse_plan(to_json(q), "r.json").schedule.recompute);
  EXPECT_NE(q.hash(), p.hash());
  doc["schedule"]["recompute"] = "full";
  try {
    parse_plan(doc, "r.json");
    FAIL() << "accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("r.json: schedule.recompute: expected true or false"), std::string::npos)
        << e.what();
  }
}
