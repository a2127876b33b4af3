// The `lstm_e` predictor: ONE small LSTM, its weights shared by every expert,
// run on each expert's own series of shares, so that one weights file serves
// a layer of any number of experts M (the `lstm` predictor in lstm.h is a
// multivariate LSTM over a fixed M). Trained offline on several traces
// (bench/lstm/train_lstm.py --per-expert) and run here in C++ (Eigen).
//
//   MOECAST_ASSIGN_OR_RETURN(std::unique_ptr<Predictor> p,
//                            MakeLstmEPredictor(M, "bench/lstm/lstm_e_h16.lstm"));
//
// ## Model
//
// For expert e of a stream with n >= 1 steps observed, n' = min(n, W),
// W = lookback * block, p(t) = the expert's share at step t:
//   x_j     block means of p over the last n' steps, cut into blocks of
//           `block` steps aligned to the newest step (only the oldest block
//           can be shorter); j = 0 the oldest; at most `lookback` blocks;
//   a       anchor: mean of the last min(n', anchor_window) steps;
//   s       noise: sqrt(sum of (p(t) - p(t-1))^2 over the n' - 1 consecutive
//           pairs of the window / (2 (n' - 1))); 0 when n' = 1;
//           d = max(s, 1e-6);
//   inputs  per block j, 3 features:
//             u_j = clamp((x_j - a) / d, -input_clip, input_clip),
//             ln(max(M a, 1e-4)),        (level relative to uniform)
//             ln(d / max(a, 1e-9))       (noise relative to level)
//           (the last two are the same for every block). Nothing depends on
//           M or on the load level except through these scale-free values;
//   LSTM    PyTorch nn.LSTM semantics (gates i, f, g, o; zero initial h, c;
//           `num_layers` stacked) over the blocks, oldest first;
//   heads   y_k = a + output_scale * d * (w_k . h + b_k) for each trained
//           horizon h_k (strictly increasing): the forecast mean share over
//           the next h_k steps.
// Other horizons and the per-step path: as in lstm.h (the cumulative load
// h_k y_k is interpolated linearly between trained horizons; y_1 below h_1,
// y_K beyond h_K; Forecast(h) equals the mean of ForecastPath(h)). Outputs
// are raw (the caller applies NormalizeForecast). Uniform 1/M before the
// first observation.
//
// ## Cost
//
// Observe copies M shares into a ring of W steps (O(M), no allocation). The
// first Forecast / ForecastPath / Refresh after an Observe re-runs the
// network over the window with all M experts as the columns of one batch:
// W*M adds for the block means and noise, then per block one 4H x H by
// H x M product (plus a rank-1 update for u_j and 5*H*M exponentials), and a
// K x H by H x M product for the heads. For H = 16, lookback 16, M = 256 that
// is about 1.1 M multiply-adds and 0.33 M exponentials per layer (see
// bench/lstm/README.md for measured times). No heap allocation after
// construction.
//
// ## Weights file, kind "MOECLSTE", version 1 (integers uint32, floats
// IEEE float32, little-endian, no padding)
//
//   offset  field
//   0       magic: the 8 ASCII bytes "MOECLSTE"
//   8       version = 1
//   12      num_features          = 3 (the inputs above)
//   16      hidden H              1..1024
//   20      num_layers            1..16
//   24      lookback (blocks)     1..65536
//   28      block (steps)         1..65536, lookback * block <= 1048576
//   32      anchor_window (steps) 1..lookback * block
//   36      num_horizons K        1..64
//   40      description_bytes D   0..65536
//   44      horizons[K]           strictly increasing, 1..1073741824
//   44+4K   input_clip            finite, > 0
//   48+4K   output_scale          finite, > 0
//   52+4K   description           D bytes of text (JSON: training traces)
//   then the parameters, float32, row-major, gate blocks i, f, g, o:
//     for l = 0 .. num_layers-1:
//       weight_ih_l  4H x I_l  (I_0 = 3, I_l = H for l > 0)
//       weight_hh_l  4H x H
//       bias_ih_l    4H
//       bias_hh_l    4H
//     head_weight    K x H
//     head_bias      K
//   and nothing after them. Every parameter must be finite.
// A different magic is a different kind of file: the M-specific `lstm`
// format (lstm.h) has magic "MOECLSTM" and is refused here with a message
// that says so (and the `lstm` loader refuses this kind likewise). Errors
// are "PATH: what is wrong": INVALID_ARGUMENT for a bad magic, an
// unsupported version, a field out of range (named, with its value), a
// non-finite parameter (tensor, index, byte offset), trailing bytes;
// DATA_LOSS for a truncated file; NOT_FOUND / PERMISSION_DENIED when it
// cannot be read. MakeLstmEPredictor refuses M outside 1..65536
// (INVALID_ARGUMENT) and a stream whose buffers, window x M + 8H x M values,
// would exceed 2^27 (RESOURCE_EXHAUSTED).
//
// Snapshots are not supported (SaveTo returns UNIMPLEMENTED).
// Thread-safety: LstmEWeights is immutable and shareable; a predictor is not
// thread-safe (see predictor.h).
#ifndef MOECAST_ENGINE_PREDICT_LSTM_LSTM_E_H_
#define MOECAST_ENGINE_PREDICT_LSTM_LSTM_E_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/predict/predictor.h"

namespace moecast {

struct LstmEModel {
  static constexpr char kMagic[9] = "MOECLSTE";
  static constexpr uint32_t kVersion = 1;
  static constexpr int kFeatures = 3;
  // Floors of the feature definitions above.
  static constexpr double kNoiseFloor = 1e-6;
  static constexpr double kLevelFloor = 1e-4;
  static constexpr double kAnchorFloor = 1e-9;

  struct Layer {
    std::vector<float> weight_ih;  // 4H x I_l, row-major
    std::vector<float> weight_hh;  // 4H x H
    std::vector<float> bias_ih;    // 4H
    std::vector<float> bias_hh;    // 4H
  };

  int hidden = 0;
  int lookback = 0;
  int block = 1;
  int anchor_window = 1;
  std::vector<int> horizons;
  float input_clip = 8;
  float output_scale = 1;
  std::string description;
  std::vector<Layer> layers;
  std::vector<float> head_weight;  // K x H
  std::vector<float> head_bias;    // K

  int num_layers() const { return static_cast<int>(layers.size()); }
  int window() const { return lookback * block; }
};

absl::Status ValidateLstmEModel(const LstmEModel& model, absl::string_view source);
std::string EncodeLstmEModel(const LstmEModel& model);
absl::StatusOr<LstmEModel> DecodeLstmEModel(absl::string_view bytes,
                                            absl::string_view source);
absl::Status WriteLstmEModel(const LstmEModel& model, const std::string& path);

class LstmEWeights {
 public:
  static absl::StatusOr<std::shared_ptr<const LstmEWeights>> Load(const std::string& path);
  static absl::StatusOr<std::shared_ptr<const LstmEWeights>> FromModel(
      LstmEModel model, std::string source);

  ~LstmEWeights();
  LstmEWeights(const LstmEWeights&) = delete;
  LstmEWeights& operator=(const LstmEWeights&) = delete;

  const LstmEModel& model() const { return model_; }
  const std::string& source() const { return source_; }
  int64_t MemoryBytes() const;

  struct Compiled;  // Eigen float32 form, defined in lstm_e.cc
  const Compiled& compiled() const { return *compiled_; }

 private:
  LstmEWeights();
  LstmEModel model_;
  std::string source_;
  std::unique_ptr<Compiled> compiled_;
};

// A predictor named "lstm_e" for a stream of `num_experts` experts (any M).
absl::StatusOr<std::unique_ptr<Predictor>> MakeLstmEPredictor(
    int num_experts, const std::string& weights_path);
absl::StatusOr<std::unique_ptr<Predictor>> MakeLstmEPredictor(
    int num_experts, std::shared_ptr<const LstmEWeights> weights);

}  // namespace moecast

#endif  // MOECAST_ENGINE_PREDICT_LSTM_LSTM_E_H_
