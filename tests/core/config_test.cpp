#include <geopipe/core/config.h>
#include <geopipe/core/error.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using namespace geopipe;
using nlohmann::json;

namespace {
std::string src(const std::string& rel) { return std::string(GEOPIPE_SOURCE_DIR) + "/" + rel; }
}  // namespace

TEST(Topology, ShippedTopologiesParse) {
  Topology aws = load_topology(src("examples/topologies/aws6.json"));
  EXPECT_EQ(aws.num_regions(), 6);
  EXPECT_EQ(aws.links.size(), 15u);
  EXPECT_EQ(aws.total_gpus(), 168);
  Topology local = load_topology(src("examples/topologies/local4.json"));
  EXPECT_EQ(local.num_regions(), 4);
}

TEST(Topology, LinksAreSymmetricUnlessBothDirectionsGiven) {
  json doc = json::parse(R"({
    "name": "t", "intra_region": {"gbps": 100, "latency_ms": 0.5},
    "regions": [
      {"name": "a", "gpus": 2, "gpu_type": "H100", "gpu_tflops": 989, "gpu_mem_gb": 80, "gpu_power_w": 700, "pue": 1.2, "price_usd_per_kwh": 0.07},
      {"name": "b", "gpus": 2, "gpu_type": "H100", "gpu_tflops": 989, "gpu_mem_gb": 80, "gpu_power_w": 700, "pue": 1.2, "price_usd_per_kwh": 0.08},
      {"name": "c", "gpus": 2, "gpu_type": "H100", "gpu_tflops": 989, "gpu_mem_gb": 80, "gpu_power_w": 700, "pue": 1.2, "price_usd_per_kwh": 0.09}],
    "links": [
      {"a": "a", "b": "b", "gbps": 1.0, "latency_ms": 10},
      {"a": "b", "b": "c", "gbps": 2.0, "latency_ms": 20},
      {"a": "c", "b": "b", "gbps": 0.5, "latency_ms": 25}]})");
  Topology t = parse_topology(doc, "t.json");
  ASSERT_TRUE(t.link(0, 1));
  ASSERT_TRUE(t.link(1, 0));
  EXPECT_DOUBLE_EQ(t.link(1, 0)->gbps, 1.0);  // given one way: the same both ways
  EXPECT_DOUBLE_EQ(t.link(1, 2)->gbps, 2.0);  // given both ways: each direction its own
  EXPECT_DOUBLE_EQ(t.link(2, 1)->gbps, 0.5);
  EXPECT_DOUBLE_EQ(t.link(2, 1)->latency_ms, 25);
  EXPECT_FALSE(t.link(0, 2));                 // no link at all
  EXPECT_DOUBLE_EQ(t.link(2, 2)->gbps, 100);  // inside a region
  EXPECT_DOUBLE_EQ(t.link(0, 1)->bytes_per_s(), 1.25e8);
}

TEST(Topology, HashChangesWithPlanningInputsOnly) {
  json doc = read_json_file(src("examples/topologies/local4.json"));
  const std::string h = parse_topology(doc, "x").hash();
  EXPECT_EQ(h.size(), 16u);
  json renamed = doc;
  renamed["note"] = "another note";
  EXPECT_EQ(parse_topology(renamed, "x").hash(), h);
  json faster = doc;
  faster["links"][0]["gbps"] = 0.41;
  EXPECT_NE(parse_topology(faster, "x").hash(), h);
  json pricier = doc;
  pricier["regions"][0]["price_usd_per_kwh"] = 0.5;
  EXPECT_NE(parse_topology(pricier, "x").hash(), h);
}

TEST(Topology, RoundTripsThroughJson) {
  Topology t = load_topology(src("examples/topologies/aws6.json"));
  Topology back = parse_topology(to_json(t), "roundtrip");
  EXPECT_EQ(back.hash(), t.hash());
}

TEST(Job, StagesAcceptACountOrARange) {
  JobSpec fixed = load_job(src("examples/jobs/gpt-tiny.json"));
  EXPECT_EQ(fixed.min_stages, 4);
  EXPECT_EQ(fixed.max_stages, 4);
  EXPECT_EQ(fixed.model.dtype, DType::kFloat32);
  JobSpec range = load_job(src("examples/jobs/llama-7b.json"));
  EXPECT_EQ(range.min_stages, 4);
  EXPECT_EQ(range.max_stages, 16);
  EXPECT_EQ(range.model.dtype, DType::kBFloat16);
  EXPECT_EQ(parse_job(to_json(range), "rt").hash(), range.hash());
}

TEST(Job, StageRangeIsClippedToTheLayerCount) {
  json doc = read_json_file(src("examples/jobs/gpt-tiny.json"));
  doc["stages"] = json::array({2, 64});
  JobSpec j = parse_job(doc, "j");
  EXPECT_EQ(j.max_stages, 4);
}

TEST(Job, ReplicasDefaultToOneAndLeaveTheHashOfJobsWithoutThemUnchanged) {
  json doc = read_json_file(src("examples/jobs/gpt-tiny.json"));
  JobSpec plain = parse_job(doc, "gpt-tiny.json");
  EXPECT_EQ(plain.replicas, 1);
  EXPECT_FALSE(to_json(plain).contains("replicas"));
  // The hash plans recorded for this job before replicas existed.
  EXPECT_EQ(plain.hash(), "770d129c610c1e79");
  doc["replicas"] = 1;
  EXPECT_EQ(parse_job(doc, "gpt-tiny.json").hash(), "770d129c610c1e79");
  doc["replicas"] = 2;
  JobSpec two = parse_job(doc, "gpt-tiny.json");
  EXPECT_EQ(two.replicas, 2);
  EXPECT_EQ(to_json(two)["replicas"], 2);
  EXPECT_NE(two.hash(), plain.hash());
  JobSpec back = parse_job(to_json(two), "roundtrip");
  EXPECT_EQ(back.replicas, 2);
  EXPECT_EQ(back.hash(), two.hash());
}

TEST(Job, BadReplicaCountIsRefusedNamingTheFileAndField) {
  const json bad_values[] = {0, -2, 4097, 1.5, "2", nullptr};
  for (const json& value : bad_values) {
    SCOPED_TRACE(value.dump());
    json doc = read_json_file(src("examples/jobs/gpt-tiny.json"));
    doc["replicas"] = value;
    try {
      parse_job(doc, "job.json");
      ADD_FAILURE() << "accepted replicas " << value.dump();
    } catch (const InputError& e) {
      ASSERT_EQ(e.diagnostics().size(), 1u) << e.what();
      EXPECT_NE(std::string(e.what()).find("job.json: replicas:"), std::string::npos) << e.what();
      const bool integer = value.is_number_integer();
      EXPECT_NE(std::string(e.what()).find(integer ? "expected an integer in [1, 4096], got " + value.dump()
                                                    : "expected an integer, got "),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(Workload, JobsAreOrderedByArrival) {
  Workload w = load_workload(src("examples/workloads/mixed6.json"));
  ASSERT_EQ(w.jobs.size(), 6u);
  for (size_t i = 1; i < w.jobs.size(); ++i) EXPECT_LE(w.jobs[i - 1].arrival_s, w.jobs[i].arrival_s);
  EXPECT_EQ(w.jobs[0].tenant, "t1");
}

TEST(Config, ValidatorReportsEveryProblemNotJustTheFirst) {
  json doc = read_json_file(src("examples/topologies/local4.json"));
  doc["links"][0]["gbps"] = -1;
  doc["regions"][1]["gpus"] = "many";
  doc["links"][2]["b"] = "nowhere";
  try {
    parse_topology(doc, "topo.json");
    FAIL() << "accepted a bad topology";
  } catch (const InputError& e) {
    ASSERT_EQ(e.diagnostics().size(), 3u) << e.what();
    EXPECT_EQ(e.exit_code(), kExitBadInput);
    std::string all = e.what();
    EXPECT_NE(all.find("topo.json: links[0].gbps"), std::string::npos) << all;
    EXPECT_NE(all.find("topo.json: regions[1].gpus"), std::string::npos) << all;
    EXPECT_NE(all.find("topo.json: links[2].b"), std::string::npos) << all;
  }
}

TEST(Config, MissingFileIsAnInputErrorNamingIt) {
  try {
    load_topology("/nonexistent/dir/topo.json");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/topo.json"), std::string::npos);
  }
}
