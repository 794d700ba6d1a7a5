// The report library without a browser: loading a run directory (good and bad), what the page
// derives from the trace and the log, the SVG charts' points, escaping, and the simulation page.
#include "fake_run.h"

#include <geopipe/core/error.h>
#include <geopipe/report/report.h>
#include <geopipe/report/svg.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <regex>
#include <string>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using namespace geopipe;
using namespace geopipe::report;
using geopipe::test_support::FakeRun;
using geopipe::test_support::write_fake_run;
using geopipe::test_support::write_text;

class ReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(GEOPIPE_BINARY_DIR) / "tests" /
           ("report-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  // The InputError load_run throws, as the CLI prints it.
  std::string load_error() {
    try {
      load_run(dir_.string());
    } catch (const InputError& e) {
      EXPECT_EQ(e.exit_code(), kExitBadInput);
      return e.what();
    }
    ADD_FAILURE() << "load_run accepted " << dir_;
    return "";
  }
  fs::path dir_;
};

// The value of attribute `attr` on the element whose attributes contain `anchor`.
std::string attribute_after(const std::string& html, const std::string& anchor, const std::string& attr) {
  const size_t at = html.find(anchor);
  if (at == std::string::npos) return "";
  const size_t start = html.rfind('<', at);
  const size_t end = html.find('>', at);
  const std::string tag = html.substr(start, end - start);
  const std::regex re(attr + "=\"([^\"]*)\"");
  std::smatch m;
  return std::regex_search(tag, m, re) ? m[1].str() : "";
}

TEST_F(ReportTest, LoadsEveryFileOfARunDirectory) {
  const Plan plan = write_fake_run(dir_);
  const RunData run = load_run(dir_.string());
  ASSERT_EQ(run.steps.size(), 6u);
  EXPECT_EQ(run.steps[2].step, 3);
  ASSERT_TRUE(run.steps[2].val_loss.has_value());
  EXPECT_DOUBLE_EQ(*run.steps[2].val_loss, 5.6 - 0.75);
  EXPECT_FALSE(run.steps[3].val_loss.has_value());
  EXPECT_DOUBLE_EQ(run.steps[0].links.at("1->0").mb_per_s, 21.0);
  ASSERT_TRUE(run.trace.has_value());
  EXPECT_EQ(run.trace->ranks.size(), 4u);
  EXPECT_EQ(run.trace->plan_hash, plan.hash());
  EXPECT_EQ(run.trace->ranks[2].label, "rank 2 stage 2");
  ASSERT_TRUE(run.topology.has_value());
  EXPECT_EQ(run.topology->name, "local4");
  ASSERT_TRUE(run.info.has_value());
  EXPECT_EQ(run.info->world_size, 4);
  EXPECT_EQ(run.info->command.at(3), "--run-dir");
  EXPECT_FALSE(run.checkpoint.has_value());
  EXPECT_TRUE(run.notes.empty());
}

TEST_F(ReportTest, MissingStepLogIsBadInputNamingIt) {
  write_fake_run(dir_);
  fs::remove(dir_ / "train.jsonl");
  const std::string e = load_error();
  EXPECT_NE(e.find((dir_ / "train.jsonl").string()), std::string::npos) << e;
  EXPECT_NE(e.find("missing"), std::string::npos) << e;
}

TEST_F(ReportTest, TruncatedLastLineOfTheLogIsBadInputNamingTheLine) {
  write_fake_run(dir_);
  std::string log = test_support::fake_log({});
  write_text(dir_ / "train.jsonl", log + R"({"step": 7, "loss": 4.1, "st)");
  const std::string e = load_error();
  EXPECT_NE(e.find("train.jsonl: line 7: truncated"), std::string::npos) << e;
}

TEST_F(ReportTest, MalformedLogFieldIsBadInputNamingLineAndField) {
  write_fake_run(dir_);
  write_text(dir_ / "train.jsonl", R"({"step": 1, "loss": 5.0, "step_s": 0.5})" "\n"
                                   R"({"step": 2, "loss": "high", "step_s": 0.5})" "\n");
  const std::string e = load_error();
  EXPECT_NE(e.find("train.jsonl: line 2.loss: expected a finite number"), std::string::npos) << e;
}

TEST_F(ReportTest, TraceOfAnotherPlanIsBadInputNamingTheTrace) {
  const Plan plan = write_fake_run(dir_);
  nlohmann::json trace = test_support::fake_trace(plan, 6, 0);
  trace["otherData"]["plan_hash"] = "00000000deadbeef";
  write_text(dir_ / "trace.json", trace.dump());
  const std::string e = load_error();
  EXPECT_NE(e.find("trace.json: otherData.plan_hash"), std::string::npos) << e;
  EXPECT_NE(e.find("from another run"), std::string::npos) << e;
}

TEST_F(ReportTest, TruncatedTraceIsBadInputNamingIt) {
  write_fake_run(dir_);
  write_text(dir_ / "trace.json", R"({"traceEvents": [{"name": "F0", "ph")");
  const std::string e = load_error();
  EXPECT_NE(e.find("trace.json: not valid JSON"), std::string::npos) << e;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Table-driven: each broken file, the file and field the error names.
TEST_F(ReportTest, BadFilesAreBadInputNamingFileAndField) {
  struct Case {
    const char* file;
    std::string text;
    const char* expected;
  };
  const Case cases[] = {
      {"train.jsonl", "", "train.jsonl: empty: no step was logged"},
      {"train.jsonl", "[1, 2]\n", "train.jsonl: line 1: not a JSON object"},
      {"train.jsonl", R"({"loss": 5, "step_s": 1})" "\n", "train.jsonl: line 1.step: expected a step number >= 1"},
      {"train.jsonl", R"({"step": 2, "loss": 5, "step_s": 1})" "\n" R"({"step": 2, "loss": 5, "step_s": 1})" "\n",
       "train.jsonl: line 2.step: step 2 after step 2"},
      {"train.jsonl", R"({"step": 1, "loss": 5})" "\n", "train.jsonl: line 1.step_s: missing"},
      {"train.jsonl", R"({"step": 1, "loss": 5, "step_s": 1, "links": {"0->1": {"wait_s": 1}}})" "\n",
       "train.jsonl: line 1.links.0->1.mb_per_s: missing"},
      {"trace.json", R"({"traceEvents": 3})", "trace.json: traceEvents: expected an array of events"},
      {"trace.json", R"({"traceEvents": [{"ph": "X", "pid": -1, "name": "F0", "ts": 0, "dur": 1}]})",
       "trace.json: traceEvents[0].pid: expected a whole number from 0 to"},
      {"trace.json", R"({"traceEvents": [{"ph": "X", "pid": 0, "name": "F0", "ts": 0}]})",
       "trace.json: traceEvents[0].dur: missing"},
      {"run.json", R"({"plan_hash": "0123456789abcdef"})", "run.json: plan_hash: run of plan 0123456789abcdef"},
      {"plan.json", R"({"version": 1})", "plan.json: "},
      {"topology.json", R"({"name": "t"})", "topology.json: "},
      {"topology.json", read_text(test_support::source_path("examples/topologies/aws6.json")),
       "topology.json: topology hash "},
  };
  for (const Case& c : cases) {
    fs::remove_all(dir_);
    write_fake_run(dir_);
    write_text(dir_ / c.file, c.text);
    const std::string e = load_error();
    EXPECT_NE(e.find(c.expected), std::string::npos) << c.file << " " << c.text << " -> " << e;
  }
}

TEST_F(ReportTest, StepWindowsEndAtEachRanksOpt) {
  const Plan plan = write_fake_run(dir_, {6, true, false});  // trace of steps 4..6 after a resume at 3
  const RunData run = load_run(dir_.string());
  const auto w = step_windows(run.trace->ranks[1], run.trace->first_step);
  ASSERT_EQ(w.size(), 3u) << "the unfinished step after the last OPT is not a step";
  EXPECT_EQ(w.front().step, 4);
  EXPECT_EQ(w.back().step, 6);
  EXPECT_DOUBLE_EQ(w[0].end_us - w[0].start_us, 7000);
  EXPECT_EQ(w[0].spans.size(), 7u);
  EXPECT_EQ(w[0].spans.back().name, "OPT");
}

TEST_F(ReportTest, StageFractionsSplitComputeCommunicationAndIdle) {
  write_fake_run(dir_);
  const RunData run = load_run(dir_.string());
  const StageFractions f = stage_fractions(run.trace->ranks[0], 0);
  EXPECT_NEAR(f.compute, 6500.0 / 7000, 1e-12);
  EXPECT_NEAR(f.comm_wait, 500.0 / 7000, 1e-12);
  EXPECT_NEAR(f.idle, 0, 1e-12);
  EXPECT_EQ(f.all_reduce, 0);
  EXPECT_NEAR(f.wall_s, 6 * 7000e-6, 1e-12);
}

TEST(ReportSpans, KindsFollowTheActionLetters) {
  EXPECT_EQ(span_kind("F12"), SpanKind::kForward);
  EXPECT_EQ(span_kind("B0"), SpanKind::kBackward);
  EXPECT_EQ(span_kind("I3"), SpanKind::kBackwardInput);
  EXPECT_EQ(span_kind("W3"), SpanKind::kBackwardWeight);
  EXPECT_EQ(span_kind("SEND_F3"), SpanKind::kSend);
  EXPECT_EQ(span_kind("RECV_B3 wait"), SpanKind::kRecvWait);
  EXPECT_EQ(span_kind("send wait"), SpanKind::kSendWait);
  EXPECT_EQ(span_kind("ALLREDUCE bucket 2"), SpanKind::kAllReduce);
  EXPECT_EQ(span_kind("OPT"), SpanKind::kOptimizer);
  EXPECT_EQ(span_kind("Forward"), SpanKind::kOther);
  EXPECT_STRNE(span_kind_color(SpanKind::kForward), span_kind_color(SpanKind::kBackward));
}

TEST_F(ReportTest, RestartsAndCodecChangesBecomeStepMarkers) {
  write_fake_run(dir_, {6, true, true});
  const auto m = step_markers(load_run(dir_.string()));
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].step, 4);
  EXPECT_EQ(m[0].label, "restart");
  EXPECT_EQ(m[1].step, 5);
  EXPECT_EQ(m[1].label, "0->1 int8-block");
}

// The supervisor's restart lines in the step log: read as restarts (not steps) and shown as a
// table of cause, plan, lost regions, resumed checkpoint, steps redone and seconds lost.
TEST_F(ReportTest, SupervisorRestartLinesBecomeARestartsTable) {
  write_fake_run(dir_, {6, true, false, true});
  const RunData run = load_run(dir_.string());
  EXPECT_EQ(run.steps.size(), 6u);
  ASSERT_EQ(run.restarts.size(), 1u);
  EXPECT_EQ(run.restarts[0].lost_regions, std::vector<std::string>{"ap-southeast"});
  EXPECT_EQ(run.restarts[0].resume_step, 3);
  const std::string html = render_run_html(run);
  EXPECT_NE(html.find("<section id=\"restarts\""), std::string::npos);
  EXPECT_NE(html.find("<tr><td class=\"num\">1</td><td>rank 2 timed out waiting for rank 3, which waited for rank 2 "
                      "(waits in a ring across regions: cut link(s) ap-southeast &lt;-&gt; eu-central); links cut: "
                      "region ap-southeast is partitioned from the others</td><td>plan.restart-1.json</td>"
                      "<td>ap-southeast</td><td>step 3</td><td class=\"num\">2</td><td class=\"num\">6.25</td></tr>"),
            std::string::npos)
      << html.substr(html.find("id=\"restarts\""), 2000);
  std::string log = test_support::fake_log({6, true});
  nlohmann::json host_lost = nlohmann::json::parse(test_support::fake_restart_line());
  host_lost["lost_regions"] = nlohmann::json::array();
  host_lost["lost_hosts"] = {{{"region", "us-east"}, {"host", "h2"}}};
  write_text(dir_ / "train.jsonl", log.insert(log.find("{\"elapsed_s\""), host_lost.dump() + "\n"));
  EXPECT_NE(render_run_html(load_run(dir_.string())).find("<td>host h2 of us-east</td>"), std::string::npos);
  write_fake_run(dir_, {6, true});
  EXPECT_EQ(render_run_html(load_run(dir_.string())).find("id=\"restarts\""), std::string::npos) << "no restart, no table";
}

TEST_F(ReportTest, MalformedRestartLineIsBadInputNamingLineAndField) {
  write_fake_run(dir_);
  write_text(dir_ / "train.jsonl", R"({"step": 1, "loss": 5.0, "step_s": 0.5})" "\n"
                                   R"({"restart": 1, "cause": "x", "lost_regions": "eu", "resume_step": 0, )"
                                   R"("steps_redone": 0, "seconds_lost": 1})" "\n");
  EXPECT_NE(load_error().find("train.jsonl: line 2.lost_regions: expected an array of region names"), std::string::npos)
      << load_error();
  write_text(dir_ / "train.jsonl", R"({"step": 1, "loss": 5.0, "step_s": 0.5})" "\n"
                                   R"({"restart": 1, "cause": "x", "resume_step": 0, "steps_redone": 0})" "\n");
  EXPECT_NE(load_error().find("train.jsonl: line 2.seconds_lost: missing"), std::string::npos) << load_error();
}

TEST(ReportSvg, LineChartHasOnePointPerDatum) {
  svg::LineChart c("chart-x", "t", "step", "y");
  svg::Series s("loss", "#000");
  for (int i = 1; i <= 7; ++i) s.points.emplace_back(i, 1.0 / i);
  c.series.push_back(s);
  const std::string out = svg::line_chart(c);
  EXPECT_EQ(attribute_after(out, "data-series=\"loss\"", "data-points"), "7");
  const std::string d = attribute_after(out, "data-series=\"loss\"", "d");
  const std::regex point("[ML](-?[0-9.]+) (-?[0-9.]+)");
  EXPECT_EQ(std::distance(std::sregex_iterator(d.begin(), d.end(), point), std::sregex_iterator()), 7) << d;
  EXPECT_EQ(out.rfind("<svg id=\"chart-x\"", 0), 0u);
}

TEST(ReportSvg, ScatterSeriesDrawsOneCirclePerPoint) {
  svg::LineChart c("chart-s", "t", "x", "y");
  svg::Series s("bace", "#000", {{1, 2}, {3, 4}, {5, 1}});
  s.line = false;
  c.series.push_back(s);
  const std::string out = svg::line_chart(c);
  EXPECT_EQ(out.find("<path class=\"series\""), std::string::npos);
  size_t circles = 0;
  for (size_t at = out.find("<circle"); at != std::string::npos; at = out.find("<circle", at + 1)) ++circles;
  EXPECT_EQ(circles, 3u);
}

TEST(ReportSvg, EscapesEveryText) {
  EXPECT_EQ(svg::escape("<b a='1'>&\"x\""), "&lt;b a=&#39;1&#39;&gt;&amp;&quot;x&quot;");
  svg::LineChart c("chart-e", "<script>alert(1)</script>", "a&b", "y");
  c.series.push_back(svg::Series("\"quoted\"", "#000", {{0, 0}, {1, 1}}));
  const std::string out = svg::line_chart(c);
  EXPECT_EQ(out.find("<script"), std::string::npos);
  EXPECT_NE(out.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(out.find("data-series=\"&quot;quoted&quot;\""), std::string::npos);
  EXPECT_NE(out.find("a&amp;b"), std::string::npos);
}

TEST(ReportSvg, TicksAreRoundAndCoverTheRange) {
  const auto t = svg::nice_ticks(0.37, 5.2, 5);
  ASSERT_GE(t.size(), 2u);
  EXPECT_LE(t.front(), 0.37);
  EXPECT_GE(t.back(), 5.2);
  EXPECT_DOUBLE_EQ(t[1] - t[0], 1.0);
  EXPECT_EQ(svg::nice_ticks(1, 16, 6), (std::vector<double>{0, 5, 10, 15, 20})) << "whole steps, no 2.5";
  EXPECT_EQ(svg::nice_ticks(0, 1, 5).size(), 6u) << "a fraction axis in fifths";
  EXPECT_EQ(svg::fmt(34000), "34k");
  EXPECT_EQ(svg::fmt(0.25), "0.25");
}

TEST_F(ReportTest, RunPageHasEveryChartWithOnePointPerStepAndNoNetwork) {
  write_fake_run(dir_, {6, false, true});
  const std::string html = render_run_html(load_run(dir_.string()));
  for (const char* id : {"chart-loss", "chart-tokens", "chart-link-0-1", "chart-link-1-2", "chart-link-2-3",
                         "chart-stages", "chart-timeline", "chart-plan", "chart-predicted-time",
                         "chart-predicted-energy", "chart-predicted-cost"})
    EXPECT_NE(html.find("id=\"" + std::string(id) + "\""), std::string::npos) << id;
  EXPECT_EQ(attribute_after(html, "data-series=\"training loss\"", "data-points"), "6");
  EXPECT_EQ(attribute_after(html, "data-series=\"validation loss\"", "data-points"), "2");
  EXPECT_EQ(attribute_after(html, "data-series=\"tokens/s\"", "data-points"), "6");
  EXPECT_EQ(attribute_after(html, "id=\"chart-timeline\"", "data-step"), "6");
  EXPECT_EQ(attribute_after(html, "data-rank=\"3\"", "data-spans"), "7");
  EXPECT_EQ(attribute_after(html, "data-region=\"us-east\"", "data-stages"), "1");
  EXPECT_NE(html.find("0-&gt;1 activations \xC2\xB7 int8-block"), std::string::npos) << "the log's codec names the series";
  EXPECT_NE(html.find("class=\"marker-label\">0-&gt;1 int8-block<"), std::string::npos);
  EXPECT_NE(html.find("&lt;ok &amp; done&gt;"), std::string::npos) << "the summary, escaped";
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("url("), std::string::npos);
  EXPECT_EQ(html, render_run_html(load_run(dir_.string()))) << "deterministic";
}

TEST_F(ReportTest, TimelineShowsTheChosenStepAndRefusesOneOutsideTheTrace) {
  write_fake_run(dir_);
  const RunData run = load_run(dir_.string());
  RenderOptions o;
  o.timeline_step = 2;
  EXPECT_EQ(attribute_after(render_run_html(run, o), "id=\"chart-timeline\"", "data-step"), "2");
  o.timeline_step = 9;
  try {
    render_run_html(run, o);
    FAIL() << "step 9 is not in the trace";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--step: step: step 9 is not in the trace (it has steps 1..6)"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(ReportTest, TimelineDefaultsToTheLastStepEveryRankFinished) {
  const Plan plan = write_fake_run(dir_);
  nlohmann::json trace = test_support::fake_trace(plan, 6, 0);
  auto& events = trace["traceEvents"];
  nlohmann::json kept = nlohmann::json::array();
  int opts_of_rank2 = 0;  // rank 2's trace ends after its 4th step
  for (const auto& e : events)
    if (e["pid"] != 2 || opts_of_rank2 < 4) {
      kept.push_back(e);
      if (e["pid"] == 2 && e["name"] == "OPT") ++opts_of_rank2;
    }
  events = kept;
  write_text(dir_ / "trace.json", trace.dump());
  EXPECT_EQ(attribute_after(render_run_html(load_run(dir_.string())), "id=\"chart-timeline\"", "data-step"), "4");
}

TEST_F(ReportTest, TraceWithoutAFinishedStepGivesANoteNotAnError) {
  const Plan plan = write_fake_run(dir_);
  write_text(dir_ / "trace.json", test_support::fake_trace(plan, 0, 0).dump());  // only an unfinished F0 per rank
  const std::string html = render_run_html(load_run(dir_.string()));
  EXPECT_NE(html.find("The trace has no finished step."), std::string::npos);
  EXPECT_EQ(html.find("id=\"chart-timeline\""), std::string::npos);
  EXPECT_NE(html.find("id=\"chart-loss\""), std::string::npos);
}

TEST_F(ReportTest, LinksWithoutMeasurementsAreNamedNotDrawnEmpty) {
  write_fake_run(dir_);
  write_text(dir_ / "train.jsonl", R"({"step": 1, "loss": 5.0, "step_s": 0.5, "links": {"0->1": {"mb_per_s": 3}}})" "\n");
  const std::string html = render_run_html(load_run(dir_.string()));
  EXPECT_NE(html.find("id=\"chart-link-0-1\""), std::string::npos);
  EXPECT_EQ(html.find("id=\"chart-link-1-2\""), std::string::npos);
  EXPECT_NE(html.find("no measurement of the links between stages 1\u21942, 2\u21943."), std::string::npos);
}

// A region holding many stages lists them all (up to eight lines) inside a box tall enough.
TEST_F(ReportTest, PlanPictureListsEveryStageOfARegion) {
  write_fake_run(dir_);
  const std::string html = render_run_html(load_run(dir_.string()));
  for (const char* line : {"stage 0: layer 0 (rank 0)", "stage 3: layer 3 (rank 3)"})
    EXPECT_NE(html.find(line), std::string::npos) << line;
  EXPECT_EQ(attribute_after(html, "data-region=\"eu-central\"", "data-stages"), "1");
}

TEST(ReportSimulation, PageHasAJctCdfPerPolicyAndTheirCostPoints) {
  SimulationScenario sc{"scenario <x1>", {}};
  const char* names[] = {"bace", "delay-first", "fifo"};
  for (int i = 0; i < 3; ++i) {
    PolicyOutcome p;
    p.policy = names[i];
    for (int j = 0; j < 5 + i; ++j) p.jct_s.push_back(3600.0 * (j + 1) * (i + 1));
    p.avg_jct_s = 3600.0 * (i + 2);
    p.cost_usd = 100.0 * (3 - i);
    p.energy_kwh = 10;
    p.makespan_s = 7200;
    sc.policies.push_back(p);
  }
  const std::string html = render_simulation_html("sim", {sc});
  const size_t cdf = html.find("id=\"chart-jct-cdf-0\"");
  ASSERT_NE(cdf, std::string::npos);
  const std::string chart = html.substr(cdf, html.find("</svg>", cdf) - cdf);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(attribute_after(chart, "data-series=\"" + std::string(names[i]) + "\"", "data-points"),
              std::to_string(5 + i))
        << names[i];
  for (const char* id : {"chart-jct-cost-0", "chart-cost-0", "chart-energy-0", "chart-makespan-0"})
    EXPECT_NE(html.find("id=\"" + std::string(id) + "\""), std::string::npos) << id;
  EXPECT_NE(html.find("scenario &lt;x1&gt;"), std::string::npos);
  EXPECT_EQ(html.find("http"), std::string::npos);
}

}  // namespace
