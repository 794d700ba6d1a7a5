#include <geopipe/core/error.h>
#include <geopipe/core/failure.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace geopipe {

namespace fs = std::filesystem;

std::string failure_record_path(const std::string& dir, int rank) {
  return (fs::path(dir) / ("rank-" + std::to_string(rank) + ".json")).string();
}

void write_failure_record(const std::string& dir, const FailureRecord& r) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("failure record: cannot create " + dir + ": " + ec.message());
  const std::string path = failure_record_path(dir, r.rank), tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << nlohmann::json{{"rank", r.rank}, {"region", r.region},     {"stage", r.stage},    {"kind", r.kind},
                          {"peer", r.peer}, {"waited_s", r.waited_s}, {"message", r.message}}
               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)  // a message may echo bad bytes
        << "\n";
    out.close();
    if (!out) throw Error("failure record: cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw Error("failure record: cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
}

std::vector<FailureRecord> read_failure_records(const std::string& dir) {
  std::vector<FailureRecord> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path());
    const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) continue;
    try {
      out.push_back({j.at("rank").get<int>(), j.at("region").get<std::string>(), j.at("stage").get<int>(),
                     j.at("kind").get<std::string>(), j.at("peer").get<int>(), j.value("waited_s", 0.0),
                     j.at("message").get<std::string>()});
    } catch (const nlohmann::json::exception&) {
      continue;  // not a record of ours
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.rank < b.rank; });
  return out;
}

}  // namespace geopipe
