// The loop's executor part: the default executor behind EventLoop::default_executor() and
// run_in_executor(fn, ...), made on first use and joined by EventLoop::close(). A component the
// loop owns (src/thread_pool.cpp), so the loop never reaches up into executor.hpp.
#pragma once

#include <memory>
#include <optional>

#include "asyncio/clock.hpp"

namespace asyncio {
class ThreadPoolExecutor;  // thread_pool.hpp
}

namespace asyncio::detail {

class LoopExecutor {
public:
    /// The default executor, made (ThreadPoolExecutor with the default size) on first use.
    ThreadPoolExecutor& get();
    void set(std::shared_ptr<ThreadPoolExecutor> executor) noexcept { executor_ = std::move(executor); }
    /// Shuts the executor down and forgets it; waits for its threads at most `timeout` (nullopt: no
    /// limit). False if some were still busy then (they are left running, detached).
    bool shutdown(std::optional<Duration> timeout) noexcept;

private:
    std::shared_ptr<ThreadPoolExecutor> executor_;
};

}  // namespace asyncio::detail
