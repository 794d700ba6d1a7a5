// Failure records (core/failure.h): what a failing rank leaves for the supervisor.
#include <geopipe/core/error.h>
#include <geopipe/core/failure.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace geopipe {
namespace {

namespace fs = std::filesystem;

fs::path scratch(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("geopipe-failure-test-" + name);
  fs::remove_all(dir);
  return dir;
}

TEST(FailureRecord, WrittenRecordReadsBackWithEveryField) {
  const fs::path dir = scratch("roundtrip");
  write_failure_record(dir.string(), {3, "eu-central", 3, "timeout", 2, 10.5, "stage 3 timed out"});
  const std::vector<FailureRecord> r = read_failure_records(dir.string());
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].rank, 3);
  EXPECT_EQ(r[0].region, "eu-central");
  EXPECT_EQ(r[0].kind, "timeout");
  EXPECT_EQ(r[0].peer, 2);
  EXPECT_DOUBLE_EQ(r[0].waited_s, 10.5);
  EXPECT_EQ(r[0].message, "stage 3 timed out");
  EXPECT_FALSE(fs::exists(dir / "rank-3.json.tmp"));
  fs::remove_all(dir);
}

// A record that cannot be written is an error naming the path, not a silent loss.
TEST(FailureRecord, UnwritableFolderIsAnErrorNamingIt) {
  const fs::path file = scratch("not-a-folder");
  std::ofstream(file) << "a file where the folder should be\n";
  try {
    write_failure_record(file.string(), {1, "us-east", 1, "error", -1, 0, "x"});
    ADD_FAILURE() << "wrote a record into a file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("failure record: cannot create " + file.string()), std::string::npos) << e.what();
  }
  const fs::path dir = scratch("rename-target-is-a-folder");
  fs::create_directories(dir / "rank-1.json" / "inside");  // rename onto a non-empty folder fails
  try {
    write_failure_record(dir.string(), {1, "us-east", 1, "error", -1, 0, "x"});
    ADD_FAILURE() << "renamed onto a folder";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("failure record: cannot rename " + (dir / "rank-1.json.tmp").string() + " to " +
                                         (dir / "rank-1.json").string()),
              std::string::npos)
        << e.what();
  }
  fs::remove_all(file);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace geopipe
