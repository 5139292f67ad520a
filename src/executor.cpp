#include "asyncio/executor.hpp"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <typeinfo>

namespace asyncio {

// ---- ThreadPoolExecutor ----

std::size_t ThreadPoolExecutor::default_max_workers() noexcept {
    const std::size_t cores = std::max(1u, std::thread::hardware_concurrency());
    return std::min<std::size_t>(32, cores + 4);
}

ThreadPoolExecutor::ThreadPoolExecutor(std::size_t max_workers)
    : max_workers_(max_workers == 0 ? default_max_workers() : max_workers) {}

ThreadPoolExecutor::~ThreadPoolExecutor() { shutdown(true); }

void ThreadPoolExecutor::submit(detail::Callback job) {
    std::unique_lock lock(mutex_);
    if (shutdown_) throw RuntimeError("cannot schedule new futures after shutdown");
    queue_.push_back(std::move(job));
    // Python's rule: a new thread only when no idle one can take the job.
    if (idle_ >= queue_.size()) {
        lock.unlock();
        cv_.notify_one();
        return;
    }
    if (threads_.size() < max_workers_) {
        try {
            threads_.emplace_back([this] { work(); });
        } catch (...) {
            // No thread could be started: the job waits for a running one; with none at all it
            // cannot run.
            if (threads_.empty()) {
                queue_.pop_back();
                throw;
            }
        }
    }
}

void ThreadPoolExecutor::work() {
    std::unique_lock lock(mutex_);
    for (;;) {
        ++idle_;
        cv_.wait(lock, [this] { return !queue_.empty() || shutdown_; });
        --idle_;
        if (queue_.empty()) return;  // shut down and drained
        detail::Callback job = std::move(queue_.front());
        queue_.pop_front();
        lock.unlock();
        try {
            job();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "ThreadPoolExecutor: job raised %s: %s\n", typeid(e).name(), e.what());
        } catch (...) {
            std::fprintf(stderr, "ThreadPoolExecutor: job raised an exception\n");
        }
        job.reset();  // its captures die on this thread, before the next wait
        lock.lock();
    }
}

void ThreadPoolExecutor::shutdown(bool wait) {
    std::vector<std::thread> threads;
    {
        std::lock_guard lock(mutex_);
        shutdown_ = true;
        if (wait) threads.swap(threads_);
    }
    cv_.notify_all();
    for (auto& t : threads) {
        if (t.get_id() == std::this_thread::get_id())
            t.detach();  // shut down from one of its own jobs: that thread ends by itself
        else
            t.join();
    }
}

std::size_t ThreadPoolExecutor::thread_count() const {
    std::lock_guard lock(mutex_);
    return threads_.size();
}

namespace detail {

void post_to_loop(const std::shared_ptr<LoopLink>& link, std::shared_ptr<ExecStateBase> state) noexcept {
    std::lock_guard lock(link->mutex);
    if (link->loop == nullptr) return;  // the loop is gone: drop the outcome
    try {
        link->loop->call_soon_threadsafe([st = std::move(state)] { st->deliver(); });
    } catch (...) {
        // Closed (RuntimeError) or out of memory: the outcome is dropped.
    }
}

}  // namespace detail

// ---- the loop's default executor ----

const std::shared_ptr<detail::LoopLink>& EventLoop::link() {
    if (!link_) {
        link_ = std::make_shared<detail::LoopLink>();
        link_->loop = closed_ ? nullptr : this;
    }
    return link_;
}

ThreadPoolExecutor& EventLoop::default_executor() {
    if (closed_) throw RuntimeError("Event loop is closed");
    if (!default_executor_) default_executor_ = std::make_shared<ThreadPoolExecutor>();
    return *default_executor_;
}

void EventLoop::set_default_executor(std::shared_ptr<ThreadPoolExecutor> executor) {
    default_executor_ = std::move(executor);
}

void EventLoop::shutdown_default_executor() noexcept {
    if (std::shared_ptr<ThreadPoolExecutor> ex = std::move(default_executor_)) {
        try {
            ex->shutdown(true);
        } catch (...) {
            // join() failing leaves a thread we cannot wait for; nothing better to do here.
        }
    }
}

}  // namespace asyncio
