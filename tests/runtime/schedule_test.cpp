// Schedules as data: generators, lowering, validator, dry run and text form.
#include <geopipe/core/error.h>
#include <geopipe/runtime/schedule.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

using namespace geopipe;
using namespace geopipe::runtime;

namespace {

int count_kind(const std::vector<Action>& list, ActionKind k) {
  int n = 0;
  for (const auto& a : list) n += a.kind == k;
  return n;
}

}  // namespace

TEST(Schedule, ActionTextFormNamesStageKindAndMicroBatch) {
  EXPECT_EQ(to_string({2, ActionKind::kForward, 0}), "2F0");
  EXPECT_EQ(to_string({2, ActionKind::kSendF, 0}), "2SEND_F0");
  EXPECT_EQ(to_string({1, ActionKind::kRecvB, 13}), "1RECV_B13");
  EXPECT_EQ(to_string({3, ActionKind::kOptimizer, -1}), "3OPT");
}

TEST(Schedule, GPipeRunsAllForwardsThenAllBackwardsThenOptimizer) {
  Schedule s = gpipe_schedule(3, 4);
  ASSERT_EQ(s.ranks.size(), 3u);
  EXPECT_EQ(format_actions(s.ranks[1]), "1F0 1F1 1F2 1F3 1B0 1B1 1B2 1B3 1OPT");
  EXPECT_TRUE(validate(s).empty());
  EXPECT_EQ(peak_in_flight(s), (std::vector<int>{4, 4, 4}));
}

TEST(Schedule, OneFOneBWarmsUpByRemainingStagesAndBoundsLiveActivations) {
  Schedule s = one_f_one_b_schedule(4, 8, one_f_one_b_warmup(4));
  EXPECT_EQ(format_actions(s.ranks[3]).substr(0, 23), "3F0 3B0 3F1 3B1 3F2 3B2");
  EXPECT_EQ(format_actions(s.ranks[0]).substr(0, 19), "0F0 0F1 0F2 0F3 0B0");
  for (int st = 0; st < 4; ++st) {
    EXPECT_EQ(peak_in_flight(s)[st], 4 - st) << "rank " << st;
    EXPECT_EQ(count_kind(s.ranks[st], ActionKind::kForward), 8);
    EXPECT_EQ(count_kind(s.ranks[st], ActionKind::kBackward), 8);
  }
  EXPECT_TRUE(validate(s).empty());
}

TEST(Schedule, LatencyHidingWarmupDeepensEachStageAsThePlanSays) {
  Schedule s = schedule_for("1f1b-lh", 3, 6, 1, {4, 2, 1});
  EXPECT_EQ(peak_in_flight(s), (std::vector<int>{5, 3, 2}));
  EXPECT_TRUE(simulate(lower(s)).completed);
}

TEST(Schedule, WarmupDeeperThanMicroBatchesIsGPipe) {
  Schedule a = one_f_one_b_schedule(2, 3, {10, 10});
  Schedule b = gpipe_schedule(2, 3);
  EXPECT_EQ(format_schedule(a), format_schedule(b));
}

TEST(Schedule, UnknownKindOrBadWarmupIsInputError) {
  EXPECT_THROW(schedule_for("zigzag", 2, 2, 1, {}), InputError);
  EXPECT_THROW(one_f_one_b_schedule(2, 2, {1}), InputError);
  EXPECT_THROW(one_f_one_b_schedule(2, 2, {1, -1}), InputError);
  EXPECT_THROW(gpipe_schedule(0, 2), InputError);
}

TEST(Schedule, LoweringPairsEverySendWithThePeersReceive) {
  Schedule s = lower(one_f_one_b_schedule(3, 2, one_f_one_b_warmup(3)));
  EXPECT_EQ(format_actions(s.ranks[0]), "0F0 0SEND_F0 0F1 0SEND_F1 0RECV_B0 0B0 0RECV_B1 0B1 0OPT");
  // The receive of F1 lands where rank 1 sends it (before B0), not merely before 2F1: it is
  // posted in time, and NCCL pairs it in the order the sender issues.
  EXPECT_EQ(format_actions(s.ranks[2]),
            "2RECV_F0 2F0 2RECV_F1 2B0 2SEND_B0 2F1 2B1 2SEND_B1 2OPT");
  EXPECT_TRUE(validate(s).empty());
  EXPECT_TRUE(simulate(s).completed);
  EXPECT_THROW(lower(s), InputError);  // already lowered
}

TEST(Schedule, EveryGeneratedScheduleCompletesInTheDryRun) {
  for (int S = 1; S <= 6; ++S)
    for (int M = 1; M <= 9; ++M) {
      for (const char* kind : {"gpipe", "1f1b"}) {
        Schedule s = lower(schedule_for(kind, S, M, 1, {}));
        EXPECT_TRUE(validate(s).empty()) << kind << " S=" << S << " M=" << M;
        SimulationResult r = simulate(s);
        EXPECT_TRUE(r.completed) << kind << " S=" << S << " M=" << M << ": " << r.message();
      }
    }
}

TEST(Schedule, RendezvousDryRunOfEveryGeneratedSchedule) {
  // What NCCL links need: sends and receives issued in list order, each held until its peer's.
  for (int S = 1; S <= 6; ++S)
    for (int M = 1; M <= 9; ++M) {
      for (const char* kind : {"gpipe", "1f1b"}) {
        SimulationResult r = simulate_rendezvous(lower(schedule_for(kind, S, M, 1, {})));
        EXPECT_TRUE(r.completed) << kind << " S=" << S << " M=" << M << ": " << r.message();
      }
      for (int extra = 1; extra <= 3; ++extra) {  // latency-hiding: deeper warm-ups
        std::vector<int> w = one_f_one_b_warmup(S);
        for (int& d : w) d += extra;
        SimulationResult r = simulate_rendezvous(lower(schedule_for("1f1b-lh", S, M, 1, w)));
        EXPECT_TRUE(r.completed) << "1f1b-lh +" << extra << " S=" << S << " M=" << M << ": " << r.message();
      }
    }
}

TEST(Schedule, RendezvousDryRunCatchesWhatBufferedSendsHide) {
  // Stage 0 sends F1 before it receives B0; stage 1 sends B0 before it receives F1. Buffered
  // sends (MPI isend) run it; with rendezvous each stage's send waits for a receive the other
  // has not reached - unless the adjacent send and receive form one group, as comm_groups makes them.
  const std::string text = "0F0 0SEND_F0 0F1 0SEND_F1 0RECV_B0 0B0 0RECV_B1 0B1 0OPT\n"
                           "1RECV_F0 1F0 1B0 1SEND_B0 1RECV_F1 1F1 1B1 1SEND_B1 1OPT\n";
  Schedule grouped = parse_schedule(text, "test");
  EXPECT_TRUE(simulate(grouped).completed);
  EXPECT_TRUE(simulate_rendezvous(grouped).completed) << simulate_rendezvous(grouped).message();
  auto groups = comm_groups(grouped.ranks[0]);
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(groups[1], (std::pair<size_t, size_t>{3, 5}));  // 0SEND_F1 0RECV_B0: one group
  // Without groups each stage's send waits for a receive the other never reaches.
  SimulationResult r = simulate_rendezvous(grouped, /*group_adjacent=*/false);
  EXPECT_FALSE(r.completed);
  ASSERT_EQ(r.blocked.size(), 2u) << r.message();
  EXPECT_EQ(r.blocked[0], "rank 0 blocked at 0SEND_F1 (index 3)");
  EXPECT_EQ(r.blocked[1], "rank 1 blocked at 1SEND_B0 (index 3)");
}

TEST(Schedule, DeadlockReportsEveryBlockedRank) {
  // Rank 0 wants B0 after one forward, rank 1 wants four forwards first: a cycle. Lowering
  // cannot place the receives, and says where each rank waits.
  Schedule compute = one_f_one_b_schedule(2, 4, {0, 3});
  EXPECT_TRUE(validate(compute).empty());  // well-formed, but it cannot run
  try {
    prepare_schedule(compute, "plan.json");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("plan.json"), std::string::npos);
    EXPECT_NE(what.find("deadlock"), std::string::npos);
    EXPECT_NE(what.find("rank 0 blocked at 0B0 (index 1)"), std::string::npos) << what;
    EXPECT_NE(what.find("rank 1 blocked at 1F1 (index 1)"), std::string::npos) << what;
    EXPECT_NE(what.find("0F0 0B0 0F1"), std::string::npos) << "prints the text form";
  }
  // The same cycle written with its sends and receives: the dry run names both ranks.
  Schedule s = parse_schedule("0F0 0SEND_F0 0RECV_B0 0B0 0F1 0SEND_F1 0RECV_B1 0B1 0OPT\n"
                              "1RECV_F0 1F0 1RECV_F1 1F1 1B0 1SEND_B0 1B1 1SEND_B1 1OPT\n",
                              "cycle.txt");
  EXPECT_TRUE(validate(s).empty());
  SimulationResult r = simulate(s);
  EXPECT_FALSE(r.completed);
  ASSERT_EQ(r.blocked.size(), 2u);
  EXPECT_EQ(r.blocked[0], "rank 0 blocked at 0RECV_B0 (index 2)");
  EXPECT_EQ(r.blocked[1], "rank 1 blocked at 1RECV_F1 (index 2)");
  EXPECT_FALSE(simulate_rendezvous(s).completed);
  try {
    check_schedule(s, "cycle.txt");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 blocked at 1RECV_F1"), std::string::npos) << e.what();
  }
}

TEST(Schedule, ValidatorRejectsMissingDuplicateMisorderedAndUnpairedActions) {
  Schedule good = lower(gpipe_schedule(2, 2));
  {
    Schedule s = good;  // drop stage 1's receive of F1: the send has no receive
    auto& l = s.ranks[1];
    l.erase(std::find(l.begin(), l.end(), Action{1, ActionKind::kRecvF, 1}));
    auto errs = validate(s);
    ASSERT_FALSE(errs.empty());
    bool unpaired = false;
    for (auto& e : errs) unpaired |= e == "rank 0: 0SEND_F1 (index 3) has no matching 1RECV_F1";
    EXPECT_TRUE(unpaired) << errs[0];
  }
  {
    Schedule s = good;  // B before F on stage 0
    std::swap(s.ranks[0][0], s.ranks[0][5]);
    EXPECT_FALSE(validate(s).empty());
  }
  {
    Schedule s = good;  // a second OPT
    s.ranks[0].insert(s.ranks[0].begin(), Action{0, ActionKind::kOptimizer, -1});
    EXPECT_FALSE(validate(s).empty());
  }
  {
    Schedule s = good;  // an action in the wrong stage's list
    s.ranks[0][0].stage = 1;
    EXPECT_FALSE(validate(s).empty());
  }
  {
    Schedule s = good;  // micro-batch out of range
    s.ranks[1].back() = Action{1, ActionKind::kForward, 7};
    EXPECT_FALSE(validate(s).empty());
  }
  {
    Schedule s = good;  // receive after the forward that needs it
    auto& l = s.ranks[1];
    ASSERT_EQ(to_string(l[0]), "1RECV_F0");
    std::swap(l[0], l[1]);
    EXPECT_FALSE(validate(s).empty());
  }
}

TEST(Schedule, TextFormRoundTripsAndLoadsFromFile) {
  Schedule s = lower(one_f_one_b_schedule(3, 4, {3, 1, 0}));
  std::string text = "# a comment\n" + format_schedule(s);
  Schedule back = parse_schedule(text, "inline");
  EXPECT_EQ(back.num_stages, 3);
  EXPECT_EQ(back.num_micro_batches, 4);
  EXPECT_EQ(format_schedule(back), format_schedule(s));

  std::string path = testing::TempDir() + "/geopipe_schedule_test.txt";
  { std::ofstream(path) << text; }
  Schedule loaded = load_schedule_file(path);
  EXPECT_EQ(format_schedule(loaded), format_schedule(s));
  std::remove(path.c_str());
}

TEST(Schedule, PrepareLowersComputeOnlyTextAndChecksIt) {
  Schedule s = parse_schedule("0F0 0F1 0B0 0B1 0OPT\n1F0 1B0 1F1 1B1 1OPT\n", "mine.txt");
  Schedule ready = prepare_schedule(s, "mine.txt");
  EXPECT_TRUE(has_communication(ready));
  EXPECT_TRUE(simulate(ready).completed);
  Schedule bad = parse_schedule("0F0 0B0 0F1 0B1 0OPT\n1F0 1F1 1B0 1B1 1OPT\n", "bad.txt");
  EXPECT_THROW(prepare_schedule(bad, "bad.txt"), InputError);
}

TEST(Schedule, MalformedTextNamesFileLineAndToken) {
  try {
    parse_schedule("0F0 0OPT\n0X1 0F\n", "sched.txt");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("sched.txt"), std::string::npos);
    EXPECT_NE(what.find("line 2: \"0X1\""), std::string::npos) << what;
    EXPECT_NE(what.find("line 2: \"0F\""), std::string::npos) << what;
  }
  EXPECT_THROW(parse_schedule("   \n# nothing\n", "empty.txt"), InputError);
  EXPECT_THROW(load_schedule_file("/nonexistent/schedule.txt"), InputError);
}
