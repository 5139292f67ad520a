// make_uninitialized_string(): a std::string of n bytes without zero-filling them, through C++23's
// resize_and_overwrite. This file alone is compiled as C++23 when the compiler can (CMakeLists.txt);
// std::string is the same type in either mode. Otherwise it falls back to a zero-filled string.
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "uninitialized_string.hpp"

namespace asyncio::detail {

std::string make_uninitialized_string(std::size_t n) {
    std::string s;
#if defined(__cpp_lib_string_resize_and_overwrite)
    s.resize_and_overwrite(n, [](char*, std::size_t m) { return m; });
#else
    s.resize(n);
#endif
#ifdef MADV_HUGEPAGE
    // A large block (a read(-1) or readexactly of megabytes growing the buffer) is fresh mmap'd
    // memory that a receive then faults in page by page: on a VM a 4 KiB fault costs about as
    // much as copying 64 KiB. Transparent huge pages for its 2 MiB-aligned interior cut the
    // faults 512-fold (advice only: a failure leaves normal pages).
    constexpr std::size_t kHuge = std::size_t{2} << 20;
    if (n >= 2 * kHuge) {
        const auto begin = reinterpret_cast<std::uintptr_t>(s.data());
        const std::uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
        const std::uintptr_t last = (begin + n) & ~(kHuge - 1);
        if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
    }
#endif
    return s;
}

}  // namespace asyncio::detail
