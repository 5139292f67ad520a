// ConcurrentFuture's state and run_coroutine_threadsafe's cancellation (concurrent.hpp).
#include "asyncio/concurrent.hpp"

#include <cstdio>

namespace asyncio::detail {

void ConcurrentStateBase::run_callbacks(std::vector<std::function<void()>>& cbs) noexcept {
    for (auto& cb : cbs) {
        try {
            cb();
        } catch (const std::exception& e) {  // as concurrent.futures: logged, the others still run
            std::fprintf(stderr, "exception calling callback for ConcurrentFuture: %s\n", e.what());
        } catch (...) {
            std::fprintf(stderr, "exception calling callback for ConcurrentFuture\n");
        }
    }
}

bool ConcurrentStateBase::wait_until(std::unique_lock<std::mutex>& lock, std::optional<TimePoint> deadline) {
    if (done_locked()) return true;
    if (loop != nullptr && t_running_loop == loop)
        throw RuntimeError("ConcurrentFuture.result() called on the thread of the event loop that must complete it: "
                           "it would wait forever (co_await it instead)");
    if (!deadline) {
        cv.wait(lock, [this] { return done_locked(); });
        return true;
    }
    return cv.wait_until(lock, *deadline, [this] { return done_locked(); });
}

bool ConcurrentStateBase::cancel() {
    std::vector<std::function<void()>> cbs;
    std::function<void()> hook;
    {
        std::lock_guard lock(mutex);
        if (state == State::kCancelled) return true;
        if (state == State::kFinished) return false;
        state = State::kCancelled;
        cbs.swap(callbacks);
        hook.swap(on_cancel);
    }
    cv.notify_all();
    if (hook) hook();
    run_callbacks(cbs);
    return true;
}

void cancel_task_threadsafe(const std::shared_ptr<LoopLink>& link,
                            const std::shared_ptr<ConcurrentStateBase>& state) noexcept {
    std::lock_guard lock(link->mutex);
    if (link->loop == nullptr) return;  // closed: the task was abandoned and the future cancelled
    try {
        link->loop->call_soon_threadsafe([state] {
            // Loop thread: `task` is set while the task is pending (cleared when it finishes).
            if (PromiseBase* t = state->task) task_cancel(t, {});
        });
    } catch (...) {
        // Closed meanwhile, or out of memory: the task runs on; the future is cancelled already.
    }
}

}  // namespace asyncio::detail
