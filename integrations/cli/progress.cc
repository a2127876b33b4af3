#include "integrations/cli/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "absl/time/clock.h"

namespace moecast::cli {

ProgressBar::ProgressBar(const std::string& mode, std::string label)
    : enabled_(mode == "on" || (mode == "auto" && isatty(STDERR_FILENO))),
      label_(std::move(label)),
      start_(absl::Now()) {}

ProgressBar::~ProgressBar() { Finish(); }

void ProgressBar::Update(double fraction, int64_t steps) {
  if (!enabled_) return;
  const absl::Time now = absl::Now();
  if (now - last_draw_ < absl::Milliseconds(100)) return;
  last_draw_ = now;
  fraction = std::clamp(fraction, 0.0, 1.0);
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(fraction * kWidth);
  char bar[kWidth + 1];
  for (int i = 0; i < kWidth; ++i) bar[i] = i < filled ? '#' : '.';
  bar[kWidth] = '\0';
  const double secs = absl::ToDoubleSeconds(now - start_);
  std::fprintf(stderr, "\r%s [%s] %5.1f%%  %lld steps  %.1f s", label_.c_str(),
               bar, 100 * fraction, static_cast<long long>(steps), secs);
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::Finish() {
  if (!drawn_) return;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  drawn_ = false;
}

}  // namespace moecast::cli
