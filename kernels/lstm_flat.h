// The LSTM weights in the kernels' flat layout (core::LstmShapeHD and one
// float array: per layer w_ih, w_hh, bias_ih + bias_hh; then the heads), from
// an engine LstmModel. Host only; no CUDA types.
//
//   FlatLstm flat = FlattenLstm(weights->model());
//
// Thread-safety: a pure function.
#ifndef MOECAST_KERNELS_LSTM_FLAT_H_
#define MOECAST_KERNELS_LSTM_FLAT_H_

#include <vector>

#include "engine/predict/lstm/lstm.h"
#include "kernels/core/series_ops.h"

namespace moecast {
namespace kernels {

struct FlatLstm {
  core::LstmShapeHD shape;
  std::vector<float> params;  // core::LstmParamCount(shape) values
  std::vector<int> horizons;  // K trained horizons, increasing
};

// `model` must pass ValidateLstmModel. The biases are summed in double and
// rounded to float, as the engine's compiled form does.
FlatLstm FlattenLstm(const LstmModel& model);

}  // namespace kernels
}  // namespace moecast

#endif  // MOECAST_KERNELS_LSTM_FLAT_H_
