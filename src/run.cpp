// asyncio::run()'s and Runner's shutdown: cancel what is left, let it finish, close the loop.
#include "asyncio/run.hpp"

#include <exception>
#include <string>
#include <vector>

#include "asyncio/gather.hpp"

namespace asyncio {

namespace detail {

void check_no_running_loop(const char* what) {
    if (t_running_loop != nullptr)
        throw RuntimeError(std::string(what) + " cannot be called from a running event loop");
}

namespace {
// Cancels from inside the loop: waking a waiting task needs its loop running.
Coroutine<> cancel_and_wait(std::vector<Task<>> tasks) {
    for (auto& t : tasks) t.cancel();
    co_await gather(return_exceptions, std::move(tasks));
}
}  // namespace

void shutdown_run_loop(EventLoop& loop) noexcept {
    try {
        std::vector<Task<>> tasks = all_tasks(loop);
        if (!tasks.empty()) {
            loop.run_until_complete(cancel_and_wait(tasks));
            for (auto& t : tasks) {
                if (t.done() && !t.cancelled() && t.base()->has(kHasException)) {
                    t.base()->flags_ |= kRetrieved;
                    loop.call_exception_handler({"unhandled exception during asyncio.run() shutdown",
                                                 t.base()->exception_, t.get_name()});
                }
            }
        }
    } catch (...) {
        loop.call_exception_handler(
            {"error while shutting down asyncio.run()", std::current_exception(), {}});
    }
    try {
        loop.close();
    } catch (...) {
    }
}

}  // namespace detail

EventLoop& Runner::get_loop() {
    if (closed_) throw RuntimeError("Runner is closed");
    if (!loop_) {
        loop_ = options_.clock ? std::make_unique<EventLoop>(std::move(options_.clock))
                               : std::make_unique<EventLoop>();
        if (options_.debug) loop_->set_debug(*options_.debug);
    }
    return *loop_;
}

void Runner::close() noexcept {
    if (closed_) return;
    closed_ = true;
    if (loop_) detail::shutdown_run_loop(*loop_);
}

}  // namespace asyncio
