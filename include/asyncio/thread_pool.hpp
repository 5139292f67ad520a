// A bounded pool of worker threads: the default executor of every loop (EventLoop::default_executor,
// run_in_executor, to_thread: executor.hpp) and usable on its own. It knows no loop: it belongs to
// the loop layer, below the awaitables that bring its results back (executor.hpp).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "asyncio/clock.hpp"
#include "asyncio/detail/callback.hpp"

namespace asyncio {

/// A bounded pool of worker threads (Python's concurrent.futures.ThreadPoolExecutor). Thread-safe.
class ThreadPoolExecutor {
public:
    /// max_workers 0: default_max_workers(). Threads start lazily, on submit.
    explicit ThreadPoolExecutor(std::size_t max_workers = 0);
    /// shutdown(true).
    ~ThreadPoolExecutor();
    ThreadPoolExecutor(const ThreadPoolExecutor&) = delete;
    ThreadPoolExecutor& operator=(const ThreadPoolExecutor&) = delete;

    /// Queues job to run on a worker thread, starting a thread if none is idle and fewer than
    /// max_workers() exist. RuntimeError after shutdown(). An exception escaping job is reported on
    /// stderr and dropped (run_in_executor's jobs never let one escape).
    void submit(detail::Callback job);
    /// Stops accepting jobs; the queued ones still run. With wait, returns once they have all run
    /// and every thread is joined; without, returns at once (the destructor joins). Idempotent.
    void shutdown(bool wait = true);
    /// As shutdown(true), but waits at most `timeout` (steady clock; any unit, saturated): returns
    /// false if some thread was still busy then. Those threads are detached and finish the queued
    /// jobs on their own; they touch only state they share ownership of, so the executor may be
    /// destroyed at once.
    template <class Rep, class Period>
    bool shutdown(std::chrono::duration<Rep, Period> timeout) {
        return shutdown_until(deadline_after(std::chrono::steady_clock::now(), timeout));
    }
    bool shutdown_until(TimePoint deadline);

    std::size_t max_workers() const noexcept { return max_workers_; }
    /// Threads started and not yet joined (or detached).
    std::size_t thread_count() const;
    /// min(32, std::thread::hardware_concurrency() + 4).
    static std::size_t default_max_workers() noexcept;

private:
    // What the worker threads touch. Each thread holds a reference, so a thread left running by a
    // shutdown that timed out never touches freed memory.
    struct Shared {
        std::mutex mutex;
        std::condition_variable cv;       // workers: a job or shutdown
        std::condition_variable exited;   // shutdown: a worker finished
        std::deque<detail::Callback> queue;
        std::size_t idle = 0;
        bool shutdown = false;
    };
    struct Worker {
        std::thread thread;
        std::shared_ptr<bool> exited;  // under Shared::mutex: its work() has returned
    };
    static void work(Shared& s, bool& exited);

    const std::size_t max_workers_;
    const std::shared_ptr<Shared> s_;
    std::vector<Worker> threads_;  // under s_->mutex
};

}  // namespace asyncio
