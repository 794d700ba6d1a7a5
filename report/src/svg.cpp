#include <geopipe/report/svg.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>

namespace geopipe::report::svg {

namespace {

// Pixel coordinates: one decimal is finer than a screen pixel and keeps the output stable.
std::string percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f%%", 100 * fraction);
  return buf;
}

// Text drawn on a colour: dark on light ones (the idle grey), white on the others.
const char* text_on(const std::string& hex) {
  if (hex.size() != 7 || hex[0] != '#') return "#fff";
  const long rgb = std::strtol(hex.c_str() + 1, nullptr, 16);
  const double luma = 0.299 * double((rgb >> 16) & 255) + 0.587 * double((rgb >> 8) & 255) + 0.114 * double(rgb & 255);
  return luma > 170 ? "#333" : "#fff";
}

std::string px(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", v);
  return buf;
}

struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    if (!std::isfinite(v)) return;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return lo > hi; }
};

// The plot area of a chart and its data -> pixel mapping.
struct Frame {
  double left, top, width, height;
  double x0, x1, y0, y1;
  double x(double v) const { return left + (x1 > x0 ? (v - x0) / (x1 - x0) : 0.5) * width; }
  double y(double v) const { return top + height - (y1 > y0 ? (v - y0) / (y1 - y0) : 0.5) * height; }
};

constexpr double kLeft = 70, kRight = 20, kTop = 52, kBottom = 46;

std::string text(double x, double y, const std::string& s, const std::string& attrs = "") {
  return "<text x=\"" + px(x) + "\" y=\"" + px(y) + "\"" + (attrs.empty() ? "" : " " + attrs) + ">" + escape(s) +
         "</text>";
}

// Title, then one legend entry per series in a row under it.
std::string heading(const std::string& title, const std::vector<std::pair<std::string, std::string>>& legend) {
  std::ostringstream o;
  o << text(kLeft, 18, title, "class=\"title\"");
  double x = kLeft;
  const double y = 38;
  for (const auto& [name, color] : legend) {
    const double w = 24 + 6.6 * static_cast<double>(name.size());
    o << "<g class=\"legend\"><rect x=\"" << px(x) << "\" y=\"" << px(y - 8) << "\" width=\"14\" height=\"8\" fill=\""
      << color << "\"/>" << text(x + 18, y, name) << "</g>";
    x += w + 10;
  }
  return o.str();
}

// Axes, grid and tick labels of a frame.
std::string axes(const Frame& f, const std::vector<double>& xt, const std::vector<double>& yt,
                 const std::string& x_label, const std::string& y_label) {
  std::ostringstream o;
  o << "<g class=\"axes\">";
  for (double t : yt) {
    const double y = f.y(t);
    o << "<line x1=\"" << px(f.left) << "\" y1=\"" << px(y) << "\" x2=\"" << px(f.left + f.width) << "\" y2=\""
      << px(y) << "\" class=\"grid\"/>";
    o << text(f.left - 6, y + 4, fmt(t), "text-anchor=\"end\"");
  }
  for (double t : xt) {
    const double x = f.x(t);
    o << "<line x1=\"" << px(x) << "\" y1=\"" << px(f.top + f.height) << "\" x2=\"" << px(x) << "\" y2=\""
      << px(f.top + f.height + 4) << "\" class=\"tick\"/>";
    o << text(x, f.top + f.height + 17, fmt(t), "text-anchor=\"middle\"");
  }
  o << "<rect x=\"" << px(f.left) << "\" y=\"" << px(f.top) << "\" width=\"" << px(f.width) << "\" height=\""
    << px(f.height) << "\" class=\"frame\"/>";
  o << text(f.left + f.width / 2, f.top + f.height + 36, x_label, "text-anchor=\"middle\" class=\"label\"");
  o << text(16, f.top + f.height / 2, y_label,
            "text-anchor=\"middle\" class=\"label\" transform=\"rotate(-90 16 " + px(f.top + f.height / 2) + ")\"");
  o << "</g>";
  return o.str();
}

std::string open_svg(const std::string& id, int width, int height, const std::string& cls) {
  return "<svg id=\"" + escape(id) + "\" class=\"chart " + cls + "\" width=\"" +
         std::to_string(width) + "\" height=\"" + std::to_string(height) + "\" viewBox=\"0 0 " +
         std::to_string(width) + " " + std::to_string(height) + "\">";
}

std::string series_svg(const Frame& f, const Series& s) {
  std::ostringstream o;
  const std::string attrs = "data-series=\"" + escape(s.name) + "\" data-points=\"" + std::to_string(s.points.size()) + "\"";
  if (s.line && s.points.size() > 1) {
    // Long series get a thinner line, so that neighbouring steps stay apart.
    o << "<path class=\"series\" " << attrs << " fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\""
      << (s.points.size() > 200 ? "1.1" : "1.8") << "\""
      << " d=\"";
    for (size_t i = 0; i < s.points.size(); ++i)
      o << (i ? " L" : "M") << px(f.x(s.points[i].first)) << " " << px(f.y(s.points[i].second));
    o << "\"/>";
  }
  // Dots where asked, and always for a series of one point (a path of one point draws nothing).
  if (s.dots || !s.line || s.points.size() == 1) {
    o << "<g class=\"dots\" " << attrs << " fill=\"" << s.color << "\">";
    for (const auto& [x, y] : s.points) {
      o << "<circle cx=\"" << px(f.x(x)) << "\" cy=\"" << px(f.y(y)) << "\" r=\"" << (s.line ? "3" : "4") << "\"/>";
      if (s.label_points) {  // to the right of the dot, or to its left near the right edge
        const bool left = f.x(x) > f.left + 0.75 * f.width;
        o << text(f.x(x) + (left ? -7 : 7), f.y(y) - 6, s.name,
                  left ? "class=\"value\" text-anchor=\"end\"" : "class=\"value\"");
      }
    }
    o << "</g>";
  }
  return o.str();
}

}  // namespace

std::string escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string fmt(double v) {
  char buf[32];
  const double a = std::fabs(v);
  if (!std::isfinite(v)) return "n/a";
  if (a < 1e-12) return "0";
  if (a >= 1e9) std::snprintf(buf, sizeof(buf), "%.3gG", v / 1e9);
  else if (a >= 1e6) std::snprintf(buf, sizeof(buf), "%.3gM", v / 1e6);
  else if (a >= 1e4) std::snprintf(buf, sizeof(buf), "%.3gk", v / 1e3);
  else if (a >= 1e-3) std::snprintf(buf, sizeof(buf), "%.4g", v);
  else std::snprintf(buf, sizeof(buf), "%.2e", v);
  return buf;
}

std::vector<double> nice_ticks(double lo, double hi, int count) {
  if (!(hi > lo)) {  // one value: a range around it
    const double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / std::max(1, count);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  // A range of several whole numbers (steps, counts) gets whole ticks: no 2.5 between 0 and 5.
  const bool whole = lo == std::floor(lo) && hi == std::floor(hi) && hi - lo >= count;
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (whole && m * mag != std::floor(m * mag)) continue;
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  }
  std::vector<double> ticks;
  const double first = std::floor(lo / step + 1e-9) * step;
  for (double t = first; t <= hi + step * (1 - 1e-9); t += step) ticks.push_back(std::fabs(t) < step * 1e-9 ? 0 : t);
  return ticks;
}

std::string line_chart(const LineChart& c) {
  Range xr, yr;
  for (const auto& s : c.series)
    for (const auto& [x, y] : s.points) {
      xr.add(x);
      yr.add(y);
    }
  for (const auto& m : c.markers) xr.add(m.x);
  for (const auto& r : c.references) yr.add(r.y);
  if (c.y_from_zero) yr.add(0);
  if (xr.empty()) xr.add(0);
  if (yr.empty()) yr.add(0);
  // x spans exactly the data (steps 1..N fill the plot), with the round ticks inside it; y is
  // widened to round ticks so that the top and bottom lines are labelled.
  // A scatter (no series drawn as a line) keeps its dots and their labels off the frame.
  const bool scatter = !c.series.empty() && std::none_of(c.series.begin(), c.series.end(), [](const Series& s) { return s.line; });
  if (scatter && xr.hi > xr.lo) {
    const double pad = 0.12 * (xr.hi - xr.lo);
    xr.lo -= pad;
    xr.hi += pad;
  }
  auto xt = nice_ticks(xr.lo, xr.hi, 6);
  const double x0 = xr.hi > xr.lo ? xr.lo : xt.front(), x1 = xr.hi > xr.lo ? xr.hi : xt.back();
  xt.erase(std::remove_if(xt.begin(), xt.end(), [&](double t) { return t < x0 - 1e-9 * (x1 - x0) || t > x1 + 1e-9 * (x1 - x0); }),
           xt.end());
  const auto yt = nice_ticks(yr.lo, yr.hi, 5);
  Frame f{kLeft, kTop, c.width - kLeft - kRight, c.height - kTop - kBottom, x0, x1, yt.front(), yt.back()};
  std::vector<std::pair<std::string, std::string>> legend;
  for (const auto& s : c.series) legend.emplace_back(s.name, s.color);
  std::ostringstream o;
  o << open_svg(c.id, c.width, c.height, "line-chart") << heading(c.title, legend)
    << axes(f, xt, yt, c.x_label, c.y_label);
  for (const auto& r : c.references)
    o << "<g class=\"reference\"><line x1=\"" << px(f.left) << "\" y1=\"" << px(f.y(r.y)) << "\" x2=\""
      << px(f.left + f.width) << "\" y2=\"" << px(f.y(r.y)) << "\" stroke=\"" << r.color
      << "\" stroke-dasharray=\"2 3\"/>" << text(f.left + f.width - 4, f.y(r.y) - 4, r.label, "text-anchor=\"end\"")
      << "</g>";
  for (size_t i = 0; i < c.markers.size(); ++i) {
    const Marker& m = c.markers[i];
    // Labels alternate between two heights so that neighbouring markers stay readable.
    o << "<g class=\"marker\"><line x1=\"" << px(f.x(m.x)) << "\" y1=\"" << px(f.top) << "\" x2=\"" << px(f.x(m.x))
      << "\" y2=\"" << px(f.top + f.height) << "\" stroke=\"" << m.color << "\" stroke-dasharray=\"4 3\"/>"
      << text(f.x(m.x) + 3, f.top + 12 + 12 * static_cast<double>(i % 2), m.label, "class=\"marker-label\"") << "</g>";
  }
  for (const auto& s : c.series) o << series_svg(f, s);
  o << "</svg>";
  return o.str();
}

std::string bar_chart(const BarChart& c) {
  Range yr;
  yr.add(0);
  for (const auto& row : c.values)
    for (double v : row) yr.add(v * 1.08);  // headroom for the value printed above the bar
  const auto yt = nice_ticks(yr.lo, yr.hi, 5);
  Frame f{kLeft, kTop, c.width - kLeft - kRight, c.height - kTop - kBottom, 0, 1, yt.front(), yt.back()};
  std::vector<std::pair<std::string, std::string>> legend;  // one series: the title says it all
  for (size_t i = 0; c.series_names.size() > 1 && i < c.series_names.size(); ++i)
    legend.emplace_back(c.series_names[i], c.series_colors[i]);
  std::ostringstream o;
  o << open_svg(c.id, c.width, c.height, "bar-chart") << heading(c.title, legend)
    << axes(f, {}, yt, "", c.y_label);
  const double group_w = f.width / std::max<size_t>(1, c.categories.size());
  const double bar_w = group_w * 0.7 / std::max<size_t>(1, c.series_names.size());
  for (size_t g = 0; g < c.categories.size(); ++g) {
    const double gx = f.left + group_w * static_cast<double>(g) + group_w * 0.15;
    o << "<g class=\"bar-group\" data-category=\"" << escape(c.categories[g]) << "\">";
    for (size_t s = 0; s < c.series_names.size() && s < c.values[g].size(); ++s) {
      const double v = c.values[g][s];
      const double y = f.y(std::max(0.0, v)), y0 = f.y(0);
      o << "<rect class=\"bar\" data-value=\"" << fmt(v) << "\" x=\"" << px(gx + bar_w * static_cast<double>(s))
        << "\" y=\"" << px(y) << "\" width=\"" << px(bar_w * 0.92) << "\" height=\"" << px(std::max(0.0, y0 - y))
        << "\" fill=\"" << c.series_colors[s] << "\"><title>" << escape(c.categories[g] + ", " + c.series_names[s] +
                                                                         ": " + fmt(v)) << "</title></rect>";
      o << text(gx + bar_w * (static_cast<double>(s) + 0.46), y - 3, fmt(v), "text-anchor=\"middle\" class=\"value\"");
    }
    o << text(gx + group_w * 0.35, f.top + f.height + 17, c.categories[g], "text-anchor=\"middle\"") << "</g>";
  }
  o << "</svg>";
  return o.str();
}

std::string stacked_bars(const StackedBars& c) {
  const double left = 190, right = 20, row_h = 26, top = 52;
  const int height = static_cast<int>(top + row_h * static_cast<double>(c.rows.size()) + 30);
  std::vector<std::pair<std::string, std::string>> legend;
  for (size_t i = 0; i < c.part_names.size(); ++i) legend.emplace_back(c.part_names[i], c.part_colors[i]);
  std::ostringstream o;
  o << open_svg(c.id, c.width, height, "stacked-bars") << heading(c.title, legend);
  const double w = c.width - left - right;
  for (size_t r = 0; r < c.rows.size(); ++r) {
    const double y = top + row_h * static_cast<double>(r);
    o << "<g class=\"row\" data-row=\"" << escape(c.rows[r]) << "\">" << text(left - 8, y + 15, c.rows[r], "text-anchor=\"end\"");
    double x = left;
    for (size_t p = 0; p < c.part_names.size() && p < c.fractions[r].size(); ++p) {
      const double frac = std::clamp(c.fractions[r][p], 0.0, 1.0);
      const double pw = w * frac;
      o << "<rect class=\"part\" data-part=\"" << escape(c.part_names[p]) << "\" data-fraction=\"" << fmt(frac)
        << "\" x=\"" << px(x) << "\" y=\"" << px(y) << "\" width=\"" << px(pw) << "\" height=\"" << px(row_h - 6)
        << "\" fill=\"" << c.part_colors[p] << "\"><title>" << escape(c.part_names[p] + ": " + percent(frac))
        << "</title></rect>";
      if (pw > 34)
        o << text(x + pw / 2, y + 14, percent(frac),
                  "text-anchor=\"middle\" class=\"in-bar\" style=\"fill: " + std::string(text_on(c.part_colors[p])) + "\"");
      x += pw;
    }
    o << "</g>";
  }
  for (double t : {0.0, 0.25, 0.5, 0.75, 1.0})
    o << text(left + w * t, top + row_h * static_cast<double>(c.rows.size()) + 12, fmt(100 * t) + "%",
              "text-anchor=\"middle\"");
  o << "</svg>";
  return o.str();
}

}  // namespace geopipe::report::svg
