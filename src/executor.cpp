// The executor bridge's compiled part: a worker hands a finished job's outcome to its loop.
#include "asyncio/executor.hpp"

namespace asyncio {

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

}  // namespace asyncio
