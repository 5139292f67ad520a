// The one place that decides which I/O backend a loop uses. Today: epoll. The io_uring backend
// will be chosen here (when the kernel supports it) without any other file changing.
#include "backend/backend.hpp"
#include "backend/epoll_backend.hpp"

namespace asyncio::detail {

std::unique_ptr<Backend> make_backend() { return make_epoll_backend(); }

}  // namespace asyncio::detail
