#include "engine/job_spec.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"

namespace moecast {
namespace {

constexpr int kMaxJobIdLength = 128;

bool IsJobIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

absl::Status CheckOptionalNonNegative(const std::optional<double>& v,
                                      absl::string_view name, bool positive) {
  if (!v.has_value()) return absl::OkStatus();
  if (!std::isfinite(*v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("hyperparameter ", name, " = ", *v, " is not finite"));
  }
  if (positive ? *v <= 0 : *v < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hyperparameter ", name, " = ", *v, " must be ",
        positive ? "positive" : "non-negative"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateJobId(absl::string_view id) {
  if (id.empty()) return absl::InvalidArgumentError("job id is empty");
  if (id.size() > kMaxJobIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("job id is ", id.size(), " characters long; at most ",
                     kMaxJobIdLength, " are allowed"));
  }
  for (size_t i = 0; i < id.size(); ++i) {
    if (!IsJobIdChar(id[i])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "job id '%s' has character 0x%02x at position %d; only letters, "
          "digits, '.', '_' and '-' are allowed",
          absl::CHexEscape(id), static_cast<unsigned char>(id[i]), i));
    }
  }
  if (id == "." || id == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("job id '", id, "' is reserved"));
  }
  return absl::OkStatus();
}

int64_t HistoryBytes(const JobSpec& spec, const EngineOptions& options,
                     bool with_router) {
  const int64_t per_plane = int64_t{spec.num_layers} * spec.num_experts *
                            options.history_capacity_steps *
                            static_cast<int64_t>(sizeof(float));
  return with_router ? 2 * per_plane : per_plane;
}

absl::Status ValidateJobSpec(const JobSpec& spec,
                             const EngineOptions& options) {
  if (absl::Status s = ValidateJobId(spec.job_id); !s.ok()) return s;
  const std::string& id = spec.job_id;
  if (spec.num_layers < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job '", id, "': num_layers = ", spec.num_layers, " must be >= 1"));
  }
  if (spec.num_experts < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job '", id, "': num_experts = ", spec.num_experts, " must be >= 2"));
  }
  if (spec.top_k < 1 || spec.top_k > spec.num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("job '", id, "': top_k = ", spec.top_k,
                     " must be in [1, num_experts = ", spec.num_experts, "]"));
  }
  if (spec.num_sources < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job '", id, "': num_sources = ", spec.num_sources, " must be >= 1"));
  }
  if (spec.num_layers > options.max_layers) {
    return absl::ResourceExhaustedError(
        absl::StrCat("job '", id, "': num_layers = ", spec.num_layers,
                     " exceeds the limit max_layers = ", options.max_layers));
  }
  if (spec.num_experts > options.max_experts) {
    return absl::ResourceExhaustedError(
        absl::StrCat("job '", id, "': num_experts = ", spec.num_experts,
                     " exceeds the limit max_experts = ", options.max_experts));
  }
  const int64_t layer_experts = int64_t{spec.num_layers} * spec.num_experts;
  if (layer_experts > options.max_layer_experts) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "job '", id, "': ", spec.num_layers, " layers x ", spec.num_experts,
        " experts = ", layer_experts, " exceeds the limit max_layer_experts = ",
        options.max_layer_experts));
  }
  if (spec.num_sources > options.max_sources) {
    return absl::ResourceExhaustedError(
        absl::StrCat("job '", id, "': num_sources = ", spec.num_sources,
                     " exceeds the limit max_sources = ", options.max_sources));
  }
  const int64_t bytes = HistoryBytes(spec, options, /*with_router=*/true);
  if (bytes > options.max_job_history_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "job '", id, "': its history ring would take ", bytes,
        " bytes (layers x experts x history_capacity_steps x 4 x 2), over the "
        "limit max_job_history_bytes = ",
        options.max_job_history_bytes));
  }
  const TrainingHyperparams& h = spec.hyper;
  if (absl::Status s = CheckOptionalNonNegative(h.aux_loss_coef,
                                                "aux_loss_coef", false);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckOptionalNonNegative(
          h.router_temperature, "router_temperature", /*positive=*/true);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckOptionalNonNegative(h.entropy_weight,
                                                "entropy_weight", false);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckOptionalNonNegative(h.oracle_weight, "oracle_weight", false);
      !s.ok()) {
    return s;
  }
  return CheckOptionalNonNegative(h.balance_weight, "balance_weight", false);
}

absl::string_view StepUnitName(StepUnit unit) {
  switch (unit) {
    case StepUnit::kOptimizerStep:
      return "optimizer_step";
    case StepUnit::kForwardPass:
      return "forward_pass";
    case StepUnit::kInterval:
      return "interval";
  }
  return "unknown";
}

absl::string_view RouterKindName(RouterKind kind) {
  switch (kind) {
    case RouterKind::kSoftmax:
      return "softmax";
    case RouterKind::kSigmoidWithBias:
      return "sigmoid_with_bias";
  }
  return "unknown";
}

}  // namespace moecast
