#pragma once

#include "asyncio/detail/promise.hpp"

namespace asyncio::detail {

/// Task::uncancel() on a raw task: one cancellation request withdrawn; at zero a pending
/// (not yet delivered) cancellation is dropped too, as in Python 3.13.
inline int uncancel(PromiseBase* t) noexcept {
    if (t->cancelling_ > 0 && --t->cancelling_ == 0)
        t->flags_ &= static_cast<std::uint16_t>(~kMustCancel);
    return t->cancelling_;
}

}  // namespace asyncio::detail
