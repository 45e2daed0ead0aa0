#include "task_queue.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <thread>

#include <nlohmann/json.hpp>

#include "cluster.hpp"

namespace bulwark {

namespace {

// A request is {"task", "result"} (task -1 on a rank's first request); an answer is
// {"task", "order"} with task -1 once the queue is empty. Both travel as CBOR: results carry files.
constexpr int kRequestTag = 11, kAnswerTag = 12;
constexpr std::int64_t kNone = -1;

std::string encode(std::int64_t task, const std::string& field, const std::string& bytes) {
  nlohmann::json message = {{"task", task}, {field, nlohmann::json::binary({bytes.begin(), bytes.end()})}};
  const auto cbor = nlohmann::json::to_cbor(message);
  return std::string(cbor.begin(), cbor.end());
}

std::pair<std::int64_t, std::string> decode(const std::string& bytes, const std::string& field) {
  const auto message = nlohmann::json::from_cbor(bytes);
  const auto& payload = message.at(field).get_binary();
  return {message.at("task").get<std::int64_t>(), std::string(payload.begin(), payload.end())};
}

}  // namespace

void schedule_tasks(const std::vector<std::size_t>& tasks, const TaskQueueHooks& hooks) {
  std::size_t next = 0;
  int serving = cluster::size() - 1;  // ranks not yet told that the queue is empty
  std::thread here;
  std::atomic<bool> here_busy{false}, here_failed{false};
  std::exception_ptr failure, here_failure;  // here_failure is read only after the join
  // After a failure no task starts, but every rank still gets its answer, so none is left waiting.
  const auto more = [&] { return next < tasks.size() && !failure && !here_failed; };
  while (serving > 0 || here_busy || more()) {
    if (!here_busy && more()) {
      if (here.joinable()) here.join();
      here_busy = true;
      here = std::thread([&, task = tasks[next++]] {
        try {
          hooks.run_here(task);
        } catch (...) {
          here_failure = std::current_exception();  // a kernel fault, not a failed cell
          here_failed = true;
        }
        here_busy = false;
      });
    }
    const auto request = cluster::poll(kRequestTag);
    if (request.from < 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      continue;
    }
    try {
      const auto [done, result] = decode(request.bytes, "result");
      if (done != kNone && !failure) hooks.returned(static_cast<std::size_t>(done), request.from, result);
      if (more()) {
        const auto task = tasks[next++];
        cluster::send(request.from, kAnswerTag, encode(static_cast<std::int64_t>(task), "order", hooks.order_of(task)));
        hooks.sent(task, request.from);
        continue;
      }
    } catch (...) {
      failure = std::current_exception();
    }
    cluster::send(request.from, kAnswerTag, encode(kNone, "order", ""));
    --serving;
  }
  if (here.joinable()) here.join();
  if (failure) std::rethrow_exception(failure);
  if (here_failure) std::rethrow_exception(here_failure);
}

void serve_tasks(const std::function<std::string(std::size_t task, const std::string& order)>& run) {
  std::int64_t done = kNone;
  std::string result;
  while (true) {
    cluster::send(0, kRequestTag, encode(done, "result", result));
    const auto [task, order] = decode(cluster::receive(0, kAnswerTag), "order");
    if (task == kNone) return;
    result = run(static_cast<std::size_t>(task), order);
    done = task;
  }
}

}  // namespace bulwark
