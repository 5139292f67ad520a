#pragma once

#include "backend/backend.hpp"

namespace asyncio::detail {

/// An io_uring backend. Throws std::system_error naming the cause when io_uring cannot be set up
/// here (ENOSYS, EPERM with kernel.io_uring_disabled, ...).
std::unique_ptr<Backend> make_uring_backend(ReadyQueue& ready);

}  // namespace asyncio::detail
