#include <geopipe/core/config.h>
#include <geopipe/core/error.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>

using namespace geopipe;
using nlohmann::json;

namespace {
std::string src(const std::string& rel) { return std::string(GEOPIPE_SOURCE_DIR) + "/" + rel; }
}  // namespace

TEST(Topology, ShippedTopologiesParse) {
  Topology aws = load_topology(src("examples/topologies/aws6.json"));
  EXPECT_EQ(aws.num_regions(), 6);
  EXPECT_EQ(aws.links.size(), 23u);  // 15 pairs, 8 of them priced differently out of Tokyo or Singapore
  EXPECT_EQ(aws.total_gpus(), 168);
  Topology local = load_topology(src("examples/topologies/local4.json"));
  EXPECT_EQ(local.num_regions(), 4);
  Topology gcp = load_topology(src("examples/topologies/gcp5.json"));
  EXPECT_EQ(gcp.num_regions(), 5);
  EXPECT_EQ(gcp.links.size(), 10u);  // every pair once: Google Cloud prices a pair the same both ways
  EXPECT_EQ(gcp.total_gpus(), 144);
  Topology mixed = load_topology(src("examples/topologies/aws-mixed5.json"));
  EXPECT_EQ(mixed.num_regions(), 5);
  EXPECT_EQ(mixed.links.size(), 14u);  // 10 pairs, 4 priced differently out of Tokyo
  EXPECT_EQ(mixed.total_gpus(), 144);
}

TEST(Topology, NewTopologiesCarryTheirProvidersPricesAndDatasheetGpus) {
  Topology gcp = load_topology(src("examples/topologies/gcp5.json"));
  auto gcp_price = [&gcp](const char* from, const char* to) {
    return gcp.link(gcp.region_index(from), gcp.region_index(to))->egress_usd_per_gb;
  };
  // Google Cloud lists per GiB: 0.02, 0.05 and 0.08 USD/GiB are 0.0186, 0.0466 and 0.0745 USD/GB.
  EXPECT_DOUBLE_EQ(gcp_price("us-central1-iowa", "us-east1-south-carolina"), 0.0186);
  EXPECT_DOUBLE_EQ(gcp_price("europe-west4-netherlands", "us-east1-south-carolina"), 0.0466);
  EXPECT_DOUBLE_EQ(gcp_price("asia-southeast1-singapore", "asia-northeast1-tokyo"), 0.0745);
  EXPECT_DOUBLE_EQ(gcp_price("us-central1-iowa", "asia-northeast1-tokyo"), 0.0745);
  Topology mixed = load_topology(src("examples/topologies/aws-mixed5.json"));
  const Region& oregon = mixed.regions[mixed.region_index("us-west-2-oregon")];
  const Region& virginia = mixed.regions[mixed.region_index("us-east-1-virginia")];
  const Region& tokyo = mixed.regions[mixed.region_index("ap-northeast-1-tokyo")];
  EXPECT_EQ(oregon.gpu_type, "A100");
  EXPECT_DOUBLE_EQ(oregon.gpu_tflops, 312);
  EXPECT_DOUBLE_EQ(oregon.gpu_power_w, 400);
  EXPECT_EQ(virginia.gpu_type, "L40S");
  EXPECT_DOUBLE_EQ(virginia.gpu_tflops, 362);
  EXPECT_DOUBLE_EQ(virginia.gpu_mem_gb, 48);
  EXPECT_EQ(tokyo.gpu_type, "H100");
  EXPECT_DOUBLE_EQ(tokyo.gpu_tflops, 989);
  EXPECT_DOUBLE_EQ(mixed.link(mixed.region_index("ap-northeast-1-tokyo"), mixed.region_index("us-east-2-ohio"))
                       ->egress_usd_per_gb,
                   0.09);
}

TEST(Topology, ShippedTopologiesCarryTheSendingRegionsEgressPrice) {
  Topology aws = load_topology(src("examples/topologies/aws6.json"));
  auto price = [&aws](const char* from, const char* to) {
    return aws.link(aws.region_index(from), aws.region_index(to))->egress_usd_per_gb;
  };
  EXPECT_DOUBLE_EQ(price("us-west-2-oregon", "ap-northeast-1-tokyo"), 0.02);
  EXPECT_DOUBLE_EQ(price("ap-northeast-1-tokyo", "us-west-2-oregon"), 0.09);
  EXPECT_DOUBLE_EQ(price("us-east-1-virginia", "us-east-2-ohio"), 0.01);
  EXPECT_DOUBLE_EQ(price("us-east-2-ohio", "us-east-1-virginia"), 0.01);
  EXPECT_DOUBLE_EQ(price("eu-central-1-frankfurt", "ap-southeast-1-singapore"), 0.02);
  EXPECT_DOUBLE_EQ(price("ap-southeast-1-singapore", "ap-northeast-1-tokyo"), 0.09);
  EXPECT_DOUBLE_EQ(aws.link(0, 0)->egress_usd_per_gb, 0.0);  // inside a region (one placement group)
  // Every directed pair is priced: none was left at the default of 0.
  for (int a = 0; a < aws.num_regions(); ++a)
    for (int b = 0; b < aws.num_regions(); ++b)
      if (a != b) {
        EXPECT_GE(aws.link(a, b)->egress_usd_per_gb, 0.01) << a << " -> " << b;
      }
  Topology local = load_topology(src("examples/topologies/local4.json"));
  EXPECT_DOUBLE_EQ(local.link(local.region_index("ap-southeast"), local.region_index("us-east"))->egress_usd_per_gb, 0.09);
  EXPECT_DOUBLE_EQ(local.link(local.region_index("us-east"), local.region_index("ap-southeast"))->egress_usd_per_gb, 0.02);
}

namespace {
// Three regions; links a-b (one entry), b-c and c-b (both directions), a-c without a price.
json priced_doc() {
  return json::parse(R"({
    "name": "t", "intra_region": {"gbps": 100, "latency_ms": 0.5},
    "regions": [
      {"name": "a", "gpus": 2, "gpu_type": "H100", "gpu_tflops": 989, "gpu_mem_gb": 80, "gpu_power_w": 700, "pue": 1.2, "price_usd_per_kwh": 0.07},
      {"name": "b", "gpus": 2, "gpu_type": "H100", "gpu_tflops": 989, "gpu_mem_gb": 80, "gpu_power_w": 700, "pue": 1.2, "price_usd_per_kwh": 0.08},
      {"name": "c", "gpus": 2, "gpu_type": "H100", "gpu_tflops": 989, "gpu_mem_gb": 80, "gpu_power_w": 700, "pue": 1.2, "price_usd_per_kwh": 0.09}],
    "links": [
      {"a": "a", "b": "b", "gbps": 1.0, "latency_ms": 10, "egress_usd_per_gb": 0.02},
      {"a": "b", "b": "c", "gbps": 2.0, "latency_ms": 20, "egress_usd_per_gb": 0.01},
      {"a": "c", "b": "b", "gbps": 2.0, "latency_ms": 20, "egress_usd_per_gb": 0.09},
      {"a": "a", "b": "c", "gbps": 0.5, "latency_ms": 30}]})");
}
}  // namespace

TEST(Topology, EgressPricesAreSymmetricUnlessBothDirectionsGiven) {
  Topology t = parse_topology(priced_doc(), "t.json");
  EXPECT_DOUBLE_EQ(t.link(0, 1)->egress_usd_per_gb, 0.02);
  EXPECT_DOUBLE_EQ(t.link(1, 0)->egress_usd_per_gb, 0.02);  // given one way: the same both ways
  EXPECT_DOUBLE_EQ(t.link(1, 2)->egress_usd_per_gb, 0.01);  // given both ways: each direction its own
  EXPECT_DOUBLE_EQ(t.link(2, 1)->egress_usd_per_gb, 0.09);
  EXPECT_DOUBLE_EQ(t.link(0, 2)->egress_usd_per_gb, 0.0);   // no price given: free
  EXPECT_DOUBLE_EQ(t.link(2, 0)->egress_usd_per_gb, 0.0);
  EXPECT_TRUE(t.priced());
}

TEST(Topology, IntraRegionEgressDefaultsToZeroAndCanBeSet) {
  json doc = priced_doc();
  EXPECT_DOUBLE_EQ(parse_topology(doc, "t.json").link(1, 1)->egress_usd_per_gb, 0.0);
  doc["intra_region"]["egress_usd_per_gb"] = 0.01;
  Topology t = parse_topology(doc, "t.json");
  for (int r = 0; r < 3; ++r) EXPECT_DOUBLE_EQ(t.link(r, r)->egress_usd_per_gb, 0.01);
  EXPECT_DOUBLE_EQ(t.link(0, 1)->egress_usd_per_gb, 0.02);  // links keep their own price
}

TEST(Topology, BadEgressPriceIsRefusedNamingTheFileAndField) {
  struct Case {
    json value;
    std::string expected;
  };
  const Case cases[] = {{-0.02, "expected a number >= 0, got -0.02"},
                        {"0.02", "expected a number, got a string (\"0.02\")"},
                        {nullptr, "expected a number, got null"},
                        {true, "expected a number, got a boolean (true)"},
                        {std::numeric_limits<double>::infinity(), "expected a finite number"},
                        {std::nan(""), "expected a finite number"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.value.dump());
    for (const std::string field : {"links[3]", "intra_region"}) {
      json doc = priced_doc();
      if (field == "intra_region")
        doc["intra_region"]["egress_usd_per_gb"] = c.value;
      else
        doc["links"][3]["egress_usd_per_gb"] = c.value;
      try {
        parse_topology(doc, "topo.json");
        ADD_FAILURE() << "accepted " << field << ".egress_usd_per_gb = " << c.value.dump();
      } catch (const InputError& e) {
        ASSERT_EQ(e.diagnostics().size(), 1u) << e.what();
        EXPECT_EQ(e.exit_code(), kExitBadInput);
        EXPECT_NE(std::string(e.what()).find("topo.json: " + field + ".egress_usd_per_gb: " + c.expected),
                  std::string::npos)
            << e.what();
      }
    }
  }
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
  // Egress prices count; a price of 0 written out is the same as none (older files hash as before).
  for (auto& link : doc["links"]) link.erase("egress_usd_per_gb");
  const std::string unpriced = parse_topology(doc, "x").hash();
  EXPECT_NE(unpriced, h);
  json zero = doc;
  zero["links"][0]["egress_usd_per_gb"] = 0;
  zero["intra_region"]["egress_usd_per_gb"] = 0;
  EXPECT_EQ(parse_topology(zero, "x").hash(), unpriced);
  json egress = doc;
  egress["links"][0]["egress_usd_per_gb"] = 0.02;
  const std::string priced = parse_topology(egress, "x").hash();
  EXPECT_NE(priced, unpriced);
  egress["links"][0]["egress_usd_per_gb"] = 0.03;
  EXPECT_NE(parse_topology(egress, "x").hash(), priced);
}

TEST(Topology, RoundTripsThroughJson) {
  Topology t = load_topology(src("examples/topologies/aws6.json"));
  Topology back = parse_topology(to_json(t), "roundtrip");
  EXPECT_EQ(back.hash(), t.hash());
  EXPECT_EQ(to_json(back), to_json(t));
  ASSERT_EQ(back.links.size(), t.links.size());
  for (size_t i = 0; i < t.links.size(); ++i)
    EXPECT_DOUBLE_EQ(back.links[i].spec.egress_usd_per_gb, t.links[i].spec.egress_usd_per_gb) << "link " << i;
  // A price is written only where there is one: a topology without prices writes none.
  json doc = priced_doc();
  doc["intra_region"]["egress_usd_per_gb"] = 0.01;
  const json written = to_json(parse_topology(doc, "t.json"));
  EXPECT_EQ(written["intra_region"]["egress_usd_per_gb"], 0.01);
  EXPECT_EQ(written["links"][2]["egress_usd_per_gb"], 0.09);
  EXPECT_FALSE(written["links"][3].contains("egress_usd_per_gb"));
  EXPECT_EQ(to_json(parse_topology(written, "again.json")), written);
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

TEST(Job, GpuBoundsAreACountOrARangeAndRoundTrip) {
  json doc = read_json_file(src("examples/jobs/gpt-tiny.json"));  // 4 stages, 8 micro-batches
  doc["gpus"] = json::array({4, 16});
  JobSpec j = parse_job(doc, "j.json");
  EXPECT_TRUE(j.chooses_replicas());
  EXPECT_EQ(j.min_gpus, 4);
  EXPECT_EQ(j.max_gpus, 16);
  EXPECT_EQ(to_json(j)["gpus"], json::array({4, 16}));
  EXPECT_EQ(parse_job(to_json(j), "rt").hash(), j.hash());
  EXPECT_NE(j.hash(), load_job(src("examples/jobs/gpt-tiny.json")).hash());
  doc["gpus"] = 8;
  JobSpec fixed = parse_job(doc, "j.json");
  EXPECT_EQ(fixed.min_gpus, 8);
  EXPECT_EQ(fixed.max_gpus, 8);
  EXPECT_EQ(to_json(fixed)["gpus"], 8);
  EXPECT_FALSE(load_job(src("examples/jobs/gpt-tiny.json")).chooses_replicas());
}

TEST(Job, BadGpuBoundsAreRefusedNamingTheFileAndField) {
  struct Case {
    json gpus;
    std::string message;
  };
  const Case cases[] = {
      {json::array({0, 8}), "j.json: gpus: expected [min, max] with 1 <= min <= max <= 1048576, got [0,8]"},
      {json::array({8, 4}), "j.json: gpus: expected [min, max] with 1 <= min <= max <= 1048576, got [8,4]"},
      {"8", "j.json: gpus: expected a GPU count or a range [min, max], got a string (\"8\")"},
      {json::array({1, 2, 3}), "j.json: gpus: expected a GPU count or a range [min, max], got an array"},
      // 4 stages times a divisor of 8 micro-batches: 4, 8, 16 or 32 GPUs, none in [5, 7].
      {json::array({5, 7}),
       "j.json: gpus: no stage count in [4, 4] times a replica count dividing micro_batches (8) lies in [5,7]"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.gpus.dump());
    json doc = read_json_file(src("examples/jobs/gpt-tiny.json"));
    doc["gpus"] = c.gpus;
    try {
      parse_job(doc, "j.json");
      ADD_FAILURE() << "accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << e.what();
    }
  }
  // With "replicas", which fixes R and makes micro_batches per replica: one or the other.
  json both = read_json_file(src("examples/jobs/gpt-tiny.json"));
  both["gpus"] = json::array({4, 8});
  both["replicas"] = 2;
  try {
    parse_job(both, "j.json");
    ADD_FAILURE() << "accepted both";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("j.json: gpus: cannot be given with \"replicas\""), std::string::npos)
        << e.what();
  }
  // In a workload the job's index names it.
  json second = read_json_file(src("examples/jobs/gpt-tiny.json"));
  second["name"] = "second";
  second["gpus"] = json::array({0, 8});
  const json w = {{"name", "w"}, {"jobs", json::array({read_json_file(src("examples/jobs/gpt-tiny.json")), second})}};
  try {
    parse_workload(w, "w.json");
    ADD_FAILURE() << "accepted the workload";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("w.json: jobs[1].gpus: expected [min, max]"), std::string::npos) << e.what();
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
