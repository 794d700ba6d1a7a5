// The folder `geopipe launch` writes its generated files to (hostfile, placement, the netns
// launch agent that runs as root) when no --run-dir is given: a fresh private one (mode 0700)
// that nobody else can have prepared. A folder or link another user put at the predictable name
// $TMPDIR/geopipe-launch-<pid> beforehand is neither written to nor removed.
#include "launch_test_util.h"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace geopipe::launch {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

class LaunchRunDir : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    dir_ = fs::temp_directory_path() / ("geopipe-run-dir-test-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "tmp");
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Starts `geopipe launch ... -- sh -c SCRIPT` with TMPDIR = dir_/tmp, after `prepare(pid)` ran
  // with the launcher's pid (known after fork, before exec). Returns the exit status.
  int launch_with(const std::string& script, const std::function<void(pid_t)>& prepare) {
    std::vector<std::string> args = {GEOPIPE_CLI, "launch", "--topology", testing::src("examples/topologies/local4.json"),
                                      "--ranks-per-region", "1", "--emulate", "software", "--timeout", "60", "--",
                                      "sh", "-c", script};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string tmpdir = (dir_ / "tmp").string();
    int go[2];
    if (pipe(go) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
      close(go[1]);
      char c = 0;
      if (read(go[0], &c, 1) != 1) _exit(126);
      setenv("TMPDIR", tmpdir.c_str(), 1);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(go[0]);
    prepare(pid);
    (void)!write(go[1], "g", 1);
    close(go[1]);
    int status = 0;
    if (!testing::wait_until([&] { return waitpid(pid, &status, WNOHANG) == pid; }, 120))
      testing::terminate_and_reap(pid, &status);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  // Rank 0 records the mode and owner of the folder that holds mpirun's --hostfile (its parent's
  // command line) while the job runs.
  std::string record_run_dir_mode(const std::string& out) {
    return "[ \"$OMPI_COMM_WORLD_RANK\" = 0 ] || exit 0; "
           "f=$(tr '\\0' '\\n' < /proc/$PPID/cmdline | grep -A1 -x -e --hostfile | tail -n 1); "
           "stat -c '%a %u %n' \"$(dirname \"$f\")\" > " + out;
  }

  fs::path dir_;
};

TEST_F(LaunchRunDir, GeneratedFilesGoToAFreshPrivateFolderThatIsRemovedAfter) {
  const std::string out = (dir_ / "mode").string();
  int code = launch_with(record_run_dir_mode(out), [](pid_t) {});
  ASSERT_EQ(code, 0);
  std::ifstream in(out);
  std::string mode, uid, path;
  in >> mode >> uid >> path;
  EXPECT_EQ(mode, "700") << path;
  EXPECT_EQ(uid, std::to_string(geteuid())) << path;
  EXPECT_EQ(path.rfind((dir_ / "tmp").string() + "/geopipe-launch-", 0), 0u) << path;
  EXPECT_EQ(names_in(dir_ / "tmp"), std::vector<std::string>{}) << "the run folder was not removed";
}

TEST_F(LaunchRunDir, FolderPreparedAtThePredictableNameIsNotUsedOrRemoved) {
  // Another user's folder at $TMPDIR/geopipe-launch-<pid>, world-writable, with a file of theirs.
  const std::string out = (dir_ / "mode").string();
  fs::path trap;
  int code = launch_with(record_run_dir_mode(out), [&](pid_t pid) {
    trap = dir_ / "tmp" / ("geopipe-launch-" + std::to_string(pid));
    fs::create_directories(trap);
    fs::permissions(trap, fs::perms::all);
    std::ofstream(trap / "theirs") << "x\n";
  });
  ASSERT_EQ(code, 0);
  EXPECT_TRUE(fs::is_directory(trap)) << "the prepared folder was removed";
  EXPECT_EQ(names_in(trap), std::vector<std::string>{"theirs"}) << "geopipe wrote into a folder it did not create";
  std::ifstream in(out);
  std::string mode, uid, path;
  in >> mode >> uid >> path;
  EXPECT_EQ(mode, "700") << path;
  EXPECT_NE(path, trap.string());
  EXPECT_EQ(names_in(dir_ / "tmp"), std::vector<std::string>{trap.filename().string()});
}

TEST_F(LaunchRunDir, LinkPreparedAtThePredictableNameIsNotFollowed) {
  // A symbolic link there to a folder elsewhere: nothing may be written through it.
  const std::string out = (dir_ / "mode").string();
  const fs::path target = dir_ / "elsewhere";
  fs::create_directories(target);
  fs::path link;
  int code = launch_with(record_run_dir_mode(out), [&](pid_t pid) {
    link = dir_ / "tmp" / ("geopipe-launch-" + std::to_string(pid));
    fs::create_directory_symlink(target, link);
  });
  ASSERT_EQ(code, 0);
  EXPECT_TRUE(fs::is_symlink(link)) << "the link was removed";
  EXPECT_EQ(names_in(target), std::vector<std::string>{}) << "geopipe wrote through a link it did not create";
}

}  // namespace
}  // namespace geopipe::launch
