#pragma once

#include "backend/backend.hpp"

namespace asyncio::detail {

std::unique_ptr<Backend> make_epoll_backend();

}  // namespace asyncio::detail
