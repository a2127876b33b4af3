#include "engine/predict/lstm/lstm_e.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <utility>

#include "Eigen/Dense"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "engine/predict/lstm/lstm_shared.h"

namespace moecast {
namespace {

constexpr int kMaxHidden = 1024;

using lstm_internal::Bad;
using lstm_internal::CheckRange;
using lstm_internal::kMaxExperts;
using lstm_internal::TensorPointers;
using lstm_internal::TensorRef;
using lstm_internal::ValidateScale;

std::vector<TensorRef> TensorLayout(int64_t H, int64_t num_layers, int64_t K) {
  std::vector<TensorRef> t;
  for (int64_t l = 0; l < num_layers; ++l) {
    const int64_t in = l == 0 ? LstmEModel::kFeatures : H;
    t.push_back({absl::StrCat("weight_ih_l", l), 4 * H * in});
    t.push_back({absl::StrCat("weight_hh_l", l), 4 * H * H});
    t.push_back({absl::StrCat("bias_ih_l", l), 4 * H});
    t.push_back({absl::StrCat("bias_hh_l", l), 4 * H});
  }
  t.push_back({"head_weight", K * H});
  t.push_back({"head_bias", K});
  return t;
}

absl::Status ValidateShape(int64_t features, int64_t H, int64_t num_layers,
                           int64_t lookback, int64_t block, int64_t anchor,
                           const std::vector<int64_t>& horizons, int64_t description_bytes,
                           absl::string_view source) {
  if (features != LstmEModel::kFeatures) {
    return Bad(source, absl::StrCat("num_features = ", features, ", this build's inputs are ",
                                    LstmEModel::kFeatures));
  }
  absl::Status s;
  if (!(s = CheckRange(source, "hidden", H, 1, kMaxHidden)).ok()) return s;
  return lstm_internal::ValidateStackShape(num_layers, lookback, block, anchor, horizons,
                                          description_bytes, source);
}

}  // namespace

absl::Status ValidateLstmEModel(const LstmEModel& m, absl::string_view source) {
  std::vector<int64_t> horizons(m.horizons.begin(), m.horizons.end());
  absl::Status s = ValidateShape(LstmEModel::kFeatures, m.hidden, m.num_layers(), m.lookback,
                                 m.block, m.anchor_window, horizons,
                                 static_cast<int64_t>(m.description.size()), source);
  if (!s.ok()) return s;
  if (!(s = ValidateScale("input_clip", m.input_clip, source)).ok()) return s;
  if (!(s = ValidateScale("output_scale", m.output_scale, source)).ok()) return s;
  const std::vector<TensorRef> layout =
      TensorLayout(m.hidden, m.num_layers(), static_cast<int64_t>(m.horizons.size()));
  const std::vector<std::vector<float>*> tensors = TensorPointers(const_cast<LstmEModel*>(&m));
  return lstm_internal::ValidateTensors(layout, tensors, source);
}

// The file kind, for both the encoder and the decoder.
constexpr lstm_internal::FileKind kKind = {
    LstmEModel::kMagic, LstmEModel::kVersion, "MOECLSTM",
    "this is an M-specific lstm weights file (magic \"MOECLSTM\"), not a per-expert "
    "lstm_e file (\"MOECLSTE\"): load it with lstm(PATH)",
    "bad magic: not a moecast per-expert LSTM weights file (expected the 8 bytes "
    "\"MOECLSTE\")"};

std::string EncodeLstmEModel(const LstmEModel& m) {
  const int counts[8] = {LstmEModel::kFeatures, m.hidden, m.num_layers(), m.lookback, m.block,
                         m.anchor_window, static_cast<int>(m.horizons.size()),
                         static_cast<int>(m.description.size())};
  return lstm_internal::EncodeFile(kKind, counts, m.horizons, {m.input_clip, m.output_scale},
                                   m.description,
                                   TensorPointers(const_cast<LstmEModel*>(&m)));
}

absl::StatusOr<LstmEModel> DecodeLstmEModel(absl::string_view bytes,
                                            absl::string_view source) {
  absl::StatusOr<lstm_internal::FileHeader> h = lstm_internal::DecodeHeader(bytes, source, kKind);
  if (!h.ok()) return h.status();
  const int64_t F = h->counts[0], H = h->counts[1], num_layers = h->counts[2],
                lookback = h->counts[3], block = h->counts[4], anchor = h->counts[5],
                K = h->counts[6], D = h->counts[7];
  const size_t header = h->bytes;
  absl::Status s =
      ValidateShape(F, H, num_layers, lookback, block, anchor, h->horizons, D, source);
  if (!s.ok()) return s;
  LstmEModel m;
  m.hidden = static_cast<int>(H);
  m.lookback = static_cast<int>(lookback);
  m.block = static_cast<int>(block);
  m.anchor_window = static_cast<int>(anchor);
  m.horizons.assign(h->horizons.begin(), h->horizons.end());
  m.input_clip = h->scales[0];
  m.output_scale = h->scales[1];
  if (!(s = ValidateScale("input_clip", m.input_clip, source)).ok()) return s;
  if (!(s = ValidateScale("output_scale", m.output_scale, source)).ok()) return s;
  const std::vector<TensorRef> layout = TensorLayout(H, num_layers, K);
  s = lstm_internal::CheckParameterBytes(
      bytes.size(), header, D, layout,
      absl::StrCat("a model with H=", H, " num_layers=", num_layers, " K=", K), source);
  if (!s.ok()) return s;
  m.description.assign(bytes.data() + header, D);
  m.layers.resize(num_layers);
  const std::vector<std::vector<float>*> tensors = TensorPointers(&m);
  s = lstm_internal::DecodeTensors(bytes, header + D, layout, tensors, source);
  if (!s.ok()) return s;
  return m;
}

absl::Status WriteLstmEModel(const LstmEModel& model, const std::string& path) {
  absl::Status s = ValidateLstmEModel(model, path);
  if (!s.ok()) return s;
  return lstm_internal::WriteWeightsFile(path, EncodeLstmEModel(model));
}

// ----------------------------------------------------------------------------
// Inference form.

struct LstmEWeights::Compiled {
  struct Layer {
    Eigen::MatrixXf w_ih;  // 4H x in
    Eigen::MatrixXf w_hh;  // 4H x H
    Eigen::VectorXf b;     // bias_ih + bias_hh
  };
  std::vector<Layer> layers;
  Eigen::MatrixXf head_w;  // K x H
  Eigen::VectorXf head_b;  // K
};

LstmEWeights::LstmEWeights() = default;
LstmEWeights::~LstmEWeights() = default;

absl::StatusOr<std::shared_ptr<const LstmEWeights>> LstmEWeights::Load(
    const std::string& path) {
  absl::StatusOr<std::string> bytes = lstm_internal::ReadWeightsFile(path);
  if (!bytes.ok()) return bytes.status();
  absl::StatusOr<LstmEModel> model = DecodeLstmEModel(*bytes, path);
  if (!model.ok()) return model.status();
  return FromModel(*std::move(model), path);
}

absl::StatusOr<std::shared_ptr<const LstmEWeights>> LstmEWeights::FromModel(
    LstmEModel model, std::string source) {
  absl::Status s = ValidateLstmEModel(model, source);
  if (!s.ok()) return s;
  std::shared_ptr<LstmEWeights> w(new LstmEWeights());
  w->compiled_ = std::make_unique<Compiled>();
  Compiled& c = *w->compiled_;
  const int H = model.hidden;
  const int K = static_cast<int>(model.horizons.size());
  for (int l = 0; l < model.num_layers(); ++l) {
    const LstmEModel::Layer& src = model.layers[l];
    const int in = l == 0 ? LstmEModel::kFeatures : H;
    Compiled::Layer layer;
    lstm_internal::CompileLayer(src, in, H, &layer.w_ih, &layer.w_hh, &layer.b);
    c.layers.push_back(std::move(layer));
  }
  c.head_w.resize(K, H);
  c.head_b.resize(K);
  for (int k = 0; k < K; ++k) {
    for (int j = 0; j < H; ++j) c.head_w(k, j) = model.head_weight[int64_t{k} * H + j];
    c.head_b(k) = model.head_bias[k];
  }
  w->model_ = std::move(model);
  w->source_ = std::move(source);
  return std::shared_ptr<const LstmEWeights>(std::move(w));
}

int64_t LstmEWeights::MemoryBytes() const {
  const int64_t floats = lstm_internal::ParameterFloats(model_, *compiled_);
  return static_cast<int64_t>(sizeof(*this) + sizeof(Compiled)) + 4 * floats +
         static_cast<int64_t>(model_.description.size() + source_.size());
}

// ----------------------------------------------------------------------------
// The predictor.

namespace {

class LstmEPredictor final : public lstm_internal::LstmPredictorBase {
 public:
  LstmEPredictor(int num_experts, std::shared_ptr<const LstmEWeights> weights)
      : LstmPredictorBase("lstm_e", num_experts, weights->model().window(),
                          static_cast<int>(weights->model().horizons.size())),
        weights_(std::move(weights)),
        m_(weights_->model()),
        c_(weights_->compiled()),
        H_(m_.hidden),
        noise_(M_),
        prev_(M_),
        blocks_(M_, m_.lookback),
        ctx_(M_),
        u_(M_),
        pre_const_(4 * H_, M_),
        gates_(4 * H_, M_),
        act_(4 * H_, M_),
        h_(H_, M_),
        cell_(H_, M_),
        tanh_c_(H_, M_),
        seq_{Eigen::MatrixXf(m_.num_layers() > 1 ? H_ : 0,
                             m_.num_layers() > 1 ? int64_t{M_} * m_.lookback : 0),
             Eigen::MatrixXf(m_.num_layers() > 2 ? H_ : 0,
                             m_.num_layers() > 2 ? int64_t{M_} * m_.lookback : 0)},
        head_out_(K_, M_) {}

  int64_t MemoryBytes() const override {
    const int64_t doubles = BaseDoubles() + noise_.size() + prev_.size() + blocks_.size() +
                            ctx_.size();
    const int64_t floats = u_.size() + pre_const_.size() + gates_.size() + act_.size() +
                           h_.size() + cell_.size() + tanh_c_.size() + seq_[0].size() +
                           seq_[1].size() + head_out_.size();
    return static_cast<int64_t>(sizeof(*this)) + 8 * doubles + 4 * floats +
           weights_->MemoryBytes();
  }

 private:
  const std::vector<int>& horizons() const override { return m_.horizons; }

  // Gates i, f, g, o of one step for all experts: sigmoid on all four blocks,
  // tanh(x) = 2 sigmoid(2x) - 1 for g and for the cell.
  void Cell() {
    gates_.middleRows(2 * H_, H_) *= 2.0f;
    act_ = (1.0f + (-gates_.array()).exp()).inverse();
    cell_.array() = act_.middleRows(H_, H_) * cell_.array() +
                    act_.topRows(H_) * (2.0f * act_.middleRows(2 * H_, H_) - 1.0f);
    tanh_c_ = (1.0f + (-2.0f * cell_.array()).exp()).inverse();
    h_.array() = act_.bottomRows(H_) * (2.0f * tanh_c_ - 1.0f);
  }

  void Compute() override {
    const int n = static_cast<int>(std::min<int64_t>(observed_, W_));
    const int64_t first = observed_ - n;
    const int B = m_.block;
    const int nb = (n + B - 1) / B;
    // Block sums, noise (sum of squared consecutive differences), anchor.
    blocks_.leftCols(nb).setZero();
    noise_.setZero();
    anchor_.setZero();
    const int na = std::min(n, m_.anchor_window);
    for (int i = 0; i < n; ++i) {
      const int j = nb - 1 - (n - 1 - i) / B;  // block of window offset i
      Eigen::Map<const Eigen::ArrayXd> p(Slot(first + i), M_);
      blocks_.col(j) += p;
      if (i > 0) noise_ += (p - prev_).square();
      if (i >= n - na) anchor_.array() += p;
      prev_ = p;
    }
    anchor_ /= na;
    if (n >= 2) {
      noise_ = (noise_ / (2.0 * (n - 1))).sqrt().max(LstmEModel::kNoiseFloor);
    } else {
      noise_.setConstant(LstmEModel::kNoiseFloor);
    }
    for (int j = 0; j < nb; ++j) {
      const int end = n - (nb - 1 - j) * B;
      const int len = std::min(B, end);
      blocks_.col(j) /= len;
    }
    // Layer 0's input term, constant over the blocks: the two context
    // features and the bias.
    const LstmEWeights::Compiled::Layer& layer0 = c_.layers[0];
    ctx_ = (anchor_.array() * M_).max(LstmEModel::kLevelFloor).log();
    for (int e = 0; e < M_; ++e) {
      const float c1 = static_cast<float>(ctx_[e]);
      const float c2 = static_cast<float>(
          std::log(noise_[e] / std::max(anchor_[e], LstmEModel::kAnchorFloor)));
      pre_const_.col(e) = layer0.b + layer0.w_ih.col(1) * c1 + layer0.w_ih.col(2) * c2;
    }
    const double clip = m_.input_clip;
    const int num_layers = static_cast<int>(c_.layers.size());
    for (int l = 0; l < num_layers; ++l) {
      const LstmEWeights::Compiled::Layer& layer = c_.layers[l];
      h_.setZero();
      cell_.setZero();
      for (int j = 0; j < nb; ++j) {
        if (l == 0) {
          u_ = ((blocks_.col(j) - anchor_.array()) / noise_).max(-clip).min(clip).cast<float>();
          gates_ = pre_const_;
          gates_.noalias() += layer.w_ih.col(0) * u_.matrix().transpose();
        } else {
          gates_.colwise() = layer.b;
          gates_.noalias() +=
              layer.w_ih * seq_[(l - 1) & 1].middleCols(int64_t{j} * M_, M_);
        }
        gates_.noalias() += layer.w_hh * h_;
        Cell();
        if (l + 1 < num_layers) seq_[l & 1].middleCols(int64_t{j} * M_, M_) = h_;
      }
    }
    head_out_.noalias() = c_.head_w * h_;
    head_out_.colwise() += c_.head_b;
    const double out_scale = m_.output_scale;
    for (int k = 0; k < K_; ++k) {
      for (int e = 0; e < M_; ++e) {
        y_(e, k) = anchor_[e] + out_scale * noise_[e] * static_cast<double>(head_out_(k, e));
      }
    }
  }

  const std::shared_ptr<const LstmEWeights> weights_;
  const LstmEModel& m_;
  const LstmEWeights::Compiled& c_;
  const int H_;

  Eigen::ArrayXd noise_, prev_;
  Eigen::ArrayXXd blocks_;    // M x lookback block means
  Eigen::ArrayXd ctx_;        // M: ln(max(M a, floor))
  Eigen::ArrayXf u_;          // M: one block's clipped input
  Eigen::MatrixXf pre_const_; // 4H x M: bias + context terms of layer 0
  Eigen::MatrixXf gates_;     // 4H x M
  Eigen::ArrayXXf act_;       // 4H x M
  Eigen::MatrixXf h_, cell_;  // H x M
  Eigen::ArrayXXf tanh_c_;    // H x M
  Eigen::MatrixXf seq_[2];    // H x (lookback*M): hidden sequences between layers
  Eigen::MatrixXf head_out_;  // K x M
};

}  // namespace

absl::StatusOr<std::unique_ptr<Predictor>> MakeLstmEPredictor(
    int num_experts, std::shared_ptr<const LstmEWeights> weights) {
  if (weights == nullptr) return absl::InvalidArgumentError("lstm_e: no weights");
  if (num_experts < 1 || num_experts > kMaxExperts) {
    return absl::InvalidArgumentError(absl::StrCat(
        weights->source(), ": lstm_e needs 1..", kMaxExperts, " experts, the stream has ",
        num_experts));
  }
  const LstmEModel& m = weights->model();
  const int64_t values =
      (int64_t{m.window()} + 8 * int64_t{m.hidden} +
       (m.num_layers() > 1 ? 2 * int64_t{m.hidden} * m.lookback : 0)) *
      num_experts;
  if (values > (int64_t{1} << 27)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        weights->source(), ": a stream of ", num_experts, " experts would need ", values,
        " buffer values (window ", m.window(), " and hidden ", m.hidden,
        "); the limit is 2^27"));
  }
  return std::unique_ptr<Predictor>(new LstmEPredictor(num_experts, std::move(weights)));
}

absl::StatusOr<std::unique_ptr<Predictor>> MakeLstmEPredictor(
    int num_experts, const std::string& weights_path) {
  absl::StatusOr<std::shared_ptr<const LstmEWeights>> w = LstmEWeights::Load(weights_path);
  if (!w.ok()) return w.status();
  return MakeLstmEPredictor(num_experts, *std::move(w));
}

}  // namespace moecast
