// Clock: the engine's only source of time, behind an interface so that tests
// can drive timeouts deterministically (LevelDB's Env, reduced to what moecast
// needs).
//
//   FakeClock clock(absl::UnixEpoch());
//   EngineOptions options;
//   options.clock = &clock;
//   ...
//   clock.Advance(absl::Seconds(31));   // pending multi-source steps time out
//
// Thread-safety: implementations must be safe to call from any thread.
#ifndef MOECAST_ENGINE_CLOCK_H_
#define MOECAST_ENGINE_CLOCK_H_

#include <atomic>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace moecast {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;

  // The process-wide real-time clock. Never null, never destroyed.
  static Clock* Real();
};

// A clock that moves only when told to. For tests.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::UnixEpoch())
      : now_ns_(absl::ToUnixNanos(start)) {}
  absl::Time Now() const override {
    return absl::FromUnixNanos(now_ns_.load(std::memory_order_acquire));
  }
  void Advance(absl::Duration d) {
    now_ns_.fetch_add(absl::ToInt64Nanoseconds(d), std::memory_order_acq_rel);
  }

 private:
  std::atomic<int64_t> now_ns_;
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_CLOCK_H_
