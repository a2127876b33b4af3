#include "engine/trace/trace_reader.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/status_macros.h"
#include "engine/trace/csv_row.h"
#include "engine/trace/line_reader.h"

namespace moecast {
namespace {

using internal::CsvField;

enum class FileKind { kCounts, kRouter };

// A column family of per-expert values: c, z, p or s.
enum Family { kC = 0, kZ = 1, kP = 2, kS = 3, kNumFamilies = 4 };
constexpr char kFamilyPrefix[kNumFamilies] = {'c', 'z', 'p', 's'};

// One parsed row of either file.
struct Row {
  int64_t line = 0;
  int64_t step = 0;
  int64_t layer = 0;
  int step_column = 0;
  int layer_column = 0;
  std::optional<int64_t> tokens;
  int tokens_column = 0;
  std::vector<double> values[kNumFamilies];
};

// One CSV file of a trace: its header's column roles and a row parser.
class TraceTable {
 public:
  static absl::StatusOr<std::unique_ptr<TraceTable>> Open(
      const std::string& path, FileKind kind) {
    MOECAST_ASSIGN_OR_RETURN(std::unique_ptr<LineReader> lines,
                             LineReader::Open(path));
    auto table = std::unique_ptr<TraceTable>(
        new TraceTable(std::move(lines), kind));
    MOECAST_RETURN_IF_ERROR(table->ReadHeader());
    return table;
  }

  const std::string& path() const { return lines_->path(); }
  int num_experts() const { return num_experts_; }
  bool has(Family f) const { return !family_columns_[f].empty(); }
  bool has_tokens() const { return tokens_index_ >= 0; }
  int64_t line_number() const { return lines_->line_number(); }
  double progress() const {
    const int64_t size = lines_->file_size();
    return size <= 0 ? 1.0
                     : std::min(1.0, static_cast<double>(
                                         lines_->bytes_consumed()) /
                                         static_cast<double>(size));
  }

  absl::Status Error(int64_t line, int column, absl::string_view message) const {
    return absl::InvalidArgumentError(
        absl::StrCat(path(), ":", line, ":", column, ": ", message));
  }

  // Reads the next row into `*row`. Returns false at the end of the file.
  absl::StatusOr<bool> NextRow(Row* row) {
    absl::string_view line;
    while (true) {
      if (!lines_->Next(&line)) {
        MOECAST_RETURN_IF_ERROR(lines_->status());
        return false;
      }
      if (!IsBlank(line)) break;
      if (first_blank_line_ == 0) first_blank_line_ = lines_->line_number();
    }
    const int64_t n = lines_->line_number();
    if (first_blank_line_ != 0) {
      return Error(first_blank_line_, 1,
                   absl::StrCat("blank line inside the data (line ", n,
                                " has a row after it)"));
    }
    internal::SplitCsvLine(line, &fields_);
    if (fields_.size() != names_.size()) {
      const int column = fields_.size() > names_.size()
                             ? fields_[names_.size()].column
                             : static_cast<int>(line.size()) + 1;
      return Error(n, column,
                   absl::StrCat("row has ", fields_.size(),
                                " fields, the header has ", names_.size()));
    }
    row->line = n;
    const char* why = nullptr;
    auto integer = [&](int index, absl::string_view what,
                       int64_t* out) -> absl::Status {
      const CsvField& f = fields_[index];
      std::optional<int64_t> v = internal::ParseNonNegativeInteger(f.text, &why);
      if (!v.has_value()) {
        return Error(n, f.column,
                     absl::StrCat(what, " '", f.text, "' ", why,
                                  "; expected a non-negative integer"));
      }
      *out = *v;
      return absl::OkStatus();
    };
    MOECAST_RETURN_IF_ERROR(integer(step_index_, "step", &row->step));
    row->step_column = fields_[step_index_].column;
    MOECAST_RETURN_IF_ERROR(integer(layer_index_, "layer", &row->layer));
    row->layer_column = fields_[layer_index_].column;
    if (tokens_index_ >= 0) {
      int64_t t = 0;
      MOECAST_RETURN_IF_ERROR(integer(tokens_index_, "tokens", &t));
      row->tokens = t;
      row->tokens_column = fields_[tokens_index_].column;
    } else {
      row->tokens.reset();
    }
    for (int f = 0; f < kNumFamilies; ++f) {
      const std::vector<int>& cols = family_columns_[f];
      std::vector<double>& out = row->values[f];
      out.resize(cols.size());
      for (size_t e = 0; e < cols.size(); ++e) {
        const CsvField& field = fields_[cols[e]];
        if (f == kC) {
          std::optional<int64_t> v =
              internal::ParseNonNegativeInteger(field.text, &why);
          if (!v.has_value()) {
            return Error(n, field.column,
                         absl::StrCat("column '", names_[cols[e]], "': count '",
                                      field.text, "' ", why,
                                      "; counts are non-negative integers"));
          }
          out[e] = static_cast<double>(*v);
        } else {
          std::optional<double> v = internal::ParseFiniteDouble(field.text, &why);
          if (!v.has_value()) {
            return Error(n, field.column,
                         absl::StrCat("column '", names_[cols[e]], "': value '",
                                      field.text, "' ", why));
          }
          out[e] = *v;
        }
      }
    }
    return true;
  }

 private:
  TraceTable(std::unique_ptr<LineReader> lines, FileKind kind)
      : lines_(std::move(lines)), kind_(kind) {}

  static bool IsBlank(absl::string_view line) {
    for (char c : line) {
      if (c != ' ' && c != '\t' && c != '\r') return false;
    }
    return true;
  }

  std::string ExpectedColumns() const {
    return kind_ == FileKind::kCounts
               ? "step, layer, tokens (optional), c0..c{M-1}"
               : "step, layer, z0..z{M-1}, p0..p{M-1} (optional), "
                 "s0..s{M-1} (optional)";
  }

  absl::Status ReadHeader() {
    absl::string_view line;
    if (!lines_->Next(&line)) {
      MOECAST_RETURN_IF_ERROR(lines_->status());
      return absl::InvalidArgumentError(
          absl::StrCat(path(), ":1:1: empty file; expected a header line (",
                       ExpectedColumns(), ")"));
    }
    if (line.size() >= 3 && line.substr(0, 3) == "\xEF\xBB\xBF") {
      line.remove_prefix(3);  // UTF-8 byte order mark
    }
    internal::SplitCsvLine(line, &fields_);
    absl::flat_hash_map<std::string, int> seen;
    // family -> (expert index -> field index)
    absl::flat_hash_map<int64_t, int> family_index[kNumFamilies];
    for (size_t i = 0; i < fields_.size(); ++i) {
      const CsvField& f = fields_[i];
      std::string name(f.text);
      names_.push_back(name);
      if (auto [it, inserted] = seen.emplace(name, f.column); !inserted) {
        return Error(1, f.column,
                     absl::StrCat("column '", name, "' appears twice (first at "
                                  "column ", it->second, ")"));
      }
      const int index = static_cast<int>(i);
      if (name == "step") {
        step_index_ = index;
        continue;
      }
      if (name == "layer") {
        layer_index_ = index;
        continue;
      }
      if (name == "tokens" && kind_ == FileKind::kCounts) {
        tokens_index_ = index;
        continue;
      }
      bool matched = false;
      for (int fam = 0; fam < kNumFamilies; ++fam) {
        const bool allowed = (fam == kC) == (kind_ == FileKind::kCounts);
        if (!allowed || name.size() < 2 || name[0] != kFamilyPrefix[fam]) {
          continue;
        }
        uint64_t e = 0;
        const absl::string_view digits = absl::string_view(name).substr(1);
        if (digits.find_first_not_of("0123456789") != absl::string_view::npos ||
            (digits.size() > 1 && digits[0] == '0') ||
            !absl::SimpleAtoi(digits, &e) || e > (1u << 24)) {
          continue;
        }
        family_index[fam][static_cast<int64_t>(e)] = index;
        matched = true;
        break;
      }
      if (!matched) {
        return Error(1, f.column,
                     absl::StrCat("unknown column '", name, "'; a ",
                                  kind_ == FileKind::kCounts ? "counts"
                                                             : "router",
                                  " file has ", ExpectedColumns()));
      }
    }
    const int end_column = static_cast<int>(line.size()) + 1;
    if (step_index_ < 0) {
      return Error(1, end_column, "missing column 'step'");
    }
    if (layer_index_ < 0) {
      return Error(1, end_column, "missing column 'layer'");
    }
    const int main_family = kind_ == FileKind::kCounts ? kC : kZ;
    if (family_index[main_family].empty()) {
      return Error(1, end_column,
                   absl::StrCat("missing columns '", std::string(1, kFamilyPrefix[main_family]),
                                "0'..; a ",
                                kind_ == FileKind::kCounts ? "counts" : "router",
                                " file has ", ExpectedColumns()));
    }
    num_experts_ = static_cast<int>(family_index[main_family].size());
    for (int fam = 0; fam < kNumFamilies; ++fam) {
      const auto& idx = family_index[fam];
      if (idx.empty()) continue;
      const char prefix = kFamilyPrefix[fam];
      if (static_cast<int>(idx.size()) != num_experts_) {
        return Error(1, end_column,
                     absl::StrCat("has ", idx.size(), " '", std::string(1, prefix),
                                  "' columns but ", num_experts_, " '",
                                  std::string(1, kFamilyPrefix[main_family]),
                                  "' columns"));
      }
      family_columns_[fam].resize(num_experts_);
      for (int e = 0; e < num_experts_; ++e) {
        auto it = idx.find(e);
        if (it == idx.end()) {
          return Error(1, end_column,
                       absl::StrCat("column '", std::string(1, prefix), e,
                                    "' is missing; expected ", std::string(1, prefix),
                                    "0..", std::string(1, prefix), num_experts_ - 1));
        }
        family_columns_[fam][e] = it->second;
      }
    }
    if (num_experts_ < 2) {
      return Error(1, end_column,
                   absl::StrCat("has ", num_experts_,
                                " expert column; a MoE layer has at least 2"));
    }
    return absl::OkStatus();
  }

  std::unique_ptr<LineReader> lines_;
  FileKind kind_;
  std::vector<std::string> names_;
  std::vector<CsvField> fields_;
  int step_index_ = -1;
  int layer_index_ = -1;
  int tokens_index_ = -1;
  std::vector<int> family_columns_[kNumFamilies];
  int num_experts_ = 0;
  int64_t first_blank_line_ = 0;
};

class TraceReaderImpl final : public TraceReader {
 public:
  TraceReaderImpl(std::unique_ptr<TraceTable> counts,
                  std::unique_ptr<TraceTable> router)
      : counts_(std::move(counts)), router_(std::move(router)) {
    layout_.num_experts = counts_->num_experts();
    layout_.has_tokens = counts_->has_tokens();
    layout_.has_router = router_ != nullptr;
    layout_.has_router_probs = router_ != nullptr && router_->has(kP);
    layout_.has_router_std = router_ != nullptr && router_->has(kS);
  }

  // Reads the first step, which fixes the trace's layers.
  absl::Status Init() {
    MOECAST_ASSIGN_OR_RETURN(have_next_, ReadPair());
    if (!have_next_) {
      return absl::InvalidArgumentError(absl::StrCat(
          counts_->path(), ":2:1: no data rows after the header"));
    }
    std::vector<Row> rows;
    const int64_t step = next_.step;
    while (have_next_ && next_.step == step) {
      rows.push_back(next_);
      if (router_ != nullptr) router_rows_.push_back(next_router_);
      MOECAST_ASSIGN_OR_RETURN(have_next_, ReadPair());
    }
    MOECAST_RETURN_IF_ERROR(CheckOrder(step));
    for (const Row& r : rows) layout_.layer_ids.push_back(r.layer);
    std::sort(layout_.layer_ids.begin(), layout_.layer_ids.end());
    for (size_t i = 0; i < layout_.layer_ids.size(); ++i) {
      if (i > 0 && layout_.layer_ids[i] == layout_.layer_ids[i - 1]) {
        const int64_t dup = layout_.layer_ids[i];
        int64_t first_line = 0;
        for (const Row& r : rows) {
          if (r.layer != dup) continue;
          if (first_line == 0) {
            first_line = r.line;
            continue;
          }
          return counts_->Error(
              r.line, r.layer_column,
              absl::StrCat("step ", step, " lists layer ", dup,
                           " twice (first at line ", first_line, ")"));
        }
      }
      layer_index_[layout_.layer_ids[i]] = static_cast<int>(i);
    }
    first_.emplace();
    StartStep(step, &*first_);
    first_->first_line = rows.front().line;
    for (size_t i = 0; i < rows.size(); ++i) {
      MOECAST_RETURN_IF_ERROR(Place(rows[i], router_ != nullptr ? &router_rows_[i] : nullptr,
                                    &*first_));
    }
    router_rows_.clear();
    return absl::OkStatus();
  }

  const TraceLayout& layout() const override { return layout_; }

  double progress() const override { return counts_->progress(); }

  absl::StatusOr<bool> Next(TraceStep* out) override {
    if (first_.has_value()) {
      *out = std::move(*first_);
      first_.reset();
      return true;
    }
    if (!have_next_) return false;
    const int64_t step = next_.step;
    StartStep(step, out);
    while (have_next_ && next_.step == step) {
      MOECAST_RETURN_IF_ERROR(
          Place(next_, router_ != nullptr ? &next_router_ : nullptr, out));
      MOECAST_ASSIGN_OR_RETURN(have_next_, ReadPair());
    }
    MOECAST_RETURN_IF_ERROR(CheckOrder(step));
    for (int l = 0; l < layout_.num_layers(); ++l) {
      if (seen_line_[l] == 0) {
        const int64_t line =
            have_next_ ? next_.line : counts_->line_number() + 1;
        return counts_->Error(
            line, 1,
            absl::StrCat("step ", step, " lacks layer ", layout_.layer_ids[l],
                         "; every step must list the ", layout_.num_layers(),
                         " layers of the first step (",
                         absl::StrJoin(layout_.layer_ids, ","), ")"));
      }
    }
    return true;
  }

 private:
  // After the rows of `step`: the next row, if any, must have a larger step.
  absl::Status CheckOrder(int64_t step) {
    if (have_next_ && next_.step < step) {
      return counts_->Error(
          next_.line, next_.step_column,
          absl::StrCat("step ", next_.step, " follows step ", step,
                       "; steps must increase (rows of one step together)"));
    }
    return absl::OkStatus();
  }

  void StartStep(int64_t step, TraceStep* out) {
    const size_t n = static_cast<size_t>(layout_.num_layers()) * layout_.num_experts;
    out->step = step;
    out->first_line = have_next_ ? next_.line : 0;
    out->tokens.reset();
    out->counts.assign(n, 0.0);
    out->router_z.assign(layout_.has_router ? n : 0, 0.0);
    out->router_p.assign(layout_.has_router_probs ? n : 0, 0.0);
    out->router_s.assign(layout_.has_router_std ? n : 0, 0.0);
    seen_line_.assign(layout_.num_layers(), 0);
  }

  // Copies one row (and its router row) into its layer's slot of `out`.
  absl::Status Place(const Row& row, const Row* router, TraceStep* out) {
    auto it = layer_index_.find(row.layer);
    if (it == layer_index_.end()) {
      return counts_->Error(
          row.line, row.layer_column,
          absl::StrCat("layer ", row.layer,
                       " is not among the layers of the first step (",
                       absl::StrJoin(layout_.layer_ids, ","), ")"));
    }
    const int l = it->second;
    if (seen_line_[l] != 0) {
      return counts_->Error(
          row.line, row.layer_column,
          absl::StrCat("step ", row.step, " lists layer ", row.layer,
                       " twice (first at line ", seen_line_[l], ")"));
    }
    seen_line_[l] = row.line;
    if (row.tokens.has_value()) {
      if (out->tokens.has_value() && *out->tokens != *row.tokens) {
        return counts_->Error(
            row.line, row.tokens_column,
            absl::StrCat("tokens ", *row.tokens, " differs from ",
                         *out->tokens, " on another layer of step ", row.step,
                         "; tokens is the step's token count"));
      }
      out->tokens = row.tokens;
    }
    const size_t off = static_cast<size_t>(l) * layout_.num_experts;
    std::copy(row.values[kC].begin(), row.values[kC].end(),
              out->counts.begin() + off);
    if (router != nullptr) {
      std::copy(router->values[kZ].begin(), router->values[kZ].end(),
                out->router_z.begin() + off);
      if (layout_.has_router_probs) {
        std::copy(router->values[kP].begin(), router->values[kP].end(),
                  out->router_p.begin() + off);
      }
      if (layout_.has_router_std) {
        std::copy(router->values[kS].begin(), router->values[kS].end(),
                  out->router_s.begin() + off);
      }
    }
    return absl::OkStatus();
  }

  // Reads the next counts row into next_ and, with a router file, the
  // matching router row into next_router_. Returns false at the end.
  absl::StatusOr<bool> ReadPair() {
    MOECAST_ASSIGN_OR_RETURN(bool more, counts_->NextRow(&next_));
    if (router_ == nullptr) return more;
    MOECAST_ASSIGN_OR_RETURN(bool router_more, router_->NextRow(&next_router_));
    if (more && !router_more) {
      return router_->Error(
          router_->line_number() + 1, 1,
          absl::StrCat("router file ends here, but the counts file has a row "
                       "for step ",
                       next_.step, " layer ", next_.layer, " at ",
                       counts_->path(), ":", next_.line));
    }
    if (!more && router_more) {
      return router_->Error(
          next_router_.line, 1,
          absl::StrCat("router file has a row for step ", next_router_.step,
                       " layer ", next_router_.layer,
                       " after the counts file ended"));
    }
    if (more && (next_router_.step != next_.step ||
                 next_router_.layer != next_.layer)) {
      return router_->Error(
          next_router_.line,
          next_router_.step != next_.step ? next_router_.step_column
                                          : next_router_.layer_column,
          absl::StrCat("router row is step ", next_router_.step, " layer ",
                       next_router_.layer, " but the counts row at ",
                       counts_->path(), ":", next_.line, " is step ",
                       next_.step, " layer ", next_.layer,
                       "; both files must list the same rows in the same "
                       "order"));
    }
    return more;
  }

  std::unique_ptr<TraceTable> counts_;
  std::unique_ptr<TraceTable> router_;
  TraceLayout layout_;
  absl::flat_hash_map<int64_t, int> layer_index_;
  std::vector<int64_t> seen_line_;
  Row next_;
  Row next_router_;
  bool have_next_ = false;
  std::vector<Row> router_rows_;
  std::optional<TraceStep> first_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TraceReader>> TraceReader::Open(
    const std::string& counts_path, const std::string& router_path) {
  MOECAST_ASSIGN_OR_RETURN(std::unique_ptr<TraceTable> counts,
                           TraceTable::Open(counts_path, FileKind::kCounts));
  std::unique_ptr<TraceTable> router;
  if (!router_path.empty()) {
    MOECAST_ASSIGN_OR_RETURN(router,
                             TraceTable::Open(router_path, FileKind::kRouter));
    if (router->num_experts() != counts->num_experts()) {
      return router->Error(
          1, 1,
          absl::StrCat("router file has ", router->num_experts(),
                       " experts (z columns) but ", counts_path, " has ",
                       counts->num_experts(), " (c columns)"));
    }
  }
  auto reader = std::make_unique<TraceReaderImpl>(std::move(counts),
                                                  std::move(router));
  MOECAST_RETURN_IF_ERROR(reader->Init());
  return std::unique_ptr<TraceReader>(std::move(reader));
}

}  // namespace moecast
