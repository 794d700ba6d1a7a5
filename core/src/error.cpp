#include <geopipe/core/error.h>

namespace geopipe {

std::string Diagnostic::str() const {
  std::string s = file.empty() ? std::string("<input>") : file;
  if (!path.empty()) s += ": " + path;
  return s + ": " + message;
}

namespace {
std::string join(const std::vector<Diagnostic>& diagnostics) {
  std::string s;
  for (size_t i = 0; i < diagnostics.size(); ++i) {
    if (i) s += "\n";
    s += diagnostics[i].str();
  }
  return s.empty() ? "invalid input" : s;
}
}  // namespace

InputError::InputError(std::vector<Diagnostic> diagnostics)
    : Error(join(diagnostics), kExitBadInput), diagnostics_(std::move(diagnostics)) {}

InputError::InputError(std::string file, std::string path, std::string message)
    : InputError(std::vector<Diagnostic>{Diagnostic{std::move(file), std::move(path), std::move(message)}}) {}

}  // namespace geopipe
