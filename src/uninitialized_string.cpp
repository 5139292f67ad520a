// make_uninitialized_string(): a std::string of n bytes without zero-filling them, through C++23's
// resize_and_overwrite. This file alone is compiled as C++23 when the compiler can (CMakeLists.txt);
// std::string is the same type in either mode. Otherwise it falls back to a zero-filled string.
#include <cstddef>
#include <string>

#include "stream_core.hpp"

namespace asyncio::detail {

std::string make_uninitialized_string(std::size_t n) {
    std::string s;
#if defined(__cpp_lib_string_resize_and_overwrite)
    s.resize_and_overwrite(n, [](char*, std::size_t m) { return m; });
#else
    s.resize(n);
#endif
    return s;
}

}  // namespace asyncio::detail
