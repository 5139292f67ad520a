// ThreadPoolExecutor (thread_pool.hpp) and the loop's default-executor slot (detail/loop_executor.hpp).
#include "asyncio/thread_pool.hpp"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <typeinfo>

#include "asyncio/detail/loop_executor.hpp"
#include "asyncio/detail/type_name.hpp"
#include "asyncio/exceptions.hpp"
#include "signals_internal.hpp"

namespace asyncio {

std::size_t ThreadPoolExecutor::default_max_workers() noexcept {
    const std::size_t cores = std::max(1u, std::thread::hardware_concurrency());
    return std::min<std::size_t>(32, cores + 4);
}

ThreadPoolExecutor::ThreadPoolExecutor(std::size_t max_workers)
    : max_workers_(max_workers == 0 ? default_max_workers() : max_workers),
      s_(std::make_shared<Shared>()) {}

ThreadPoolExecutor::~ThreadPoolExecutor() { shutdown(true); }

void ThreadPoolExecutor::submit(detail::Callback job) {
    std::unique_lock lock(s_->mutex);
    if (s_->shutdown) throw RuntimeError("cannot schedule new futures after shutdown");
    s_->queue.push_back(std::move(job));
    // Python's rule: a new thread only when no idle one can take the job.
    if (s_->idle >= s_->queue.size()) {
        lock.unlock();
        s_->cv.notify_one();
        return;
    }
    if (threads_.size() < max_workers_) {
        try {
            threads_.reserve(threads_.size() + 1);
            auto exited = std::make_shared<bool>(false);
            // The thread's own references: it may outlive the executor (shutdown with a timeout).
            // It starts with the asynchronous signals blocked (inherited from this thread's mask
            // for the moment): a signal is never delivered to a worker (docs/design.md, Signals).
            detail::AsyncSignalsBlocked blocked;
            std::thread t([s = s_, exited] { work(*s, *exited); });
            threads_.push_back(Worker{std::move(t), std::move(exited)});
        } catch (...) {
            // No thread could be started: the job waits for a running one; with none at all it
            // cannot run.
            if (threads_.empty()) {
                s_->queue.pop_back();
                throw;
            }
        }
    }
}

void ThreadPoolExecutor::work(Shared& s, bool& exited) {
    std::unique_lock lock(s.mutex);
    for (;;) {
        ++s.idle;
        s.cv.wait(lock, [&s] { return !s.queue.empty() || s.shutdown; });
        --s.idle;
        if (s.queue.empty()) break;  // shut down and drained
        detail::Callback job = std::move(s.queue.front());
        s.queue.pop_front();
        lock.unlock();
        try {
            job();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "ThreadPoolExecutor: job raised %s: %s\n", detail::type_name(typeid(e)).c_str(), e.what());
        } catch (...) {
            std::fprintf(stderr, "ThreadPoolExecutor: job raised an exception\n");
        }
        job.reset();  // its captures die on this thread, before the next wait
        lock.lock();
    }
    exited = true;
    s.exited.notify_all();
}

void ThreadPoolExecutor::shutdown(bool wait) {
    if (wait) {
        shutdown_until(TimePoint::max());
        return;
    }
    {
        std::lock_guard lock(s_->mutex);
        s_->shutdown = true;
    }
    s_->cv.notify_all();
}

bool ThreadPoolExecutor::shutdown_until(TimePoint deadline) {
    std::vector<Worker> threads;
    {
        std::lock_guard lock(s_->mutex);
        s_->shutdown = true;
        threads.swap(threads_);
    }
    s_->cv.notify_all();
    // Shut down from one of its own jobs: that thread ends by itself, after this returns.
    for (Worker& w : threads) {
        if (w.thread.get_id() == std::this_thread::get_id()) w.thread.detach();
    }
    bool finished;
    {
        std::unique_lock lock(s_->mutex);
        finished = s_->exited.wait_until(lock, deadline, [&] {
            for (const Worker& w : threads)
                if (w.thread.joinable() && !*w.exited) return false;
            return true;
        });
    }
    for (Worker& w : threads) {
        if (!w.thread.joinable()) continue;
        if (finished)
            w.thread.join();  // its work() has returned: quick
        else
            w.thread.detach();  // maybe still busy: it owns its references and ends on its own
    }
    return finished;
}

std::size_t ThreadPoolExecutor::thread_count() const {
    std::lock_guard lock(s_->mutex);
    return threads_.size();
}

// ---- the loop's default executor ----

namespace detail {

ThreadPoolExecutor& LoopExecutor::get() {
    if (!executor_) executor_ = std::make_shared<ThreadPoolExecutor>();
    return *executor_;
}

bool LoopExecutor::shutdown(std::optional<Duration> timeout) noexcept {
    std::shared_ptr<ThreadPoolExecutor> ex = std::move(executor_);
    if (!ex) return true;
    try {
        if (timeout) return ex->shutdown(*timeout);
        ex->shutdown(true);
    } catch (...) {
        // join() failing leaves a thread we cannot wait for; nothing better to do here.
    }
    return true;
}

}  // namespace detail

}  // namespace asyncio
