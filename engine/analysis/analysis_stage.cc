#include "engine/analysis/analysis_stage.h"

#include <algorithm>
#include <utility>

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace moecast {

int AnalysisStage::DefaultStepThreads() {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, cores - 1);
}

AnalysisStage::AnalysisStage(const AnalysisOptions& options)
    : options_(options) {
  const int steps =
      options.step_threads > 0 ? options.step_threads : DefaultStepThreads();
  const int periodic = options.periodic_threads > 0 ? options.periodic_threads : 1;
  for (int i = 0; i < steps; ++i) {
    step_workers_.emplace_back([this] { StepLoop(); });
  }
  for (int i = 0; i < periodic; ++i) {
    periodic_workers_.emplace_back([this] { PeriodicLoop(); });
  }
}

AnalysisStage::~AnalysisStage() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  step_cv_.notify_all();
  periodic_cv_.notify_all();
  for (std::thread& t : step_workers_) t.join();
  for (std::thread& t : periodic_workers_) t.join();
  // Queued tasks may hold the last reference to a job whose destructor
  // schedules nothing; drop them after the threads are gone.
  step_queue_.clear();
  periodic_queue_.clear();
}

void AnalysisStage::Schedule(std::shared_ptr<StepTask> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    step_queue_.push_back(std::move(task));
  }
  step_cv_.notify_one();
}

void AnalysisStage::SchedulePeriodic(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    periodic_queue_.push_back(std::move(fn));
  }
  periodic_cv_.notify_one();
}

void AnalysisStage::LowerPriority() const {
#if defined(__linux__)
  if (options_.thread_niceness > 0) {
    // On Linux a thread's niceness is its own (setpriority on its tid). Only
    // raising niceness, which any thread may do; a failure leaves the thread
    // at the producers' priority, which is correct if slower to yield.
    const pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
    const int current = getpriority(PRIO_PROCESS, tid);
    (void)setpriority(PRIO_PROCESS, tid,
                      std::min(19, current + options_.thread_niceness));
  }
#endif
}

template <typename Task, typename Run>
void AnalysisStage::WorkLoop(std::deque<Task>& queue, std::condition_variable& cv,
                             Run run) {
  LowerPriority();
  for (;;) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv.wait(lock, [&] { return stop_ || !queue.empty(); });
      if (stop_) return;
      task = std::move(queue.front());
      queue.pop_front();
    }
    run(task);
  }
}

void AnalysisStage::StepLoop() {
  const int batch = std::max(1, options_.batch_steps);
  WorkLoop(step_queue_, step_cv_,
           [&](std::shared_ptr<StepTask>& task) { task->RunSteps(*this, batch); });
}

void AnalysisStage::PeriodicLoop() {
  WorkLoop(periodic_queue_, periodic_cv_, [](std::function<void()>& fn) { fn(); });
}

}  // namespace moecast
