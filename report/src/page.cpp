#include "page.h"

#include <geopipe/report/report.h>
#include <geopipe/report/svg.h>

#include <geopipe/core/error.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace geopipe::report {

namespace page {

namespace {

// System fonts only (DejaVu on Debian): nothing is fetched.
constexpr const char* kStyle = R"(
body { font-family: "DejaVu Sans", Verdana, sans-serif; font-size: 13px; color: #222; margin: 20px 28px;
       background: #fff; max-width: 1340px; }
h1 { font-size: 22px; margin: 0 0 6px 0; }
h2 { font-size: 17px; margin: 26px 0 8px 0; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.lead { color: #555; margin: 2px 0 10px 0; }
.grid { display: flex; flex-wrap: wrap; gap: 14px 20px; margin-bottom: 14px; }
svg.chart { background: #fff; border: 1px solid #e3e3e3; }
svg text { font-family: "DejaVu Sans", Verdana, sans-serif; font-size: 11px; fill: #333; }
svg text.title { font-size: 13px; font-weight: bold; }
svg text.label { font-size: 11px; fill: #555; }
svg text.value { font-size: 10px; fill: #333; }
svg text.in-bar { font-size: 10px; fill: #fff; }
svg text.span-label { font-size: 9px; fill: #fff; }
svg text.marker-label { font-size: 10px; fill: #555; }
svg .grid { stroke: #eee; } svg .tick { stroke: #999; } svg .frame { fill: none; stroke: #bbb; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 8px; font-size: 12px; overflow-x: auto; }
.note { color: #8a5a00; }
)";

}  // namespace

std::string document(const std::string& title, const std::string& body) {
  return "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" + svg::escape(title) +
         "</title>\n<style>" + kStyle + "</style>\n</head>\n<body>\n" + body + "</body>\n</html>\n";
}

std::string section(const std::string& id, const std::string& heading, const std::string& content) {
  return "<section id=\"" + svg::escape(id) + "\">\n<h2>" + svg::escape(heading) + "</h2>\n" + content + "\n</section>\n";
}

std::string table(const std::string& cls, const std::vector<std::string>& header,
                  const std::vector<std::vector<std::string>>& rows) {
  std::ostringstream o;
  o << "<table class=\"" << svg::escape(cls) << "\"><tr>";
  for (const auto& h : header) o << "<th>" << svg::escape(h) << "</th>";
  o << "</tr>";
  for (const auto& r : rows) {
    o << "<tr>";
    for (const auto& c : r) {
      // Right-align numbers so columns read as numbers.
      const bool num = !c.empty() && (std::isdigit(static_cast<unsigned char>(c[0])) || c[0] == '-' || c[0] == '+' || c[0] == '$');
      o << (num ? "<td class=\"num\">" : "<td>") << svg::escape(c) << "</td>";
    }
    o << "</tr>";
  }
  o << "</table>";
  return o.str();
}

std::string key_values(const std::string& cls, const std::vector<std::vector<std::string>>& rows) {
  std::ostringstream o;
  o << "<table class=\"" << svg::escape(cls) << "\">";
  for (const auto& r : rows) o << "<tr><th>" << svg::escape(r.at(0)) << "</th><td>" << svg::escape(r.at(1)) << "</td></tr>";
  o << "</table>";
  return o.str();
}

const char* palette(size_t i) {
  static const char* colors[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
                                 "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
  return colors[i % 10];
}

}  // namespace page

void write_html(const std::string& path, const std::string& html) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << html;
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw Error("cannot write " + path);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error("cannot write " + path);
  }
}

}  // namespace geopipe::report
