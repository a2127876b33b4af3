#include "kernels/lstm_flat.h"

namespace moecast {
namespace kernels {

FlatLstm FlattenLstm(const LstmModel& model) {
  FlatLstm f;
  core::LstmShapeHD& sh = f.shape;
  sh.num_experts = model.num_experts;
  sh.hidden = model.hidden;
  sh.num_layers = model.num_layers();
  sh.lookback = model.lookback;
  sh.block = model.block;
  sh.anchor_window = model.anchor_window;
  sh.num_horizons = static_cast<int>(model.horizons.size());
  sh.input_scale = model.input_scale;
  sh.output_scale = model.output_scale;
  f.horizons = model.horizons;
  f.params.reserve(core::LstmParamCount(sh));
  for (const LstmModel::Layer& l : model.layers) {
    f.params.insert(f.params.end(), l.weight_ih.begin(), l.weight_ih.end());
    f.params.insert(f.params.end(), l.weight_hh.begin(), l.weight_hh.end());
    for (size_t r = 0; r < l.bias_ih.size(); ++r) {
      f.params.push_back(static_cast<float>(static_cast<double>(l.bias_ih[r]) +
                                            static_cast<double>(l.bias_hh[r])));
    }
  }
  f.params.insert(f.params.end(), model.head_weight.begin(), model.head_weight.end());
  f.params.insert(f.params.end(), model.head_bias.begin(), model.head_bias.end());
  return f;
}

}  // namespace kernels
}  // namespace moecast
