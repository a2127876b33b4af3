// ReplayClock: the clock a durable engine gives its inner Engine. It reads a
// base clock, except on a thread that has pinned a time: there it returns
// that time. The durable engine pins the time it logs with a mutation while
// applying it, and recovery pins each record's logged time while replaying
// it, so time-driven decisions (multi-source timeouts, idle expiry) come out
// exactly as they did.
//
//   ReplayClock clock(Clock::Real());
//   {
//     ReplayClock::Pin pin(&clock, logged_time);
//     engine->Ingest(id, input);        // the engine reads logged_time
//   }
//
// Thread-safety: thread-safe; a pin affects only its own thread.
#ifndef MOECAST_ENGINE_DURABILITY_REPLAY_CLOCK_H_
#define MOECAST_ENGINE_DURABILITY_REPLAY_CLOCK_H_

#include "absl/time/time.h"
#include "engine/clock.h"

namespace moecast::durability {

class ReplayClock final : public Clock {
 public:
  explicit ReplayClock(Clock* base) : base_(base) {}

  absl::Time Now() const override {
    if (pinned_owner_ == this) return pinned_;
    return base_->Now();
  }

  // The base clock's time, ignoring pins.
  absl::Time BaseNow() const { return base_->Now(); }

  // Pins `time` on this thread for the pin's lifetime (pins nest).
  class Pin {
   public:
    Pin(const ReplayClock* clock, absl::Time time)
        : prev_owner_(pinned_owner_), prev_time_(pinned_) {
      pinned_owner_ = clock;
      pinned_ = time;
    }
    ~Pin() {
      pinned_owner_ = prev_owner_;
      pinned_ = prev_time_;
    }
    Pin(const Pin&) = delete;
    Pin& operator=(const Pin&) = delete;

   private:
    const ReplayClock* prev_owner_;
    absl::Time prev_time_;
  };

 private:
  Clock* const base_;
  static inline thread_local const ReplayClock* pinned_owner_ = nullptr;
  static inline thread_local absl::Time pinned_;
};

}  // namespace moecast::durability

#endif  // MOECAST_ENGINE_DURABILITY_REPLAY_CLOCK_H_
