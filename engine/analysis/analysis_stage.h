// AnalysisStage: the engine-owned threads that run the analysis (see
// analysis_options.h). Two FIFO queues, each with its own threads:
//
//   step queue      jobs with newly committed steps; a worker advances one
//                   job by up to AnalysisOptions::batch_steps steps, then
//                   the job goes to the back of the queue if it has more;
//   periodic queue  heavy work cut out of a step (health-window fits), so
//                   that it never occupies a step worker.
//
// The stage knows nothing of jobs: a job is a StepTask that schedules
// itself (at most once at a time) when it has steps to analyse.
//
// Thread-safety: thread-safe. The destructor stops the threads after their
// current task and drops what is still queued.
#ifndef MOECAST_ENGINE_ANALYSIS_ANALYSIS_STAGE_H_
#define MOECAST_ENGINE_ANALYSIS_ANALYSIS_STAGE_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/analysis/analysis_options.h"

namespace moecast {

class AnalysisStage;

// One job's analysis, as the step queue sees it.
class StepTask {
 public:
  virtual ~StepTask() = default;
  // Analyses up to `max_steps` steps on the calling worker. The task
  // re-schedules itself if it still has work.
  virtual void RunSteps(AnalysisStage& stage, int max_steps) = 0;
};

class AnalysisStage {
 public:
  // Starts the threads (options.step_threads / periodic_threads, 0 meaning
  // the defaults in analysis_options.h).
  explicit AnalysisStage(const AnalysisOptions& options);
  ~AnalysisStage();

  AnalysisStage(const AnalysisStage&) = delete;
  AnalysisStage& operator=(const AnalysisStage&) = delete;

  // Queues `task` at the back of the step queue.
  void Schedule(std::shared_ptr<StepTask> task);

  // Queues `fn` on the periodic queue.
  void SchedulePeriodic(std::function<void()> fn);

  int step_threads() const { return static_cast<int>(step_workers_.size()); }
  int periodic_threads() const {
    return static_cast<int>(periodic_workers_.size());
  }
  const AnalysisOptions& options() const { return options_; }

  // The defaults for 0 in AnalysisOptions on this machine.
  static int DefaultStepThreads();

 private:
  // Runs `run` on each task taken from `queue` (woken by `cv`) until stop.
  template <typename Task, typename Run>
  void WorkLoop(std::deque<Task>& queue, std::condition_variable& cv, Run run);
  void StepLoop();
  void PeriodicLoop();
  void LowerPriority() const;

  const AnalysisOptions options_;
  std::mutex mu_;
  std::condition_variable step_cv_;
  std::condition_variable periodic_cv_;
  bool stop_ = false;                                  // guarded by mu_
  std::deque<std::shared_ptr<StepTask>> step_queue_;   // guarded by mu_
  std::deque<std::function<void()>> periodic_queue_;   // guarded by mu_
  std::vector<std::thread> step_workers_;
  std::vector<std::thread> periodic_workers_;
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_ANALYSIS_ANALYSIS_STAGE_H_
