// Schedules as data: generators, lowering, validator, dry runs, text and CSV forms.
#include <geopipe/core/error.h>
#include <geopipe/core/schedule.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

using namespace geopipe;

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

TEST(Schedule, RendezvousCheckRefusesWhatOnlyBufferedSendsRun) {
  // Rank 0 takes B1 before B0, rank 1 sends B0 first: buffered sends run it; under NCCL rank 1's
  // SEND_B0 waits for a receive rank 0 posts only after its RECV_B1, which waits for rank 1.
  Schedule s = parse_schedule("0F0 0SEND_F0 0F1 0SEND_F1 0RECV_B1 0B1 0RECV_B0 0B0 0OPT\n"
                              "1RECV_F0 1F0 1RECV_F1 1F1 1B0 1SEND_B0 1B1 1SEND_B1 1OPT\n",
                              "mine.txt");
  EXPECT_NO_THROW(check_schedule(s, "mine.txt"));
  try {
    check_schedule(s, "mine.txt", /*rendezvous=*/true);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("rank 0 blocked at 0SEND_F1 + 0RECV_B1 (index 3)"), std::string::npos) << what;
    EXPECT_NE(what.find("rank 1 blocked at 1SEND_B0 (index 5)"), std::string::npos) << what;
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

// ---- Chunks per rank, split backward, torch's CSV --------------------------------------------

namespace {

// Every generator's compute schedule for R ranks and M micro-batches, named for messages.
std::vector<std::pair<std::string, Schedule>> generated(int R, int M) {
  std::vector<std::pair<std::string, Schedule>> out;
  for (const char* kind : {"gpipe", "1f1b", "zb-h1", "zbv"}) out.emplace_back(kind, schedule_for(kind, R, M, 1, {}));
  std::vector<int> deeper = one_f_one_b_warmup(R);
  for (int& d : deeper) d += 2;
  out.emplace_back("1f1b-lh", schedule_for("1f1b-lh", R, M, 1, deeper));
  for (int V = 1; V <= 4; ++V)
    if (V == 1 || M % R == 0)
      out.emplace_back("interleaved V=" + std::to_string(V), schedule_for("interleaved", R, M, V, {}));
  return out;
}

}  // namespace

TEST(Schedule, EveryGeneratorIsValidLowersAndCompletesBothDryRuns) {
  for (int R = 1; R <= 8; ++R)
    for (int M = 1; M <= 16; ++M)
      for (const auto& [name, s] : generated(R, M)) {
        const std::string what = name + " R=" + std::to_string(R) + " M=" + std::to_string(M);
        auto errs = validate(s);
        ASSERT_TRUE(errs.empty()) << what << ": " << errs[0] << "\n" << format_schedule(s);
        Schedule low;
        ASSERT_NO_THROW(low = lower(s)) << what << "\n" << format_schedule(s);
        errs = validate(low);
        ASSERT_TRUE(errs.empty()) << what << ": " << errs[0] << "\n" << format_schedule(low);
        SimulationResult r = simulate(low);
        EXPECT_TRUE(r.completed) << what << ": " << r.message();
        r = simulate_rendezvous(low);
        EXPECT_TRUE(r.completed) << what << ": " << r.message() << "\n" << format_schedule(low);
      }
}

TEST(Schedule, PlacementsPutChunksLoopedOrInAV) {
  EXPECT_EQ(stage_ranks(ChunkPlacement::kLooped, 3, 2), (std::vector<int>{0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(stage_ranks(ChunkPlacement::kVShape, 3, 2), (std::vector<int>{0, 1, 2, 2, 1, 0}));
  EXPECT_EQ(stage_ranks(ChunkPlacement::kLooped, 4, 1), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(chunk_placement_of("zbv"), ChunkPlacement::kVShape);
  EXPECT_EQ(chunk_placement_of("interleaved"), ChunkPlacement::kLooped);
  EXPECT_THROW(stage_ranks(ChunkPlacement::kVShape, 3, 3), InputError);
  Schedule s = interleaved_1f1b_schedule(2, 3, 4);
  EXPECT_EQ(s.num_stages, 6);
  EXPECT_TRUE(has_virtual_stages(s));
  EXPECT_FALSE(has_split_backward(s));
  EXPECT_TRUE(has_split_backward(zb_h1_schedule(2, 4)));
  EXPECT_FALSE(has_virtual_stages(zb_h1_schedule(2, 4)));
}

TEST(Schedule, InterleavedNeedsWholeGroupsOfMicroBatches) {
  EXPECT_THROW(interleaved_1f1b_schedule(4, 2, 6), InputError);
  EXPECT_NO_THROW(interleaved_1f1b_schedule(4, 2, 8));
  EXPECT_NO_THROW(interleaved_1f1b_schedule(4, 1, 6));  // V = 1 is 1F1B: any M
  EXPECT_THROW(schedule_for("1f1b", 2, 4, 2, {}), InputError);  // one chunk per rank
  EXPECT_THROW(schedule_for("zbv", 2, 4, 3, {}), InputError);
  EXPECT_EQ(schedule_for("interleaved", 2, 4, 1, {}), schedule_for("1f1b", 2, 4, 1, {}));
}

TEST(Schedule, InterleavedMatchesWhatTorchDumps) {
  // ScheduleInterleaved1F1B(2 ranks, 2 stages each, 4 micro-batches)._dump_csv("x.csv",
  // format="compute_only"): csv.writer rows of its pipeline_order, idle steps (None) as empty cells.
  const std::string torch_csv =
      "0F0,0F1,2F0,2F1,,,0F2,2B0,0F3,2B1,2F2,0B0,2F3,0B1,,2B2,,2B3,,0B2,,0B3\r\n"
      ",1F0,1F1,,3F0,3B0,3F1,3B1,1F2,1B0,1F3,1B1,3F2,3B2,3F3,3B3,,1B2,,1B3\r\n";
  Schedule loaded = parse_schedule_csv(torch_csv, "torch.csv");
  EXPECT_EQ(loaded.stage_rank, (std::vector<int>{0, 1, 0, 1}));
  EXPECT_EQ(format_actions(loaded.ranks[1]).substr(0, 12), "1F0 1F1 3F0 ");
  EXPECT_EQ(loaded.ranks[0].back(), (Action{0, ActionKind::kOptimizer, -1}));  // appended
  EXPECT_EQ(loaded, interleaved_1f1b_schedule(2, 2, 4)) << format_schedule(loaded);
  Schedule ready = prepare_schedule(loaded, "torch.csv");
  EXPECT_TRUE(simulate_rendezvous(ready).completed);
}

TEST(Schedule, ZeroBubbleVMatchesWhatTorchDumps) {
  // ScheduleZBVZeroBubble(2 ranks, V placement, M micro-batches) dumped compute-only; with fewer
  // than 2R-1 micro-batches torch leaves the missing ones' slots empty.
  const std::string m4 =
      "0F0,0F1,0F2,3F0,3I0,3W0,3F1,3I1,3W1,0F3,0I0,0W0,3F2,3I2,3W2,0I1,0W1,3F3,3I3,3W3,0I2,0W2,0I3,0W3\r\n"
      ",1F0,2F0,1F1,2F1,2I0,2W0,1F2,1I0,1W0,2F2,2I1,2W1,1F3,1I1,1W1,2F3,2I2,2W2,1I2,2I3,1I3,1W2,2W3,1W3\r\n";
  const std::string m2 = "0F0,0F1,,3F0,3I0,3W0,3F1,3I1,3W1,0I0,0W0,,,,0I1,0W1,,\r\n"
                         ",1F0,2F0,1F1,2F1,2I0,2W0,,1I0,1W0,,2I1,2W1,1I1,,,1W1,,\r\n";
  Schedule a = parse_schedule_csv(m4, "zbv4.csv"), b = parse_schedule_csv(m2, "zbv2.csv");
  EXPECT_EQ(a.stage_rank, (std::vector<int>{0, 1, 1, 0}));
  EXPECT_EQ(a, zbv_schedule(2, 4)) << format_schedule(a);
  EXPECT_EQ(b, zbv_schedule(2, 2)) << format_schedule(b);
}

TEST(Schedule, LoweringSkipsNeighboursOnTheSameRank) {
  // ZB-V: stages R-1 and R are both on rank R-1 (the V's tip), stage 0 and 2R-1 on rank 0.
  Schedule s = lower(zbv_schedule(3, 6));
  for (const auto& list : s.ranks)
    for (const Action& a : list) {
      if (a.kind == ActionKind::kSendF) {
        EXPECT_NE(a.stage, 2) << to_string(a);
      }
      if (a.kind == ActionKind::kSendB) {
        EXPECT_NE(a.stage, 3) << to_string(a);
      }
    }
  const std::string tip = format_actions(s.ranks[2]);
  EXPECT_EQ(tip.find("3RECV_F"), std::string::npos) << tip;
  EXPECT_EQ(tip.find("2RECV_B"), std::string::npos) << tip;
  // An I sends the input gradient; its W sends nothing.
  const auto& r0 = s.ranks[1];
  auto i = std::find(r0.begin(), r0.end(), Action{4, ActionKind::kInputGrad, 0});
  ASSERT_NE(i, r0.end());
  EXPECT_EQ(*(i + 1), (Action{4, ActionKind::kSendB, 0}));
  auto w = std::find(r0.begin(), r0.end(), Action{4, ActionKind::kWeightGrad, 0});
  ASSERT_NE(w, r0.end());
  EXPECT_NE((w + 1)->kind, ActionKind::kSendB);
}

TEST(Schedule, ZeroBubbleH1KeepsOneFOneBMemoryAndFillsTheCoolDownWithW) {
  for (int R = 1; R <= 8; ++R)
    for (int M = 1; M <= 16; ++M)
      EXPECT_EQ(peak_in_flight(zb_h1_schedule(R, M)), peak_in_flight(one_f_one_b_schedule(R, M, one_f_one_b_warmup(R))))
          << "R=" << R << " M=" << M;
  // Rank 0 of 4 runs its cool-down input gradients as they arrive and its W's between them.
  Schedule s = zb_h1_schedule(4, 8);
  EXPECT_EQ(format_actions(s.ranks[3]).substr(0, 23), "3F0 3I0 3W0 3F1 3I1 3W1");
  const std::string r0 = format_actions(s.ranks[0]);
  EXPECT_NE(r0.find("0I5 0W5 0I6"), std::string::npos) << r0;
  EXPECT_EQ(r0.substr(r0.size() - 8), "0W7 0OPT") << r0;
}

TEST(Schedule, PeakHeldBytesWeighsEachChunkByItsOwnSize) {
  // ZB-V on 2 ranks, 2 micro-batches: rank 0 holds chunks 0 and 3, rank 1 chunks 1 and 2.
  Schedule s = zbv_schedule(2, 2);
  EXPECT_EQ(format_actions(s.ranks[0]), "0F0 0F1 3F0 3I0 3W0 3F1 3I1 3W1 0I0 0W0 0I1 0W1 0OPT");
  EXPECT_EQ(format_actions(s.ranks[1]), "1F0 2F0 1F1 2F1 2I0 2W0 1I0 1W0 2I1 2W1 1I1 1W1 1OPT");
  EXPECT_EQ(peak_in_flight(s), (std::vector<int>{3, 4}));
  // Rank 0 peaks at 0F0 0F1 3F0 (1000 + 1000 + 1), not 3 x its larger chunk; rank 1 after
  // 1F0 2F0 1F1 2F1 (2 x 100 + 2 x 10). A micro-batch holds its chunk's bytes until its W.
  EXPECT_EQ(peak_held_bytes(s, {1000, 100, 10, 1}), (std::vector<double>{2001, 220}));
  EXPECT_EQ(peak_held_bytes(gpipe_schedule(2, 3), {7, 5}), (std::vector<double>{21, 15}));
  EXPECT_EQ(peak_held_bytes(one_f_one_b_schedule(2, 3, one_f_one_b_warmup(2)), {7, 5}), (std::vector<double>{14, 5}));
}

TEST(Schedule, ZeroBubbleVHoldsNoMoreThanOneFOneB) {
  // A ZB-V chunk holds half the layers of a 1F1B stage: in stage-sized activations, no rank holds
  // more than 1F1B's busiest rank (the paper's promise: the same peak memory as 1F1B).
  for (int R = 1; R <= 8; ++R)
    for (int M = 1; M <= 16; ++M) {
      std::vector<int> one = peak_in_flight(one_f_one_b_schedule(R, M, one_f_one_b_warmup(R)));
      const int busiest = *std::max_element(one.begin(), one.end());
      for (int peak : peak_in_flight(zbv_schedule(R, M)))
        EXPECT_LE(peak, 2 * busiest) << "R=" << R << " M=" << M;
    }
}

TEST(Schedule, TextAndCsvFormsRoundTrip) {
  for (const auto& [name, s] : generated(4, 8)) {
    for (const Schedule& x : {s, lower(s)}) {
      EXPECT_EQ(parse_schedule(format_schedule(x), "t.txt"), x) << name << "\n" << format_schedule(x);
      EXPECT_EQ(parse_schedule_csv(format_schedule_csv(x), "t.csv"), x) << name << "\n" << format_schedule_csv(x);
    }
  }
  EXPECT_EQ(format_schedule_csv(gpipe_schedule(2, 2)), "0F0,0F1,0B0,0B1\r\n1F0,1F1,1B0,1B1\r\n");
  // Python's csv module may quote a cell and may end the last row without a line break.
  Schedule q = parse_schedule_csv("\"0F0\", 0B0 \n1F0,\"1B0\"", "q.csv");
  EXPECT_EQ(format_schedule(q), "0F0 0B0 0OPT\n1F0 1B0 1OPT\n");

  Schedule s = lower(zbv_schedule(2, 4));
  std::string path = testing::TempDir() + "/geopipe_schedule_test.csv";
  { std::ofstream(path, std::ios::binary) << format_schedule_csv(s); }
  EXPECT_EQ(load_schedule_file(path), s);
  std::remove(path.c_str());
}

TEST(Schedule, MalformedCsvAndListsAreRefusedNamingWhere) {
  auto error_of = [](const std::string& text, bool csv) -> std::string {
    try {
      Schedule s = csv ? parse_schedule_csv(text, "x.csv") : parse_schedule(text, "x.txt");
      prepare_schedule(s, "x");
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  };
  struct Case {
    const char* text;
    bool csv;
    const char* expect;
  } cases[] = {
      {"0F0,0X0,0B0\r\n", true, "row 1, cell 2: \"0X0\""},
      {"0F0,0REDUCE_GRAD\r\n", true, "torch's REDUCE_GRAD is not run here"},
      {"0F0,1UNSHARD\r\n", true, "torch's UNSHARD"},
      {"0F0,1F0,1B0,0B0\r\n1F1\r\n", true, "stage 1 appears in row 1 (rank 0) and row 2 (rank 1)"},
      {"0F0 0I0 0OPT\n", false, "missing 0W0 after 0I0"},
      {"0F0 0W0 0I0 0OPT\n", false, "0W0 runs before 0I0"},
      {"0F0 0B0 1OPT\n", false, "1OPT is rank 1's optimizer step, but this is rank 0"},
      {"0F0 0SEND_F0 0RECV_B0 0B0 0OPT\n1F0 1B0 1SEND_B0 1OPT\n", false,
       "rank 0: 0SEND_F0 (index 1) has no matching 1RECV_F0"},
      {"0F0 0B0 0OPT\n", false, ""},  // well-formed
  };
  for (const Case& c : cases) {
    const std::string what = error_of(c.text, c.csv);
    if (std::string(c.expect).empty()) EXPECT_EQ(what, "") << c.text;
    else EXPECT_NE(what.find(c.expect), std::string::npos) << c.text << " -> " << what;
  }
}
