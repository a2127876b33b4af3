#include "engine/internal/job.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/ingest/step_validator.h"

namespace moecast::internal {
namespace {

// Weight added to every source's share when averaging router-logit means, so
// that a layer where no source had assignments gets the plain mean instead of
// 0/0. Real assignment counts are >= 1, so the bias is below 1e-12.
constexpr double kLogitWeightFloor = 1e-12;

}  // namespace

Job::Job(JobSpec spec, const EngineOptions& options)
    : spec_(std::move(spec)),
      max_pending_(options.max_pending_steps),
      timeout_(options.source_timeout) {
  layers_.reserve(spec_.num_layers);
  for (int l = 0; l < spec_.num_layers; ++l) {
    layers_.emplace_back(spec_.num_experts, options.history_capacity_steps);
  }
  last_reported_.assign(spec_.num_sources, -1);
  scratch_sums_.assign(spec_.num_layers, 0.0);
  info_.spec = spec_;
}

absl::StatusOr<IngestResult> Job::Ingest(const StepInput& in, absl::Time now) {
  MutexLock lock(&mu_);
  if (absl::Status s = ValidateStep(spec_, in, absl::MakeSpan(scratch_sums_));
      !s.ok()) {
    ++info_.rejected_calls;
    return s;
  }
  if (spec_.num_sources > 1) {
    return IngestMultiSourceLocked(in, scratch_sums_, now);
  }

  IngestResult result;
  if (info_.last_step.has_value()) {
    const int64_t last = *info_.last_step;
    if (in.step == last) {
      ++info_.duplicate_calls;
      result.outcome = IngestOutcome::kDuplicate;
      result.note = absl::StrCat("step ", in.step,
                                 " was already committed; nothing changed");
      return result;
    }
    if (in.step < last) {
      ++info_.rejected_calls;
      return absl::InvalidArgumentError(
          absl::StrCat("job '", spec_.job_id, "': step ", in.step,
                       " is older than the last committed step ", last));
    }
  }
  last_reported_[0] = in.step;
  result.outcome = IngestOutcome::kCommitted;
  result.committed.push_back(CommitLocked(
      in.step, in.counts.data(), scratch_sums_.data(),
      in.router_logits.empty() ? nullptr : in.router_logits.data(), in.tokens,
      /*incomplete=*/false));
  for (int l = 0; l < spec_.num_layers; ++l) {
    if (scratch_sums_[l] <= 0) {
      absl::StrAppend(&result.note, result.note.empty()
                                        ? "layers without assignments:"
                                        : "",
                      " ", l);
    }
  }
  return result;
}

absl::StatusOr<IngestResult> Job::IngestMultiSourceLocked(
    const StepInput& in, const std::vector<double>& layer_sums,
    absl::Time now) {
  IngestResult result;
  // Time-outs first, so that a long-silent source does not make a fresh
  // report look out of room.
  DrainLocked(now, /*force=*/false, &result.committed);

  const int s = in.source;
  const int64_t t = in.step;
  auto reject = [&](absl::Status status) -> absl::StatusOr<IngestResult> {
    ++info_.rejected_calls;
    if (!result.committed.empty()) {
      status = absl::Status(
          status.code(),
          absl::StrCat(status.message(), "; meanwhile ",
                       result.committed.size(),
                       " timed-out step(s) were committed"));
    }
    return status;
  };
  if (t == last_reported_[s]) {
    ++info_.duplicate_calls;
    result.outcome = IngestOutcome::kDuplicate;
    result.note = absl::StrCat("source ", s, " already reported step ", t,
                               "; nothing changed");
    return result;
  }
  if (t < last_reported_[s]) {
    return reject(absl::InvalidArgumentError(absl::StrCat(
        "job '", spec_.job_id, "': source ", s, " sent step ", t,
        ", older than the last step it reported (", last_reported_[s], ")")));
  }
  if (info_.last_step.has_value() && t <= *info_.last_step) {
    return reject(absl::FailedPreconditionError(absl::StrCat(
        "job '", spec_.job_id, "': source ", s, " sent step ", t,
        " after it was committed without this source (last committed step ",
        *info_.last_step, "); the late part is dropped")));
  }
  auto it = pending_.find(t);
  if (it == pending_.end()) {
    if (static_cast<int>(pending_.size()) >= max_pending_) {
      return reject(absl::ResourceExhaustedError(absl::StrCat(
          "job '", spec_.job_id, "': ", pending_.size(),
          " steps are already waiting for sources (max_pending_steps = ",
          max_pending_, "); source ", s, " is too far ahead at step ", t,
          ", oldest pending step is ", pending_.begin()->first)));
    }
    const size_t n = static_cast<size_t>(spec_.num_layers) * spec_.num_experts;
    PendingStep fresh;
    fresh.counts.assign(n, 0.0);
    fresh.logit_sums.assign(n, 0.0);
    fresh.logit_weights.assign(spec_.num_layers, 0.0);
    fresh.reported.assign(spec_.num_sources, 0);
    fresh.first_seen = now;
    it = pending_.emplace(t, std::move(fresh)).first;
  }
  PendingStep& p = it->second;
  const int m = spec_.num_experts;
  for (size_t i = 0; i < p.counts.size(); ++i) p.counts[i] += in.counts[i];
  if (in.router_logits.empty()) {
    p.all_logits = false;
  } else {
    for (int l = 0; l < spec_.num_layers; ++l) {
      const double w = layer_sums[l] + kLogitWeightFloor;
      p.logit_weights[l] += w;
      const double* z = in.router_logits.data() + static_cast<size_t>(l) * m;
      double* acc = p.logit_sums.data() + static_cast<size_t>(l) * m;
      for (int e = 0; e < m; ++e) acc[e] += w * z[e];
    }
  }
  if (in.tokens.has_value()) {
    p.tokens += *in.tokens;
  } else {
    p.all_tokens = false;
  }
  p.reported[s] = 1;
  ++p.num_reported;
  last_reported_[s] = t;

  DrainLocked(now, /*force=*/false, &result.committed);
  result.outcome = IngestOutcome::kPending;
  for (const CommittedStep& c : result.committed) {
    if (c.step == t) result.outcome = IngestOutcome::kCommitted;
  }
  return result;
}

void Job::DrainLocked(std::optional<absl::Time> now, bool force,
                      std::vector<CommittedStep>* out) {
  if (pending_.empty()) return;
  const int64_t min_reported =
      *std::min_element(last_reported_.begin(), last_reported_.end());
  const int m = spec_.num_experts;
  while (!pending_.empty()) {
    auto it = pending_.begin();
    const int64_t t = it->first;
    PendingStep& p = it->second;
    const bool final_step = t <= min_reported;
    const bool expired = now.has_value() && *now - p.first_seen >= timeout_;
    if (!final_step && !expired && !force) break;

    for (int l = 0; l < spec_.num_layers; ++l) {
      const double* c = p.counts.data() + static_cast<size_t>(l) * m;
      double sum = 0;
      for (int e = 0; e < m; ++e) sum += c[e];
      scratch_sums_[l] = sum;
    }
    const double* logits = nullptr;
    if (p.all_logits) {
      for (int l = 0; l < spec_.num_layers; ++l) {
        double* z = p.logit_sums.data() + static_cast<size_t>(l) * m;
        const double inv = 1.0 / p.logit_weights[l];
        for (int e = 0; e < m; ++e) z[e] *= inv;
      }
      logits = p.logit_sums.data();
    }
    std::optional<double> tokens;
    if (p.all_tokens) tokens = p.tokens;
    out->push_back(CommitLocked(t, p.counts.data(), scratch_sums_.data(),
                                logits, tokens,
                                p.num_reported < spec_.num_sources));
    pending_.erase(it);
  }
}

CommittedStep Job::CommitLocked(int64_t step, const double* counts,
                                const double* layer_sums, const double* logits,
                                std::optional<double> tokens,
                                bool incomplete) {
  CommittedStep c;
  c.step = step;
  c.incomplete = incomplete;
  uint32_t flags = incomplete ? kStepIncomplete : 0;
  if (info_.last_step.has_value() && step != *info_.last_step + 1) {
    c.gap_before = step - *info_.last_step - 1;
    flags |= kStepAfterGap;
    ++info_.gaps;
    info_.missing_steps += c.gap_before;
  }
  const int m = spec_.num_experts;
  for (int l = 0; l < spec_.num_layers; ++l) {
    const size_t off = static_cast<size_t>(l) * m;
    const double n = tokens.has_value() ? *tokens : layer_sums[l] / spec_.top_k;
    layers_[l].Append(step, n, flags, counts + off, layer_sums[l],
                      logits == nullptr ? nullptr : logits + off);
  }
  info_.tokens += tokens.has_value() ? *tokens : layer_sums[0] / spec_.top_k;
  ++info_.committed_steps;
  if (!info_.first_step.has_value()) info_.first_step = step;
  info_.last_step = step;
  if (incomplete) ++info_.incomplete_steps;
  return c;
}

std::vector<CommittedStep> Job::ExpirePending(absl::Time now) {
  MutexLock lock(&mu_);
  std::vector<CommittedStep> out;
  DrainLocked(now, /*force=*/false, &out);
  return out;
}

std::vector<CommittedStep> Job::FlushPending() {
  MutexLock lock(&mu_);
  std::vector<CommittedStep> out;
  DrainLocked(std::nullopt, /*force=*/true, &out);
  return out;
}

JobInfo Job::Info() const {
  MutexLock lock(&mu_);
  JobInfo info = info_;
  info.pending_steps = static_cast<int64_t>(pending_.size());
  info.history_bytes = 0;
  for (const LayerHistory& h : layers_) info.history_bytes += h.MemoryBytes();
  return info;
}

void Job::VisitLayer(int layer,
                     absl::FunctionRef<void(const LayerHistory&)> fn) const {
  MutexLock lock(&mu_);
  fn(layers_[layer]);
}

}  // namespace moecast::internal
