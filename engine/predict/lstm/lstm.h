// The `lstm` predictor (design section 4): a small multivariate LSTM over the M
// experts of one MoE layer, trained offline on one trace
// (bench/lstm/train_lstm.py) and run here, in C++ (Eigen), on any stream with
// the same M.
//
//   MOECAST_ASSIGN_OR_RETURN(std::unique_ptr<Predictor> p,
//                            MakeLstmPredictor(16, "bench/lstm/tiny_moe_m16.lstm"));
//
// Several streams (e.g. the layers of a job) can share one loaded file:
//
//   MOECAST_ASSIGN_OR_RETURN(std::shared_ptr<const LstmWeights> w,
//                            LstmWeights::Load(path));
//   for (...) MOECAST_ASSIGN_OR_RETURN(auto p, MakeLstmPredictor(M, w));
//
// ## Model
//
// With n >= 1 steps observed and W = lookback * block:
//   window  the last min(n, W) proportion vectors p(t) (M values each);
//   anchor  a = mean of the last min(n, anchor_window) of them;
//   blocks  the window is cut into blocks of `block` steps aligned to the
//           newest step (only the oldest block can be shorter, when n < W);
//           x_j = mean of block j, j = 0 the oldest; at most `lookback` blocks;
//   inputs  u_j = (x_j - a) / input_scale   (anchor-relative: the network sees
//           how the load moved inside the window, not its level, which is
//           what transfers from one trace to another);
//   LSTM    PyTorch nn.LSTM semantics (gates i, f, g, o; zero initial h and c;
//           `num_layers` stacked, layer l > 0 reads layer l-1's h), run over
//           the blocks oldest first; h = the last layer's final hidden state;
//   heads   for each trained horizon h_k (strictly increasing):
//           y_k = a + output_scale * (W_k h + b_k), W_k = rows [k*M, (k+1)*M)
//           of the head weight; y_k forecasts the mean proportion over the
//           next h_k steps (a direct multi-horizon forecast, no rollout).
//
// Other horizons and the per-step path. Let S_k = h_k * y_k (S_0 = 0, h_0 = 0)
// be the forecast cumulative load. The per-step path is piecewise constant:
// for a step s in (h_{k-1}, h_k] it is v_k = (S_k - S_{k-1}) / (h_k - h_{k-1}),
// and after h_K (the last trained horizon) it is y_K. Forecast(h) is the mean
// of that path over steps 1..h, i.e. linear interpolation of the cumulative
// load between trained horizons: exactly y_k at a trained horizon, y_1 for any
// h <= h_1, y_K for any h >= h_K, and Forecast(h) == the mean of
// ForecastPath(h) for every h (up to rounding). Outputs are raw: they can be
// slightly negative or not sum to 1 (the caller applies NormalizeForecast).
// Before the first observation every output is the uniform 1/M.
//
// ## Cost
//
// Observe copies the M proportions into a ring of W steps: O(M), no
// allocation. The network is re-run over the window (not updated
// incrementally: the inputs are relative to the current anchor, and the model
// was trained on windows from a zero state) by the first Forecast or
// ForecastPath after an Observe, or by Refresh(). The first layer's input
// term is linear, weight_ih_l0 (x_j - a) / s = (mean of q_i over block j -
// q_a) / s with q_i = weight_ih_l0 p(i), so each step is projected once
// (q_i is kept in a second ring of W x 4H floats) and that run costs
//   4H*M per step not yet projected (one per Observe when forecasting every
//   step; at most W after a pause) + 4H*M for the anchor
//   + W*4H adds to pool the blocks
//   + lookback * (4H*H [+ 4H*H per extra layer]) multiply-adds and
//     lookback * 5H exponentials for the recurrence
//   + K*M*H for the heads.
// For M = 16, H = 32, lookback 32 x block 8 that is about 0.17 M
// multiply-adds and 5 K exponentials (about 27 us on one 2.6 GHz core, see
// bench/lstm/README.md). Further Forecast calls at the same step cost
// O(K + M); ForecastPath O(steps * M). The network runs in float32 (the
// file's precision; within 2e-8 of a float64 PyTorch evaluation on the golden
// files), the ring, the anchor and the outputs in double. No heap allocation
// after construction (all buffers are sized there; lstm_alloc_test checks).
// Memory per stream: W*M doubles + W*4H floats for the rings plus
// O(lookback*(4H) + K*M) buffers (M = 16: 0.25 MiB; M = 256: 1.2 MiB, see
// bench/lstm/README.md). MemoryBytes() includes the weights in full, also
// when several predictors share one LstmWeights (then they are held once).
//
// ## Weights file, version 1 (all integers uint32, floats IEEE float32, both
// little-endian; no padding)
//
//   offset  field
//   0       magic: the 8 ASCII bytes "MOECLSTM"
//   8       version = 1
//   12      num_experts M         1..65536
//   16      hidden H              1..4096
//   20      num_layers            1..16
//   24      lookback (blocks)     1..65536
//   28      block (steps)         1..65536, lookback * block <= 1048576
//   32      anchor_window (steps) 1..lookback * block
//   36      num_horizons K        1..64
//   40      description_bytes D   0..65536
//   44      horizons[K]           strictly increasing, 1..1073741824
//   44+4K   input_scale           finite, > 0
//   48+4K   output_scale          finite, > 0
//   52+4K   description           D bytes of text (e.g. JSON: what it was
//                                 trained on), not NUL-terminated
//   then the parameters, float32, each matrix row-major (PyTorch's layout),
//   gate blocks in PyTorch's order i, f, g, o:
//     for l = 0 .. num_layers-1:
//       weight_ih_l  4H x I_l  (I_0 = M, I_l = H for l > 0)
//       weight_hh_l  4H x H
//       bias_ih_l    4H
//       bias_hh_l    4H
//     head_weight    K*M x H   (row k*M + e: horizon k, expert e)
//     head_bias      K*M
//   and nothing after them.
// Every parameter must be finite. A file that breaks any of this is rejected
// with "PATH: what is wrong": INVALID_ARGUMENT for a bad magic, an unsupported
// version, a field out of range, a non-finite value (named by tensor and
// index), trailing bytes, or a file made for a different M than the stream's;
// DATA_LOSS for a truncated file; NOT_FOUND / PERMISSION_DENIED when it cannot
// be read. MakeLstmPredictor also refuses (RESOURCE_EXHAUSTED) a model whose
// per-stream rings, window x (M + 4H) values, would exceed 2^27.
//
// Thread-safety: an LstmWeights is immutable and can be shared across
// threads; a predictor is not thread-safe (see predictor.h).
#ifndef MOECAST_ENGINE_PREDICT_LSTM_LSTM_H_
#define MOECAST_ENGINE_PREDICT_LSTM_LSTM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/predict/predictor.h"

namespace moecast {

// The contents of a weights file, as stored (float32 parameters).
struct LstmModel {
  static constexpr char kMagic[9] = "MOECLSTM";
  static constexpr uint32_t kVersion = 1;

  struct Layer {
    std::vector<float> weight_ih;  // 4H x I_l, row-major
    std::vector<float> weight_hh;  // 4H x H, row-major
    std::vector<float> bias_ih;    // 4H
    std::vector<float> bias_hh;    // 4H
  };

  int num_experts = 0;
  int hidden = 0;
  int lookback = 0;       // blocks
  int block = 1;          // steps per block
  int anchor_window = 1;  // steps
  std::vector<int> horizons;
  float input_scale = 1;
  float output_scale = 1;
  std::string description;
  std::vector<Layer> layers;       // num_layers = layers.size()
  std::vector<float> head_weight;  // K*M x H, row-major
  std::vector<float> head_bias;    // K*M

  int num_layers() const { return static_cast<int>(layers.size()); }
  int window() const { return lookback * block; }
};

// Checks every range and tensor size above; errors name `source`.
absl::Status ValidateLstmModel(const LstmModel& model, absl::string_view source);

// The file bytes of a valid model.
std::string EncodeLstmModel(const LstmModel& model);

// Parses file bytes; errors are "SOURCE: what is wrong" as described above.
absl::StatusOr<LstmModel> DecodeLstmModel(absl::string_view bytes,
                                          absl::string_view source);

// Writes EncodeLstmModel(model) to `path` (after validating it).
absl::Status WriteLstmModel(const LstmModel& model, const std::string& path);

// A loaded model, converted for inference; immutable, shareable.
class LstmWeights {
 public:
  static absl::StatusOr<std::shared_ptr<const LstmWeights>> Load(
      const std::string& path);
  // `source` names the model in errors (e.g. its path).
  static absl::StatusOr<std::shared_ptr<const LstmWeights>> FromModel(
      LstmModel model, std::string source);

  ~LstmWeights();
  LstmWeights(const LstmWeights&) = delete;
  LstmWeights& operator=(const LstmWeights&) = delete;

  const LstmModel& model() const { return model_; }
  const std::string& source() const { return source_; }
  int64_t MemoryBytes() const;

  struct Compiled;  // inference form (Eigen, double), defined in lstm.cc
  const Compiled& compiled() const { return *compiled_; }

 private:
  LstmWeights();
  LstmModel model_;
  std::string source_;
  std::unique_ptr<Compiled> compiled_;
};

// A predictor named "lstm" for a stream of `num_experts` experts. Fails with
// INVALID_ARGUMENT ("PATH: ...") when the file is for another M, and with the
// errors above for a bad file.
absl::StatusOr<std::unique_ptr<Predictor>> MakeLstmPredictor(
    int num_experts, const std::string& weights_path);
absl::StatusOr<std::unique_ptr<Predictor>> MakeLstmPredictor(
    int num_experts, std::shared_ptr<const LstmWeights> weights);

}  // namespace moecast

#endif  // MOECAST_ENGINE_PREDICT_LSTM_LSTM_H_
