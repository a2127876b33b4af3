#include "engine/durability/wal_records.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace moecast::durability {
namespace {

void PutString(std::string* out, absl::string_view s) {
  PutFixed32(out, static_cast<uint32_t>(s.size()));
  out->append(s.data(), s.size());
}

void PutDouble(std::string* out, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  PutFixed64(out, bits);
}

void PutDoubles(std::string* out, absl::Span<const double> v) {
  PutFixed32(out, static_cast<uint32_t>(v.size()));
  static_assert(sizeof(double) == 8, "IEEE doubles");
  const size_t at = out->size();
  out->resize(at + v.size() * 8);
  // Little-endian hosts (x86-64, aarch64) store doubles as the format does.
  if (!v.empty()) std::memcpy(&(*out)[at], v.data(), v.size() * 8);
}

void PutOptionalDouble(std::string* out, const std::optional<double>& v) {
  out->push_back(v.has_value() ? 1 : 0);
  PutDouble(out, v.value_or(0.0));
}

class Decoder {
 public:
  explicit Decoder(absl::string_view data) : data_(data) {}
  bool ok() const { return ok_; }
  bool done() const { return ok_ && pos_ == data_.size(); }

  uint8_t U8() {
    if (!Need(1)) return 0;
    return static_cast<uint8_t>(data_[pos_++]);
  }
  uint32_t U32() {
    if (!Need(4)) return 0;
    const uint32_t v = DecodeFixed32(data_.data() + pos_);
    pos_ += 4;
    return v;
  }
  uint64_t U64() {
    if (!Need(8)) return 0;
    const uint64_t v = DecodeFixed64(data_.data() + pos_);
    pos_ += 8;
    return v;
  }
  double Double() {
    const uint64_t bits = U64();
    double v;
    std::memcpy(&v, &bits, sizeof(v));
    return v;
  }
  std::string String() {
    const uint32_t n = U32();
    if (!Need(n)) return "";
    std::string s(data_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  std::vector<double> Doubles() {
    const uint32_t n = U32();
    std::vector<double> v;
    if (!Need(uint64_t{n} * 8)) return v;
    v.resize(n);
    if (n > 0) std::memcpy(v.data(), data_.data() + pos_, uint64_t{n} * 8);
    pos_ += uint64_t{n} * 8;
    return v;
  }
  std::optional<double> OptionalDouble() {
    const uint8_t has = U8();
    const double v = Double();
    if (has > 1) ok_ = false;
    return has == 1 ? std::optional<double>(v) : std::nullopt;
  }

 private:
  bool Need(uint64_t n) {
    if (!ok_ || data_.size() - pos_ < n) {
      ok_ = false;
      return false;
    }
    return true;
  }
  absl::string_view data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace

StepInput Mutation::AsStepInput() const {
  StepInput in;
  in.step = step;
  in.source = source;
  in.counts = counts;
  in.router_logits = router_logits;
  in.tokens = tokens;
  return in;
}

std::string EncodeRegisterJob(int64_t time_ns, const JobSpec& spec) {
  std::string out;
  PutFixed64(&out, static_cast<uint64_t>(time_ns));
  PutString(&out, spec.job_id);
  PutFixed32(&out, static_cast<uint32_t>(spec.num_layers));
  PutFixed32(&out, static_cast<uint32_t>(spec.num_experts));
  PutFixed32(&out, static_cast<uint32_t>(spec.top_k));
  PutFixed32(&out, static_cast<uint32_t>(spec.num_sources));
  out.push_back(static_cast<char>(spec.step_unit));
  out.push_back(spec.forecasting ? 1 : 0);
  out.push_back(spec.health ? 1 : 0);
  PutFixed32(&out, static_cast<uint32_t>(spec.predictors.size()));
  for (const std::string& p : spec.predictors) PutString(&out, p);
  PutFixed32(&out, static_cast<uint32_t>(spec.horizons.size()));
  for (int h : spec.horizons) PutFixed32(&out, static_cast<uint32_t>(h));
  out.push_back(static_cast<char>(spec.router));
  PutOptionalDouble(&out, spec.hyper.aux_loss_coef);
  PutOptionalDouble(&out, spec.hyper.router_temperature);
  PutOptionalDouble(&out, spec.hyper.entropy_weight);
  PutOptionalDouble(&out, spec.hyper.oracle_weight);
  PutOptionalDouble(&out, spec.hyper.balance_weight);
  return out;
}

std::string EncodeJobOnly(int64_t time_ns, absl::string_view job_id) {
  std::string out;
  PutFixed64(&out, static_cast<uint64_t>(time_ns));
  PutString(&out, job_id);
  return out;
}

uint64_t IngestPayloadBytes(absl::string_view job_id, const StepInput& in) {
  return 8 + 4 + job_id.size() + 8 + 4 + 4 + in.counts.size() * 8 + 4 +
         in.router_logits.size() * 8 + 9;
}

std::string EncodeIngest(int64_t time_ns, absl::string_view job_id, const StepInput& in) {
  std::string out;
  out.reserve(IngestPayloadBytes(job_id, in));
  PutFixed64(&out, static_cast<uint64_t>(time_ns));
  PutString(&out, job_id);
  PutFixed64(&out, static_cast<uint64_t>(in.step));
  PutFixed32(&out, static_cast<uint32_t>(in.source));
  PutDoubles(&out, in.counts);
  PutDoubles(&out, in.router_logits);
  PutOptionalDouble(&out, in.tokens);
  return out;
}

std::string EncodePoll(int64_t time_ns) {
  std::string out;
  PutFixed64(&out, static_cast<uint64_t>(time_ns));
  return out;
}

std::string EncodeRestoreJob(int64_t time_ns, absl::string_view snapshot) {
  std::string out;
  PutFixed64(&out, static_cast<uint64_t>(time_ns));
  PutString(&out, snapshot);
  return out;
}

std::string EncodeExpireJobs(int64_t time_ns, const std::vector<std::string>& ids) {
  std::string out;
  PutFixed64(&out, static_cast<uint64_t>(time_ns));
  PutFixed32(&out, static_cast<uint32_t>(ids.size()));
  for (const std::string& id : ids) PutString(&out, id);
  return out;
}

absl::StatusOr<Mutation> DecodeMutation(RecordType type, absl::string_view payload) {
  Mutation m;
  m.type = type;
  Decoder d(payload);
  m.time_ns = static_cast<int64_t>(d.U64());
  switch (type) {
    case RecordType::kRegisterJob: {
      JobSpec& s = m.spec;
      s.job_id = d.String();
      s.num_layers = static_cast<int>(d.U32());
      s.num_experts = static_cast<int>(d.U32());
      s.top_k = static_cast<int>(d.U32());
      s.num_sources = static_cast<int>(d.U32());
      const uint8_t unit = d.U8();
      if (unit > static_cast<uint8_t>(StepUnit::kInterval)) {
        return absl::DataLossError(absl::StrCat("bad step unit ", unit));
      }
      s.step_unit = static_cast<StepUnit>(unit);
      s.forecasting = d.U8() != 0;
      s.health = d.U8() != 0;
      const uint32_t np = d.U32();
      for (uint32_t i = 0; i < np && d.ok(); ++i) s.predictors.push_back(d.String());
      const uint32_t nh = d.U32();
      for (uint32_t i = 0; i < nh && d.ok(); ++i) {
        s.horizons.push_back(static_cast<int>(d.U32()));
      }
      const uint8_t router = d.U8();
      if (router > static_cast<uint8_t>(RouterKind::kSigmoidWithBias)) {
        return absl::DataLossError(absl::StrCat("bad router kind ", router));
      }
      s.router = static_cast<RouterKind>(router);
      s.hyper.aux_loss_coef = d.OptionalDouble();
      s.hyper.router_temperature = d.OptionalDouble();
      s.hyper.entropy_weight = d.OptionalDouble();
      s.hyper.oracle_weight = d.OptionalDouble();
      s.hyper.balance_weight = d.OptionalDouble();
      break;
    }
    case RecordType::kDeleteJob:
    case RecordType::kFlushPending:
      m.job_id = d.String();
      break;
    case RecordType::kIngest:
      m.job_id = d.String();
      m.step = static_cast<int64_t>(d.U64());
      m.source = static_cast<int>(d.U32());
      m.counts = d.Doubles();
      m.router_logits = d.Doubles();
      m.tokens = d.OptionalDouble();
      break;
    case RecordType::kPoll:
      break;
    case RecordType::kRestoreJob:
      m.snapshot = d.String();
      break;
    case RecordType::kExpireJobs: {
      const uint32_t n = d.U32();
      for (uint32_t i = 0; i < n && d.ok(); ++i) m.job_ids.push_back(d.String());
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("record type ", static_cast<int>(type), " is not a mutation"));
  }
  if (!d.done()) {
    return absl::DataLossError(absl::StrCat("a record of type ", static_cast<int>(type),
                                            " (", payload.size(),
                                            " bytes) does not parse"));
  }
  return m;
}

}  // namespace moecast::durability
