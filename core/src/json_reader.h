// Internal helper: reads fields out of a JSON document while collecting every problem as a
// Diagnostic (file, JSON path, what was expected), so a validator can report them all at once.
#pragma once

#include <geopipe/core/error.h>

#include <nlohmann/json.hpp>

#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace geopipe::detail {

using nlohmann::json;

std::string json_type_name(const json& v);
std::string child_path(const std::string& path, const std::string& key);
std::string index_path(const std::string& path, size_t index);

class JsonReader {
 public:
  explicit JsonReader(std::string file) : file_(std::move(file)) {}

  void error(const std::string& path, const std::string& message);
  bool ok() const { return diagnostics_.empty(); }
  size_t error_count() const { return diagnostics_.size(); }
  const std::string& file() const { return file_; }
  std::vector<Diagnostic> take() { return std::move(diagnostics_); }
  void throw_if_errors();  // throws InputError with every diagnostic collected

  // Checks `v` is an object; unknown keys are errors (a typo must not be ignored silently).
  bool expect_object(const json& v, const std::string& path, std::initializer_list<const char*> allowed);
  bool expect_array(const json& v, const std::string& path);

  // A field of an object: nullptr (and a diagnostic when required) when missing.
  const json* field(const json& obj, const std::string& path, const char* key, bool required = true);

  std::optional<std::string> string(const json& obj, const std::string& path, const char* key,
                                    bool required = true);
  // Integer in [lo, hi]; a diagnostic for a non-integer or out-of-range value.
  std::optional<long long> integer(const json& obj, const std::string& path, const char* key,
                                   long long lo, long long hi, bool required = true);
  // Finite number; `positive` requires > 0, otherwise >= 0 unless `allow_negative`.
  std::optional<double> number(const json& obj, const std::string& path, const char* key,
                               bool positive, bool required = true, bool allow_negative = false);

 private:
  std::string file_;
  std::vector<Diagnostic> diagnostics_;
};

}  // namespace geopipe::detail
