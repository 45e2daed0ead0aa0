#pragma once

// Independent tasks (a study's cells) handed to the ranks of an MPI job as they ask for them
// (docs/distributed.md): rank 0 keeps the queue and runs tasks itself on a second thread, every
// other rank asks for the next task whenever it is free, runs it, and sends back its result with
// the next request. Only rank 0's main thread talks to the other ranks (MPI_THREAD_FUNNELED).
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace bulwark {

struct TaskQueueHooks {
  /// What a rank needs besides the task number (e.g. a cell's files from an earlier run).
  std::function<std::string(std::size_t task)> order_of;
  /// Runs a task on rank 0, on rank 0's second thread, one task at a time.
  std::function<void(std::size_t task)> run_here;
  /// A task went to rank `rank` > 0 (called on rank 0's main thread).
  std::function<void(std::size_t task, int rank)> sent;
  /// Rank `rank` > 0 sent back the result of `task` (called on rank 0's main thread).
  std::function<void(std::size_t task, int rank, const std::string& result)> returned;
};

/// Rank 0: runs `tasks` across the job and returns when every task has come back.
void schedule_tasks(const std::vector<std::size_t>& tasks, const TaskQueueHooks& hooks);

/// Ranks > 0: asks for tasks and returns each one's result until rank 0 has none left.
void serve_tasks(const std::function<std::string(std::size_t task, const std::string& order)>& run);

}  // namespace bulwark
