// The report of a real run, checked in a real browser: a short 2-stage training with --run-dir,
// `geopipe report`, then headless Chromium renders the page to its DOM and to a PNG. Every chart
// is there with its data (one loss point per logged step), the PNG is a picture (decoded with
// zlib), and the page made no network request (Chromium's own network log). Skips, saying why,
// only where Chromium is not installed or cannot start.
#include "../support/run_command.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using Result = geopipe::test_support::CommandResult;
using geopipe::test_support::run_command;

std::string src(const std::string& rel) { return std::string(GEOPIPE_SOURCE_DIR) + "/" + rel; }

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Headless Chromium with no way out: every host name resolves to nothing, no background
// services; the network log records whatever the page still asked for.
std::string chromium(const std::string& args) {
  return "timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking "
         "--disable-component-update --disable-sync --no-first-run --host-resolver-rules=\"MAP * ~NOTFOUND\" " +
         args;
}

// The decoded pixels of an 8-bit RGB or RGBA PNG (what Chromium writes), one row after another.
struct Image {
  uint32_t width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
  std::string error;
};

uint32_t be32(const std::string& s, size_t at) {
  return (uint32_t(uint8_t(s[at])) << 24) | (uint32_t(uint8_t(s[at + 1])) << 16) | (uint32_t(uint8_t(s[at + 2])) << 8) |
         uint32_t(uint8_t(s[at + 3]));
}

int paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

// Undoes PNG's per-row filters (None, Sub, Up, Average, Paeth) in place.
bool unfilter(std::vector<uint8_t>& raw, Image& img) {
  const size_t bpp = img.channels, stride = size_t(img.width) * bpp;
  std::vector<uint8_t> prev(stride, 0);
  for (uint32_t y = 0; y < img.height; ++y) {
    const uint8_t filter = raw[y * (stride + 1)];
    uint8_t* row = &raw[y * (stride + 1) + 1];
    for (size_t x = 0; x < stride; ++x) {
      const int a = x >= bpp ? row[x - bpp] : 0, b = prev[x], c = x >= bpp ? prev[x - bpp] : 0;
      int add = 0;
      switch (filter) {
        case 0: break;
        case 1: add = a; break;
        case 2: add = b; break;
        case 3: add = (a + b) / 2; break;
        case 4: add = paeth(a, b, c); break;
        default: return false;
      }
      row[x] = uint8_t(row[x] + add);
    }
    img.pixels.insert(img.pixels.end(), row, row + stride);
    prev.assign(row, row + stride);
  }
  return true;
}

Image decode_png(const std::string& png) {
  Image img;
  if (png.size() < 8 || png.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) return img.error = "not a PNG", img;
  std::string idat;
  for (size_t at = 8; at + 8 <= png.size();) {
    const uint32_t len = be32(png, at);
    const std::string type = png.substr(at + 4, 4);
    if (type == "IHDR") {
      img.width = be32(png, at + 8);
      img.height = be32(png, at + 12);
      const int depth = uint8_t(png[at + 16]), color = uint8_t(png[at + 17]), interlace = uint8_t(png[at + 20]);
      if (depth != 8 || (color != 2 && color != 6) || interlace != 0) return img.error = "unexpected PNG format", img;
      img.channels = color == 6 ? 4 : 3;
    } else if (type == "IDAT") {
      idat += png.substr(at + 8, len);
    }
    at += 12 + size_t(len);
  }
  std::vector<uint8_t> raw(size_t(img.height) * (size_t(img.width) * img.channels + 1));
  uLongf n = raw.size();
  if (uncompress(raw.data(), &n, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) != Z_OK || n != raw.size())
    return img.error = "IDAT does not inflate to the image size", img;
  if (!unfilter(raw, img)) img.error = "bad row filter";
  return img;
}

// Requests the page itself made (its network isolation key is the file:// page), other than
// loading files: Chromium's background services use other keys.
std::vector<std::string> page_requests(const fs::path& netlog) {
  std::vector<std::string> urls;
  const auto doc = nlohmann::json::parse(read(netlog), nullptr, false);
  if (doc.is_discarded()) return {"unreadable network log " + netlog.string()};
  const int start_job = doc["constants"]["logEventTypes"].value("URL_REQUEST_START_JOB", -1);
  for (const auto& e : doc["events"]) {
    if (e.value("type", -2) != start_job || !e.contains("params")) continue;
    const auto& p = e["params"];
    const std::string url = p.value("url", ""), key = p.value("network_isolation_key", "");
    if (key.rfind("file://", 0) == 0 && url.rfind("file:", 0) != 0) urls.push_back(url);
  }
  return urls;
}

// The region the run's plan puts stage `stage` on.
std::string region_of_stage(const fs::path& page, int stage) {
  const auto plan = nlohmann::json::parse(read(page.parent_path() / "plan.json"));
  return plan["stages"][stage]["region"].get<std::string>();
}

class ReportBrowser : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::path(GEOPIPE_BINARY_DIR) / "tests" / ("report-browser-" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  void SetUp() override {
    if (run_command("command -v chromium").exit_code != 0) GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs it)";
    Result probe = run_command(chromium("--dump-dom about:blank"));
    if (probe.exit_code != 0 || probe.output.find("<body>") == std::string::npos)
      GTEST_SKIP() << "chromium cannot start here: " << probe.output.substr(0, 400);
  }
  // One short real run and its report, shared by the tests.
  static fs::path report() {
    static const fs::path page = [] {
      const fs::path plan = *dir_ / "plan2.json", run = *dir_ / "run";
      Result p = run_command(std::string(GEOPIPE_CLI) + " plan --topology " + src("examples/topologies/local4.json") +
                             " --job " + src("examples/jobs/gpt-tiny.json") + " --stages 2 --schedule 1f1b -o " + plan.string());
      EXPECT_EQ(p.exit_code, 0) << p.output;
      Result t = run_command(std::string(GEOPIPE_MPIEXEC) + " -n 2 --oversubscribe " + GEOPIPE_TRAIN + " --plan " +
                             plan.string() + " --topology " + src("examples/topologies/local4.json") +
                             " --iters 6 --eval-every 3 --eval-batches 2 --threads 1 --no-progress --run-dir " +
                             run.string());
      EXPECT_EQ(t.exit_code, 0) << t.output;
      Result r = run_command(std::string(GEOPIPE_CLI) + " report " + run.string() + " -o " + (run / "report.html").string());
      EXPECT_EQ(r.exit_code, 0) << r.output;
      return run / "report.html";
    }();
    return page;
  }
  static fs::path* dir_;
};
fs::path* ReportBrowser::dir_ = nullptr;

// The value of `attr` on the element that carries `anchor`.
std::string attribute_after(const std::string& html, const std::string& anchor, const std::string& attr) {
  const size_t at = html.find(anchor);
  if (at == std::string::npos) return "";
  const std::string tag = html.substr(html.rfind('<', at), html.find('>', at) - html.rfind('<', at));
  std::smatch m;
  return std::regex_search(tag, m, std::regex(attr + "=\"([^\"]*)\"")) ? m[1].str() : "";
}

TEST_F(ReportBrowser, RunDirectoryHoldsEveryFileOfTheRun) {
  const fs::path run = report().parent_path();
  for (const char* f : {"plan.json", "topology.json", "run.json", "train.jsonl", "trace.json", "summary.txt",
                        "checkpoint/manifest.json", "report.html"})
    EXPECT_TRUE(fs::exists(run / f)) << f;
  const auto info = nlohmann::json::parse(read(run / "run.json"));
  EXPECT_EQ(info["world_size"], 2);
  const auto trace = nlohmann::json::parse(read(run / "trace.json"));
  EXPECT_EQ(trace["otherData"]["plan_hash"], info["plan_hash"]);
  EXPECT_EQ(nlohmann::json::parse(read(run / "checkpoint/manifest.json"))["step"], 6) << "the final weights";
}

TEST_F(ReportBrowser, RenderedDomHasEveryChartWithItsData) {
  const fs::path page = report();
  Result dom = run_command(chromium("--dump-dom file://" + page.string()));
  ASSERT_EQ(dom.exit_code, 0) << dom.output.substr(0, 2000);
  const std::string& d = dom.output;
  for (const char* id : {"chart-loss", "chart-tokens", "chart-link-0-1", "chart-stages", "chart-timeline", "chart-plan",
                         "chart-predicted-time", "chart-predicted-energy", "chart-predicted-cost"})
    EXPECT_NE(d.find("id=\"" + std::string(id) + "\""), std::string::npos) << id;
  // One point per logged step: the log has 6 lines, the loss path 6 points.
  std::istringstream log(read(page.parent_path() / "train.jsonl"));
  int lines = 0;
  for (std::string l; std::getline(log, l);) lines += !l.empty();
  EXPECT_EQ(lines, 6);
  EXPECT_EQ(attribute_after(d, "data-series=\"training loss\"", "data-points"), std::to_string(lines));
  const std::string path = attribute_after(d, "data-series=\"training loss\"", "d");
  const std::regex point("[ML](-?[0-9.]+) (-?[0-9.]+)");
  EXPECT_EQ(std::distance(std::sregex_iterator(path.begin(), path.end(), point), std::sregex_iterator()), lines) << path;
  EXPECT_EQ(attribute_after(d, "data-series=\"validation loss\"", "data-points"), "2") << "steps 3 and 6";
  EXPECT_EQ(attribute_after(d, "data-series=\"tokens/s\"", "data-points"), std::to_string(lines));
  // Both directions of the link, measured every step, named with their codec.
  EXPECT_EQ(attribute_after(d, "data-series=\"0-&gt;1 activations", "data-points"), std::to_string(lines));
  EXPECT_EQ(attribute_after(d, "data-series=\"1-&gt;0 gradients", "data-points"), std::to_string(lines));
  EXPECT_EQ(attribute_after(d, "id=\"chart-stages\"", "class"), "chart stacked-bars");
  EXPECT_NE(d.find("data-part=\"compute (F/B/OPT)\""), std::string::npos);
  EXPECT_EQ(attribute_after(d, "data-region=\"" + region_of_stage(page, 1) + "\"", "data-stages"), "1");
  EXPECT_EQ(attribute_after(d, "id=\"chart-timeline\"", "data-step"), "6");
  for (const char* rank : {"data-rank=\"0\"", "data-rank=\"1\""}) {
    const std::string spans = attribute_after(d, rank, "data-spans");
    EXPECT_GE(spans.empty() ? 0 : std::stoi(spans), 2 * 8) << rank << ": F and B of 8 micro-batches at least";
  }
  EXPECT_NE(d.find("data-kind=\"F forward\""), std::string::npos);
  EXPECT_NE(d.find("data-kind=\"receive wait\""), std::string::npos);
}

TEST_F(ReportBrowser, ScreenshotIsAPictureNotABlankPage) {
  const fs::path page = report(), png = *dir_ / "report.png";
  Result shot = run_command(chromium("--hide-scrollbars --window-size=1400,4000 --screenshot=" + png.string() +
                                     " file://" + page.string()));
  ASSERT_EQ(shot.exit_code, 0) << shot.output.substr(0, 2000);
  const Image img = decode_png(read(png));
  ASSERT_TRUE(img.error.empty()) << img.error;
  EXPECT_EQ(img.width, 1400u);
  EXPECT_EQ(img.height, 4000u);
  std::set<uint32_t> colors;
  size_t dark = 0;
  for (size_t i = 0; i + 2 < img.pixels.size(); i += img.channels) {
    const uint8_t r = img.pixels[i], g = img.pixels[i + 1], b = img.pixels[i + 2];
    colors.insert(uint32_t(r) << 16 | uint32_t(g) << 8 | b);
    dark += r + g + b < 3 * 160;
  }
  EXPECT_GT(colors.size(), 50u) << "charts in several colours, anti-aliased text";
  EXPECT_GT(dark, img.pixels.size() / img.channels / 200) << "text, lines and bars cover more than 0.5% of the page";
}

TEST_F(ReportBrowser, PageMakesNoNetworkRequest) {
  const fs::path page = report(), log = *dir_ / "page.netlog";
  const std::string html = read(page);
  for (const char* s : {"http://", "https://", "<script", "<link", "<img", "<iframe", "url(", "@import"})
    EXPECT_EQ(html.find(s), std::string::npos) << s;
  Result r = run_command(chromium("--log-net-log=" + log.string() + " --dump-dom file://" + page.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output.substr(0, 2000);
  EXPECT_TRUE(page_requests(log).empty()) << page_requests(log).front();
  // The same check sees a page that does ask for something.
  const fs::path bad = *dir_ / "asks.html", bad_log = *dir_ / "asks.netlog";
  std::ofstream(bad) << "<!DOCTYPE html><img src=\"https://example.invalid/x.png\">";
  ASSERT_EQ(run_command(chromium("--log-net-log=" + bad_log.string() + " --dump-dom file://" + bad.string())).exit_code, 0);
  const auto asked = page_requests(bad_log);
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0], "https://example.invalid/x.png");
}

}  // namespace
