// One error type for the whole project: a message that names the input (file, field, rank,
// peer, tag) and an exit code the command-line tools return. Libraries throw; only main() exits.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace geopipe {

// Exit codes of every geopipe program.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,     // runtime failure: dead peer, timeout, diverged training, I/O
  kExitBadInput = 2,    // bad file, field, flag or plan
  kExitInfeasible = 3,  // the input is valid but no placement satisfies it
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, int exit_code = kExitFailure)
      : std::runtime_error(what), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// One problem found in an input file: `file: path: message`.
struct Diagnostic {
  std::string file;     // e.g. "examples/topologies/aws6.json"
  std::string path;     // JSON path, e.g. "links[3].gbps"; empty for the whole document
  std::string message;  // what was expected and what was found
  std::string str() const;
};

// Bad input (a file, a field, a flag): carries every problem found, not just the first.
class InputError : public Error {
 public:
  explicit InputError(std::vector<Diagnostic> diagnostics);
  InputError(std::string file, std::string path, std::string message);
  const std::vector<Diagnostic>& diagnostics() const { return diagnostics_; }

 private:
  std::vector<Diagnostic> diagnostics_;
};

// Valid input that no placement can satisfy (scheduler): exit code 3.
class InfeasibleError : public Error {
 public:
  explicit InfeasibleError(const std::string& what) : Error(what, kExitInfeasible) {}
};

// A blocking wait that ran out of time; the message says which rank waited for what.
class TimeoutError : public Error {
 public:
  // `peer`: the rank waited for, when one is known (-1: none, e.g. a collective).
  explicit TimeoutError(const std::string& what, int peer = -1) : Error(what, kExitFailure), peer_(peer) {}
  int peer() const { return peer_; }

 private:
  int peer_;
};

}  // namespace geopipe
