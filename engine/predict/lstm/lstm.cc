#include "engine/predict/lstm/lstm.h"

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

constexpr int kMaxHidden = 4096;

using lstm_internal::Bad;
using lstm_internal::CheckRange;
using lstm_internal::kMaxExperts;
using lstm_internal::TensorPointers;
using lstm_internal::TensorRef;
using lstm_internal::ValidateScale;

// The tensors of a model in file order, with their expected sizes.
std::vector<TensorRef> TensorLayout(int M, int H, int num_layers, int K) {
  std::vector<TensorRef> t;
  for (int l = 0; l < num_layers; ++l) {
    const int64_t in = l == 0 ? M : H;
    t.push_back({absl::StrCat("weight_ih_l", l), int64_t{4} * H * in});
    t.push_back({absl::StrCat("weight_hh_l", l), int64_t{4} * H * H});
    t.push_back({absl::StrCat("bias_ih_l", l), int64_t{4} * H});
    t.push_back({absl::StrCat("bias_hh_l", l), int64_t{4} * H});
  }
  t.push_back({"head_weight", int64_t{K} * M * H});
  t.push_back({"head_bias", int64_t{K} * M});
  return t;
}

// Checks the shape fields (not the tensors).
absl::Status ValidateShape(int64_t M, int64_t H, int64_t num_layers,
                           int64_t lookback, int64_t block, int64_t anchor,
                           const std::vector<int64_t>& horizons,
                           int64_t description_bytes, absl::string_view source) {
  absl::Status s;
  if (!(s = CheckRange(source, "num_experts", M, 1, kMaxExperts)).ok()) return s;
  if (!(s = CheckRange(source, "hidden", H, 1, kMaxHidden)).ok()) return s;
  return lstm_internal::ValidateStackShape(num_layers, lookback, block, anchor, horizons,
                                          description_bytes, source);
}

}  // namespace

// ----------------------------------------------------------------------------
// File format.

absl::Status ValidateLstmModel(const LstmModel& m, absl::string_view source) {
  std::vector<int64_t> horizons(m.horizons.begin(), m.horizons.end());
  absl::Status s = ValidateShape(m.num_experts, m.hidden, m.num_layers(), m.lookback,
                                 m.block, m.anchor_window, horizons,
                                 static_cast<int64_t>(m.description.size()), source);
  if (!s.ok()) return s;
  if (!(s = ValidateScale("input_scale", m.input_scale, source)).ok()) return s;
  if (!(s = ValidateScale("output_scale", m.output_scale, source)).ok()) return s;
  const std::vector<TensorRef> layout =
      TensorLayout(m.num_experts, m.hidden, m.num_layers(), m.horizons.size());
  const std::vector<std::vector<float>*> tensors =
      TensorPointers(const_cast<LstmModel*>(&m));
  return lstm_internal::ValidateTensors(layout, tensors, source);
}

// The file kind, for both the encoder and the decoder.
constexpr lstm_internal::FileKind kKind = {
    LstmModel::kMagic, LstmModel::kVersion, "MOECLSTE",
    "this is a per-expert lstm_e weights file (magic \"MOECLSTE\"), not an M-specific "
    "lstm file (\"MOECLSTM\"): load it with lstm_e(PATH)",
    "bad magic: not a moecast LSTM weights file (expected the 8 bytes \"MOECLSTM\")"};

std::string EncodeLstmModel(const LstmModel& m) {
  const int counts[8] = {m.num_experts, m.hidden, m.num_layers(), m.lookback, m.block,
                         m.anchor_window, static_cast<int>(m.horizons.size()),
                         static_cast<int>(m.description.size())};
  return lstm_internal::EncodeFile(kKind, counts, m.horizons, {m.input_scale, m.output_scale},
                                   m.description,
                                   TensorPointers(const_cast<LstmModel*>(&m)));
}

absl::StatusOr<LstmModel> DecodeLstmModel(absl::string_view bytes,
                                          absl::string_view source) {
  absl::StatusOr<lstm_internal::FileHeader> h = lstm_internal::DecodeHeader(bytes, source, kKind);
  if (!h.ok()) return h.status();
  const int64_t M = h->counts[0], H = h->counts[1], num_layers = h->counts[2],
                lookback = h->counts[3], block = h->counts[4], anchor = h->counts[5],
                K = h->counts[6], D = h->counts[7];
  const size_t header = h->bytes;
  absl::Status s =
      ValidateShape(M, H, num_layers, lookback, block, anchor, h->horizons, D, source);
  if (!s.ok()) return s;
  LstmModel m;
  m.num_experts = static_cast<int>(M);
  m.hidden = static_cast<int>(H);
  m.lookback = static_cast<int>(lookback);
  m.block = static_cast<int>(block);
  m.anchor_window = static_cast<int>(anchor);
  m.horizons.assign(h->horizons.begin(), h->horizons.end());
  m.input_scale = h->scales[0];
  m.output_scale = h->scales[1];
  if (!(s = ValidateScale("input_scale", m.input_scale, source)).ok()) return s;
  if (!(s = ValidateScale("output_scale", m.output_scale, source)).ok()) return s;

  const std::vector<TensorRef> layout = TensorLayout(M, H, num_layers, K);
  s = lstm_internal::CheckParameterBytes(
      bytes.size(), header, D, layout,
      absl::StrCat("a model with M=", M, " H=", H, " num_layers=", num_layers, " K=", K),
      source);
  if (!s.ok()) return s;
  m.description.assign(bytes.data() + header, D);
  m.layers.resize(num_layers);
  const std::vector<std::vector<float>*> tensors = TensorPointers(&m);
  s = lstm_internal::DecodeTensors(bytes, header + D, layout, tensors, source);
  if (!s.ok()) return s;
  return m;
}

absl::Status WriteLstmModel(const LstmModel& model, const std::string& path) {
  absl::Status s = ValidateLstmModel(model, path);
  if (!s.ok()) return s;
  return lstm_internal::WriteWeightsFile(path, EncodeLstmModel(model));
}

// ----------------------------------------------------------------------------
// Inference form.

struct LstmWeights::Compiled {
  // float32, like the file and PyTorch's training arithmetic.
  struct Layer {
    int in = 0;
    Eigen::MatrixXf w_ih;  // 4H x in
    Eigen::MatrixXf w_hh;  // 4H x H
    Eigen::VectorXf b;     // bias_ih + bias_hh
  };
  std::vector<Layer> layers;
  Eigen::MatrixXf head_w;  // K*M x H
  Eigen::VectorXf head_b;  // K*M
};

LstmWeights::LstmWeights() = default;
LstmWeights::~LstmWeights() = default;

absl::StatusOr<std::shared_ptr<const LstmWeights>> LstmWeights::Load(
    const std::string& path) {
  absl::StatusOr<std::string> bytes = lstm_internal::ReadWeightsFile(path);
  if (!bytes.ok()) return bytes.status();
  absl::StatusOr<LstmModel> model = DecodeLstmModel(*bytes, path);
  if (!model.ok()) return model.status();
  return FromModel(*std::move(model), path);
}

absl::StatusOr<std::shared_ptr<const LstmWeights>> LstmWeights::FromModel(
    LstmModel model, std::string source) {
  absl::Status s = ValidateLstmModel(model, source);
  if (!s.ok()) return s;
  std::shared_ptr<LstmWeights> w(new LstmWeights());
  w->compiled_ = std::make_unique<Compiled>();
  Compiled& c = *w->compiled_;
  const int M = model.num_experts, H = model.hidden;
  const int K = static_cast<int>(model.horizons.size());
  for (int l = 0; l < model.num_layers(); ++l) {
    const LstmModel::Layer& src = model.layers[l];
    Compiled::Layer layer;
    layer.in = l == 0 ? M : H;
    lstm_internal::CompileLayer(src, layer.in, H, &layer.w_ih, &layer.w_hh, &layer.b);
    c.layers.push_back(std::move(layer));
  }
  c.head_w.resize(int64_t{K} * M, H);
  c.head_b.resize(int64_t{K} * M);
  for (int64_t r = 0; r < int64_t{K} * M; ++r) {
    for (int j = 0; j < H; ++j) c.head_w(r, j) = model.head_weight[r * H + j];
    c.head_b(r) = model.head_bias[r];
  }
  w->model_ = std::move(model);
  w->source_ = std::move(source);
  return std::shared_ptr<const LstmWeights>(std::move(w));
}

int64_t LstmWeights::MemoryBytes() const {
  const int64_t floats = lstm_internal::ParameterFloats(model_, *compiled_);
  return static_cast<int64_t>(sizeof(*this) + sizeof(Compiled)) + 4 * floats +
         static_cast<int64_t>(model_.description.size() + source_.size());
}

// ----------------------------------------------------------------------------
// The predictor.

namespace {

class LstmPredictor final : public lstm_internal::LstmPredictorBase {
 public:
  explicit LstmPredictor(std::shared_ptr<const LstmWeights> weights)
      : LstmPredictorBase("lstm", weights->model().num_experts, weights->model().window(),
                          static_cast<int>(weights->model().horizons.size())),
        weights_(std::move(weights)),
        m_(weights_->model()),
        c_(weights_->compiled()),
        H_(m_.hidden),
        proj_(4 * H_, W_),
        step_f_(M_),
        anchor_f_(M_),
        anchor_proj_(4 * H_),
        pre_(4 * H_, m_.lookback),
        seq_{Eigen::MatrixXf(H_, m_.lookback), Eigen::MatrixXf(H_, m_.lookback)},
        gates_(4 * H_),
        act_(4 * H_),
        tanh_c_(H_),
        h_(H_),
        cell_(H_),
        head_out_(int64_t{K_} * M_) {}

  int64_t MemoryBytes() const override {
    const int64_t doubles = BaseDoubles();
    const int64_t floats = proj_.size() + step_f_.size() + anchor_f_.size() +
                           anchor_proj_.size() + pre_.size() + seq_[0].size() +
                           seq_[1].size() + gates_.size() + act_.size() +
                           tanh_c_.size() + h_.size() + cell_.size() + head_out_.size();
    return static_cast<int64_t>(sizeof(*this)) + 8 * doubles + 4 * floats +
           weights_->MemoryBytes();
  }

  // Snapshots: the window ring, the first layer's projections computed so
  // far, and the outputs of the last run (with its final hidden and cell
  // state), so that a restored predictor answers from them until the next
  // Observe exactly as the saved one. The weights are not included: the
  // restored predictor loads them from the file its name points to; the
  // model's shape must match.
  absl::Status SaveTo(internal::SnapshotWriter& out) const override {
    out.PutI32(M_);
    out.PutI32(H_);
    out.PutI32(K_);
    out.PutI32(W_);
    out.PutI32(m_.num_layers());
    out.PutI64(observed_);
    out.PutI64(projected_);
    out.PutBool(dirty_);
    SaveRing(out);
    const int64_t cols = std::min<int64_t>(projected_, W_);
    out.PutRawFloats(proj_.data(), static_cast<size_t>(cols) * 4 * H_);
    // The outputs exist once the network has run (projected_ > 0).
    if (projected_ > 0) {
      SaveOutputs(out);
      out.PutRawFloats(h_.data(), H_);
      out.PutRawFloats(cell_.data(), H_);
    }
    return absl::OkStatus();
  }

  void LoadFrom(internal::SnapshotReader& in) override {
    const int m = in.I32("num_experts");
    const int h = in.I32("hidden");
    const int k = in.I32("horizons");
    const int w = in.I32("window");
    const int layers = in.I32("layers");
    if (in.ok() && (m != M_ || h != H_ || k != K_ || w != W_ ||
                    layers != m_.num_layers())) {
      in.Fail("model", absl::StrCat(
          "saved with a model of M = ", m, ", H = ", h, ", K = ", k,
          ", window ", w, ", ", layers, " layers; ", weights_->source(),
          " has M = ", M_, ", H = ", H_, ", K = ", K_, ", window ", W_, ", ",
          m_.num_layers(), " layers"));
      return;
    }
    const int64_t observed = in.I64In("observed", 0, int64_t{1} << 62);
    const int64_t projected = in.I64In("projected", 0, observed);
    const bool dirty = in.Bool("dirty");
    if (!in.ok()) return;
    LoadRing(in, observed);
    const int64_t cols = std::min<int64_t>(projected, W_);
    in.RawFloats("projections", proj_.data(), static_cast<size_t>(cols) * 4 * H_);
    if (projected > 0) {
      LoadOutputs(in);
      in.RawFloats("h", h_.data(), H_);
      in.RawFloats("cell", cell_.data(), H_);
    } else if (observed > 0 && !dirty) {
      in.Fail("dirty", "outputs are marked current but the network never ran");
    }
    if (!in.ok()) return;
    observed_ = observed;
    projected_ = projected;
    dirty_ = dirty;
  }

 private:
  const std::vector<int>& horizons() const override { return m_.horizons; }

  // The first layer's input-gate preactivation of a block is linear in its
  // steps: weight_ih_l0 (mean_i p_i - a) / s = (mean_i q_i - q_a) / s with
  // q_i = weight_ih_l0 p_i. So each step is projected once (4H x M) and
  // blocks pool 4H-vectors, instead of projecting every block at every step.
  void Compute() override {
    const int n = static_cast<int>(std::min<int64_t>(observed_, W_));
    const int64_t first = observed_ - n;  // stream step of the window's oldest
    const LstmWeights::Compiled::Layer& layer0 = c_.layers[0];
    // Project the steps not yet projected (one per Observe when Forecast runs
    // every step; at most the window after a pause).
    for (int64_t t = std::max(projected_, first); t < observed_; ++t) {
      step_f_ = Eigen::Map<const Eigen::VectorXd>(Slot(t), M_).cast<float>();
      proj_.col(SlotIndex(t)).noalias() = layer0.w_ih * step_f_;
    }
    projected_ = observed_;
    // Anchor: mean of the last min(n, anchor_window) steps.
    const int na = std::min(n, m_.anchor_window);
    anchor_.setZero();
    for (int64_t t = observed_ - na; t < observed_; ++t) {
      anchor_ += Eigen::Map<const Eigen::VectorXd>(Slot(t), M_);
    }
    anchor_ /= na;
    anchor_f_ = anchor_.cast<float>();
    anchor_proj_.noalias() = layer0.w_ih * anchor_f_;
    // Blocks of B steps aligned to the newest step (the oldest may be short).
    const int B = m_.block;
    const int nb = (n + B - 1) / B;
    const float inv_scale = 1.0f / m_.input_scale;
    int slot = SlotIndex(first);  // slot of window offset i, advanced with i
    for (int j = 0; j < nb; ++j) {
      const int end = n - (nb - 1 - j) * B;  // window offsets [start, end)
      const int start = std::max(0, end - B);
      auto col = pre_.col(j);
      col = proj_.col(slot);
      for (int i = start + 1; i < end; ++i) {
        if (++slot == W_) slot = 0;
        col += proj_.col(slot);
      }
      if (++slot == W_) slot = 0;
      col = (col - static_cast<float>(end - start) * anchor_proj_) *
            (inv_scale / static_cast<float>(end - start));
    }
    // LSTM layers over the blocks, oldest first, from a zero state.
    const int num_layers = static_cast<int>(c_.layers.size());
    for (int l = 0; l < num_layers; ++l) {
      const LstmWeights::Compiled::Layer& layer = c_.layers[l];
      h_.setZero();
      cell_.setZero();
      for (int j = 0; j < nb; ++j) {
        if (l == 0) {
          gates_ = pre_.col(j) + layer.b;
        } else {
          gates_ = layer.b;
          gates_.noalias() += layer.w_ih * seq_[(l - 1) & 1].col(j);
        }
        gates_.noalias() += layer.w_hh * h_;
        // Gates i, f, g, o. Vectorised: sigmoid(x) = 1 / (1 + exp(-x)) on all
        // four blocks, with tanh(x) = 2 sigmoid(2x) - 1 for g and for the cell
        // (absolute error a few float epsilons).
        gates_.segment(2 * H_, H_) *= 2.0f;
        act_ = (1.0f + (-gates_.array()).exp()).inverse();
        cell_.array() = act_.segment(H_, H_) * cell_.array() +
                        act_.segment(0, H_) * (2.0f * act_.segment(2 * H_, H_) - 1.0f);
        tanh_c_ = (1.0f + (-2.0f * cell_.array()).exp()).inverse();
        h_.array() = act_.segment(3 * H_, H_) * (2.0f * tanh_c_ - 1.0f);
        if (l + 1 < num_layers) seq_[l & 1].col(j) = h_;
      }
    }
    // Heads: y_k = a + output_scale * (W_k h + b_k) (the base derives the
    // path's pieces).
    head_out_.noalias() = c_.head_w * h_;
    head_out_ += c_.head_b;
    const double out_scale = m_.output_scale;
    for (int k = 0; k < K_; ++k) {
      for (int e = 0; e < M_; ++e) {
        y_(e, k) = anchor_[e] + out_scale * static_cast<double>(head_out_[int64_t{k} * M_ + e]);
      }
    }
  }

  const std::shared_ptr<const LstmWeights> weights_;
  const LstmModel& m_;
  const LstmWeights::Compiled& c_;
  const int H_;

  // The network runs in float32 (the file's precision; about 2x faster than
  // double with SSE2); the ring, anchor and outputs (in the base) are double.
  Eigen::MatrixXf proj_;      // 4H x W: weight_ih_l0 * p, same slots as the ring
  Eigen::VectorXf step_f_;    // M: one step in float
  int64_t projected_ = 0;  // steps [0, projected_) have proj_ columns

  Eigen::VectorXf anchor_f_;
  Eigen::VectorXf anchor_proj_;  // weight_ih_l0 * anchor
  Eigen::MatrixXf pre_;          // 4H x lookback: layer-0 input preactivations
  Eigen::MatrixXf seq_[2];       // H x lookback: hidden sequences between layers
  Eigen::VectorXf gates_;        // 4H
  Eigen::ArrayXf act_;           // 4H: sigmoid of the (g-doubled) gates
  Eigen::ArrayXf tanh_c_;        // H: sigmoid(2c)
  Eigen::VectorXf h_, cell_;
  Eigen::VectorXf head_out_;  // K*M
};

}  // namespace

absl::StatusOr<std::unique_ptr<Predictor>> MakeLstmPredictor(
    int num_experts, std::shared_ptr<const LstmWeights> weights) {
  if (weights == nullptr) return absl::InvalidArgumentError("lstm: no weights");
  if (weights->model().num_experts != num_experts) {
    return absl::InvalidArgumentError(absl::StrCat(
        weights->source(), ": the weights are for num_experts = ",
        weights->model().num_experts, ", the stream has ", num_experts));
  }
  // The file format allows shapes whose per-stream rings would not fit in
  // memory; refuse them rather than fail to allocate.
  const LstmModel& m = weights->model();
  const int64_t ring_values = int64_t{m.window()} * (m.num_experts + 4 * int64_t{m.hidden});
  if (ring_values > (int64_t{1} << 27)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        weights->source(), ": a stream would need ", ring_values,
        " ring values (window ", m.window(), " x (M + 4H)); the limit is 2^27"));
  }
  return std::unique_ptr<Predictor>(new LstmPredictor(std::move(weights)));
}

absl::StatusOr<std::unique_ptr<Predictor>> MakeLstmPredictor(
    int num_experts, const std::string& weights_path) {
  absl::StatusOr<std::shared_ptr<const LstmWeights>> w = LstmWeights::Load(weights_path);
  if (!w.ok()) return w.status();
  return MakeLstmPredictor(num_experts, *std::move(w));
}

}  // namespace moecast
