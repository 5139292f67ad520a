// asyncio::run()'s and Runner's shutdown: cancel what is left, let it finish, close the loop.
#include "asyncio/run.hpp"

#include <exception>
#include <string>
#include <vector>

#include "asyncio/gather.hpp"
#include "loop_hooks.hpp"
#include "signals_internal.hpp"

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

SigintGuard::SigintGuard(EventLoop& loop, PromiseBase* main) : loop_(loop), main_(main) {
    // Told when main finishes, with its count of cancellation requests then: the frame may be
    // freed before run() looks at the outcome.
    done_.self = this;
    done_.fn = [](DoneWaiter* w, PromiseBase* p) {
        SigintGuard* self = static_cast<Done*>(w)->self;
        self->finished_ = true;
        self->final_cancelling_ = p->cancelling_;
    };
    done_.next = main_->waiters_;
    main_->waiters_ = &done_;
    try {
        installed_ = runner_sigint_begin(loop, [this] {
            // The first Ctrl-C cancels the main task (a second one never gets here: it kills the
            // process in signal context). Done already: run() raises KeyboardInterrupt.
            if (!finished_ && !cancelled_) {
                cancelled_ = true;
                task_cancel(main_, {});
            }
        });
    } catch (...) {
        // Could not handle SIGINT (Python ignores signal.signal's ValueError here too).
    }
}

SigintGuard::~SigintGuard() {
    if (installed_) runner_sigint_end(loop_);
    // Not finished: run_until_complete failed; the loop still owns the pending task.
    if (!finished_) unregister_waiter(main_, &done_);
}

void SigintGuard::check_after_cancelled() const {
    if (!installed_ || runner_sigint_hits() == 0) return;
    // Not cancelled by us: the Ctrl-C came too late to be a cancellation, it interrupts.
    if (!cancelled_ || final_cancelling_ <= 1) throw KeyboardInterrupt();
}

void SigintGuard::check_after_done() const {
    if (installed_ && runner_sigint_hits() > 0 && !cancelled_) throw KeyboardInterrupt();
}

}  // namespace detail

EventLoop& Runner::get_loop() {
    if (closed_) throw RuntimeError("Runner is closed");
    if (!loop_) {
        struct IgnoreTraceEnv {  // RunOptions::trace_file, when given, decides instead
            bool was = detail::t_ignore_trace_env;
            explicit IgnoreTraceEnv(bool on) { detail::t_ignore_trace_env = was || on; }
            ~IgnoreTraceEnv() { detail::t_ignore_trace_env = was; }
        } ignore(options_.trace_file.has_value());
        loop_ = options_.clock ? std::make_unique<EventLoop>(std::move(options_.clock))
                               : std::make_unique<EventLoop>();
        if (options_.debug) loop_->set_debug(*options_.debug);
        if (options_.trace_file) loop_->set_trace_file(*options_.trace_file);
        if (options_.chaos) testing::enable_chaos(*loop_, options_.chaos);
    }
    return *loop_;
}

void Runner::close() noexcept {
    if (closed_) return;
    closed_ = true;
    if (loop_) detail::shutdown_run_loop(*loop_);
}

}  // namespace asyncio
