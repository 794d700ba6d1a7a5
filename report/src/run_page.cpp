// The run page: one section per question a person asks of a cross-region run (did the loss fall,
// which link held the pipeline back, where are the bubbles, what did it cost, did the prediction
// hold), each a chart with an id (the browser test finds them) and a table or text beside it.
#include "page.h"

#include <geopipe/core/error.h>
#include <geopipe/report/report.h>
#include <geopipe/report/svg.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <sstream>

namespace geopipe::report {

namespace {

using svg::escape;
using svg::fmt;

std::string pct(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%+.1f%%", v);
  return buf;
}

double median_of(const std::vector<std::pair<double, double>>& points) {
  std::vector<double> v;
  for (const auto& pt : points) v.push_back(pt.second);
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

std::string percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f%%", 100 * fraction);
  return buf;
}

std::vector<svg::Marker> markers_of(const RunData& run) {
  std::vector<svg::Marker> out;
  for (const auto& m : step_markers(run))
    out.push_back({static_cast<double>(m.step), m.label, m.label == "restart" ? "#d62728" : "#7f7f7f"});
  return out;
}

std::string header(const RunData& run) {
  const Plan& p = run.plan;
  std::ostringstream o;
  o << "<h1>geopipe report: " << escape(p.job.name) << "</h1>\n<p class=\"lead\">" << escape(run.dir) << " &middot; "
    << p.num_stages() << (p.num_stages() == 1 ? " stage" : " stages") << ", schedule " << escape(p.schedule.kind)
    << ", " << p.job.micro_batches
    << " micro-batches of " << p.job.micro_batch << "&times;" << p.job.model.seq_len << " tokens &middot; "
    << run.steps.size() << " steps logged (" << run.steps.front().step << "&ndash;" << run.steps.back().step
    << "), final loss " << fmt(run.steps.back().loss) << "</p>\n";
  std::vector<std::vector<std::string>> rows;
  if (run.info) {
    std::string cmd;
    for (const auto& a : run.info->command) cmd += (cmd.empty() ? "" : " ") + a;
    rows.push_back({"started", run.info->start_time});
    rows.push_back({"command", cmd});
    rows.push_back({"world size", std::to_string(run.info->world_size)});
  }
  rows.push_back({"plan hash", p.hash()});
  rows.push_back({"policy", p.provenance.policy.empty() ? "-" : p.provenance.policy});
  if (run.checkpoint)
    rows.push_back({"checkpoint", "step " + std::to_string(run.checkpoint->step) + ", " +
                                      std::to_string(run.checkpoint->files) + " stage files (" + run.checkpoint->path + ")"});
  o << page::key_values("run-info", rows);
  for (const auto& n : run.notes) o << "<p class=\"note\">" << escape(n) << "</p>\n";
  return o.str();
}

std::string training_section(const RunData& run) {
  svg::LineChart loss{"chart-loss", "Loss", "step", "loss (nats per token)"};
  svg::Series train{"training loss", page::palette(0)}, val{"validation loss", page::palette(1)};
  val.dots = true;
  svg::LineChart tok{"chart-tokens", "Throughput", "step", "tokens per second"};
  svg::Series tps{"tokens/s", page::palette(2)};
  tok.y_from_zero = true;
  for (const auto& s : run.steps) {
    const double x = static_cast<double>(s.step);
    train.points.emplace_back(x, s.loss);
    if (s.val_loss) val.points.emplace_back(x, *s.val_loss);
    tps.points.emplace_back(x, s.tokens_per_s);
  }
  loss.series.push_back(train);
  if (!val.points.empty()) loss.series.push_back(val);
  tok.series.push_back(tps);
  loss.markers = tok.markers = markers_of(run);
  return page::section("training", "Training",
                       "<div class=\"grid\">" + svg::line_chart(loss) + svg::line_chart(tok) + "</div>");
}

// What the supervisor (geopipe launch --max-restarts) logged before each relaunch: why, on which
// plan, without which regions, from which checkpoint, and what it cost.
std::string restarts_section(const RunData& run) {
  if (run.restarts.empty()) return "";
  std::vector<std::vector<std::string>> rows;
  for (const RestartRecord& r : run.restarts) {
    std::string lost;
    for (const std::string& region : r.lost_regions) lost += (lost.empty() ? "" : ", ") + region;
    for (const std::string& host : r.lost_hosts) lost += (lost.empty() ? "host " : ", host ") + host;
    rows.push_back({std::to_string(r.restart), r.cause, r.plan, lost.empty() ? "none (same plan)" : lost,
                    r.resume_step > 0 ? "step " + std::to_string(r.resume_step) : "the start",
                    std::to_string(r.steps_redone), fmt(r.seconds_lost)});
  }
  return page::section("restarts", "Restarts",
                       page::table("restarts", {"restart", "cause", "plan", "lost regions or hosts", "resumed from",
                                                "steps redone", "seconds lost"},
                                   rows));
}

// The codec a directed link ran with: the log's when it names one, else run.json's, else the plan's.
std::string link_codec(const RunData& run, int from, int to) {
  const std::string name = std::to_string(from) + "->" + std::to_string(to);
  for (auto it = run.steps.rbegin(); it != run.steps.rend(); ++it)
    if (auto l = it->links.find(name); l != it->links.end() && !l->second.codec.empty()) return l->second.codec;
  if (run.info)
    if (auto c = run.info->link_codecs.find(name); c != run.info->link_codecs.end()) return c->second;
  const LinkPlan* l = run.plan.link_between(std::min(from, to), std::max(from, to));
  if (!l) return "none";
  return from < to ? l->codec_forward : l->codec_backward;
}

// Planned bandwidth of the region pair under a stage boundary, MB/s (0 without a topology).
double planned_mb_per_s(const RunData& run, int from_stage, int to_stage) {
  if (!run.topology) return 0;
  const Topology& t = *run.topology;
  const int a = t.region_index(run.plan.stages[static_cast<size_t>(from_stage)].region);
  const int b = t.region_index(run.plan.stages[static_cast<size_t>(to_stage)].region);
  if (a < 0 || b < 0) return 0;
  const auto spec = t.link(a, b);
  return spec ? spec->bytes_per_s() / 1e6 : 0;
}

std::string links_section(const RunData& run) {
  const int S = run.plan.num_stages();
  if (S < 2) return page::section("links", "Links", "<p>One stage: no link between stages.</p>");
  std::ostringstream charts;
  std::vector<std::vector<std::string>> rows;
  std::string unmeasured;  // boundaries the log has no measurement of
  for (int b = 0; b + 1 < S; ++b) {
    svg::LineChart c{"chart-link-" + std::to_string(b) + "-" + std::to_string(b + 1),
                     "Link stage " + std::to_string(b) + " \u2194 " + std::to_string(b + 1) + " (" +
                         run.plan.stages[static_cast<size_t>(b)].region + " \u2194 " +
                         run.plan.stages[static_cast<size_t>(b) + 1].region + ")",
                     "step", "measured MB/s (wire bytes / busy time)"};
    c.y_from_zero = true;
    for (const auto& [from, to, what, color] : {std::tuple{b, b + 1, "activations", 0}, std::tuple{b + 1, b, "gradients", 3}}) {
      const std::string name = std::to_string(from) + "->" + std::to_string(to);
      svg::Series s{name + " " + what + " \u00b7 " + link_codec(run, from, to), page::palette(static_cast<size_t>(color))};
      double mb = 0, wait = 0;
      for (const auto& st : run.steps)
        if (auto l = st.links.find(name); l != st.links.end()) {
          s.points.emplace_back(static_cast<double>(st.step), l->second.mb_per_s);
          mb += l->second.bytes / 1e6;
          wait += l->second.wait_s;
        }
      c.series.push_back(s);
      const double planned = planned_mb_per_s(run, from, to);
      const bool measured = !s.points.empty();
      rows.push_back({name, what, link_codec(run, from, to), planned > 0 ? fmt(planned) : "-",
                      measured ? fmt(median_of(s.points)) : "-", measured ? fmt(mb) : "-", measured ? fmt(wait) : "-"});
    }
    if (const double planned = planned_mb_per_s(run, b, b + 1); planned > 0)
      c.references.push_back({planned, "planned " + fmt(planned) + " MB/s", "#555"});
    c.markers = markers_of(run);
    if (c.series[0].points.empty() && c.series[1].points.empty())
      unmeasured += (unmeasured.empty() ? "" : ", ") + std::to_string(b) + "\u2194" + std::to_string(b + 1);
    else
      charts << svg::line_chart(c);
  }
  if (!unmeasured.empty())
    unmeasured = "<p class=\"note\">The step log has no measurement of the links between stages " +
                 escape(unmeasured) + ".</p>";
  return page::section("links", "Links: measured throughput against the planned bandwidth",
                       "<div class=\"grid\">" + charts.str() + "</div>" + unmeasured +
                           page::table("links", {"link", "carries", "codec", "planned MB/s", "median measured MB/s",
                                                 "MB on the wire", "receiver wait s"},
                                       rows));
}


std::string stages_section(const RunData& run) {
  if (!run.trace) return page::section("stages", "Stages", "<p class=\"note\">No trace: no per-stage fractions.</p>");
  svg::StackedBars c{"chart-stages", "Where each rank's step time went (all steps in the trace)"};
  c.width = 900;
  bool reduce = false;
  std::vector<StageFractions> all;
  for (const auto& r : run.trace->ranks) {
    all.push_back(stage_fractions(r, run.trace->first_step));
    reduce = reduce || all.back().all_reduce > 0;
  }
  // All-reduce is its own part only when the run had one (replicas of a stage).
  c.part_names = {"compute (F/B/OPT)", "communication (send, wait)"};
  c.part_colors = {span_kind_color(SpanKind::kForward), span_kind_color(SpanKind::kRecvWait)};
  if (reduce) {
    c.part_names.push_back("all-reduce");
    c.part_colors.push_back(span_kind_color(SpanKind::kAllReduce));
  }
  c.part_names.push_back("idle");
  c.part_colors.push_back("#d9d9d9");
  std::vector<std::vector<std::string>> rows;
  for (const auto& f : all) {
    c.rows.push_back(f.label);
    std::vector<double> parts = {f.compute, f.comm_wait};
    if (reduce) parts.push_back(f.all_reduce);
    parts.push_back(f.idle);
    c.fractions.push_back(parts);
    rows.push_back({f.label, percent(f.compute), percent(f.comm_wait)});
    if (reduce) rows.back().push_back(percent(f.all_reduce));
    rows.back().push_back(percent(f.idle));
    rows.back().push_back(fmt(f.wall_s));
  }
  std::vector<std::string> head = {"rank", "compute", "communication"};
  if (reduce) head.push_back("all-reduce");
  head.insert(head.end(), {"idle", "step time in trace s"});
  return page::section("stages", "Stages: compute, communication and idle time",
                       svg::stacked_bars(c) + page::table("stage-fractions", head, rows) +
                           "<p class=\"lead\">A step runs from a rank's first action to the end of its OPT; "
                           "communication is the time in sends and in waits for messages (transfer plus the "
                           "pipeline's bubbles).</p>");
}

// One rank's row of the timeline: a rectangle per span, its name inside when it fits.
std::string timeline_row(const StepWindow& w, double t0, double scale, double left, double y, double h,
                         std::set<SpanKind>& kinds) {
  std::ostringstream o;
  char buf[160];
  for (const Span& s : w.spans) {
    const SpanKind k = span_kind(s.name);
    kinds.insert(k);
    const double x = left + (s.start_us - t0) * scale, wpx = std::max(0.8, s.dur_us * scale);
    std::snprintf(buf, sizeof(buf),
                  "<rect class=\"span\" data-kind=\"%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                  "fill=\"%s\">",
                  span_kind_name(k), x, y, wpx, h, span_kind_color(k));
    o << buf << "<title>" << escape(s.name + ": " + fmt(s.dur_us / 1e3) + " ms") << "</title></rect>";
    if (wpx >= 7.0 * static_cast<double>(s.name.size()) + 4 && s.name.find(' ') == std::string::npos) {
      std::snprintf(buf, sizeof(buf), "<text class=\"span-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", x + wpx / 2,
                    y + h / 2 + 3);
      o << buf << escape(s.name) << "</text>";
    }
  }
  return o.str();
}

std::string timeline_section(const RunData& run, const RenderOptions& opt) {
  if (!run.trace) return page::section("timeline", "Schedule", "<p class=\"note\">No trace: no schedule timeline.</p>");
  std::vector<std::vector<StepWindow>> windows;
  // The default is the last step every rank finished (a rank's trace may end early).
  int64_t last = std::numeric_limits<int64_t>::max();
  for (const auto& r : run.trace->ranks) {
    windows.push_back(step_windows(r, run.trace->first_step));
    last = std::min(last, windows.back().empty() ? 0 : windows.back().back().step);
  }
  if (windows.empty()) last = 0;
  if (last == 0 && !opt.timeline_step)  // e.g. a run of 0 steps: nothing to draw, nothing wrong
    return page::section("timeline", "Schedule", "<p class=\"note\">The trace has no finished step.</p>");
  const int64_t step = opt.timeline_step.value_or(last);
  std::vector<const StepWindow*> chosen;
  double t0 = 1e300, t1 = -1e300;
  for (const auto& ws : windows)
    for (const auto& w : ws)
      if (w.step == step) {
        chosen.push_back(&w);
        t0 = std::min(t0, w.start_us);
        t1 = std::max(t1, w.end_us);
      }
  if (chosen.size() != windows.size() || chosen.empty())
    throw InputError("--step", "step", "step " + std::to_string(step) + " is not in the trace (it has steps " +
                                           std::to_string(run.trace->first_step + 1) + ".." + std::to_string(last) + ")");
  const double left = 190, right = 20, top = 52, row_h = 30, width = 1300;
  const double scale = (width - left - right) / std::max(1.0, t1 - t0);
  const double height = top + row_h * static_cast<double>(chosen.size()) + 46;
  std::ostringstream o;
  const double span_ms = (t1 - t0) / 1e3;
  for (double t : svg::nice_ticks(0, span_ms, 10)) {  // the grid first: spans are drawn over it
    if (t > span_ms * 1.0001) break;
    const double x = left + t * 1e3 * scale, y = top + row_h * static_cast<double>(chosen.size());
    o << "<line x1=\"" << x << "\" y1=\"" << top << "\" x2=\"" << x << "\" y2=\"" << y << "\" class=\"grid\"/>"
      << "<text x=\"" << x << "\" y=\"" << y + 16 << "\" text-anchor=\"middle\">" << fmt(t) << "</text>";
  }
  std::set<SpanKind> kinds;
  for (size_t i = 0; i < chosen.size(); ++i) {
    const double y = top + row_h * static_cast<double>(i);
    o << "<g class=\"rank-row\" data-rank=\"" << run.trace->ranks[i].rank << "\" data-spans=\"" << chosen[i]->spans.size()
      << "\"><text x=\"" << left - 8 << "\" y=\"" << y + 17 << "\" text-anchor=\"end\">" << escape(run.trace->ranks[i].label)
      << "</text>" << timeline_row(*chosen[i], t0, scale, left, y + 3, row_h - 8, kinds) << "</g>";
  }
  std::ostringstream head;
  head << "<svg id=\"chart-timeline\" class=\"chart timeline\" data-step=\"" << step << "\" width=\"" << width
       << "\" height=\"" << height << "\" viewBox=\"0 0 " << width << " " << height << "\">"
       << "<text x=\"" << left << "\" y=\"18\" class=\"title\">Schedule of step " << step
       << " per rank (ms since the step began)</text>";
  double lx = left;
  for (SpanKind k : kinds) {
    head << "<rect x=\"" << lx << "\" y=\"30\" width=\"14\" height=\"8\" fill=\"" << span_kind_color(k) << "\"/><text x=\""
         << lx + 18 << "\" y=\"38\">" << span_kind_name(k) << "</text>";
    lx += 30 + 6.6 * std::string(span_kind_name(k)).size();
  }
  return page::section("timeline", "Schedule of one step",
                       head.str() + o.str() + "</svg><p class=\"lead\">Step boundaries: each rank's OPT ends its step. "
                                              "Choose another step with <code>geopipe report DIR --step N</code>.</p>");
}

// The regions the picture shows, in the pipeline's order first, then the topology's others.
std::vector<std::string> picture_regions(const RunData& run) {
  std::vector<std::string> out;
  for (const auto& st : run.plan.stages)
    if (std::find(out.begin(), out.end(), st.region) == out.end()) out.push_back(st.region);
  if (run.topology)
    for (const auto& r : run.topology->regions)
      if (std::find(out.begin(), out.end(), r.name) == out.end()) out.push_back(r.name);
  return out;
}

// The lines a region's box lists: its stages, their layers and ranks (at most kMaxStageLines;
// a region holding more says how many more).
constexpr size_t kMaxStageLines = 8;
std::vector<std::string> stage_lines(const RunData& run, const std::string& region) {
  std::vector<std::string> lines;
  size_t count = 0;
  for (const auto& st : run.plan.stages) {
    if (st.region != region || ++count > kMaxStageLines) continue;
    std::string ranks;
    for (int r : st.ranks) ranks += (ranks.empty() ? "" : ",") + std::to_string(r);
    const std::string layers = st.layer_end - st.layer_begin == 1
                                   ? "layer " + std::to_string(st.layer_begin)
                                   : "layers " + std::to_string(st.layer_begin) + "\u2013" + std::to_string(st.layer_end - 1);
    lines.push_back("stage " + std::to_string(st.index) + ": " + layers + " (rank " + ranks + ")");
  }
  if (count > kMaxStageLines) lines.back() = "\u2026 and " + std::to_string(count - kMaxStageLines + 1) + " more stages";
  return lines;
}

double node_height(size_t lines) { return std::max(70.0, 44.0 + 14.0 * static_cast<double>(lines)); }

// A region's box: name, price and power, and the stages placed on it with their layers.
std::string region_node(const RunData& run, const std::string& name, double cx, double cy, double w) {
  std::ostringstream o;
  const Region* reg = nullptr;
  if (run.topology)
    if (int i = run.topology->region_index(name); i >= 0) reg = &run.topology->regions[static_cast<size_t>(i)];
  const std::vector<std::string> lines = stage_lines(run, name);
  const double h = node_height(lines.size()), top = cy - h / 2;
  const bool used = !lines.empty();
  o << "<g class=\"region\" data-region=\"" << escape(name) << "\" data-stages=\"" << lines.size() << "\">"
    << "<rect x=\"" << cx - w / 2 << "\" y=\"" << top << "\" width=\"" << w << "\" height=\"" << h
    << "\" rx=\"8\" fill=\"" << (used ? "#eef3fa" : "#f6f6f6") << "\" stroke=\"" << (used ? "#4e79a7" : "#bbb") << "\"/>"
    << "<text x=\"" << cx << "\" y=\"" << top + 17 << "\" text-anchor=\"middle\" class=\"title\">" << escape(name)
    << "</text>";
  if (reg)
    o << "<text x=\"" << cx << "\" y=\"" << top + 32 << "\" text-anchor=\"middle\" class=\"label\">"
      << escape("$" + fmt(reg->price_usd_per_kwh) + "/kWh \u00b7 " + std::to_string(reg->gpus) + "\u00d7" +
                reg->gpu_type + " " + fmt(reg->gpu_power_w) + " W \u00b7 PUE " + fmt(reg->pue))
      << "</text>";
  for (size_t i = 0; i < lines.size(); ++i)
    o << "<text x=\"" << cx << "\" y=\"" << top + 49 + 14 * static_cast<double>(i) << "\" text-anchor=\"middle\">"
      << escape(lines[i]) << "</text>";
  o << "</g>";
  return o.str();
}

std::string plan_section(const RunData& run) {
  const auto regions = picture_regions(run);
  double node_h = 0;
  for (const auto& r : regions) node_h = std::max(node_h, node_height(stage_lines(run, r).size()));
  // Boxes sit on an ellipse; the top and bottom ones must clear the title and the frame.
  const double width = 1300, node_w = 250, ry = 150, cx = width / 2, cy = 40 + node_h / 2 + ry;
  const double rx = width / 2 - node_w / 2 - 20, height = cy + ry + node_h / 2 + 20;
  std::map<std::string, std::pair<double, double>> at;
  const double n = static_cast<double>(regions.size());
  for (size_t i = 0; i < regions.size(); ++i) {  // on an ellipse: no link passes through a region
    const double a = M_PI + 2 * M_PI * static_cast<double>(i) / n;
    at[regions[i]] = {cx + rx * std::cos(a), cy - ry * std::sin(a)};
  }
  std::ostringstream lines, labels;
  std::vector<std::vector<std::string>> rows;
  if (run.topology)
    for (const auto& l : run.topology->links) {
      if (!at.count(l.a) || !at.count(l.b)) continue;
      const auto [x1, y1] = at[l.a];
      const auto [x2, y2] = at[l.b];
      std::string used;
      for (const auto& pl : run.plan.links)
        if ((pl.from_region == l.a && pl.to_region == l.b) || (pl.from_region == l.b && pl.to_region == l.a))
          used += (used.empty() ? "" : ", ") + std::to_string(pl.from_stage) + "\u2192" + std::to_string(pl.to_stage);
      lines << "<line class=\"" << (used.empty() ? "link" : "link used") << "\" x1=\"" << x1 << "\" y1=\"" << y1
            << "\" x2=\"" << x2 << "\" y2=\"" << y2 << "\" stroke=\"" << (used.empty() ? "#ccc" : "#f28e2b")
            << "\" stroke-width=\"" << (used.empty() ? 1.2 : 4) << "\"/>";
      const std::string label = fmt(l.spec.gbps) + " Gbit/s \u00b7 " + fmt(l.spec.latency_ms) + " ms";
      if (!used.empty()) {
        const double mx = (x1 + x2) / 2, my = (y1 + y2) / 2, lw = 7.0 * static_cast<double>(label.size()) + 10;
        labels << "<rect x=\"" << mx - lw / 2 << "\" y=\"" << my - 11 << "\" width=\"" << lw
               << "\" height=\"16\" rx=\"3\" fill=\"#fff\" stroke=\"#f28e2b\"/><text x=\"" << mx << "\" y=\"" << my + 1
               << "\" text-anchor=\"middle\">" << escape(label) << "</text>";
      }
      rows.push_back({l.a + " \u2194 " + l.b, fmt(l.spec.gbps), fmt(l.spec.latency_ms), used.empty() ? "-" : used});
    }
  std::ostringstream o;
  o << "<svg id=\"chart-plan\" class=\"chart plan\" width=\"" << width << "\" height=\"" << height << "\" viewBox=\"0 0 "
    << width << " " << height << "\"><text x=\"20\" y=\"20\" class=\"title\">Regions, links and the stages placed on "
    << "them (orange: the pipeline's links)</text>" << lines.str() << labels.str();
  for (const auto& r : regions) o << region_node(run, r, at[r].first, at[r].second, node_w);
  o << "</svg>";
  if (!rows.empty())
    o << page::table("topology-links", {"link", "Gbit/s", "latency ms (one way)", "pipeline stages"}, rows);
  return page::section("plan", "The plan", o.str());
}

// Electricity of the logged steps: each stage's region's GPU power x PUE x wall time, at its
// price (as geopipe-train's summary computes it). Wall time = elapsed time of every start summed.
std::pair<double, double> measured_energy(const RunData& run) {
  if (!run.topology) return {0, 0};
  double wall = 0;
  for (size_t i = 0; i < run.steps.size(); ++i) {
    const bool segment_end = i + 1 == run.steps.size() || run.steps[i + 1].elapsed_s < run.steps[i].elapsed_s;
    if (segment_end) wall += run.steps[i].elapsed_s;
  }
  double kwh = 0, usd = 0;
  for (const auto& st : run.plan.stages) {
    const int ri = run.topology->region_index(st.region);
    if (ri < 0) continue;
    const Region& r = run.topology->regions[static_cast<size_t>(ri)];
    const double k = r.gpu_power_w * r.pue * wall * static_cast<double>(st.ranks.size()) / 3.6e6;
    kwh += k;
    usd += k * r.price_usd_per_kwh;
  }
  return {kwh, usd};
}

std::string predicted_section(const RunData& run) {
  const Prediction& p = run.plan.predicted;
  const double steps = static_cast<double>(run.steps.size());
  const double per_step = run.plan.job.iterations > 0 ? steps / run.plan.job.iterations : 0;
  const double measured_s = median_step_s(run.steps);
  const auto [kwh, usd] = measured_energy(run);
  auto gap = [](double pred, double meas) { return pred > 0 ? pct(100 * (meas - pred) / pred) : std::string("-"); };
  const std::vector<std::string> names = {"predicted (plan)", "measured"};
  const std::vector<std::string> colors = {"#bab0ac", page::palette(0)};
  auto bars = [&](const char* id, const char* title, const char* unit, double predicted, double measured) {
    svg::BarChart b(id, title, unit);
    b.categories = {""};
    b.series_names = names;
    b.series_colors = colors;
    b.values = {{predicted, measured}};
    b.width = 420;
    b.height = 260;
    return svg::bar_chart(b);
  };
  std::string charts = bars("chart-predicted-time", "Iteration time", "seconds per step", p.iteration_s, measured_s);
  if (run.topology)  // power, PUE and prices come from it: without it there is nothing to measure
    charts += bars("chart-predicted-energy", "Electricity of the logged steps", "kWh", p.energy_kwh * per_step, kwh) +
              bars("chart-predicted-cost", "Electricity cost of the logged steps", "US$", p.electricity_usd * per_step,
                   usd);  // the plan's cost also holds egress, which a run does not measure
  std::vector<std::vector<std::string>> rows = {
      {"iteration time s (measured: median step)", fmt(p.iteration_s), fmt(measured_s), gap(p.iteration_s, measured_s)}};
  if (run.topology) {
    rows.push_back({"electricity kWh, " + fmt(steps) + " steps", fmt(p.energy_kwh * per_step), fmt(kwh),
                    gap(p.energy_kwh * per_step, kwh)});
    rows.push_back({"electricity US$, " + fmt(steps) + " steps", fmt(p.electricity_usd * per_step), fmt(usd),
                    gap(p.electricity_usd * per_step, usd)});
  }
  return page::section("predicted", "Predicted against measured",
                       "<div class=\"grid\">" + charts + "</div>" +
                           page::table("predicted", {"", "predicted", "measured", "measured vs predicted"}, rows) +
                           "<p class=\"lead\">The plan predicts the whole job (" +
                           std::to_string(run.plan.job.iterations) +
                           " iterations); energy and cost are scaled to the steps logged. Electricity: GPU power "
                           "&times; PUE &times; wall time at each region's price.</p>");
}

}  // namespace

std::string render_run_html(const RunData& run, const RenderOptions& options) {
  std::string body = header(run);
  body += training_section(run);
  body += restarts_section(run);
  body += links_section(run);
  body += stages_section(run);
  body += timeline_section(run, options);
  body += plan_section(run);
  body += predicted_section(run);
  if (!run.summary.empty())
    body += page::section("summary", "geopipe-train's summary", "<pre>" + escape(run.summary) + "</pre>");
  return page::document("geopipe report: " + run.plan.job.name, body);
}

}  // namespace geopipe::report
