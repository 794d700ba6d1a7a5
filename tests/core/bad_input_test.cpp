// Every fixture in tests/data/bad/ is rejected with a message naming its file and the field
// listed for it in tests/data/bad/expected.json.
#include <geopipe/core/config.h>
#include <geopipe/core/error.h>
#include <geopipe/core/plan.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using namespace geopipe;

namespace {
std::string bad_dir() { return std::string(GEOPIPE_SOURCE_DIR) + "/tests/data/bad/"; }
}  // namespace

TEST(BadInput, EveryFixtureIsRejectedNamingItsField) {
  auto expected = read_json_file(bad_dir() + "expected.json");
  ASSERT_GE(expected.size(), 20u);
  for (auto it = expected.begin(); it != expected.end(); ++it) {
    const std::string file = bad_dir() + it.key();
    const std::string kind = it.value()["kind"];
    const std::string path = it.value()["path"];
    SCOPED_TRACE(it.key());
    try {
      if (kind == "topology") load_topology(file);
      else if (kind == "job") load_job(file);
      else if (kind == "workload") load_workload(file);
      else if (kind == "plan") load_plan(file);
      else FAIL() << "unknown kind " << kind;
      ADD_FAILURE() << "accepted " << it.key();
    } catch (const InputError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(file), std::string::npos) << what;
      EXPECT_NE(what.find(": " + path + (path.empty() ? "" : ":")), std::string::npos)
          << "expected the message to name " << path << ", got: " << what;
    }
  }
}
