#include "engine/trace/trace_writer.h"

#include <zlib.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/status_macros.h"

namespace moecast {

// A plain or gzip output file behind one interface.
class TraceWriter::File {
 public:
  static absl::StatusOr<std::unique_ptr<File>> Create(const std::string& path) {
    const bool gz = absl::EndsWith(path, ".gz");
    auto f = std::unique_ptr<File>(new File(path, gz));
    if (gz) {
      f->gz_ = gzopen(path.c_str(), "wb6");
      if (f->gz_ == nullptr) return f->OpenError();
      gzbuffer(f->gz_, 256 << 10);
    } else {
      f->plain_ = std::fopen(path.c_str(), "wb");
      if (f->plain_ == nullptr) return f->OpenError();
    }
    return f;
  }

  ~File() { (void)Close(); }

  absl::Status Append(absl::string_view data) {
    if (!status_.ok()) return status_;
    bool ok;
    if (gz_ != nullptr) {
      ok = data.empty() ||
           gzwrite(gz_, data.data(), static_cast<unsigned>(data.size())) ==
               static_cast<int>(data.size());
    } else if (plain_ != nullptr) {
      ok = std::fwrite(data.data(), 1, data.size(), plain_) == data.size();
    } else {
      return absl::FailedPreconditionError(
          absl::StrCat(path_, ": already closed"));
    }
    if (!ok) {
      status_ = absl::DataLossError(
          absl::StrCat(path_, ": write failed: ", std::strerror(errno)));
    }
    return status_;
  }

  absl::Status Close() {
    if (gz_ != nullptr) {
      if (gzclose(gz_) != Z_OK && status_.ok()) {
        status_ = absl::DataLossError(absl::StrCat(path_, ": close failed"));
      }
      gz_ = nullptr;
    }
    if (plain_ != nullptr) {
      if (std::fclose(plain_) != 0 && status_.ok()) {
        status_ = absl::DataLossError(
            absl::StrCat(path_, ": close failed: ", std::strerror(errno)));
      }
      plain_ = nullptr;
    }
    return status_;
  }

 private:
  File(std::string path, bool gz) : path_(std::move(path)), is_gz_(gz) {}

  absl::Status OpenError() const {
    const int err = errno;
    const std::string msg =
        absl::StrCat(path_, ": cannot create: ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg)
                         : absl::PermissionDeniedError(msg);
  }

  std::string path_;
  bool is_gz_;
  gzFile gz_ = nullptr;
  std::FILE* plain_ = nullptr;
  absl::Status status_;
};

absl::StatusOr<std::unique_ptr<TraceWriter>> TraceWriter::Open(
    const std::string& counts_path, const std::string& router_path,
    const TraceLayout& layout) {
  if (layout.num_experts < 2 || layout.layer_ids.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "trace layout needs >= 2 experts and >= 1 layer; got ",
        layout.num_experts, " experts and ", layout.layer_ids.size(),
        " layers"));
  }
  for (size_t i = 0; i < layout.layer_ids.size(); ++i) {
    if (layout.layer_ids[i] < 0 ||
        (i > 0 && layout.layer_ids[i] <= layout.layer_ids[i - 1])) {
      return absl::InvalidArgumentError(
          "trace layout layer ids must be non-negative and increasing");
    }
  }
  if (layout.has_router != !router_path.empty()) {
    return absl::InvalidArgumentError(
        layout.has_router ? "the layout has router columns but no router "
                            "file path was given"
                          : "a router file path was given but the layout has "
                            "no router columns");
  }
  if (!layout.has_router && (layout.has_router_probs || layout.has_router_std)) {
    return absl::InvalidArgumentError(
        "router p/s columns need router z columns (has_router)");
  }
  MOECAST_ASSIGN_OR_RETURN(std::unique_ptr<File> counts,
                           File::Create(counts_path));
  std::unique_ptr<File> router;
  if (layout.has_router) {
    MOECAST_ASSIGN_OR_RETURN(router, File::Create(router_path));
  }
  const int m = layout.num_experts;
  std::string header = layout.has_tokens ? "step,layer,tokens" : "step,layer";
  for (int e = 0; e < m; ++e) absl::StrAppend(&header, ",c", e);
  header += '\n';
  MOECAST_RETURN_IF_ERROR(counts->Append(header));
  if (router != nullptr) {
    header = "step,layer";
    for (int e = 0; e < m; ++e) absl::StrAppend(&header, ",z", e);
    if (layout.has_router_probs) {
      for (int e = 0; e < m; ++e) absl::StrAppend(&header, ",p", e);
    }
    if (layout.has_router_std) {
      for (int e = 0; e < m; ++e) absl::StrAppend(&header, ",s", e);
    }
    header += '\n';
    MOECAST_RETURN_IF_ERROR(router->Append(header));
  }
  return std::unique_ptr<TraceWriter>(
      new TraceWriter(layout, std::move(counts), std::move(router)));
}

TraceWriter::TraceWriter(TraceLayout layout, std::unique_ptr<File> counts,
                         std::unique_ptr<File> router)
    : layout_(std::move(layout)),
      counts_(std::move(counts)),
      router_(std::move(router)) {}

TraceWriter::~TraceWriter() { (void)Close(); }

absl::Status TraceWriter::Write(const TraceStep& step) {
  const size_t n =
      static_cast<size_t>(layout_.num_layers()) * layout_.num_experts;
  auto size_error = [&](absl::string_view what, size_t got, size_t want) {
    return absl::InvalidArgumentError(
        absl::StrCat("step ", step.step, ": ", what, " has ", got,
                     " values, the layout needs ", want));
  };
  if (step.counts.size() != n) return size_error("counts", step.counts.size(), n);
  // Each router family must have exactly the values its columns need: n when
  // the layout has the columns, none otherwise.
  const std::pair<const std::vector<double>*, bool> families[] = {
      {&step.router_z, layout_.has_router},
      {&step.router_p, layout_.has_router_probs},
      {&step.router_s, layout_.has_router_std}};
  const char* const family_names[] = {"router_z", "router_p", "router_s"};
  for (int f = 0; f < 3; ++f) {
    const size_t want = families[f].second ? n : 0;
    if (families[f].first->size() != want) {
      return size_error(family_names[f], families[f].first->size(), want);
    }
  }
  if (layout_.has_tokens != step.tokens.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step ", step.step, ": the layout ",
        layout_.has_tokens ? "has" : "has no", " tokens column but the step ",
        step.tokens.has_value() ? "has" : "has no", " token count"));
  }
  if (step.tokens.has_value() && *step.tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step ", step.step, ": tokens = ", *step.tokens, " is negative"));
  }
  if (step.step < 0 || (last_step_.has_value() && step.step <= *last_step_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step ", step.step, " must be >= 0 and greater than the last written (",
        last_step_.has_value() ? absl::StrCat(*last_step_) : "none", ")"));
  }
  for (size_t i = 0; i < n; ++i) {
    const double c = step.counts[i];
    if (!(c >= 0) || c != std::floor(c) || c > 9.0e15) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "step %d counts[layer %d][expert %d] = %g is not a non-negative "
          "integer",
          step.step, i / layout_.num_experts, i % layout_.num_experts, c));
    }
  }
  for (const std::vector<double>* v :
       {&step.router_z, &step.router_p, &step.router_s}) {
    for (size_t i = 0; i < v->size(); ++i) {
      if (!std::isfinite((*v)[i])) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "step %d router value [layer %d][expert %d] is not finite",
            step.step, i / layout_.num_experts, i % layout_.num_experts));
      }
    }
  }
  const int m = layout_.num_experts;
  line_.clear();
  for (int l = 0; l < layout_.num_layers(); ++l) {
    absl::StrAppend(&line_, step.step, ",", layout_.layer_ids[l]);
    if (step.tokens.has_value()) absl::StrAppend(&line_, ",", *step.tokens);
    for (int e = 0; e < m; ++e) {
      absl::StrAppend(&line_, ",",
                      static_cast<int64_t>(step.counts[static_cast<size_t>(l) * m + e]));
    }
    line_ += '\n';
  }
  MOECAST_RETURN_IF_ERROR(counts_->Append(line_));
  if (router_ != nullptr) {
    line_.clear();
    for (int l = 0; l < layout_.num_layers(); ++l) {
      absl::StrAppend(&line_, step.step, ",", layout_.layer_ids[l]);
      for (const std::vector<double>* v :
           {&step.router_z, &step.router_p, &step.router_s}) {
        if (v->empty()) continue;
        for (int e = 0; e < m; ++e) {
          absl::StrAppendFormat(&line_, ",%.9g", (*v)[static_cast<size_t>(l) * m + e]);
        }
      }
      line_ += '\n';
    }
    MOECAST_RETURN_IF_ERROR(router_->Append(line_));
  }
  last_step_ = step.step;
  return absl::OkStatus();
}

absl::Status TraceWriter::Close() {
  absl::Status s;
  if (counts_ != nullptr) s.Update(counts_->Close());
  if (router_ != nullptr) s.Update(router_->Close());
  return s;
}

}  // namespace moecast
