// make_uninitialized_string (uninitialized_string.cpp): for the read buffer (stream_core.hpp), file
// reads and the io_uring backend's provided buffers. Private to src/.
#pragma once

#include <cstddef>
#include <string>

namespace asyncio::detail {

/// A string of n bytes whose contents are not initialized (the caller overwrites them): no
/// zero-filling of a block that recv() fills anyway.
std::string make_uninitialized_string(std::size_t n);

}  // namespace asyncio::detail
