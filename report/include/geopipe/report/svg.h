// A small SVG chart helper for the report pages: axes with round ticks, one <path> per series
// with exactly one point per datum (data-points says how many), legends, markers, bars.
// Output is deterministic (fixed number formatting) and every text is escaped.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace geopipe::report::svg {

// &, <, >, " and ' as entities: safe in element text and in attribute values.
std::string escape(const std::string& text);
// Round numbers for labels: "1.25", "3.4e+04" -> "34k", "0.000123" -> "1.23e-04".
std::string fmt(double value);
// About `count` round tick values covering [lo, hi] (1, 2, 5 x 10^k steps).
std::vector<double> nice_ticks(double lo, double hi, int count);

struct Series {
  Series(std::string name_, std::string color_, std::vector<std::pair<double, double>> points_ = {})
      : name(std::move(name_)), color(std::move(color_)), points(std::move(points_)) {}
  std::string name;
  std::string color;
  std::vector<std::pair<double, double>> points;  // (x, y), drawn in this order
  bool line = true;      // a polyline through the points
  bool dots = false;     // a circle at each point (scatter when line is false)
  bool label_points = false;  // the series' name beside each dot (a scatter of named points)
};

// A vertical line at x with a short label (restarts, codec changes).
struct Marker {
  double x = 0;
  std::string label;
  std::string color = "#777";
};

// A horizontal reference line (e.g. a link's planned bandwidth).
struct Reference {
  double y = 0;
  std::string label;
  std::string color = "#777";
};

struct LineChart {
  LineChart(std::string id_, std::string title_, std::string x_label_, std::string y_label_)
      : id(std::move(id_)), title(std::move(title_)), x_label(std::move(x_label_)), y_label(std::move(y_label_)) {}
  std::string id;  // the <svg> element's id
  std::string title, x_label, y_label;
  std::vector<Series> series;
  std::vector<Marker> markers;
  std::vector<Reference> references;
  bool y_from_zero = false;
  int width = 640, height = 300;
};
std::string line_chart(const LineChart& chart);

// Grouped bars: one group per category, one bar per series in each group.
struct BarChart {
  BarChart(std::string id_, std::string title_, std::string y_label_)
      : id(std::move(id_)), title(std::move(title_)), y_label(std::move(y_label_)) {}
  std::string id;
  std::string title, y_label;
  std::vector<std::string> categories;
  std::vector<std::string> series_names;
  std::vector<std::string> series_colors;
  std::vector<std::vector<double>> values;  // [category][series]
  int width = 640, height = 300;
};
std::string bar_chart(const BarChart& chart);

// Horizontal stacked bars of fractions (each row sums to at most 1).
struct StackedBars {
  StackedBars(std::string id_, std::string title_) : id(std::move(id_)), title(std::move(title_)) {}
  std::string id;
  std::string title;
  std::vector<std::string> rows;
  std::vector<std::string> part_names;
  std::vector<std::string> part_colors;
  std::vector<std::vector<double>> fractions;  // [row][part]
  int width = 640;
};
std::string stacked_bars(const StackedBars& chart);

}  // namespace geopipe::report::svg
