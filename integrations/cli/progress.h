// A one-line progress bar on a terminal; silent when stderr is not a TTY
// (or when disabled), so logs and tests stay clean.
//
// Thread-safety: not thread-safe.
#ifndef MOECAST_INTEGRATIONS_CLI_PROGRESS_H_
#define MOECAST_INTEGRATIONS_CLI_PROGRESS_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace moecast::cli {

class ProgressBar {
 public:
  // mode: "auto" (on when stderr is a terminal), "on", "off".
  ProgressBar(const std::string& mode, std::string label);
  ~ProgressBar();

  bool enabled() const { return enabled_; }

  // Redraws at most every 100 ms. `fraction` in [0, 1].
  void Update(double fraction, int64_t steps);

  // Erases the bar.
  void Finish();

 private:
  bool enabled_;
  std::string label_;
  absl::Time last_draw_ = absl::InfinitePast();
  absl::Time start_;
  bool drawn_ = false;
};

}  // namespace moecast::cli

#endif  // MOECAST_INTEGRATIONS_CLI_PROGRESS_H_
