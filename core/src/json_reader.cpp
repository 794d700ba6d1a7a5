#include "json_reader.h"

#include <cmath>
#include <sstream>

namespace geopipe::detail {

std::string json_type_name(const json& v) {
  if (v.is_number_integer()) return "an integer (" + v.dump() + ")";
  if (v.is_number()) return "a number (" + v.dump() + ")";
  if (v.is_string()) return "a string (" + v.dump() + ")";
  if (v.is_boolean()) return std::string("a boolean (") + (v.get<bool>() ? "true" : "false") + ")";
  if (v.is_null()) return "null";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "a value";
}

std::string child_path(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string index_path(const std::string& path, size_t index) {
  return path + "[" + std::to_string(index) + "]";
}

void JsonReader::error(const std::string& path, const std::string& message) {
  diagnostics_.push_back(Diagnostic{file_, path, message});
}

void JsonReader::throw_if_errors() {
  if (!diagnostics_.empty()) throw InputError(take());
}

bool JsonReader::expect_object(const json& v, const std::string& path,
                               std::initializer_list<const char*> allowed) {
  if (!v.is_object()) {
    error(path, "expected an object, got " + json_type_name(v));
    return false;
  }
  for (auto it = v.begin(); it != v.end(); ++it) {
    bool known = false;
    for (const char* key : allowed) known = known || it.key() == key;
    if (!known) {
      std::ostringstream expected;
      const char* sep = "";
      for (const char* key : allowed) {
        expected << sep << key;
        sep = ", ";
      }
      error(child_path(path, it.key()), "unknown field (expected one of: " + expected.str() + ")");
    }
  }
  return true;
}

bool JsonReader::expect_array(const json& v, const std::string& path) {
  if (!v.is_array()) {
    error(path, "expected an array, got " + json_type_name(v));
    return false;
  }
  return true;
}

const json* JsonReader::field(const json& obj, const std::string& path, const char* key, bool required) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) error(child_path(path, key), "missing required field");
    return nullptr;
  }
  return &*it;
}

std::optional<std::string> JsonReader::string(const json& obj, const std::string& path, const char* key,
                                              bool required) {
  const json* v = field(obj, path, key, required);
  if (!v) return std::nullopt;
  if (!v->is_string()) {
    error(child_path(path, key), "expected a string, got " + json_type_name(*v));
    return std::nullopt;
  }
  auto s = v->get<std::string>();
  if (s.empty()) {
    error(child_path(path, key), "expected a non-empty string");
    return std::nullopt;
  }
  return s;
}

std::optional<long long> JsonReader::integer(const json& obj, const std::string& path, const char* key,
                                             long long lo, long long hi, bool required) {
  const json* v = field(obj, path, key, required);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) {
    error(child_path(path, key), "expected an integer, got " + json_type_name(*v));
    return std::nullopt;
  }
  long long x = v->is_number_unsigned() && v->get<unsigned long long>() > static_cast<unsigned long long>(hi)
                    ? hi + 1
                    : v->get<long long>();
  if (x < lo || x > hi) {
    error(child_path(path, key), "expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                     "], got " + v->dump());
    return std::nullopt;
  }
  return x;
}

std::optional<double> JsonReader::number(const json& obj, const std::string& path, const char* key,
                                         bool positive, bool required, bool allow_negative) {
  const json* v = field(obj, path, key, required);
  if (!v) return std::nullopt;
  if (!v->is_number()) {
    error(child_path(path, key), "expected a number, got " + json_type_name(*v));
    return std::nullopt;
  }
  double x = v->get<double>();
  if (!std::isfinite(x)) {
    error(child_path(path, key), "expected a finite number, got " + v->dump());
    return std::nullopt;
  }
  if (positive && !(x > 0)) {
    error(child_path(path, key), "expected a positive number, got " + v->dump());
    return std::nullopt;
  }
  if (!positive && !allow_negative && x < 0) {
    error(child_path(path, key), "expected a number >= 0, got " + v->dump());
    return std::nullopt;
  }
  return x;
}

}  // namespace geopipe::detail
