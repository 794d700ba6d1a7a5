// The schedule's text form (one line per rank) and torch.distributed.pipelining's CSV (one row
// per rank, as its _dump_csv / _load_csv write and read them).
#include <geopipe/core/error.h>
#include <geopipe/core/schedule.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <sstream>

namespace geopipe {

namespace {

constexpr ActionKind kAllKinds[] = {ActionKind::kForward, ActionKind::kInputGrad, ActionKind::kWeightGrad,
                                    ActionKind::kBackward, ActionKind::kSendF, ActionKind::kRecvF,
                                    ActionKind::kSendB, ActionKind::kRecvB, ActionKind::kOptimizer};
// torch's kinds for FSDP and data-parallel gradient reduction, which this runtime does not run.
constexpr const char* kTorchOnlyKinds[] = {"UNSHARD", "RESHARD", "REDUCE_GRAD", "OVERLAP_F_B"};

bool all_digits(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}

// One token, "<stage><kind><micro-batch>" (torch's _Action.from_str, whole token). Returns the
// problem, or "" with *out set.
std::string parse_action(const std::string& tok, Action* out) {
  size_t i = 0;
  while (i < tok.size() && std::isdigit(static_cast<unsigned char>(tok[i]))) ++i;
  size_t j = i;
  while (j < tok.size() && (std::isupper(static_cast<unsigned char>(tok[j])) || tok[j] == '_')) ++j;
  const std::string stage_s = tok.substr(0, i), kind_s = tok.substr(i, j - i), mb_s = tok.substr(j);
  for (const char* k : kTorchOnlyKinds)
    if (kind_s == k)
      return std::string("torch's ") + k + " is not run here (kinds: F, I, W, B, SEND_F, RECV_F, SEND_B, RECV_B, OPT)";
  const ActionKind* kind = nullptr;
  for (const ActionKind& k : kAllKinds)
    if (kind_s == action_kind_name(k)) kind = &k;
  if (stage_s.empty() || !kind || !all_digits(mb_s) || stage_s.size() > 6 || mb_s.size() > 6)
    return "expected <stage><F|I|W|B|SEND_F|RECV_F|SEND_B|RECV_B|OPT><micro-batch>, e.g. 2SEND_F0";
  *out = Action{std::stoi(stage_s), *kind, -1};
  if (*kind == ActionKind::kOptimizer) return mb_s.empty() ? "" : "OPT takes no micro-batch";
  if (mb_s.empty()) return std::string(action_kind_name(*kind)) + " needs a micro-batch";
  out->micro_batch = std::stoi(mb_s);
  return "";
}

struct Row {
  std::string label;  // "line 3" or "row 2": where the rank's list is in the file
  std::vector<Action> actions;
};

// Builds the schedule from one row per rank: placement from the rows, sizes from the actions.
Schedule assemble(std::vector<Row>& rows, const std::string& source, bool append_opt,
                  std::vector<Diagnostic>& diags) {
  Schedule s;
  s.num_ranks = static_cast<int>(rows.size());
  std::map<int, int> row_of_stage;  // stage -> first row that holds it
  std::map<int, bool> reported;
  bool any = false;
  for (int r = 0; r < s.num_ranks; ++r) {
    bool has_opt = false;
    for (const Action& a : rows[r].actions) {
      any = true;
      if (a.kind == ActionKind::kOptimizer) {
        has_opt = true;
        if (a.stage != r)
          diags.push_back({source, rows[r].label, to_string(a) + " is rank " + std::to_string(a.stage) +
                                                      "'s optimizer step, but this is rank " + std::to_string(r)});
        continue;
      }
      s.num_stages = std::max(s.num_stages, a.stage + 1);
      s.num_micro_batches = std::max(s.num_micro_batches, a.micro_batch + 1);
      auto [it, first] = row_of_stage.emplace(a.stage, r);
      if (!first && it->second != r && !reported[a.stage]) {
        reported[a.stage] = true;
        diags.push_back({source, rows[r].label, "stage " + std::to_string(a.stage) + " appears in " +
                                                    rows[it->second].label + " (rank " + std::to_string(it->second) +
                                                    ") and " + rows[r].label + " (rank " + std::to_string(r) + ")"});
      }
    }
    if (append_opt && !has_opt) rows[r].actions.push_back({r, ActionKind::kOptimizer, -1});
  }
  if (!any) diags.push_back({source, "", "no actions found"});
  s.stage_rank.assign(s.num_stages, -1);
  for (int st = 0; st < s.num_stages; ++st) {
    auto it = row_of_stage.find(st);
    if (it == row_of_stage.end()) diags.push_back({source, "", "stage " + std::to_string(st) + " appears in no rank's list"});
    else s.stage_rank[st] = it->second;
  }
  if (!diags.empty()) throw InputError(diags);
  for (auto& row : rows) s.ranks.push_back(std::move(row.actions));
  return s;
}

// Splits CSV text into records of cells (RFC 4180, as Python's csv module reads it: quoted cells
// may hold commas, doubled quotes and line breaks; "\r\n" or "\n" ends a record).
std::vector<std::vector<std::string>> split_csv(const std::string& text) {
  std::vector<std::vector<std::string>> records;
  std::vector<std::string> cells;
  std::string cell;
  bool quoted = false, any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') cell += text[++i];
      else if (c == '"') quoted = false;
      else cell += c;
    } else if (c == '"') {
      quoted = any = true;
    } else if (c == ',') {
      cells.push_back(std::move(cell));
      cell.clear();
      any = true;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      if (any || !cell.empty()) cells.push_back(std::move(cell));
      records.push_back(std::move(cells));
      cells.clear();
      cell.clear();
      any = false;
    } else {
      cell += c;
      any = true;
    }
  }
  if (any || !cell.empty()) {
    cells.push_back(std::move(cell));
    records.push_back(std::move(cells));
  }
  return records;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

}  // namespace

std::string format_actions(const std::vector<Action>& actions) {
  std::string s;
  for (const auto& a : actions) {
    if (!s.empty()) s += ' ';
    s += to_string(a);
  }
  return s;
}

std::string format_schedule(const Schedule& schedule) {
  std::string s;
  for (const auto& list : schedule.ranks) s += format_actions(list) + "\n";
  return s;
}

std::string format_schedule_csv(const Schedule& schedule) {
  std::string s;
  for (const auto& list : schedule.ranks) {
    std::string row;
    for (const auto& a : list) {
      if (a.kind == ActionKind::kOptimizer) continue;  // torch has no OPT; loading appends it
      row += (row.empty() ? "" : ",") + to_string(a);
    }
    s += row + "\r\n";  // csv.writer's line terminator
  }
  return s;
}

Schedule parse_schedule(const std::string& text, const std::string& source) {
  std::vector<Diagnostic> diags;
  std::vector<Row> rows;
  std::istringstream in(text);
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    Row row{"line " + std::to_string(line_no), {}};
    bool tokens = false;
    for (std::string tok; words >> tok;) {
      tokens = true;
      Action a;
      if (std::string err = parse_action(tok, &a); !err.empty())
        diags.push_back({source, row.label + ": \"" + tok + "\"", err});
      else
        row.actions.push_back(a);
    }
    if (tokens) rows.push_back(std::move(row));  // a line with tokens is the next rank's list
  }
  if (rows.empty() && diags.empty()) diags.push_back({source, "", "no actions found"});
  if (!diags.empty()) throw InputError(diags);
  return assemble(rows, source, /*append_opt=*/false, diags);
}

Schedule parse_schedule_csv(const std::string& text, const std::string& source) {
  std::vector<Diagnostic> diags;
  std::vector<Row> rows;
  const auto records = split_csv(text);
  for (size_t r = 0; r < records.size(); ++r) {
    Row row{"row " + std::to_string(r + 1), {}};
    for (size_t c = 0; c < records[r].size(); ++c) {
      const std::string tok = trim(records[r][c]);
      if (tok.empty()) continue;  // torch writes an idle step (None) as an empty cell
      Action a;
      if (std::string err = parse_action(tok, &a); !err.empty())
        diags.push_back({source, row.label + ", cell " + std::to_string(c + 1) + ": \"" + tok + "\"", err});
      else
        row.actions.push_back(a);
    }
    rows.push_back(std::move(row));  // every record is a rank, as in torch's _load_csv
  }
  if (rows.empty() && diags.empty()) diags.push_back({source, "", "no actions found"});
  if (!diags.empty()) throw InputError(diags);
  return assemble(rows, source, /*append_opt=*/true, diags);
}

Schedule load_schedule_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError(path, "", "cannot open schedule file");
  std::ostringstream ss;
  ss << f.rdbuf();
  std::string ext = path.size() >= 4 ? path.substr(path.size() - 4) : "";
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".csv" ? parse_schedule_csv(ss.str(), path) : parse_schedule(ss.str(), path);
}

}  // namespace geopipe
